// `claudemesh daemon up|down|status|version`, `status`, and the helpers
// every verb uses to reach the daemon (warm path) or a broker directly
// (cold path) according to --strict / --no-daemon.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Daemon access for verbs.

// hintStartDaemon is the hint of every verb that found no daemon running.
const hintStartDaemon = "start it with 'claudemesh daemon up'"

// defaultSpawnBudget is how long a verb waits for an autospawned daemon.
const defaultSpawnBudget = 3 * time.Second

// daemonMode is how this invocation may use the daemon (--no-daemon,
// --strict and their environment variables).
func (c *cli) daemonMode() daemonMode {
	return daemonPolicy(c.global.noDaemon, c.global.strict, c.env.Getenv)
}

// daemon returns the warm-path client, or nil when the verb should take its
// cold path (no-daemon mode, or the daemon could not be had in auto mode).
// In strict mode an unusable daemon is an error.
func (c *cli) daemon(ctx context.Context) (*DaemonClient, error) {
	return c.daemonWithin(ctx, defaultSpawnBudget)
}

// daemonWithin is daemon with a spawn budget (launch waits 10 s).
func (c *cli) daemonWithin(ctx context.Context, budget time.Duration) (*DaemonClient, error) {
	mode := c.daemonMode()
	if mode == modeNoDaemon {
		return nil, nil
	}
	c.daemonOnce.Do(func() {
		cl := newDaemonClientAs(c.Paths().SocketFile(), callerIdentityFromEnv(c.env.Getenv))
		dc := newDaemonConnector(c.Paths(), c.env.Getenv)
		dc.client = cl
		c.daemonResult = dc.ensure(ctx, budget)
		r := c.daemonResult
		if r.State == daemonStarted {
			c.infof("daemon started automatically (took %dms)", r.Duration.Milliseconds())
		}
		if r.usable() {
			c.daemonClient = cl
		} else {
			cl.http.CloseIdleConnections()
		}
	})
	if c.daemonClient != nil {
		return c.daemonClient, nil
	}
	if mode == modeStrict {
		r := c.daemonResult
		return nil, exitError(exitFailure, fmt.Errorf("daemon not reachable (%s: %s) and --strict refuses the direct broker path", r.State, r.Reason),
			"start it with 'claudemesh daemon up', or drop --strict", "its log: "+c.Paths().LogFile())
	}
	return nil, nil
}

// runningDaemon returns a client only if a daemon already answers; it
// never spawns one (status and the daemon verbs must not start what they
// are asked about).
func (c *cli) runningDaemon(ctx context.Context) *DaemonClient {
	dc := newDaemonConnector(c.Paths(), c.env.Getenv)
	if dc.probe(ctx) != probeUp {
		return nil
	}
	return newDaemonClientAs(c.Paths().SocketFile(), callerIdentityFromEnv(c.env.Getenv))
}

// loadUserConfig reads the config this invocation sees (inside a launched
// session: that session's one-mesh config). The result is shared between
// callers: they read it and never change it.
func (c *cli) loadUserConfig() (*Config, error) {
	return c.userConfig.load(c.Paths().ConfigFile())
}

// configCache keeps the config last read: a verb reads it more than once
// (the mesh check, then the verb itself), and decoding it again is a
// noticeable share of a short verb. It holds only while the file is the one
// read (same inode, size and modification time), so a verb that writes the
// config and reads it again sees what it wrote.
type configCache struct {
	mu   sync.Mutex
	file os.FileInfo
	cfg  *Config
}

func (cc *configCache) load(path string) (*Config, error) {
	st, statErr := os.Stat(path)
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if statErr == nil && cc.cfg != nil && os.SameFile(st, cc.file) &&
		st.Size() == cc.file.Size() && st.ModTime().Equal(cc.file.ModTime()) {
		return cc.cfg, nil
	}
	cfg, err := loadConfig(path)
	cc.cfg = nil
	if err == nil && statErr == nil {
		cc.file, cc.cfg = st, cfg
	}
	return cfg, err
}

// needMesh refuses a verb that works on a mesh when this machine has none
// — neither the config this invocation sees nor the machine's, which the
// daemon serves — before a daemon is started for nothing.
func (c *cli) needMesh(slug string) error {
	if slug != "" {
		return nil
	}
	cfg, err := c.loadUserConfig()
	if err != nil || len(cfg.Meshes) > 0 {
		return err
	}
	if p := c.Paths(); p.MachineConfigFile() != p.ConfigFile() {
		if mc, err := loadConfig(p.MachineConfigFile()); err == nil && len(mc.Meshes) > 0 {
			return nil
		}
	}
	return errNoMeshJoined()
}

