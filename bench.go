// `claudemesh bench`: the project's load tool, for the 100 peers × 1,000 DMs load shape
// (100 peers × 1,000 messages each, 100 % delivered, p99 < 100 ms).
//
// Policy:
//   - By default the broker runs in this process, on 127.0.0.1:0 with a
//     temp data dir (removed afterwards) and its send and handshake limits
//     raised for the run; --broker measures a running broker instead, whose
//     own limits then apply (`broker serve --send-burst … --handshake-burst …`).
//   - The peers are protocol clients on real WebSockets, doing what a
//     daemon does on the wire without its stores: the mesh is created with
//     POST /cli/mesh/create, members enroll through one invite and
//     POST /join, each says a signed hello, sends crypto_box DMs, and
//     answers every push with client_ack.
//   - Sending is open loop: every peer sends its messages to other peers on
//     a fixed schedule, all peers together --rate messages a second, and
//     never waits for an ack before the next one, so a slow broker shows up
//     as latency rather than as a slower load.
//   - Every message is checked: it must arrive exactly once, at the peer it
//     was sent to, and decrypt to what was sent. Latency is from just
//     before the send is written to the push being read by its recipient.
//   - The run fails (exit 1) when anything is lost, duplicated, misdelivered
//     or undecryptable, or when the broker refuses a send.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

type benchFlags struct {
	peers, messages, inflight int
	rate                      float64
	curve                     string
	broker, createToken       string
	drain                     time.Duration
}

func setupBench(fs *flagSet) runFunc {
	var f benchFlags
	fs.IntVar(&f.peers, "peers", 100, "protocol clients in the mesh")
	fs.IntVar(&f.messages, "messages", 1000, "DMs each peer sends (per step of --curve)")
	fs.Float64Var(&f.rate, "rate", defaultBenchRate, "messages per second, all peers together (open loop)")
	fs.IntVar(&f.inflight, "inflight", 0, "closed loop: each peer keeps this many sends unacked, unpaced (0: open loop at --rate)")
	fs.StringVar(&f.curve, "curve", "", "step the offered rate through these comma-separated rates (msg/s), one run each on the same mesh")
	fs.StringVar(&f.broker, "broker", "", `measure this running broker (ws://HOST:PORT/ws; several comma-separated URLs, replicas of one store, share the peers round robin), or "`+benchBrokerProcess+`" to start one in a process of its own; default: one in this process`)
	fs.StringVar(&f.createToken, "create-token", "", "the broker's mesh-creation token (a non-loopback --broker)")
	fs.DurationVar(&f.drain, "drain", 30*time.Second, "how long to wait for deliveries after the last send")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("bench takes no arguments (got %q)", strings.Join(args, " "))
		}
		curve, err := parseBenchCurve(f.curve)
		if err != nil {
			return err
		}
		opts := benchOptions{Peers: f.peers, Messages: f.messages, Rate: f.rate, Inflight: f.inflight, Curve: curve,
			BrokerURL: f.broker, CreateToken: f.createToken, Drain: f.drain}
		if opts.CreateToken == "" {
			opts.CreateToken = c.env.Getenv("CLAUDEMESH_CREATE_TOKEN")
		}
		if err := opts.check(); err != nil {
			return err
		}
		if !c.jsonMode() {
			c.printf("claudemesh bench: %s, %s\n", opts.shapeLabel(), opts.brokerLabel())
		}
		reports, err := runBench(ctx, opts)
		if err != nil {
			return exitError(exitFailure, fmt.Errorf("bench: %w", err))
		}
		var failed *benchReport
		for i := range reports {
			if !reports[i].OK() {
				failed = &reports[i]
				break
			}
		}
		if c.jsonMode() {
			var out any = reports[0]
			if len(opts.Curve) > 0 {
				out = reports
			}
			if err := c.printJSON(out); err != nil {
				return err
			}
			if failed != nil {
				return silentExit(exitFailure)
			}
			return nil
		}
		if len(opts.Curve) > 0 {
			c.printBenchCurve(reports)
		} else {
			c.printBenchReport(reports[0])
		}
		if failed != nil {
			err := exitError(exitFailure, errors.New(failed.failure()))
			if strings.Contains(failed.FirstRefusal, codeRateLimit) {
				err = withHint(err, "the broker's send limits apply: run it with --send-burst and --send-per-minute raised, or lower --rate")
			}
			return err
		}
		return nil
	}
}

