// `claudemesh demo`: the main job end to end with nothing installed but
// this binary. In a temp dir on loopback it runs a broker and two daemons
// with separate homes (members alice and bob: a mesh made by alice, an
// invite from her, a join by bob), registers one launched-style session on
// each (session keypair, attestation, presence, through IPC as launch does),
// then sends a DM each way, a group message and a broadcast, shows the peer
// list and an inbox, and times each message from `send` to its arrival on
// the recipient session's event stream.
//
// Policy:
//   - The broker and both daemons run in this process, with the code that
//     `broker serve` and `daemon up --foreground` run; every step a user
//     takes (mesh create, invite, join, peer list, send, inbox) is the real
//     verb, run through the CLI's dispatcher against that peer's home. In
//     process, a demo that is interrupted or fails leaves no daemon behind,
//     and it starts in milliseconds.
//   - Nothing outside the temp dir is read or written: each peer's
//     environment is built from scratch (HOME, daemon dir), never the
//     user's, autospawn is off, and every listener is 127.0.0.1:0.
//   - Exit 0 only if every message reached each of its recipients exactly
//     once — one event on the session's stream and one row in its inbox —
//     and never came back to its sender.
//   - Everything stops and the temp dir is removed before the verb returns,
//     unless --keep (the dir, its logs and stores are kept and printed).
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Demo limits and names.
const (
	demoTimeout    = 60 * time.Second // the whole demo
	demoStepWait   = 10 * time.Second // one step: a link opening, a message arriving
	demoMesh       = "demo"
	demoGroup      = "reviewers"
	demoMaxSockLen = 100 // sun_path is 104 (macOS) or 108 (Linux) bytes
)

type demoFlags struct{ keep bool }

func setupDemo(fs *flagSet) runFunc {
	var f demoFlags
	fs.BoolVar(&f.keep, "keep", false, "keep the temp dir (logs, stores, configs) and print where it is")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("demo takes no arguments")
		}
		return runDemo(ctx, c, f)
	}
}

// demoPeer is one member of the demo mesh: a home, a daemon and a session.
type demoPeer struct {
	Name   string
	home   string
	env    map[string]string
	paths  Paths
	groups []string

	daemon *Daemon
	stop   context.CancelFunc
	done   chan error

	mesh       Mesh
	token      string // the session's IPC token
	sessionID  string
	sessionKey string
	cl         *DaemonClient // the session's client

	events *demoStream
}

// demoStream collects one session's event stream.
type demoStream struct {
	mu      sync.Mutex
	arrived map[string][]time.Time // message events by client_message_id
	joins   []string               // peer_join names
	notify  chan struct{}          // poked on every event
	cancel  context.CancelFunc
	end     func() error
}

// demoMessage is one message the demo sends.
type demoMessage struct {
	From       *demoPeer
	To         string // what the sender types: a name, @group or *
	Kind       string // dm, group, broadcast
	Text       string
	Recipients []*demoPeer
}

// demoArrival is one recipient's view of one message.
type demoArrival struct {
	Name      string  `json:"name"`
	Arrived   bool    `json:"arrived"`
	Events    int     `json:"events"`     // message events on its session's stream
	InboxRows int     `json:"inbox_rows"` // rows in its session's inbox
	LatencyMs float64 `json:"latency_ms"` // send → first event
}

// demoResult is one message's outcome.
type demoResult struct {
	From            string        `json:"from"`
	To              string        `json:"to"`
	Kind            string        `json:"kind"`
	Text            string        `json:"text"`
	ClientMessageID string        `json:"client_message_id"`
	MessageID       string        `json:"message_id"`
	SendStatus      string        `json:"send_status"`
	Recipients      []demoArrival `json:"recipients"`
	Echoes          int           `json:"echoes"` // copies that reached the sender's own session
	OK              bool          `json:"ok"`
}

// demoSummary is `demo --json`.
type demoSummary struct {
	OK         bool            `json:"ok"`
	Mode       string          `json:"mode"`
	Dir        string          `json:"dir"`
	Kept       bool            `json:"kept"`
	Broker     string          `json:"broker"`
	Mesh       string          `json:"mesh"`
	Members    []demoMember    `json:"members"`
	PeerList   json.RawMessage `json:"peer_list,omitempty"`
	Messages   []demoResult    `json:"messages"`
	Delivered  int             `json:"delivered"`
	Total      int             `json:"total"`
	LatencyMs  demoLatency     `json:"latency_ms"`
	DurationMs int64           `json:"duration_ms"`
	Problems   []string        `json:"problems"`
	// Interrupted: a signal stopped the demo before it finished; what it
	// had done is reported, and nothing counts as a failure.
	Interrupted bool `json:"interrupted,omitempty"`
}