// coldMesh picks the mesh for a cold-path verb: --mesh, else the only
// joined mesh.
func (c *cli) coldMesh(slug string) (Mesh, error) {
	cfg, err := c.loadUserConfig()
	if err != nil {
		return Mesh{}, err
	}
	m, err := pickMesh(cfg, slug)
	if err != nil {
		return Mesh{}, err
	}
	return *m, nil
}

// noteColdPath says, once, why a verb that would use the daemon talks to
// the broker directly. It is said only when that happens: a verb the daemon
// alone can serve fails with the reason instead.
func (c *cli) noteColdPath() {
	c.coldNoteOnce.Do(func() {
		r := c.daemonResult
		switch {
		case r.State == "" || r.usable():
		case r.State == daemonDown:
			c.infof("daemon not running (%s) — using the direct broker connection", r.Reason)
		default:
			c.warnf("%s: %s — using the direct broker connection (see %s)", r.State, r.Reason, c.Paths().LogFile())
		}
	})
}

// daemonAbsence says why the daemon is not there, for a verb that needs it,
// and what to do.
func (c *cli) daemonAbsence() (why string, hints []string) {
	r := c.daemonResult
	logHint := "its log: " + c.Paths().LogFile()
	switch {
	case c.daemonMode() == modeNoDaemon:
		return "--no-daemon (or CLAUDEMESH_NO_DAEMON=1) keeps it out", []string{"drop --no-daemon (and start the daemon if it is not running: claudemesh daemon up)"}
	case r.State == "" || r.State == daemonDown:
		return "it is not running", []string{hintStartDaemon}
	case r.State == daemonUnresponsive:
		return r.Reason, []string{logHint}
	case r.State == daemonServiceNotReady:
		return "its service is not answering (" + r.Reason + ")", []string{logHint}
	}
	return "it could not be started (" + r.Reason + ")", []string{hintStartDaemon, logHint}
}

// withCold runs fn on a one-shot broker connection to mesh.
func (c *cli) withCold(ctx context.Context, m Mesh, fn func(cl *ColdLink) error) error {
	c.noteColdPath()
	host, _ := os.Hostname()
	cwd, _ := os.Getwd()
	cl, err := dialCold(ctx, m, os.Getpid(), cwd, host)
	if err != nil {
		return exitError(exitNetwork, fmt.Errorf("mesh %s: cannot reach the broker at %s: %s", m.Slug, m.BrokerURL, dialProblem(err)),
			c.brokerUnreachableHint(m))
	}
	defer cl.Close()
	return fn(cl)
}

// dialProblem is the part of a dial error a user can act on: the network
// operation that failed ("dial tcp 127.0.0.1:7900: connect: connection
// refused"), without the layers of WebSocket and HTTP around it.
func dialProblem(err error) string {
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Error()
	}
	return err.Error()
}

// brokerUnreachableHint: the embedded broker runs inside the daemon, so
// without the daemon it is not there at all; any other broker may be down
// or out of reach.
func (c *cli) brokerUnreachableHint(m Mesh) string {
	if cfg, err := loadConfig(c.Paths().MachineConfigFile()); err == nil && cfg.Broker != nil {
		if u, _ := embeddedBrokerURLs(cfg.Broker.Listen); u == m.BrokerURL {
			return "mesh " + m.Slug + "'s broker runs inside the daemon: start it with 'claudemesh daemon up'"
		}
	}
	return "is the broker running and reachable from here? 'claudemesh status' checks every mesh's"
}

// warmOrCold runs warm with the daemon when this invocation uses it, else
// cold on a one-shot broker connection to mesh (--mesh, or the only one).
func (c *cli) warmOrCold(ctx context.Context, mesh string, warm func(*DaemonClient) error, cold func(Mesh, *ColdLink) error) error {
	if err := c.needMesh(mesh); err != nil {
		return err
	}
	cl, err := c.daemon(ctx)
	if err != nil {
		return err
	}
	if cl != nil {
		return warm(cl)
	}
	m, err := c.coldMesh(mesh)
	if err != nil {
		return err
	}
	return brokerRefusal(c.withCold(ctx, m, func(l *ColdLink) error { return cold(m, l) }))
}