// defaultBenchRate is the load the standard shape is measured at: 100 peers
// each sending 20 messages a second, a busy mesh of agents.
const defaultBenchRate = 2000

// benchBrokerProcess is the --broker value that starts a broker in a
// process of its own (bench_broker.go).
const benchBrokerProcess = "process"

// benchOptions is one load run, or one per step of a curve.
type benchOptions struct {
	Peers, Messages int
	Rate            float64       // messages per second, all peers together
	Inflight        int           // > 0: closed loop, this many unacked sends per peer
	Curve           []float64     // when set, one open-loop run per rate instead of Rate
	BrokerURL       string        // "" starts a broker in this process; benchBrokerProcess in its own
	CreateToken     string        // for a non-loopback BrokerURL
	Drain           time.Duration // wait for deliveries after the last send
}

func (o benchOptions) check() error {
	switch {
	case o.Peers < 2 || o.Peers > maxInviteUses:
		return usageError("--peers must be 2..%d", maxInviteUses)
	case o.Messages < 1:
		return usageError("--messages must be at least 1")
	case o.Rate <= 0:
		return usageError("--rate must be positive")
	case o.Inflight < 0:
		return usageError("--inflight must be 0 (open loop) or more")
	case o.Inflight > 0 && len(o.Curve) > 0:
		return usageError("--curve steps an open loop's rate; it does not combine with --inflight")
	case o.Drain <= 0:
		return usageError("--drain must be positive")
	}
	return nil
}

// parseBenchCurve reads --curve: rates in msg/s, each positive.
func parseBenchCurve(s string) ([]float64, error) {
	if s == "" {
		return nil, nil
	}
	var rates []float64
	for _, part := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(part), 64)
		if err != nil || v <= 0 {
			return nil, usageError("--curve wants positive rates separated by commas, such as 2000,4000,8000 (got %q)", part)
		}
		rates = append(rates, v)
	}
	return rates, nil
}

func (o benchOptions) shapeLabel() string {
	switch {
	case len(o.Curve) > 0:
		return fmt.Sprintf("%d peers × %d DMs per step, offered %s msg/s", o.Peers, o.Messages, strings.Trim(fmt.Sprint(o.Curve), "[]"))
	case o.Inflight > 0:
		return fmt.Sprintf("%d peers × %d DMs, %d in flight per peer (closed loop)", o.Peers, o.Messages, o.Inflight)
	}
	return fmt.Sprintf("%d peers × %d DMs at %g msg/s", o.Peers, o.Messages, o.Rate)
}

func (o benchOptions) brokerLabel() string {
	switch o.BrokerURL {
	case "":
		return "broker in this process"
	case benchBrokerProcess:
		return "broker in its own process"
	}
	return "broker " + o.BrokerURL
}

// benchReport is what a run measured. Latencies are milliseconds from
// writing the send to the recipient reading the push.
type benchReport struct {
	Broker          string  `json:"broker"`
	Peers           int     `json:"peers"`
	MessagesPerPeer int     `json:"messages_per_peer"`
	TargetRate      float64 `json:"target_rate,omitempty"` // open loop
	Inflight        int     `json:"inflight,omitempty"`    // closed loop
	Sent            int64   `json:"sent"`
	Acked           int64   `json:"acked"`
	Refused         int64   `json:"refused"`
	Delivered       int64   `json:"delivered"`
	Lost            int64   `json:"lost"`
	Duplicated      int64   `json:"duplicated"`
	Misdelivered    int64   `json:"misdelivered"`
	Undecryptable   int64   `json:"undecryptable"`
	DeliveredPct    float64 `json:"delivered_pct"`
	P50Ms           float64 `json:"p50_ms"`
	P95Ms           float64 `json:"p95_ms"`
	P99Ms           float64 `json:"p99_ms"`
	MaxMs           float64 `json:"max_ms"`
	// Across replicas (several --broker URLs): the messages whose sender
	// and recipient were connected to different URLs.
	CrossReplica      int64   `json:"cross_replica,omitempty"`
	CrossReplicaP50Ms float64 `json:"cross_replica_p50_ms,omitempty"`
	CrossReplicaP99Ms float64 `json:"cross_replica_p99_ms,omitempty"`
	DurationS         float64 `json:"duration_s"`
	Throughput        float64 `json:"throughput_msgs_per_s"`
	FirstRefusal      string  `json:"first_refusal,omitempty"`
	// The process's own figures, when the broker ran in it: they include
	// the peers, which share the process.
	ProcessCPUS      float64 `json:"process_cpu_s,omitempty"`
	ProcessRSSMB     float64 `json:"process_rss_mb,omitempty"`
	ProcessPeakRSSMB float64 `json:"process_peak_rss_mb,omitempty"`
	// The broker's own figures, when it ran in a process of its own.
	BrokerCPUS      float64 `json:"broker_cpu_s,omitempty"`
	BrokerRSSMB     float64 `json:"broker_rss_mb,omitempty"`
	BrokerPeakRSSMB float64 `json:"broker_peak_rss_mb,omitempty"`
	BrokerStoreMB   float64 `json:"broker_store_mb,omitempty"` // its data dir after the run
}