// exitInterrupted is a demo stopped by Ctrl-C: 128 + SIGINT, as a shell
// reports a command it interrupted.
const exitInterrupted = 130

type demoMember struct {
	Name          string   `json:"name"`
	MemberPubkey  string   `json:"member_pubkey"`
	SessionPubkey string   `json:"session_pubkey"`
	SessionID     string   `json:"session_id"`
	Groups        []string `json:"groups"`
}

type demoLatency struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// demo is one run.
type demo struct {
	c         *cli
	dir       string
	keep      bool
	broker    *ServingBroker
	brokerLog *os.File
	peers     []*demoPeer
	started   time.Time
	problems  []string
}

// say prints a transcript line (nothing in --json mode).
func (d *demo) say(format string, a ...any) {
	if !d.c.jsonMode() {
		d.c.printf(format+"\n", a...)
	}
}

func (d *demo) problem(format string, a ...any) {
	d.problems = append(d.problems, fmt.Sprintf(format, a...))
}

func runDemo(parent context.Context, c *cli, f demoFlags) error {
	ctx, cancel := context.WithTimeout(parent, demoTimeout)
	defer cancel()
	dir, err := makeDemoDir()
	if err != nil {
		return exitError(exitIO, fmt.Errorf("demo dir: %w", err))
	}
	d := &demo{c: c, dir: dir, keep: f.keep, started: time.Now()}
	sum, runErr := d.run(ctx)
	cleanErr := d.cleanup()
	sum.Dir, sum.Kept = dir, f.keep
	sum.DurationMs = time.Since(d.started).Milliseconds()
	sum.Interrupted = parent.Err() != nil
	if runErr != nil && !sum.Interrupted {
		d.problem("%v", runErr)
	}
	if cleanErr != nil {
		d.problem("cleanup: %v", cleanErr)
	}
	sum.Problems = append([]string{}, d.problems...)
	sum.OK = len(sum.Problems) == 0 && sum.Total > 0 && sum.Delivered == sum.Total && !sum.Interrupted
	if c.jsonMode() {
		if err := c.printJSON(sum); err != nil {
			return err
		}
	} else {
		d.printSummary(sum)
	}
	switch {
	case sum.Interrupted && len(sum.Problems) == 0:
		return silentExit(exitInterrupted)
	case !sum.OK:
		return silentExit(exitFailure)
	}
	return nil
}

// makeDemoDir makes the temp dir, short enough for the daemons' socket
// paths.
func makeDemoDir() (string, error) {
	dir, err := os.MkdirTemp("", "cmdemo")
	if err != nil {
		return "", err
	}
	if len(filepath.Join(dir, "alice", "daemon", "daemon.sock")) <= demoMaxSockLen {
		return dir, nil
	}
	os.Remove(dir)
	return os.MkdirTemp("/tmp", "cmdemo")
}