// brokerRefusal gives a broker's error frame, met on a direct connection,
// its exit code (not found 5, forbidden 7) and the broker's own words.
func brokerRefusal(err error) error {
	var be *BrokerError
	if !errors.As(err, &be) {
		return err
	}
	msg := cmp.Or(be.Message, be.Code)
	code := exitFailure
	switch be.Code {
	case codeForbidden:
		code = exitPermission
	case codeNotFound:
		code = exitNotFound
	}
	return exitError(code, errors.New(msg))
}

// coldRequest is one request/reply on a cold link with the usual timeout.
func coldRequest(ctx context.Context, cl *ColdLink, frame any, replyTypes ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return cl.Request(ctx, frame, replyTypes...)
}

// waitHealth polls the daemon's health every so often until done holds or
// budget runs out, and returns the last health it read; the error is the
// last failed read when none succeeded.
func waitHealth(ctx context.Context, cl *DaemonClient, budget, every time.Duration, done func(HealthReply) bool) (HealthReply, error) {
	deadline := time.Now().Add(budget)
	var last HealthReply
	var lastErr error = errors.New("no answer")
	for {
		h, err := cl.Health(ctx)
		if err == nil {
			last, lastErr = h, nil
			if done(h) {
				return h, nil
			}
		} else if lastErr != nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			return last, lastErr
		}
		select {
		case <-ctx.Done():
			return last, lastErr
		case <-time.After(every):
		}
	}
}

// ipcFailure turns an IPC error into a CLI error with a fitting exit code.
func ipcFailure(err error) error {
	var ie *IPCError
	if !errors.As(err, &ie) {
		return exitError(exitFailure, err)
	}
	code := exitFailure
	switch {
	case ie.Status == 404:
		code = exitNotFound
	case ie.Status == 400:
		code = exitUsage
	case ie.Status == 401 || ie.Status == 403:
		code = exitAuth
	case ie.Status == 502 || ie.Status == 503 || ie.Status == 504:
		code = exitNetwork
	}
	msg := ie.Message
	if bc, _ := ie.Body["broker_code"].(string); bc != "" {
		msg = strings.TrimPrefix(msg, "broker: "+bc+": ") // the broker's own words
	}
	if msg == "" {
		msg = ie.Code
	}
	var hints []string
	if att, ok := ie.Body["attached"].([]any); ok && len(att) > 0 {
		var s []string
		for _, a := range att {
			s = append(s, fmt.Sprint(a))
		}
		if ie.Code == "mesh_required" {
			hints = append(hints, "pass --mesh (joined: "+strings.Join(s, ", ")+")")
		} else {
			hints = append(hints, "joined: "+strings.Join(s, ", "))
		}
	}
	switch {
	case ie.Code == "broker_unavailable":
		hints = append(hints, "see 'claudemesh status' for the broker links")
	case ie.Status == 413:
		hints = append(hints, hintLongMessage)
	case ie.Code == "to_self":
		hints = append(hints, "to reach your other sessions: claudemesh send --self <your member key>")
	case ie.Code == "banned":
		hints = append(hints, "an owner or admin of the mesh can let you back in with 'claudemesh unban <you>'; then reconnect: claudemesh daemon down && claudemesh daemon up")
	}
	return exitError(code, errors.New(msg), hints...)
}

// notFoundHint adds hint to err when err is a not-found (exit 5) without a
// hint of its own: where the verb's names or ids can be looked up.
func notFoundHint(err error, hint string) error {
	var ce *cliError
	if exitCodeOf(err) != exitNotFound || errors.As(err, &ce) && len(ce.hints) > 0 {
		return err
	}
	return withHint(err, hint)
}

// daemon verbs.

type daemonUpFlags struct {
	foreground   bool
	noTCP        bool
	tcpPort      int
	publicHealth bool
	mesh, name   string
}

func setupDaemonUp(fs *flagSet) runFunc {
	var f daemonUpFlags
	fs.BoolVar(&f.foreground, "foreground", false, "stay in the foreground, logging to stderr")
	fs.BoolVar(&f.noTCP, "no-tcp", false, "serve IPC on the unix socket only")
	fs.IntVar(&f.tcpPort, "tcp-port", defaultTCPPort, "loopback TCP port for IPC (taken → any free port)")
	fs.BoolVar(&f.publicHealth, "public-health", false, "let /v1/health answer on TCP without the local token")
	fs.StringVar(&f.mesh, "mesh", "", "mesh slug")
	fs.StringVar(&f.name, "name", "", "display name")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("'daemon up' takes no arguments")
		}
		if f.mesh != "" {
			c.warnf("--mesh is ignored: the daemon attaches to every joined mesh")
		}
		if f.name != "" {
			c.warnf("--name is ignored: the daemon uses each mesh's member name")
		}
		if f.foreground {
			return runDaemonForeground(ctx, c, f)
		}
		return runDaemonDetached(ctx, c, f)
	}
}