// OK reports whether every message arrived exactly once, intact.
func (r benchReport) OK() bool { return r.failure() == "" }

func (r benchReport) failure() string {
	var bad []string
	add := func(n int64, what string) {
		if n > 0 {
			bad = append(bad, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(r.Lost, "lost")
	add(r.Duplicated, "duplicated")
	add(r.Misdelivered, "misdelivered")
	add(r.Undecryptable, "undecryptable")
	add(r.Refused, "refused by the broker")
	if len(bad) == 0 {
		return ""
	}
	return fmt.Sprintf("of %d messages: %s", r.Sent, strings.Join(bad, ", "))
}

// brokerCPUPct is the broker's CPU over the run as a share of one core,
// or -1 when it was not measured apart from the peers (a broker process
// always has a resident set; its CPU is counted in 10 ms ticks and may be
// 0 over a short run).
func (r benchReport) brokerCPUPct() float64 {
	if r.BrokerRSSMB == 0 {
		return -1
	}
	return 100 * r.BrokerCPUS / max(r.DurationS, 1e-9)
}

func (c *cli) printBenchReport(r benchReport) {
	c.printf("  delivered   %d / %d (%.2f %%), %d lost, %d duplicated, %d refused\n", r.Delivered, r.Sent, r.DeliveredPct, r.Lost, r.Duplicated, r.Refused)
	c.printf("  latency     p50 %.2f ms  p95 %.2f ms  p99 %.2f ms  max %.2f ms  (send → push received)\n", r.P50Ms, r.P95Ms, r.P99Ms, r.MaxMs)
	if r.CrossReplica > 0 {
		c.printf("  across      %d messages between peers on different URLs: p50 %.2f ms  p99 %.2f ms\n", r.CrossReplica, r.CrossReplicaP50Ms, r.CrossReplicaP99Ms)
	}
	c.printf("  throughput  %.0f msg/s over %.1f s\n", r.Throughput, r.DurationS)
	if r.ProcessCPUS > 0 {
		c.printf("  process     CPU %.1f s (%.0f %% of one core), RSS %.0f MB, peak %.0f MB — broker and peers together\n",
			r.ProcessCPUS, 100*r.ProcessCPUS/max(r.DurationS, 1e-9), r.ProcessRSSMB, r.ProcessPeakRSSMB)
	}
	if r.BrokerRSSMB > 0 {
		c.printf("  broker      CPU %.1f s (%.0f %% of one core), RSS %.0f MB, peak %.0f MB, store %.1f MB\n",
			r.BrokerCPUS, r.brokerCPUPct(), r.BrokerRSSMB, r.BrokerPeakRSSMB, r.BrokerStoreMB)
	}
	if r.FirstRefusal != "" {
		c.printf("  first refusal: %s\n", r.FirstRefusal)
	}
	if r.OK() {
		c.printf("%s every message arrived exactly once\n", c.paint(colorGreen, "✔"))
	}
}

// printBenchCurve prints one line per step: what was offered against what
// the broker achieved.
func (c *cli) printBenchCurve(rs []benchReport) {
	c.printf("  %9s %9s %9s %9s %9s %11s  %s\n", "offered", "achieved", "p50 ms", "p99 ms", "max ms", "broker CPU", "delivered")
	ok := true
	for _, r := range rs {
		cpu := "—"
		if pct := r.brokerCPUPct(); pct >= 0 {
			cpu = fmt.Sprintf("%.0f %%", pct)
		}
		c.printf("  %9.0f %9.0f %9.2f %9.2f %9.1f %11s  %d/%d\n", r.TargetRate, r.Throughput, r.P50Ms, r.P99Ms, r.MaxMs, cpu, r.Delivered, r.Sent)
		if !r.OK() {
			ok = false
			c.printf("    %s\n", r.failure())
		}
	}
	if ok {
		c.printf("%s every message of every step arrived exactly once\n", c.paint(colorGreen, "✔"))
	}
}

// benchSetupWait bounds enrolling and connecting the peers; a broker with
// default handshake limits admits about two a second after its burst.
const benchSetupWait = 3 * time.Minute

// runBenchLoad runs one load test and reports it. An error means the run
// could not be set up; a run that loses messages returns a report that is
// not OK.
func runBenchLoad(ctx context.Context, o benchOptions) (benchReport, error) {
	o.Curve = nil
	rs, err := runBench(ctx, o)
	if err != nil {
		return benchReport{}, err
	}
	return rs[0], nil
}

// runBench sets up the broker and the mesh once and runs one round per
// step of o.Curve, or a single round.
func runBench(ctx context.Context, o benchOptions) ([]benchReport, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	run := &benchRun{opts: o, url: o.BrokerURL}
	switch o.BrokerURL {
	case "":
		u, stop, err := startBenchBroker(o.Peers)
		if err != nil {
			return nil, err
		}
		defer stop()
		run.url, run.inProcess = u, true
	case benchBrokerProcess:
		bp, err := spawnBenchBroker(ctx, o.Peers)
		if err != nil {
			return nil, err
		}
		defer bp.stop()
		run.url, run.proc = bp.url, bp
	}
	run.urls = strings.Split(run.url, ",")
	run.url = run.urls[0]
	if err := run.enroll(ctx); err != nil {
		return nil, err
	}
	defer run.close()
	if err := run.connect(ctx); err != nil {
		return nil, err
	}
	rates := o.Curve
	if len(rates) == 0 {
		rates = []float64{o.Rate}
	}
	var reports []benchReport
	for i, rate := range rates {
		r, err := run.round(ctx, i, rate)
		if err != nil {
			return nil, err
		}
		reports = append(reports, r)
		if ctx.Err() != nil {
			break
		}
	}
	return reports, nil
}

// startBenchBroker runs a broker on 127.0.0.1:0 in a temp dir, with limits
// that let the run's load through.
func startBenchBroker(peers int) (url string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "claudemesh-bench-")
	if err != nil {
		return "", nil, err
	}
	b, err := newBroker(BrokerOptions{DataDir: dir, SendBurst: benchUnlimited, SendPerMinute: benchUnlimited,
		HandshakeBurst: benchUnlimited, HandshakePerMinute: benchUnlimited, MaxConnectionsPerMesh: peers + 16})
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Close()
		os.RemoveAll(dir)
		return "", nil, err
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = b.Serve(l) }()
	return "ws://" + l.Addr().String() + "/ws", func() {
		b.Close()
		<-served
		os.RemoveAll(dir)
	}, nil
}

// benchUnlimited is a rate limit no run reaches.
const benchUnlimited = 1 << 30

// benchRun is one run's mesh and peers; each round of sends has its own
// bookkeeping.
type benchRun struct {
	opts      benchOptions
	url       string
	urls      []string         // every replica's URL; peer i connects to urls[i%len]
	inProcess bool             // the broker runs in this process
	proc      *benchBrokerProc // the broker runs in a process of its own
	peers     []*benchPeer
	cur       atomic.Pointer[benchRound] // the round pushes and acks count for
}

// benchRound is one timed batch of sends: every message's target, when it
// was sent (unix ns), how often it arrived and how long it took the first
// time, by [sender][sequence].
type benchRound struct {
	id       int
	rate     float64 // open loop
	inflight int     // closed loop
	target   [][]int32
	sentAt   [][]atomic.Int64
	recv     [][]atomic.Int32
	lat      [][]atomic.Int64
	// credits, closed loop: per sender, one token per send not yet acked.
	credits []chan struct{}

	sent, acked, refused, delivered atomic.Int64
	duplicated, misdelivered, bad   atomic.Int64
	refusalOnce                     sync.Once
	firstRefusal                    string
	progress                        chan struct{} // a delivery or an ack happened
}

// benchPeer is one protocol client: a member of the mesh.
type benchPeer struct {
	idx  int
	mesh Mesh
	key  Keypair
	conn *rpcConn
	// keys holds this peer's crypto_box shared keys, derived before the
	// run starts so that the timed part measures the broker.
	keys *sharedKeyCache
}

// enroll creates the mesh with peer 0 as owner and enrolls the others
// through one invite, as `mesh create`, `invite` and `join` do.
func (r *benchRun) enroll(ctx context.Context) error {
	base, err := brokerHTTPBase(r.url)
	if err != nil {
		return err
	}
	owner := mustNewKeypair()
	slug := "bench-" + randomHex(4)
	ts := time.Now().UnixMilli()
	create := MeshCreateRequest{Slug: slug, Name: slug, Pubkey: owner.PublicHex(), DisplayName: "bench-0", Timestamp: ts,
		Signature: owner.sign(meshCreateSignedString(slug, owner.PublicHex(), ts))}
	headers := map[string]string{}
	if r.opts.CreateToken != "" {
		headers["Authorization"] = "Bearer " + r.opts.CreateToken
	}
	var created MeshCreateResponse
	if err := benchRetry(ctx, func() error { return postBroker(ctx, base, "/cli/mesh/create", headers, create, &created) }); err != nil {
		return fmt.Errorf("create mesh: %w", err)
	}
	m := Mesh{MeshID: created.ID, MemberID: created.MemberID, Slug: slug, Name: slug, Pubkey: owner.PublicHex(),
		SecretKey: owner.SecretHex(), BrokerURL: r.url, RootKey: created.RootKey, InviteVersion: 1}
	r.peers = []*benchPeer{{idx: 0, mesh: m, key: owner, keys: &sharedKeyCache{max: r.opts.Peers}}}

	_, token, err := buildInvite(owner, m.MeshID, slug, r.url, m.RootKey, roleMember, time.Now().Add(time.Hour))
	if err != nil {
		return err
	}
	uses := r.opts.Peers - 1
	ts = time.Now().UnixMilli()
	inv := InviteCreateRequest{Token: token, MaxUses: uses, Timestamp: ts, Signature: owner.sign(inviteCreateSignedString(slug, token, uses, ts))}
	var invited InviteCreateResponse
	if err := benchRetry(ctx, func() error { return postBroker(ctx, base, "/cli/mesh/"+slug+"/invite", nil, inv, &invited) }); err != nil {
		return fmt.Errorf("register invite: %w", err)
	}
	r.peers = append(r.peers, make([]*benchPeer, uses)...)
	return forEachBounded(ctx, 1, r.opts.Peers, func(i int) error {
		kp := mustNewKeypair()
		req := JoinRequest{InviteToken: token, PeerPubkey: kp.PublicHex(), DisplayName: "bench-" + strconv.Itoa(i)}
		var joined JoinResponse
		if err := benchRetry(ctx, func() error { return postBroker(ctx, base, "/join", nil, req, &joined) }); err != nil {
			return fmt.Errorf("join peer %d: %w", i, err)
		}
		pm := m
		pm.MemberID, pm.Pubkey, pm.SecretKey, pm.RootKey = joined.MemberID, kp.PublicHex(), kp.SecretHex(), ""
		r.peers[i] = &benchPeer{idx: i, mesh: pm, key: kp, keys: &sharedKeyCache{max: r.opts.Peers}}
		return nil
	})
}

// connect opens every peer's connection with a signed member hello.
func (r *benchRun) connect(ctx context.Context) error {
	timing := defaultLinkTiming()
	return forEachBounded(ctx, 0, len(r.peers), func(i int) error {
		p := r.peers[i]
		hello := func(now time.Time) (any, error) {
			ts := handshakeTimestamp(now)
			return HelloFrame{Type: frameHello, MeshID: p.mesh.MeshID, MemberID: p.mesh.MemberID, Pubkey: p.key.PublicHex(),
				SessionID: "bench-" + strconv.Itoa(i), Pid: os.Getpid(), PeerType: "ai", Channel: channelDaemon,
				Capabilities: []string{capabilitySystemBatches}, Timestamp: ts,
				Signature: p.key.sign(helloSignedString(p.mesh.MeshID, p.mesh.MemberID, p.key.PublicHex(), ts))}, nil
		}
		return benchRetry(ctx, func() error {
			conn, _, err := dialBroker(ctx, r.urls[i%len(r.urls)], timing, hello, func(c *rpcConn, h frameHead, data []byte) { r.onFrame(p, h, data) })
			if err != nil {
				return err
			}
			p.conn = conn
			return nil
		})
	})
}

func (r *benchRun) close() {
	for _, p := range r.peers {
		if p != nil && p.conn != nil {
			p.conn.close(websocket.StatusNormalClosure, "")
		}
	}
}

// round plans, sends and waits out one batch of sends at rate (open loop)
// or with opts.Inflight sends in flight per peer (closed loop), and
// reports it with the broker's CPU over that time.
func (r *benchRun) round(ctx context.Context, id int, rate float64) (benchReport, error) {
	rd := &benchRound{id: id, rate: rate, inflight: r.opts.Inflight, progress: make(chan struct{}, 1)}
	if err := r.plan(rd); err != nil {
		return benchReport{}, err
	}
	r.cur.Store(rd)
	cpu0, bcpu0 := processCPU(), r.brokerCPU()
	start := time.Now()
	r.send(ctx, rd, start)
	rd.waitDelivered(ctx, r.opts.Drain)
	elapsed := time.Since(start)
	rep := rd.report(r, elapsed)
	switch {
	case r.inProcess:
		rep.Broker = "in-process " + r.url
		rep.ProcessCPUS = (processCPU() - cpu0).Seconds()
		rep.ProcessRSSMB, rep.ProcessPeakRSSMB = processRSS()
	case r.proc != nil:
		rep.Broker = "own process " + r.url
		rep.BrokerCPUS = (r.brokerCPU() - bcpu0).Seconds()
		rep.BrokerRSSMB, rep.BrokerPeakRSSMB = r.proc.rss()
		rep.BrokerStoreMB = r.proc.storeMB()
	}
	return rep, nil
}

// brokerCPU is the CPU time of a broker in its own process so far, or 0.
func (r *benchRun) brokerCPU() time.Duration {
	if r.proc == nil {
		return 0
	}
	return r.proc.cpu()
}

// plan picks every message's target, another peer at random, and derives
// the shared keys the messages will need.
func (r *benchRun) plan(rd *benchRound) error {
	n, m := len(r.peers), r.opts.Messages
	rng := rand.New(rand.NewPCG(uint64(n), uint64(m)+uint64(rd.id)<<32))
	rd.target = make([][]int32, n)
	rd.sentAt = make([][]atomic.Int64, n)
	rd.recv = make([][]atomic.Int32, n)
	rd.lat = make([][]atomic.Int64, n)
	rd.credits = make([]chan struct{}, n)
	for s := range n {
		rd.target[s] = make([]int32, m)
		for k := range m {
			t := (s + 1 + rng.IntN(n-1)) % n
			rd.target[s][k] = int32(t)
			if _, err := r.peers[s].keys.shared(r.peers[s].key, r.peers[t].key.PublicHex()); err != nil {
				return err
			}
			if _, err := r.peers[t].keys.shared(r.peers[t].key, r.peers[s].key.PublicHex()); err != nil {
				return err
			}
		}
		rd.sentAt[s] = make([]atomic.Int64, m)
		rd.recv[s] = make([]atomic.Int32, m)
		rd.lat[s] = make([]atomic.Int64, m)
		if rd.inflight > 0 {
			rd.credits[s] = make(chan struct{}, rd.inflight)
		}
	}
	return nil
}

// benchBody is the text of message k of sender s, about a chat line long.
func benchBody(s, k int) string {
	return fmt.Sprintf("bench message %d from peer %d, about as long as a line of chat", k, s)
}

// benchMessageID names message k of sender s in round rd; it is also the
// send's client_message_id, unique across the rounds of a run.
func benchMessageID(rd, s, k int) string {
	return "bench-" + strconv.Itoa(rd) + "-" + strconv.Itoa(s) + "-" + strconv.Itoa(k)
}

func parseBenchMessageID(id string) (rd, s, k int, ok bool) {
	rest, found := strings.CutPrefix(id, "bench-")
	if !found {
		return 0, 0, 0, false
	}
	parts := strings.Split(rest, "-")
	if len(parts) != 3 {
		return 0, 0, 0, false
	}
	var nums [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 {
			return 0, 0, 0, false
		}
		nums[i] = v
	}
	return nums[0], nums[1], nums[2], true
}

// send runs every peer's schedule. Open loop: message k of peer s is due
// at start + (k·peers + s)/rate, so the peers' sends interleave evenly and
// all of them together keep to the rate. Closed loop: each peer sends as
// soon as it has fewer than inflight sends unacked; a peer whose acks stop
// for the drain time gives up its remaining sends.
func (r *benchRun) send(ctx context.Context, rd *benchRound, start time.Time) {
	n := len(r.peers)
	gap := time.Duration(float64(time.Second) / rd.rate) // between any two sends
	var wg sync.WaitGroup
	for s := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := r.peers[s]
			for k := range r.opts.Messages {
				if rd.inflight > 0 {
					if !rd.takeCredit(ctx, s, r.opts.Drain) {
						return
					}
				} else if d := time.Until(start.Add(gap * time.Duration(k*n+s))); d > 0 {
					select {
					case <-time.After(d):
					case <-ctx.Done():
						return
					}
				}
				to := r.peers[rd.target[s][k]].key.PublicHex()
				nonce, ct, err := p.keys.seal([]byte(benchBody(s, k)), to, p.key)
				if err != nil {
					rd.refuse(s, fmt.Sprintf("seal: %v", err))
					continue
				}
				id := benchMessageID(rd.id, s, k)
				frame := SendFrame{Type: frameSend, ID: id, ClientMessageID: id, TargetSpec: to, Priority: priorityNext,
					Nonce: nonce, Ciphertext: ct}
				rd.sentAt[s][k].Store(time.Now().UnixNano())
				rd.sent.Add(1)
				if err := p.conn.write(ctx, frame); err != nil {
					rd.refuse(s, fmt.Sprintf("write: %v", err))
				}
			}
		}()
	}
	wg.Wait()
}

