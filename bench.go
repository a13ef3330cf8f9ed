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
	peers, messages     int
	rate                float64
	broker, createToken string
	drain               time.Duration
}

func setupBench(fs *flagSet) runFunc {
	var f benchFlags
	fs.IntVar(&f.peers, "peers", 100, "protocol clients in the mesh")
	fs.IntVar(&f.messages, "messages", 1000, "DMs each peer sends")
	fs.Float64Var(&f.rate, "rate", defaultBenchRate, "messages per second, all peers together")
	fs.StringVar(&f.broker, "broker", "", "measure this running broker (ws://HOST:PORT/ws) instead of one in this process")
	fs.StringVar(&f.createToken, "create-token", "", "the broker's mesh-creation token (a non-loopback --broker)")
	fs.DurationVar(&f.drain, "drain", 30*time.Second, "how long to wait for deliveries after the last send")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("bench takes no arguments (got %q)", strings.Join(args, " "))
		}
		opts := benchOptions{Peers: f.peers, Messages: f.messages, Rate: f.rate, BrokerURL: f.broker,
			CreateToken: f.createToken, Drain: f.drain}
		if opts.CreateToken == "" {
			opts.CreateToken = c.env.Getenv("CLAUDEMESH_CREATE_TOKEN")
		}
		if err := opts.check(); err != nil {
			return err
		}
		if !c.jsonMode() {
			c.printf("claudemesh bench: %d peers × %d DMs at %g msg/s, %s\n", opts.Peers, opts.Messages, opts.Rate, opts.brokerLabel())
		}
		r, err := runBenchLoad(ctx, opts)
		if err != nil {
			return exitError(exitFailure, fmt.Errorf("bench: %w", err))
		}
		if c.jsonMode() {
			if err := c.printJSON(r); err != nil {
				return err
			}
			if !r.OK() {
				return silentExit(exitFailure)
			}
			return nil
		}
		c.printBenchReport(r)
		if !r.OK() {
			err := exitError(exitFailure, errors.New(r.failure()))
			if strings.Contains(r.FirstRefusal, codeRateLimit) {
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

// benchOptions is one load run.
type benchOptions struct {
	Peers, Messages int
	Rate            float64       // messages per second, all peers together
	BrokerURL       string        // "" starts a broker in this process
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
	case o.Drain <= 0:
		return usageError("--drain must be positive")
	}
	return nil
}

func (o benchOptions) brokerLabel() string {
	if o.BrokerURL == "" {
		return "broker in this process"
	}
	return "broker " + o.BrokerURL
}

// benchReport is what a run measured. Latencies are milliseconds from
// writing the send to the recipient reading the push.
type benchReport struct {
	Broker          string  `json:"broker"`
	Peers           int     `json:"peers"`
	MessagesPerPeer int     `json:"messages_per_peer"`
	TargetRate      float64 `json:"target_rate"`
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
	DurationS       float64 `json:"duration_s"`
	Throughput      float64 `json:"throughput_msgs_per_s"`
	FirstRefusal    string  `json:"first_refusal,omitempty"`
	// The process's own figures, when the broker ran in it: they include
	// the peers, which share the process.
	ProcessCPUS      float64 `json:"process_cpu_s,omitempty"`
	ProcessRSSMB     float64 `json:"process_rss_mb,omitempty"`
	ProcessPeakRSSMB float64 `json:"process_peak_rss_mb,omitempty"`
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

func (c *cli) printBenchReport(r benchReport) {
	c.printf("  delivered   %d / %d (%.2f %%), %d lost, %d duplicated, %d refused\n", r.Delivered, r.Sent, r.DeliveredPct, r.Lost, r.Duplicated, r.Refused)
	c.printf("  latency     p50 %.2f ms  p95 %.2f ms  p99 %.2f ms  max %.2f ms  (send → push received)\n", r.P50Ms, r.P95Ms, r.P99Ms, r.MaxMs)
	c.printf("  throughput  %.0f msg/s over %.1f s\n", r.Throughput, r.DurationS)
	if r.ProcessCPUS > 0 {
		c.printf("  process     CPU %.1f s (%.0f %% of one core), RSS %.0f MB, peak %.0f MB — broker and peers together\n",
			r.ProcessCPUS, 100*r.ProcessCPUS/max(r.DurationS, 1e-9), r.ProcessRSSMB, r.ProcessPeakRSSMB)
	}
	if r.FirstRefusal != "" {
		c.printf("  first refusal: %s\n", r.FirstRefusal)
	}
	if r.OK() {
		c.printf("%s every message arrived exactly once\n", c.paint(colorGreen, "✔"))
	}
}

// benchSetupWait bounds enrolling and connecting the peers; a broker with
// default handshake limits admits about two a second after its burst.
const benchSetupWait = 3 * time.Minute

// runBenchLoad runs one load test and reports it. An error means the run
// could not be set up; a run that loses messages returns a report that is
// not OK.
func runBenchLoad(ctx context.Context, o benchOptions) (benchReport, error) {
	if err := o.check(); err != nil {
		return benchReport{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	url := o.BrokerURL
	inProcess := url == ""
	if inProcess {
		u, stop, err := startBenchBroker(o.Peers)
		if err != nil {
			return benchReport{}, err
		}
		defer stop()
		url = u
	}
	run := &benchRun{opts: o, url: url}
	if err := run.enroll(ctx); err != nil {
		return benchReport{}, err
	}
	defer run.close()
	if err := run.connect(ctx); err != nil {
		return benchReport{}, err
	}
	if err := run.plan(); err != nil {
		return benchReport{}, err
	}
	cpu0 := processCPU()
	start := time.Now()
	run.send(ctx, start)
	run.waitDelivered(ctx, o.Drain)
	elapsed := time.Since(start)
	r := run.report(elapsed)
	if inProcess {
		r.Broker = "in-process " + url
		r.ProcessCPUS = (processCPU() - cpu0).Seconds()
		r.ProcessRSSMB, r.ProcessPeakRSSMB = processRSS()
	}
	return r, nil
}

// startBenchBroker runs a broker on 127.0.0.1:0 in a temp dir, with limits
// that let the run's load through.
func startBenchBroker(peers int) (url string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "claudemesh-bench-")
	if err != nil {
		return "", nil, err
	}
	const unlimited = 1 << 30
	b, err := newBroker(BrokerOptions{DataDir: dir, SendBurst: unlimited, SendPerMinute: unlimited,
		HandshakeBurst: unlimited, HandshakePerMinute: unlimited, MaxConnectionsPerMesh: peers + 16})
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

// benchRun is one run's mesh, peers and bookkeeping.
type benchRun struct {
	opts  benchOptions
	url   string
	peers []*benchPeer
	// Per message, by [sender][sequence]: its target, when it was sent
	// (unix ns), how often it arrived and how long it took the first time.
	target [][]int32
	sentAt [][]atomic.Int64
	recv   [][]atomic.Int32
	lat    [][]atomic.Int64

	sent, acked, refused, delivered atomic.Int64
	duplicated, misdelivered, bad   atomic.Int64
	refusalOnce                     sync.Once
	firstRefusal                    string
	progress                        chan struct{} // a delivery happened
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
	r.progress = make(chan struct{}, 1)
	timing := defaultLinkTiming()
	return forEachBounded(ctx, 0, len(r.peers), func(i int) error {
		p := r.peers[i]
		hello := func(now time.Time) (any, error) {
			ts := handshakeTimestamp(now)
			return HelloFrame{Type: frameHello, MeshID: p.mesh.MeshID, MemberID: p.mesh.MemberID, Pubkey: p.key.PublicHex(),
				SessionID: "bench-" + strconv.Itoa(i), Pid: os.Getpid(), PeerType: "ai", Channel: channelDaemon, Timestamp: ts,
				Signature: p.key.sign(helloSignedString(p.mesh.MeshID, p.mesh.MemberID, p.key.PublicHex(), ts))}, nil
		}
		return benchRetry(ctx, func() error {
			conn, _, err := dialBroker(ctx, r.url, timing, hello, func(c *rpcConn, h frameHead, data []byte) { r.onFrame(p, h, data) })
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

// plan picks every message's target, another peer at random, and derives
// the shared keys the messages will need.
func (r *benchRun) plan() error {
	n, m := len(r.peers), r.opts.Messages
	rng := rand.New(rand.NewPCG(uint64(n), uint64(m)))
	r.target = make([][]int32, n)
	r.sentAt = make([][]atomic.Int64, n)
	r.recv = make([][]atomic.Int32, n)
	r.lat = make([][]atomic.Int64, n)
	for s := range n {
		r.target[s] = make([]int32, m)
		for k := range m {
			t := (s + 1 + rng.IntN(n-1)) % n
			r.target[s][k] = int32(t)
			if _, err := r.peers[s].keys.shared(r.peers[s].key, r.peers[t].key.PublicHex()); err != nil {
				return err
			}
			if _, err := r.peers[t].keys.shared(r.peers[t].key, r.peers[s].key.PublicHex()); err != nil {
				return err
			}
		}
		r.sentAt[s] = make([]atomic.Int64, m)
		r.recv[s] = make([]atomic.Int32, m)
		r.lat[s] = make([]atomic.Int64, m)
	}
	return nil
}

// benchBody is the text of message k of sender s, about a chat line long.
func benchBody(s, k int) string {
	return fmt.Sprintf("bench message %d from peer %d, about as long as a line of chat", k, s)
}

func benchMessageID(s, k int) string { return "bench-" + strconv.Itoa(s) + "-" + strconv.Itoa(k) }

func parseBenchMessageID(id string) (s, k int, ok bool) {
	rest, found := strings.CutPrefix(id, "bench-")
	if !found {
		return 0, 0, false
	}
	a, b, found := strings.Cut(rest, "-")
	if !found {
		return 0, 0, false
	}
	s, err1 := strconv.Atoi(a)
	k, err2 := strconv.Atoi(b)
	return s, k, err1 == nil && err2 == nil
}

// send runs every peer's schedule: message k of peer s is due at
// start + (k·peers + s)/rate, so the peers' sends interleave evenly and all
// of them together keep to the rate.
func (r *benchRun) send(ctx context.Context, start time.Time) {
	n := len(r.peers)
	gap := time.Duration(float64(time.Second) / r.opts.Rate) // between any two sends
	var wg sync.WaitGroup
	for s := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := r.peers[s]
			for k := range r.opts.Messages {
				due := start.Add(gap * time.Duration(k*n+s))
				if d := time.Until(due); d > 0 {
					select {
					case <-time.After(d):
					case <-ctx.Done():
						return
					}
				}
				to := r.peers[r.target[s][k]].key.PublicHex()
				nonce, ct, err := p.keys.seal([]byte(benchBody(s, k)), to, p.key)
				if err != nil {
					r.refuse(fmt.Sprintf("seal: %v", err))
					continue
				}
				id := benchMessageID(s, k)
				frame := SendFrame{Type: frameSend, ID: id, ClientMessageID: id, TargetSpec: to, Priority: priorityNext,
					Nonce: nonce, Ciphertext: ct}
				r.sentAt[s][k].Store(time.Now().UnixNano())
				r.sent.Add(1)
				if err := p.conn.write(ctx, frame); err != nil {
					r.refuse(fmt.Sprintf("write: %v", err))
				}
			}
		}()
	}
	wg.Wait()
}

func (r *benchRun) refuse(why string) {
	r.refused.Add(1)
	r.refusalOnce.Do(func() { r.firstRefusal = why })
}

// onFrame handles what the broker sends a peer: acks of its sends and
// pushes of messages to it, which it checks and acks.
func (r *benchRun) onFrame(p *benchPeer, h frameHead, data []byte) {
	switch h.Type {
	case frameAck:
		var a AckFrame
		if json.Unmarshal(data, &a) != nil || a.Error != "" || !a.Queued {
			r.refuse("ack: " + string(data))
			return
		}
		r.acked.Add(1)
		r.progressed()
	case frameError:
		r.refuse("error: " + string(data))
	case framePush:
		var f PushFrame
		if json.Unmarshal(data, &f) != nil || f.Subtype == subtypeSystem {
			return
		}
		now := time.Now().UnixNano()
		_ = p.conn.write(context.Background(), ClientAckFrame{Type: frameClientAck, ClientMessageID: f.ClientMessageID, BrokerMessageID: f.MessageID})
		s, k, ok := parseBenchMessageID(f.ClientMessageID)
		if !ok || s >= len(r.peers) || k >= r.opts.Messages {
			r.bad.Add(1)
			return
		}
		if int(r.target[s][k]) != p.idx || f.SenderPubkey != r.peers[s].key.PublicHex() {
			r.misdelivered.Add(1)
			return
		}
		if text, err := p.keys.open(f.Nonce, f.Ciphertext, f.SenderPubkey, p.key); err != nil || string(text) != benchBody(s, k) {
			r.bad.Add(1)
			return
		}
		if r.recv[s][k].Add(1) > 1 {
			r.duplicated.Add(1)
			return
		}
		r.lat[s][k].Store(now - r.sentAt[s][k].Load())
		r.delivered.Add(1)
		r.progressed()
	}
}

// progressed wakes waitDelivered: an ack or a delivery came in.
func (r *benchRun) progressed() {
	select {
	case r.progress <- struct{}{}:
	default:
	}
}

// waitDelivered waits until every send is answered and everything
// accepted has arrived, or until drain passes with neither happening.
func (r *benchRun) waitDelivered(ctx context.Context, drain time.Duration) {
	idle := time.NewTimer(drain)
	defer idle.Stop()
	for {
		sent, refused := r.sent.Load(), r.refused.Load()
		if r.acked.Load()+refused >= sent && r.delivered.Load() >= sent-refused {
			return
		}
		select {
		case <-r.progress:
			idle.Reset(drain)
		case <-idle.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (r *benchRun) report(elapsed time.Duration) benchReport {
	rep := benchReport{Broker: r.url, Peers: len(r.peers), MessagesPerPeer: r.opts.Messages, TargetRate: r.opts.Rate,
		Sent: r.sent.Load(), Acked: r.acked.Load(), Refused: r.refused.Load(), Delivered: r.delivered.Load(),
		Duplicated: r.duplicated.Load(), Misdelivered: r.misdelivered.Load(), Undecryptable: r.bad.Load(),
		DurationS: elapsed.Seconds(), FirstRefusal: r.firstRefusal}
	rep.Lost = max(rep.Sent-rep.Refused-rep.Delivered, 0) // accepted (or unanswered) and never delivered
	if rep.Sent > 0 {
		rep.DeliveredPct = 100 * float64(rep.Delivered) / float64(rep.Sent)
	}
	rep.Throughput = float64(rep.Delivered) / max(elapsed.Seconds(), 1e-9)
	lat := make([]time.Duration, 0, rep.Delivered)
	for s := range r.lat {
		for k := range r.lat[s] {
			if r.recv[s][k].Load() > 0 {
				lat = append(lat, time.Duration(r.lat[s][k].Load()))
			}
		}
	}
	if len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
		rep.P50Ms, rep.P95Ms, rep.P99Ms, rep.MaxMs = pct(0.50), pct(0.95), pct(0.99), pct(1)
	}
	return rep
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