func runDaemonForeground(ctx context.Context, c *cli, f daemonUpFlags) error {
	log := slog.New(slog.NewJSONHandler(c.env.Stderr, nil))
	d := NewDaemon(DaemonOptions{
		Paths: c.Paths(), NoTCP: f.noTCP, TCPPort: f.tcpPort, PublicHealth: f.publicHealth, Log: log,
	})
	err := d.Run(ctx)
	var running *DaemonRunningError
	if errors.As(err, &running) {
		return exitError(exitFailure, err, "stop it with 'claudemesh daemon down'")
	}
	if err != nil {
		log.Error("daemon_failed", "err", err.Error())
	}
	return err
}

func runDaemonDetached(ctx context.Context, c *cli, f daemonUpFlags) error {
	paths := c.Paths()
	if cl := c.runningDaemon(ctx); cl != nil {
		h, _ := cl.Health(ctx)
		if c.jsonMode() {
			return c.printJSON(map[string]any{"ok": true, "already_running": true, "pid": h.Pid, "log": paths.LogFile()})
		}
		c.printf("daemon already running (pid %d)\n", h.Pid)
		return nil
	}
	// The config the daemon would read: a broken one is reported here, with
	// its own exit code and hint, not as a daemon that died at start.
	if _, err := loadConfig(paths.MachineConfigFile()); err != nil {
		return err
	}
	args := []string{"daemon", "up", "--foreground", fmt.Sprintf("--tcp-port=%d", f.tcpPort)}
	if f.noTCP {
		args = append(args, "--no-tcp")
	}
	if f.publicHealth {
		args = append(args, "--public-health")
	}
	exe, _ := os.Executable()
	var logStart int64
	if st, err := os.Stat(paths.LogFile()); err == nil {
		logStart = st.Size()
	}
	pid, exited, err := startDetachedDaemon(exe, paths, daemonSpawnEnv(os.Environ()), args)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return exitError(exitIO, err, "the daemon dir "+paths.DaemonDir+" must be a directory this user can write (CLAUDEMESH_DAEMON_DIR moves it)")
		}
		return exitError(exitFailure, err)
	}
	dc := newDaemonConnector(paths, c.env.Getenv)
	if !dc.waitUp(ctx, defaultSpawnBudget, exited) {
		problem, reason := fmt.Sprintf("did not answer within %s", defaultSpawnBudget), "not_answering"
		select {
		case <-exited:
			problem, reason = "exited during start-up", "exited"
		default:
		}
		if c.jsonMode() {
			_ = c.printJSON(map[string]any{"ok": false, "detached": true, "pid": pid, "reason": reason, "log": paths.LogFile()})
			return silentExit(exitFailure)
		}
		hints := []string{"its log: " + paths.LogFile()}
		if tail := logTail(paths.LogFile(), logStart, 5); tail != "" {
			hints = append(hints, "what it logged:\n"+tail)
		}
		return exitError(exitFailure, fmt.Errorf("daemon (pid %d) %s", pid, problem), hints...)
	}
	cl := newDaemonClient(paths.SocketFile(), "")
	h, _ := cl.Health(ctx)
	if h.Pid != 0 && h.Pid != pid {
		// Another daemon won the race; ours exited on the lock.
		pid = h.Pid
	}
	if c.jsonMode() {
		return c.printJSON(map[string]any{"ok": true, "detached": true, "pid": pid, "log": paths.LogFile()})
	}
	c.printf("daemon started (pid %d)\n  log:  %s\n  stop: claudemesh daemon down\n", pid, paths.LogFile())
	return nil
}