// takeCredit waits until sender s may have one more send in flight; false
// when none came back within stall or ctx ended.
func (rd *benchRound) takeCredit(ctx context.Context, s int, stall time.Duration) bool {
	select {
	case rd.credits[s] <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(stall)
	defer t.Stop()
	select {
	case rd.credits[s] <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// answered frees a closed loop's credit of sender s: its send was acked
// or refused.
func (rd *benchRound) answered(s int) {
	if rd.inflight == 0 {
		return
	}
	select {
	case <-rd.credits[s]:
	default:
	}
}

func (rd *benchRound) refuse(s int, why string) {
	rd.refused.Add(1)
	rd.refusalOnce.Do(func() { rd.firstRefusal = why })
	rd.answered(s)
	rd.progressed()
}

// onFrame handles what the broker sends a peer: acks of its sends and
// pushes of messages to it, which it checks and acks. Frames of an
// earlier round are acked and otherwise ignored.
func (r *benchRun) onFrame(p *benchPeer, h frameHead, data []byte) {
	rd := r.cur.Load()
	if rd == nil {
		return
	}
	switch h.Type {
	case frameAck:
		var a AckFrame
		if json.Unmarshal(data, &a) != nil {
			rd.refuse(p.idx, "ack: "+string(data))
			return
		}
		if id, _, _, ok := parseBenchMessageID(a.ID); ok && id != rd.id {
			return
		}
		if a.Error != "" || !a.Queued {
			rd.refuse(p.idx, "ack: "+string(data))
			return
		}
		rd.acked.Add(1)
		rd.answered(p.idx)
		rd.progressed()
	case frameError:
		rd.refuse(p.idx, "error: "+string(data))
	case framePush:
		var f PushFrame
		if json.Unmarshal(data, &f) != nil || f.Subtype == subtypeSystem {
			return
		}
		now := time.Now().UnixNano()
		_ = p.conn.write(context.Background(), ClientAckFrame{Type: frameClientAck, ClientMessageID: f.ClientMessageID, BrokerMessageID: f.MessageID})
		id, s, k, ok := parseBenchMessageID(f.ClientMessageID)
		if ok && id != rd.id {
			return
		}
		if !ok || s >= len(r.peers) || k >= r.opts.Messages {
			rd.bad.Add(1)
			return
		}
		if int(rd.target[s][k]) != p.idx || f.SenderPubkey != r.peers[s].key.PublicHex() {
			rd.misdelivered.Add(1)
			return
		}
		if text, err := p.keys.open(f.Nonce, f.Ciphertext, f.SenderPubkey, p.key); err != nil || string(text) != benchBody(s, k) {
			rd.bad.Add(1)
			return
		}
		if rd.recv[s][k].Add(1) > 1 {
			rd.duplicated.Add(1)
			return
		}
		rd.lat[s][k].Store(now - rd.sentAt[s][k].Load())
		rd.delivered.Add(1)
		rd.progressed()
	}
}

// progressed wakes waitDelivered: an ack or a delivery came in.
func (rd *benchRound) progressed() {
	select {
	case rd.progress <- struct{}{}:
	default:
	}
}

// waitDelivered waits until every send is answered and everything
// accepted has arrived, or until drain passes with neither happening.
func (rd *benchRound) waitDelivered(ctx context.Context, drain time.Duration) {
	idle := time.NewTimer(drain)
	defer idle.Stop()
	for {
		sent, refused := rd.sent.Load(), rd.refused.Load()
		if rd.acked.Load()+refused >= sent && rd.delivered.Load() >= sent-refused {
			return
		}
		select {
		case <-rd.progress:
			idle.Reset(drain)
		case <-idle.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (rd *benchRound) report(r *benchRun, elapsed time.Duration) benchReport {
	rep := benchReport{Broker: strings.Join(r.urls, ","), Peers: len(r.peers), MessagesPerPeer: r.opts.Messages, Inflight: rd.inflight,
		Sent: rd.sent.Load(), Acked: rd.acked.Load(), Refused: rd.refused.Load(), Delivered: rd.delivered.Load(),
		Duplicated: rd.duplicated.Load(), Misdelivered: rd.misdelivered.Load(), Undecryptable: rd.bad.Load(),
		DurationS: elapsed.Seconds(), FirstRefusal: rd.firstRefusal}
	if rd.inflight == 0 {
		rep.TargetRate = rd.rate
	}
	// Accepted (or unanswered) and never delivered; in a closed loop, also
	// the sends a stalled peer never made.
	rep.Lost = max(int64(len(r.peers)*r.opts.Messages)-rep.Refused-rep.Delivered, 0)
	if rep.Sent > 0 {
		rep.DeliveredPct = 100 * float64(rep.Delivered) / float64(rep.Sent)
	}
	rep.Throughput = float64(rep.Delivered) / max(elapsed.Seconds(), 1e-9)
	lat := make([]time.Duration, 0, rep.Delivered)
	var cross []time.Duration
	for s := range rd.lat {
		for k := range rd.lat[s] {
			if rd.recv[s][k].Load() > 0 {
				d := time.Duration(rd.lat[s][k].Load())
				lat = append(lat, d)
				// Peer i is connected to URL i mod len(urls).
				if s%len(r.urls) != int(rd.target[s][k])%len(r.urls) {
					cross = append(cross, d)
				}
			}
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	sort.Slice(cross, func(i, j int) bool { return cross[i] < cross[j] })
	if len(lat) > 0 {
		rep.P50Ms, rep.P95Ms, rep.P99Ms, rep.MaxMs = percentileMs(lat, 0.50), percentileMs(lat, 0.95), percentileMs(lat, 0.99), percentileMs(lat, 1)
	}
	if len(cross) > 0 {
		rep.CrossReplica, rep.CrossReplicaP50Ms, rep.CrossReplicaP99Ms = int64(len(cross)), percentileMs(cross, 0.50), percentileMs(cross, 0.99)
	}
	return rep
}

// percentileMs reports p of sorted latencies in milliseconds.
func percentileMs(sorted []time.Duration, p float64) float64 {
	return float64(sorted[int(p*float64(len(sorted)-1))].Microseconds()) / 1000
}

// forEachBounded runs fn(i) for i in [from, to) on a few workers and
// returns the first error.
func forEachBounded(ctx context.Context, from, to int, fn func(i int) error) error {
	const workers = 8
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var first error
feed:
	for i := from; i < to; i++ {
		select {
		case next <- i:
		case first = <-errs:
			break feed
		case <-ctx.Done():
			first = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first == nil {
		select {
		case first = <-errs:
		default:
		}
	}
	return first
}

// benchRetry retries fn while the broker answers rate_limit (its
// handshake bucket refills), up to benchSetupWait.
func benchRetry(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(benchSetupWait)
	for {
		err := fn()
		if err == nil || !isRateLimited(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func isRateLimited(err error) bool {
	var be *brokerError
	if errors.As(err, &be) {
		return be.Status == http.StatusTooManyRequests || be.Code == codeRateLimit
	}
	var bre *BrokerError
	if errors.As(err, &bre) && bre.Code == codeRateLimit {
		return true
	}
	var ce websocket.CloseError // a refused hello: the error frame, then a close with the code as reason
	return errors.As(err, &ce) && ce.Reason == codeRateLimit
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// processRSS is this process's resident set and its peak, in MB (zero
// where /proc is not there).
func processRSS() (rss, peak float64) {
	return rssOf("self")
}

// rssOf reads VmRSS and VmHWM of /proc/<pid>/status, in MB.
func rssOf(pid string) (rss, peak float64) {
	data, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		name, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmRSS":
			rss = kb / 1024
		case "VmHWM":
			peak = kb / 1024
		}
	}
	return rss, peak
}