func (d *demo) run(ctx context.Context) (demoSummary, error) {
	sum := demoSummary{Mode: "in-process", Mesh: demoMesh, Messages: []demoResult{}}
	d.say("%s", d.c.paint(colorBold, "claudemesh demo")+" — two machines, one mesh, on loopback in "+d.dir)
	logf, err := os.OpenFile(filepath.Join(d.dir, "broker.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return sum, err
	}
	d.brokerLog = logf // closed after the broker stops
	d.broker, err = startServingBroker(BrokerOptions{DataDir: filepath.Join(d.dir, "broker"),
		Logger: slog.New(slog.NewJSONHandler(logf, nil))}, "127.0.0.1:0")
	if err != nil {
		return sum, err
	}
	sum.Broker = d.broker.URL()
	d.say("  broker   %s", d.broker.URL())

	alice, bob := d.newPeer("alice", nil), d.newPeer("bob", []string{demoGroup})
	d.peers = []*demoPeer{alice, bob}

	// alice makes the mesh and an invite; bob joins with it.
	if _, err := d.verb(ctx, alice, "", "mesh", "create", demoMesh, "--broker", d.broker.URL(), "--name", alice.Name); err != nil {
		return sum, err
	}
	out, err := d.verb(ctx, alice, "", "invite", "--json")
	if err != nil {
		return sum, err
	}
	var inv struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal([]byte(out), &inv); err != nil || inv.URL == "" {
		return sum, fmt.Errorf("invite gave no link: %q", out)
	}
	if _, err := d.verb(ctx, bob, "", "join", inv.URL, "--name", bob.Name); err != nil {
		return sum, err
	}
	d.say("  alice    created mesh %q and an invite; bob joined with it", demoMesh)

	for _, p := range d.peers {
		if err := d.startPeer(ctx, p); err != nil {
			return sum, fmt.Errorf("%s: %w", p.Name, err)
		}
		groups := ""
		if len(p.groups) > 0 {
			groups = " in @" + strings.Join(p.groups, ", @")
		}
		d.say("  %-8s daemon up; session %s (%s)%s registered with presence", p.Name, p.Name, shortKey(p.sessionKey), groups)
	}
	for _, p := range d.peers {
		sum.Members = append(sum.Members, demoMember{Name: p.Name, MemberPubkey: p.mesh.Pubkey, SessionPubkey: p.sessionKey,
			SessionID: p.sessionID, Groups: nonNil(p.groups)})
	}
	if d.waitJoin(ctx, alice, bob.Name) {
		d.say("  alice's event stream: peer_join %s", bob.Name)
	}

	// The peer list as alice's session sees it.
	if d.c.jsonMode() {
		out, err := d.verb(ctx, alice, alice.token, "peer", "list", "--json")
		if err != nil {
			return sum, err
		}
		sum.PeerList = json.RawMessage(out)
	} else {
		out, err := d.verb(ctx, alice, alice.token, "peer", "list")
		if err != nil {
			return sum, err
		}
		d.say("\n%s", d.c.paint(colorBold, "$ claudemesh peer list")+"   (as alice)")
		d.say("%s", indent(out, "  "))
	}

	msgs := []demoMessage{
		{From: alice, To: bob.Name, Kind: "dm", Text: "hi bob, can you review the parser change?", Recipients: []*demoPeer{bob}},
		{From: bob, To: alice.Name, Kind: "dm", Text: "on it, alice", Recipients: []*demoPeer{alice}},
		{From: alice, To: "@" + demoGroup, Kind: "group", Text: "reviewers: the branch is ready", Recipients: []*demoPeer{bob}},
		{From: bob, To: "*", Kind: "broadcast", Text: "lunch in 10?", Recipients: []*demoPeer{alice}},
	}
	d.say("\n%s", d.c.paint(colorBold, "messages")+"   (latency: from `claudemesh send` to the recipient session's event stream)")
	var lat []float64
	for _, m := range msgs {
		r, err := d.send(ctx, m)
		if err != nil {
			return sum, err
		}
		sum.Messages = append(sum.Messages, r)
		for _, a := range r.Recipients {
			if a.Arrived {
				lat = append(lat, a.LatencyMs)
			}
		}
	}

	// bob's inbox through the real verb, then every inbox counted.
	if !d.c.jsonMode() {
		out, err := d.verb(ctx, bob, bob.token, "inbox")
		if err != nil {
			return sum, err
		}
		d.say("\n%s", d.c.paint(colorBold, "$ claudemesh inbox")+"   (as bob)")
		d.say("%s", indent(out, "  "))
	}
	if err := d.countInboxes(ctx, msgs, sum.Messages); err != nil {
		return sum, err
	}
	for _, p := range d.peers {
		p.events.cancel()
		_ = p.events.end()
	}
	d.countEvents(msgs, sum.Messages)

	sum.Total = len(msgs)
	for i := range sum.Messages {
		r := &sum.Messages[i]
		r.OK = r.Echoes == 0 && r.SendStatus == "sent"
		for _, a := range r.Recipients {
			r.OK = r.OK && a.Arrived && a.Events == 1 && a.InboxRows == 1
		}
		if r.OK {
			sum.Delivered++
		} else {
			d.problem("%s → %s (%s) was not delivered exactly once: %s", r.From, r.To, r.Kind, describeArrivals(*r))
		}
	}
	sum.LatencyMs = demoLatency{P50: percentile(lat, 50), P99: percentile(lat, 99), Max: percentile(lat, 100)}
	return sum, nil
}

// newPeer lays out a peer's home: its own HOME, config and daemon dir.
func (d *demo) newPeer(name string, groups []string) *demoPeer {
	home := filepath.Join(d.dir, name)
	env := map[string]string{
		"HOME":                             home,
		"CLAUDEMESH_DAEMON_DIR":            filepath.Join(home, "daemon"),
		"CLAUDEMESH_INTERNAL_NO_AUTOSPAWN": "1",
		"NO_COLOR":                         "1",
	}
	p := &demoPeer{Name: name, home: home, env: env, groups: groups}
	p.paths, _ = resolvePaths(pathEnv{getenv: mapGetenv(env), home: home, dirExists: dirExists})
	return p
}

func mapGetenv(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// verb runs one claudemesh command line as peer p (as its session when
// token is set) and returns its stdout; a non-zero exit is an error
// carrying its stderr.
func (d *demo) verb(ctx context.Context, p *demoPeer, token string, args ...string) (string, error) {
	env := p.env
	if token != "" {
		env = map[string]string{"CLAUDEMESH_IPC_TOKEN": token}
		for k, v := range p.env {
			env[k] = v
		}
	}
	var stdout, stderr bytes.Buffer
	vc := newCLI(Env{Getenv: mapGetenv(env), Stdout: &stdout, Stderr: &stderr}, d.c.commands)
	code := vc.report(vc.dispatch(ctx, append(args, "--strict")))
	if code != exitOK {
		return stdout.String(), fmt.Errorf("%s: claudemesh %s exited %d: %s", p.Name, strings.Join(args, " "), code, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// startPeer runs the peer's daemon, registers its session the way launch
// does and opens the session's event stream.
func (d *demo) startPeer(ctx context.Context, p *demoPeer) error {
	cfg, err := loadConfig(p.paths.MachineConfigFile())
	if err != nil {
		return err
	}
	m, ok := cfg.MeshBySlug(demoMesh)
	if !ok {
		return fmt.Errorf("mesh %s missing from %s", demoMesh, p.paths.MachineConfigFile())
	}
	p.mesh = *m
	if err := ensurePrivateDir(p.paths.DaemonDir); err != nil {
		return err
	}
	logf, err := os.OpenFile(p.paths.LogFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	ready := make(chan struct{})
	p.daemon = NewDaemon(DaemonOptions{Paths: p.paths, NoTCP: true, Ready: ready,
		Log: slog.New(slog.NewJSONHandler(logf, nil)), Closers: []io.Closer{logf}})
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	p.stop, p.done = stop, make(chan error, 1)
	go func() { p.done <- p.daemon.Run(runCtx) }()
	select {
	case <-ready:
	case err := <-p.done:
		p.done <- err
		return fmt.Errorf("daemon did not start: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
	wctx, cancel := context.WithTimeout(ctx, demoStepWait)
	defer cancel()
	if err := p.daemon.MemberLink(demoMesh).WaitOpen(wctx); err != nil {
		return fmt.Errorf("member link to the broker: %w", err)
	}

	member, err := p.mesh.Keypair()
	if err != nil {
		return err
	}
	p.sessionID = newUUID()
	key, presence, err := sessionPresence(p.paths, p.mesh, member, p.sessionID)
	if err != nil {
		return err
	}
	p.sessionKey, p.token = key.PublicHex(), randomHex(32)
	p.cl = newDaemonClient(p.paths.SocketFile(), p.token)
	if err := p.cl.RegisterSession(wctx, RegisterRequest{Token: p.token, SessionID: p.sessionID, Mesh: demoMesh,
		DisplayName: p.Name, Pid: os.Getpid(), Cwd: p.home, Groups: p.groups, Presence: presence}); err != nil {
		return fmt.Errorf("registering the session: %w", err)
	}
	if l := p.daemon.SessionLinkByPubkey(p.sessionKey); l == nil {
		return errors.New("the daemon opened no session link")
	} else if err := l.WaitOpen(wctx); err != nil {
		return fmt.Errorf("session link: %w", err)
	}
	p.events, err = openDemoStream(ctx, p.cl)
	return err
}

func openDemoStream(ctx context.Context, cl *DaemonClient) (*demoStream, error) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ch, end, err := cl.Events(sctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("event stream: %w", err)
	}
	s := &demoStream{arrived: map[string][]time.Time{}, notify: make(chan struct{}, 1), cancel: cancel, end: end}
	go func() {
		for ev := range ch {
			at := time.Now()
			s.mu.Lock()
			switch ev.Kind {
			case eventMessage:
				var m MessageEvent
				_ = json.Unmarshal(ev.Data, &m)
				s.arrived[m.ClientMessageID] = append(s.arrived[m.ClientMessageID], at)
			case eventPeerJoin:
				// The broker's eventData, passed on as it came.
				var data struct {
					Name        string `json:"name"`
					DisplayName string `json:"displayName"`
				}
				_ = json.Unmarshal(ev.Data, &data)
				s.joins = append(s.joins, cmp.Or(data.Name, data.DisplayName))
			}
			s.mu.Unlock()
			select {
			case s.notify <- struct{}{}:
			default:
			}
		}
	}()
	return s, nil
}

// waitFor waits until cond holds on the stream or the step's time is up.
func (s *demoStream) waitFor(ctx context.Context, cond func(*demoStream) bool) bool {
	t := time.NewTimer(demoStepWait)
	defer t.Stop()
	for {
		s.mu.Lock()
		ok := cond(s)
		s.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-s.notify:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// waitJoin reports whether p's stream has seen name join (bounded).
func (d *demo) waitJoin(ctx context.Context, p *demoPeer, name string) bool {
	return p.events.waitFor(ctx, func(s *demoStream) bool { return slices.Contains(s.joins, name) })
}

// send runs `claudemesh send` as the sender's session and waits for the
// message on every recipient's stream.
func (d *demo) send(ctx context.Context, m demoMessage) (demoResult, error) {
	r := demoResult{From: m.From.Name, To: m.To, Kind: m.Kind, Text: m.Text}
	start := time.Now()
	out, err := d.verb(ctx, m.From, m.From.token, "send", m.To, m.Text, "--json")
	if err != nil {
		return r, err
	}
	var sent sendDoc
	if err := json.Unmarshal([]byte(out), &sent); err != nil {
		return r, fmt.Errorf("send --json: %w", err)
	}
	r.ClientMessageID, r.MessageID, r.SendStatus = sent.ClientMessageID, sent.MessageID, sent.Status
	for _, to := range m.Recipients {
		a := demoArrival{Name: to.Name}
		to.events.waitFor(ctx, func(s *demoStream) bool { return len(s.arrived[r.ClientMessageID]) > 0 })
		to.events.mu.Lock()
		if at := to.events.arrived[r.ClientMessageID]; len(at) > 0 {
			a.Arrived = true
			a.LatencyMs = float64(at[0].Sub(start).Microseconds()) / 1000
		}
		to.events.mu.Unlock()
		r.Recipients = append(r.Recipients, a)
		label := cmp.Or(map[string]string{"dm": "DM"}[r.Kind], r.Kind)
		if a.Arrived {
			d.say("  %s %-6s → %-11s %-9s %-44q arrived at %s in %s", d.c.paint(colorGreen, "✔"), r.From, r.To, label, r.Text, a.Name, fmtMs(a.LatencyMs))
		} else {
			d.say("  %s %-6s → %-11s %-9s %-44q did not reach %s within %s", d.c.paint(colorRed, "✘"), r.From, r.To, label, r.Text, a.Name, demoStepWait)
		}
	}
	return r, nil
}

// countInboxes reads every session's inbox through `claudemesh inbox
// --json` and counts each message's rows: one per recipient, none at the
// sender.
func (d *demo) countInboxes(ctx context.Context, msgs []demoMessage, results []demoResult) error {
	rows := map[*demoPeer]map[string]int{}
	for _, p := range d.peers {
		out, err := d.verb(ctx, p, p.token, "inbox", "--json", "--limit", "1000")
		if err != nil {
			return err
		}
		var items []inboxItem
		if err := json.Unmarshal([]byte(out), &items); err != nil {
			return fmt.Errorf("%s: inbox --json: %w", p.Name, err)
		}
		rows[p] = map[string]int{}
		for _, it := range items {
			rows[p][it.ClientMessageID]++
		}
	}
	for i, m := range msgs {
		r := &results[i]
		for j, to := range m.Recipients {
			r.Recipients[j].InboxRows = rows[to][r.ClientMessageID]
		}
		r.Echoes += rows[m.From][r.ClientMessageID]
	}
	return nil
}

// countEvents counts each message's events on every stream (after the
// streams ended): one per recipient, none anywhere else.
func (d *demo) countEvents(msgs []demoMessage, results []demoResult) {
	for i, m := range msgs {
		r := &results[i]
		for _, p := range d.peers {
			p.events.mu.Lock()
			n := len(p.events.arrived[r.ClientMessageID])
			p.events.mu.Unlock()
			j := slices.Index(m.Recipients, p)
			switch {
			case j >= 0:
				r.Recipients[j].Events = n
			case p == m.From:
				r.Echoes += n
			case n > 0:
				d.problem("%s → %s reached %s, who is not a recipient", r.From, r.To, p.Name)
			}
		}
	}
}

func describeArrivals(r demoResult) string {
	var parts []string
	if r.SendStatus != "sent" {
		parts = append(parts, "send status "+r.SendStatus)
	}
	for _, a := range r.Recipients {
		parts = append(parts, fmt.Sprintf("%s: %d event(s), %d inbox row(s)", a.Name, a.Events, a.InboxRows))
	}
	if r.Echoes > 0 {
		parts = append(parts, fmt.Sprintf("%d copies back at %s", r.Echoes, r.From))
	}
	return strings.Join(parts, "; ")
}

// cleanup deregisters the sessions, stops the daemons, then the broker, and
// removes the dir (unless --keep). It reports what it could not undo.
func (d *demo) cleanup() error {
	var errs []error
	for _, p := range d.peers {
		if p.events != nil {
			p.events.cancel()
			_ = p.events.end()
		}
		if p.cl != nil {
			ctx, cancel := context.WithTimeout(context.Background(), launchIPCTimeout)
			if err := p.cl.DeregisterSession(ctx, p.token); err != nil && ipcStatus(err) != 404 {
				errs = append(errs, fmt.Errorf("%s: deregister: %w", p.Name, err))
			}
			cancel()
			p.cl.http.CloseIdleConnections()
		}
	}
	for _, p := range d.peers {
		if p.stop == nil {
			continue
		}
		p.stop()
		select {
		case err := <-p.done:
			if err != nil {
				errs = append(errs, fmt.Errorf("%s's daemon: %w", p.Name, err))
			}
		case <-time.After(daemonShutdownTimeout + 5*time.Second):
			errs = append(errs, fmt.Errorf("%s's daemon did not stop", p.Name))
		}
	}
	if d.broker != nil {
		if err := d.broker.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("broker: %w", err))
		}
	}
	if d.brokerLog != nil {
		d.brokerLog.Close()
	}
	if !d.keep {
		if err := os.RemoveAll(d.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (d *demo) printSummary(sum demoSummary) {
	d.say("")
	if sum.Interrupted {
		took := (time.Duration(sum.DurationMs) * time.Millisecond).Round(time.Millisecond)
		if sum.Total > 0 {
			d.say("%s interrupted after %s; %d of %d messages had arrived", d.c.paint(colorYellow, "⚠"), took, sum.Delivered, sum.Total)
		} else {
			d.say("%s interrupted after %s, before the messages", d.c.paint(colorYellow, "⚠"), took)
		}
		for _, p := range sum.Problems {
			d.say("  - %s", p)
		}
	} else if sum.OK {
		d.say("%s %d/%d messages delivered exactly once · latency p50 %s, p99 %s · %s in all",
			d.c.paint(colorGreen, "✔"), sum.Delivered, sum.Total, fmtMs(sum.LatencyMs.P50), fmtMs(sum.LatencyMs.P99),
			time.Duration(sum.DurationMs)*time.Millisecond)
	} else {
		d.say("%s %d/%d messages delivered exactly once", d.c.paint(colorRed, "✘"), sum.Delivered, sum.Total)
		for _, p := range sum.Problems {
			d.say("  - %s", p)
		}
	}
	if sum.Kept {
		d.say("everything stopped; kept %s (daemon logs in */daemon/daemon.log, broker.log)", sum.Dir)
	} else {
		d.say("everything stopped and %s removed", sum.Dir)
	}
	if sum.OK {
		d.say("next: 'claudemesh init' sets up this machine for real (see the README)")
	}
}

// percentile of xs (nearest rank); 0 for none.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64{}, xs...)
	sort.Float64s(s)
	rank := int(p/100*float64(len(s))+0.999999) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

func fmtMs(ms float64) string { return fmt.Sprintf("%.1f ms", ms) }

// indent prefixes every non-empty line of s.
func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "\n")
}