// logTail returns the last n lines a file got after offset.
func logTail(path string, offset int64, n int) string {
	data, err := os.ReadFile(path)
	if err != nil || int64(len(data)) <= offset {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data[offset:]), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

func setupDaemonDown(fs *flagSet) runFunc {
	return func(ctx context.Context, c *cli, args []string) error {
		sessions := 0
		if cl := c.runningDaemon(ctx); cl != nil {
			if h, err := cl.Health(ctx); err == nil {
				sessions = h.Sessions
			}
			cl.http.CloseIdleConnections()
		}
		pid, err := stopRunningDaemon(ctx, c)
		switch {
		case err == nil && pid == 0:
			if c.jsonMode() {
				return c.printJSON(map[string]any{"stopped": false, "reason": "not_running"})
			}
			c.printf("daemon: not running\n")
			return nil
		case errors.Is(err, errDaemonStopTimeout) && c.jsonMode():
			_ = c.printJSON(map[string]any{"stopped": false, "pid": pid, "reason": "shutdown_timeout"})
			return silentExit(exitFailure)
		case err != nil:
			return err
		}
		if c.jsonMode() {
			return c.printJSON(map[string]any{"stopped": true, "pid": pid, "sessions": sessions})
		}
		c.printf("daemon: stopped (was pid %d)\n", pid)
		if sessions > 0 {
			// They stay registered (sessions.json) and come back with the
			// daemon; until then nothing reaches them.
			what := fmt.Sprintf("%d launched sessions stay registered but get", sessions)
			if sessions == 1 {
				what = "1 launched session stays registered but gets"
			}
			c.printf("  %s no messages until the daemon is back: claudemesh daemon up\n", what)
		}
		return nil
	}
}

// errDaemonStopTimeout: the daemon was signalled but still holds its lock.
var errDaemonStopTimeout = errors.New("the daemon did not stop in time")

// stopRunningDaemon stops the daemon holding the lock (SIGTERM, then waits
// for the lock to be free) and returns its pid; 0 when none was running.
// `daemon down` and the service installer (which replaces a running daemon
// by the service's, claudemesh 1.30.1) share it.
func stopRunningDaemon(ctx context.Context, c *cli) (int, error) {
	paths := c.Paths()
	if !daemonLockHeld(paths) {
		return 0, nil
	}
	pid := readPidFile(paths.PidFile())
	if pid == 0 {
		if cl := c.runningDaemon(ctx); cl != nil {
			h, _ := cl.Health(ctx)
			pid = h.Pid
		}
	}
	if pid <= 0 {
		return 0, exitError(exitFailure, errors.New("a daemon holds the lock but its pid is unknown"), "its log: "+paths.LogFile())
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return pid, exitError(exitPermission, fmt.Errorf("cannot signal pid %d: %w", pid, err))
	}
	wait := daemonShutdownTimeout + 5*time.Second
	deadline := time.Now().Add(wait)
	for daemonLockHeld(paths) {
		if time.Now().After(deadline) {
			return pid, exitError(exitFailure, fmt.Errorf("%w: pid %d still runs after %s", errDaemonStopTimeout, pid, wait))
		}
		select {
		case <-ctx.Done():
			return pid, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return pid, nil
}

func setupDaemonStatus(fs *flagSet) runFunc {
	return func(ctx context.Context, c *cli, args []string) error {
		cl := c.runningDaemon(ctx)
		if cl == nil && daemonLockHeld(c.Paths()) {
			return exitError(exitFailure, errors.New(unresponsiveReason(c.Paths())), "its log: "+c.Paths().LogFile())
		}
		if cl == nil {
			if c.jsonMode() {
				_ = c.printJSON(map[string]any{"running": false})
				return silentExit(exitFailure)
			}
			c.printf("daemon: not running\n")
			return silentExit(exitFailure)
		}
		h, err := cl.Health(ctx)
		if err != nil {
			if c.jsonMode() {
				_ = c.printJSON(map[string]any{"running": true, "ipc_error": err.Error()})
				return silentExit(exitFailure)
			}
			return exitError(exitFailure, err)
		}
		if c.jsonMode() {
			return c.printJSON(map[string]any{"running": true, "pid": h.Pid, "health": h})
		}
		c.printf("daemon: running (pid %d, version %s, up %s)\n", h.Pid, h.Version, time.Duration(h.Uptime)*time.Second)
		c.printf("  socket: %s\n", c.Paths().SocketFile())
		if h.TCPPort > 0 {
			c.printf("  tcp:    127.0.0.1:%d\n", h.TCPPort)
		}
		c.printf("  log:    %s\n", c.Paths().LogFile())
		printLinks(c, h)
		return nil
	}
}

func setupDaemonVersion(fs *flagSet) runFunc {
	return func(ctx context.Context, c *cli, args []string) error {
		cl := c.runningDaemon(ctx)
		if cl == nil {
			return exitError(exitFailure, errors.New("daemon not running"), hintStartDaemon)
		}
		v, err := cl.Version(ctx)
		if err != nil {
			return ipcFailure(err)
		}
		if c.jsonMode() {
			return c.printJSON(v)
		}
		c.printf("daemon %s (ipc %s, schema %d)\n", v.DaemonVersion, v.IPCAPI, v.SchemaVersion)
		return nil
	}
}

// printLinks prints the embedded broker, mesh links and sessions from a
// health report.
func printLinks(c *cli, h HealthReply) {
	if eb := h.EmbeddedBroker; eb != nil {
		if eb.State == embeddedServing {
			c.printf("  %s embedded broker: %s (data %s)\n", c.paint(colorGreen, "●"), eb.URL, eb.Data)
		} else {
			c.printf("  %s embedded broker on %s: %s\n", c.paint(colorRed, "●"), eb.Listen, eb.Error)
		}
	}
	if len(h.Links) == 0 {
		c.printf("  meshes: none joined\n")
	}
	for _, l := range h.Links {
		who := "mesh " + l.Mesh
		if l.Kind == linkSession {
			who = "  session " + shortID(l.SessionID) + " on " + l.Mesh
		}
		line := fmt.Sprintf("  %s %s: %s", c.stateDot(string(l.State)), who, l.State)
		if l.LastError != "" {
			line += " (" + terminalLine(l.LastError) + ")"
		}
		c.printf("%s\n", line)
	}
	c.printf("  sessions: %d\n", h.Sessions)
}

func (c *cli) stateDot(state string) string {
	switch LinkState(state) {
	case LinkOpen:
		return c.paint(colorGreen, "●")
	case LinkConnecting, LinkReconnecting:
		return c.paint(colorYellow, "●")
	}
	return c.paint(colorRed, "●")
}

// status: the daemon, its links and sessions at a glance; without a daemon,
// a direct reachability check of every mesh's broker.
func setupStatus(fs *flagSet) runFunc {
	return func(ctx context.Context, c *cli, args []string) error {
		cfg, err := c.loadUserConfig()
		if err != nil {
			return err
		}
		var cl *DaemonClient
		if c.daemonMode() != modeNoDaemon {
			cl = c.runningDaemon(ctx)
		}
		out := map[string]any{"config": c.Paths().ConfigFile(), "meshes": cfg.Slugs()}
		healthy := true
		if cl != nil {
			h, err := cl.Health(ctx)
			if err != nil {
				return ipcFailure(err)
			}
			out["daemon"] = map[string]any{"running": true, "pid": h.Pid, "version": h.Version, "sessions": h.Sessions, "links": h.Links, "brokers": h.Brokers}
			for _, st := range h.Brokers {
				healthy = healthy && st == string(LinkOpen)
			}
			healthy = healthy && (h.EmbeddedBroker == nil || h.EmbeddedBroker.State == embeddedServing)
			if c.jsonMode() {
				_ = c.printJSON(out)
			} else {
				c.printf("claudemesh %s\n", version)
				c.printf("daemon: running (pid %d, version %s)\n", h.Pid, h.Version)
				printLinks(c, h)
			}
		} else {
			if c.daemonMode() == modeStrict {
				return exitError(exitFailure, errors.New("daemon not running and --strict refuses the direct broker path"), hintStartDaemon)
			}
			reach := map[string]string{}
			slugs := cfg.Slugs()
			sort.Strings(slugs)
			for _, m := range cfg.Meshes {
				start := time.Now()
				err := c.withCold(ctx, m, func(*ColdLink) error { return nil })
				if err != nil {
					reach[m.Slug] = err.Error()
					healthy = false
				} else {
					reach[m.Slug] = fmt.Sprintf("reachable (%dms)", time.Since(start).Milliseconds())
				}
			}
			out["daemon"] = map[string]any{"running": false}
			out["brokers"] = reach
			if c.jsonMode() {
				_ = c.printJSON(out)
			} else {
				c.printf("claudemesh %s\n", version)
				c.printf("daemon: not running (start it with 'claudemesh daemon up')\n")
				if len(slugs) == 0 {
					c.printf("  meshes: none joined\n")
				}
				for _, s := range slugs {
					dot := c.paint(colorGreen, "●")
					if !strings.HasPrefix(reach[s], "reachable") {
						dot = c.paint(colorRed, "●")
					}
					c.printf("  %s mesh %s: %s\n", dot, s, reach[s])
				}
			}
		}
		if !healthy {
			return silentExit(exitFailure)
		}
		return nil
	}
}
