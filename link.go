// The daemon's WebSocket client to a broker. One type, Link, serves both the
// member link (a `hello` signed by the member key, one per joined mesh) and
// session links (a `session_hello` vouched for by the member key, one per
// registered session with presence); the difference is only the handshake
// frame, which the owner builds afresh on every connect so that timestamps
// and the session attestation are never stale.
//
// Policy, in one place:
//   - The handle exists before the first attempt, and a failed first connect
//     is retried like any other (claudemesh's daemon lost its handle then).
//   - Backoff 1, 2, 4, 8, 16, 30 s plus jitter, reset by hello_ack.
//   - hello_ack must come within 5 s; frames that arrive before it (the
//     broker drains queued pushes first) are handled, not dropped.
//   - After hello_ack a watchdog pings every 30 s and drops the connection
//     after 75 s without any sign of life.
//   - Close 4002 ("banned") stops a link for good (state banned); close 4001
//     ("kicked") stops a session link (state kicked) until the session
//     registers again. A member link is never kicked by our broker, so on a
//     4001 it reconnects.
//   - Requests and sends fail fast with errLinkNotOpen while the link is
//     down: nothing waits unboundedly behind a reconnect.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// LinkState is where a link is in its life; /v1/health reports it.
type LinkState string

const (
	LinkConnecting   LinkState = "connecting"
	LinkOpen         LinkState = "open"
	LinkReconnecting LinkState = "reconnecting"
	LinkClosed       LinkState = "closed"
	LinkKicked       LinkState = "kicked"
	LinkBanned       LinkState = "banned"
)

// Link kinds.
const (
	linkMember  = "member"
	linkSession = "session"
)

var (
	errLinkNotOpen   = errors.New("broker link is not open")
	errLinkClosed    = errors.New("broker connection closed")
	errBrokerTimeout = errors.New("broker did not answer in time")
)

// BrokerError is an `error` frame the broker sent in reply to a request.
type BrokerError struct {
	Code    string
	Message string
}

func (e *BrokerError) Error() string {
	if e.Message == "" {
		return "broker: " + e.Code
	}
	return "broker: " + e.Code + ": " + e.Message
}

// LinkTiming holds a link's intervals; tests shorten them.
type LinkTiming struct {
	Backoff        []time.Duration // delay before reconnect attempt n (last entry repeats)
	HelloTimeout   time.Duration
	PingInterval   time.Duration
	SilenceTimeout time.Duration
	DialTimeout    time.Duration
}

// defaultLinkTiming is the links' schedule: reconnect backoff 1, 2, 4, 8,
// 16, 30 s, a ping every 30 s, and a link silent for 75 s is dropped.
func defaultLinkTiming() LinkTiming {
	return LinkTiming{
		Backoff:        []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second},
		HelloTimeout:   5 * time.Second,
		PingInterval:   30 * time.Second,
		SilenceTimeout: 75 * time.Second,
		DialTimeout:    10 * time.Second,
	}
}

// backoffDelay is the wait before reconnect attempt n (0-based), with up to
// 25 % jitter so that many daemons do not reconnect in step.
func (t LinkTiming) backoffDelay(n int, jitter func(time.Duration) time.Duration) time.Duration {
	if len(t.Backoff) == 0 {
		return time.Second
	}
	d := t.Backoff[max(min(n, len(t.Backoff)-1), 0)]
	if jitter != nil {
		d += jitter(d)
	}
	return d
}

func randomJitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d)/4 + 1))
}

// LinkConfig describes one link.
type LinkConfig struct {
	Kind string // linkMember or linkSession
	Mesh string // mesh slug, for logs and events
	URL  string
	// Fallbacks are more URLs of the same broker, tried in turn when the
	// one in use cannot be reached; the link stays on the one that answers.
	Fallbacks []string
	// TLS verifies a wss:// broker; nil for the system roots.
	TLS *tls.Config
	// Hello builds the handshake frame for one connect attempt.
	Hello func(now time.Time) (any, error)
	// OnFrame gets every frame that is not a reply to a pending request or
	// send: pushes (also those before hello_ack), state_change, stray errors.
	// It runs on the connection's read loop, so frames are seen in order.
	OnFrame func(l *Link, f Inbound)
	// OnState is told every state change.
	OnState func(l *Link, st LinkState)
	// OnOpen runs after hello_ack with the ack's fields.
	OnOpen func(l *Link, ack HelloAckFrame)
	Timing LinkTiming
	Jitter func(time.Duration) time.Duration
	Log    *slog.Logger
}

// Link is a self-reconnecting broker connection.
type Link struct {
	cfg      LinkConfig
	urlIndex atomic.Int32 // which of URL and Fallbacks answered last

	mu        sync.Mutex
	state     LinkState
	conn      *rpcConn // nil unless open
	features  []string // the last hello_ack's
	lastError string
	stopped   bool
	cancel    context.CancelFunc
	done      chan struct{}
	openCh    chan struct{} // closed (and replaced) whenever the link opens

	attempts atomic.Int64
	// receiptsRefused: the broker answered a receipt with
	// unknown_message_type, so this connection sends no more of them.
	receiptsRefused atomic.Bool
}

// newLink makes a link in state connecting; Start begins connecting.
func newLink(cfg LinkConfig) *Link {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Timing.HelloTimeout == 0 {
		cfg.Timing = defaultLinkTiming()
	}
	if cfg.Jitter == nil {
		cfg.Jitter = randomJitter
	}
	return &Link{cfg: cfg, state: LinkConnecting, done: make(chan struct{}), openCh: make(chan struct{})}
}

// Start runs the connect loop until ctx ends, Close is called, or the broker
// bans or kicks the link.
func (l *Link) Start(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	l.mu.Lock()
	l.cancel = cancel
	l.mu.Unlock()
	go func() {
		defer close(l.done)
		defer cancel()
		l.loop(ctx)
	}()
}

// Close stops the link and waits for its goroutine.
func (l *Link) Close() {
	l.mu.Lock()
	l.stopped = true
	cancel := l.cancel
	l.mu.Unlock()
	if cancel == nil {
		l.setState(LinkClosed)
		return
	}
	cancel()
	<-l.done
}

// Inbound is one unsolicited frame from a broker.
type Inbound struct {
	Head frameHead
	Data []byte
	conn *rpcConn
}

// Reply writes a frame (client_ack) on the connection this frame came in
// on, which works even before hello_ack, when the link is not yet open.
func (f Inbound) Reply(ctx context.Context, frame any) error {
	if f.conn == nil {
		return errLinkNotOpen
	}
	return f.conn.write(ctx, frame)
}

// Supports reports whether the broker named feature in its last hello_ack.
func (l *Link) Supports(feature string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return hasFeature(l.features, feature)
}

// Receipts reports whether receipts travel on this link: its broker named
// the feature and has not refused a receipt since it connected.
func (l *Link) Receipts() bool {
	return l.Supports(featureReceipts) && !l.receiptsRefused.Load()
}

// refuseReceipts turns receipts off until the link connects again.
func (l *Link) refuseReceipts() { l.receiptsRefused.Store(true) }

// Kind and Mesh describe the link.
func (l *Link) Kind() string { return l.cfg.Kind }
func (l *Link) Mesh() string { return l.cfg.Mesh }

// State is the link's current state.
func (l *Link) State() LinkState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

// LastError is the most recent reason the link was not open, for status.
func (l *Link) LastError() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastError
}

// WaitOpen blocks until the link is open or ctx ends.
func (l *Link) WaitOpen(ctx context.Context) error {
	for {
		l.mu.Lock()
		st, ch := l.state, l.openCh
		l.mu.Unlock()
		switch st {
		case LinkOpen:
			return nil
		case LinkBanned, LinkKicked, LinkClosed:
			return fmt.Errorf("%w (%s)", errLinkNotOpen, st)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-l.done:
		}
	}
}

func (l *Link) setState(st LinkState) {
	l.mu.Lock()
	if l.state == st {
		l.mu.Unlock()
		return
	}
	l.state = st
	if st == LinkOpen {
		close(l.openCh)
		l.openCh = make(chan struct{})
	}
	l.mu.Unlock()
	l.cfg.Log.Info("broker_status", "mesh", l.cfg.Mesh, "link", l.cfg.Kind, "status", string(st))
	if l.cfg.OnState != nil {
		l.cfg.OnState(l, st)
	}
}

func (l *Link) setLastError(err error) {
	l.mu.Lock()
	l.lastError = err.Error()
	l.mu.Unlock()
}

func (l *Link) current() (*rpcConn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != LinkOpen || l.conn == nil {
		return nil, errLinkNotOpen
	}
	return l.conn, nil
}

// Request sends frame with a fresh _reqId and waits for the reply whose
// _reqId matches (or, from a broker that does not echo it, the oldest reply
// of one of replyTypes). An `error` reply becomes a *BrokerError.
func (l *Link) Request(ctx context.Context, frame any, replyTypes ...string) (json.RawMessage, error) {
	c, err := l.current()
	if err != nil {
		return nil, err
	}
	return c.request(ctx, frame, replyTypes...)
}

// Write sends a frame that has no reply (client_ack, set_status …).
func (l *Link) Write(ctx context.Context, frame any) error {
	c, err := l.current()
	if err != nil {
		return err
	}
	return c.write(ctx, frame)
}

// Send sends a message and waits for the broker's ack (matched on id). An
// ack with an error string is returned as is: the caller decides whether
// it is permanent.
func (l *Link) Send(ctx context.Context, f SendFrame) (AckFrame, error) {
	c, err := l.current()
	if err != nil {
		return AckFrame{}, err
	}
	return c.send(ctx, f)
}

// loop connects, serves and reconnects until told to stop.
func (l *Link) loop(ctx context.Context) {
	for n := 0; ; n++ {
		if n > 0 {
			l.setState(LinkReconnecting)
			delay := l.cfg.Timing.backoffDelay(max(int(l.attempts.Load())-1, 0), l.cfg.Jitter)
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				l.setState(LinkClosed)
				return
			case <-t.C:
			}
		}
		l.attempts.Add(1)
		final, err := l.connectOnce(ctx)
		if err != nil && ctx.Err() == nil {
			l.setLastError(err)
			l.cfg.Log.Warn("broker_link_down", "mesh", l.cfg.Mesh, "link", l.cfg.Kind, "url", l.cfg.URL, "err", err.Error())
		}
		if ctx.Err() != nil {
			l.setState(LinkClosed)
			return
		}
		if final != "" {
			l.setState(final)
			return
		}
	}
}

// connectOnce runs one connection from dial to close. final is non-empty
// when the link must not reconnect.
func (l *Link) connectOnce(ctx context.Context) (final LinkState, err error) {
	onFrame := func(c *rpcConn, h frameHead, data []byte) {
		if l.cfg.OnFrame != nil {
			l.cfg.OnFrame(l, Inbound{Head: h, Data: data, conn: c})
		}
	}
	// The URL in use first, then each other in turn: a replica that cannot
	// be reached is passed over at once, not after a backoff.
	urls := append([]string{l.cfg.URL}, l.cfg.Fallbacks...)
	start := int(l.urlIndex.Load()) % len(urls)
	var conn *rpcConn
	var ack HelloAckFrame
	for i := range urls {
		n := (start + i) % len(urls)
		conn, ack, err = dialBrokerTLS(ctx, urls[n], l.cfg.TLS, l.cfg.Timing, l.cfg.Hello, onFrame)
		if err == nil {
			l.urlIndex.Store(int32(n))
			break
		}
		if !isDialError(err) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return l.finalFor(err), err
	}
	l.attempts.Store(0)
	l.mu.Lock()
	l.conn = conn
	l.features = ack.Features
	l.lastError = ""
	l.mu.Unlock()
	l.receiptsRefused.Store(false)
	if l.cfg.OnOpen != nil {
		l.cfg.OnOpen(l, ack)
	}
	l.setState(LinkOpen)
	err = conn.watch(ctx, l.cfg.Timing)
	l.mu.Lock()
	l.conn = nil
	l.mu.Unlock()
	// The context ends only when the link is closed or the daemon stops:
	// both are a leave, which the broker need not wait out a grace for.
	reason := ""
	if ctx.Err() != nil {
		reason = closeReasonLeave
	}
	conn.close(websocket.StatusNormalClosure, reason)
	return l.finalFor(err), err
}

// finalFor decides from a connection's end whether the link stops.
func (l *Link) finalFor(err error) LinkState {
	var be *BrokerError
	switch code := websocket.CloseStatus(err); {
	case code == closeBanned:
		return LinkBanned
	case code == closeKicked && l.cfg.Kind == linkSession:
		return LinkKicked
	case errors.As(err, &be) && be.Code == codeRevoked:
		return LinkBanned
	case errors.As(err, &be) && be.Code == codeUnknownMessageType && l.cfg.Kind == linkSession:
		// A broker that does not know session_hello: retrying cannot help.
		return LinkClosed
	}
	return ""
}

// dialBroker opens one connection and completes the handshake: the hello
// frame goes out, frames other than hello_ack are handed to onFrame as they
// come, and hello_ack (or an error frame) ends the wait.
func dialBroker(ctx context.Context, url string, timing LinkTiming, hello func(time.Time) (any, error),
	onFrame func(c *rpcConn, h frameHead, data []byte)) (*rpcConn, HelloAckFrame, error) {
	return dialBrokerTLS(ctx, url, nil, timing, hello, onFrame)
}

// dialError is a broker that could not be reached (or whose certificate
// is not trusted), as opposed to one that answered and refused.
type dialError struct {
	url string
	err error
}

func (e *dialError) Error() string {
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	switch {
	case errors.As(e.err, &unknown):
		return fmt.Sprintf("dial %s: the broker's TLS certificate is signed by an authority this machine does not trust (%v); "+
			"set the mesh's caFile in config.json to the PEM of the team's CA", e.url, e.err)
	case errors.As(e.err, &invalid), errors.As(e.err, &host):
		return fmt.Sprintf("dial %s: the broker's TLS certificate is not valid for it: %v", e.url, e.err)
	}
	return fmt.Sprintf("dial %s: %v", e.url, e.err)
}

func (e *dialError) Unwrap() error { return e.err }

// isDialError reports whether err is a broker that could not be reached.
func isDialError(err error) bool {
	var de *dialError
	return errors.As(err, &de)
}

// dialBrokerTLS is dialBroker verifying a wss:// broker with tlsConf (nil:
// the system roots).
func dialBrokerTLS(ctx context.Context, url string, tlsConf *tls.Config, timing LinkTiming, hello func(time.Time) (any, error),
	onFrame func(c *rpcConn, h frameHead, data []byte)) (*rpcConn, HelloAckFrame, error) {
	dctx, cancel := context.WithTimeout(ctx, timing.DialTimeout)
	defer cancel()
	c := &rpcConn{pending: map[string]*pendingReq{}, sends: map[string]chan sendResult{}, onFrame: onFrame, closed: make(chan struct{})}
	c.touch()
	opts := &websocket.DialOptions{
		OnPingReceived: func(context.Context, []byte) bool { c.touch(); return true },
		OnPongReceived: func(context.Context, []byte) { c.touch() },
	}
	if tlsConf != nil {
		opts.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf, Proxy: http.ProxyFromEnvironment}}
	}
	ws, _, err := websocket.Dial(dctx, url, opts)
	if err != nil {
		return nil, HelloAckFrame{}, &dialError{url: url, err: err}
	}
	ws.SetReadLimit(maxInboundFrame)
	c.ws = ws
	go c.readLoop(context.WithoutCancel(ctx))
	frame, err := hello(time.Now())
	if err != nil {
		c.close(websocket.StatusNormalClosure, "")
		return nil, HelloAckFrame{}, err
	}
	hctx, hcancel := context.WithTimeout(ctx, timing.HelloTimeout)
	defer hcancel()
	raw, err := c.handshake(hctx, frame)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = errors.New("no hello_ack within " + timing.HelloTimeout.String())
		}
		// A refused handshake is followed by a close; prefer its code.
		select {
		case <-c.closed:
			if websocket.CloseStatus(c.readErr) != -1 {
				var be *BrokerError
				if !errors.As(err, &be) || be.Code != codeRevoked {
					err = fmt.Errorf("%w (%v)", c.readErr, err)
				}
			}
		case <-time.After(50 * time.Millisecond):
		}
		c.close(websocket.StatusNormalClosure, "")
		return nil, HelloAckFrame{}, err
	}
	var ack HelloAckFrame
	if err := json.Unmarshal(raw, &ack); err != nil {
		c.close(websocket.StatusNormalClosure, "")
		return nil, HelloAckFrame{}, fmt.Errorf("bad hello_ack: %w", err)
	}
	return c, ack, nil
}

// meshTLSConfig is how a mesh's wss:// broker is verified: the system roots,
// plus the CAs of the mesh's caFile; nil without one.
func meshTLSConfig(m Mesh) (*tls.Config, error) {
	if m.CAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(m.CAFile)
	if err != nil {
		return nil, fmt.Errorf("mesh %s: caFile: %w", m.Slug, err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("mesh %s: caFile %s holds no PEM certificate", m.Slug, m.CAFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// maxInboundFrame bounds one frame from a broker; peers_list of a full mesh
// is the largest thing we expect.
const maxInboundFrame = 4 << 20

// rpcConn is one WebSocket connection with request/reply correlation.
type rpcConn struct {
	ws      *websocket.Conn
	onFrame func(c *rpcConn, h frameHead, data []byte)

	writeMu sync.Mutex

	mu        sync.Mutex
	pending   map[string]*pendingReq
	order     []string // pending request ids, oldest first, for replies without _reqId
	sends     map[string]chan sendResult
	helloWait chan json.RawMessage
	helloErr  chan error
	seq       int64
	readErr   error
	closed    chan struct{}

	lastActivity atomic.Int64 // unix nanos
}

type pendingReq struct {
	types []string
	ch    chan replyResult
}

type replyResult struct {
	data json.RawMessage
	err  error
}

type sendResult struct {
	ack AckFrame
	err error
}

func (c *rpcConn) touch() { c.lastActivity.Store(time.Now().UnixNano()) }

func (c *rpcConn) sinceActivity() time.Duration {
	return time.Since(time.Unix(0, c.lastActivity.Load()))
}

func (c *rpcConn) write(ctx context.Context, frame any) error {
	data, err := json.Marshal(frame)
	if err != nil {
		return err
	}
	return c.writeRaw(ctx, data)
}

func (c *rpcConn) writeRaw(ctx context.Context, data []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %v", errLinkClosed, err)
	}
	// The WebSocket library drops the whole connection, without a close
	// frame, when a write's context ends mid-write. A caller that gives up
	// (the daemon stopping) must not do that: the link's own close then
	// says "leave", and the broker ends the presence at once instead of
	// keeping it for the grace window. Only the deadline bounds the write.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if d, ok := ctx.Deadline(); ok {
		wctx, cancel = context.WithDeadline(wctx, d)
		defer cancel()
	}
	if err := c.ws.Write(wctx, websocket.MessageText, data); err != nil {
		return fmt.Errorf("%w: %v", errLinkClosed, err)
	}
	return nil
}

// handshake sends the hello and waits for hello_ack or an error frame.
func (c *rpcConn) handshake(ctx context.Context, frame any) (json.RawMessage, error) {
	c.mu.Lock()
	c.helloWait = make(chan json.RawMessage, 1)
	c.helloErr = make(chan error, 1)
	wait, werr := c.helloWait, c.helloErr
	c.mu.Unlock()
	if err := c.write(ctx, frame); err != nil {
		return nil, err
	}
	select {
	case raw := <-wait:
		return raw, nil
	case err := <-werr:
		return nil, err
	case <-c.closed:
		return nil, c.readErr
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// request sends frame with a fresh _reqId and waits for its reply.
func (c *rpcConn) request(ctx context.Context, frame any, replyTypes ...string) (json.RawMessage, error) {
	data, err := json.Marshal(frame)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.readErr != nil {
		c.mu.Unlock()
		return nil, errLinkClosed
	}
	c.seq++
	id := "r" + strconv.FormatInt(c.seq, 10) + "-" + randomHex(4)
	p := &pendingReq{types: replyTypes, ch: make(chan replyResult, 1)}
	c.pending[id] = p
	c.order = append(c.order, id)
	c.mu.Unlock()
	defer c.forget(id)
	if err := c.writeRaw(ctx, withReqID(data, id)); err != nil {
		return nil, err
	}
	select {
	case r := <-p.ch:
		return r.data, r.err
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, errBrokerTimeout
		}
		return nil, ctx.Err()
	}
}

func (c *rpcConn) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, id)
	for i, o := range c.order {
		if o == id {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
}

// withReqID adds "_reqId" to an encoded JSON object (whose own _reqId is
// empty and therefore omitted).
func withReqID(obj []byte, id string) []byte {
	obj = bytes.TrimRight(obj, " \n")
	field := `"_reqId":` + strconv.Quote(id) + `}`
	if bytes.Equal(obj, []byte("{}")) {
		return []byte("{" + field)
	}
	return append(append(obj[:len(obj)-1:len(obj)-1], ','), field...)
}

// send writes a send frame and waits for the ack with the same id.
func (c *rpcConn) send(ctx context.Context, f SendFrame) (AckFrame, error) {
	f.Type = frameSend
	if f.ID == "" {
		f.ID = f.ClientMessageID
	}
	if f.ID == "" {
		return AckFrame{}, errors.New("send needs an id")
	}
	ch := make(chan sendResult, 1)
	c.mu.Lock()
	if c.readErr != nil {
		c.mu.Unlock()
		return AckFrame{}, errLinkClosed
	}
	if _, dup := c.sends[f.ID]; dup {
		c.mu.Unlock()
		return AckFrame{}, fmt.Errorf("a send with id %s is already waiting", f.ID)
	}
	c.sends[f.ID] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.sends, f.ID)
		c.mu.Unlock()
	}()
	if err := c.write(ctx, f); err != nil {
		return AckFrame{}, err
	}
	select {
	case r := <-ch:
		return r.ack, r.err
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return AckFrame{}, errBrokerTimeout
		}
		return AckFrame{}, ctx.Err()
	}
}

// readLoop reads frames until the connection ends, routing replies to their
// waiters and everything else to onFrame.
func (c *rpcConn) readLoop(ctx context.Context) {
	var err error
	for {
		var data []byte
		_, data, err = c.ws.Read(ctx)
		if err != nil {
			break
		}
		c.touch()
		head, herr := decodeBrokerHead(data)
		if herr != nil {
			continue // not ours to fix; a broker bug must not kill the link
		}
		if !c.route(head, data) && c.onFrame != nil {
			c.onFrame(c, head, data)
		}
	}
	c.mu.Lock()
	c.readErr = err
	pending, sends := c.pending, c.sends
	c.pending, c.sends, c.order = map[string]*pendingReq{}, map[string]chan sendResult{}, nil
	c.mu.Unlock()
	closeErr := fmt.Errorf("%w: %v", errLinkClosed, err)
	for _, p := range pending {
		p.ch <- replyResult{err: closeErr}
	}
	for _, ch := range sends {
		ch <- sendResult{err: closeErr}
	}
	close(c.closed)
}

// route delivers a reply to its waiter; false means nobody was waiting.
func (c *rpcConn) route(head frameHead, data []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.helloWait != nil {
		switch head.Type {
		case frameHelloAck:
			c.helloWait <- data
			c.helloWait, c.helloErr = nil, nil
			return true
		case frameError:
			var ef ErrorFrame
			_ = json.Unmarshal(data, &ef)
			if ef.ReqID == "" && ef.ID == "" {
				c.helloErr <- &BrokerError{Code: ef.Code, Message: ef.Message}
				c.helloWait, c.helloErr = nil, nil
				return true
			}
		}
	}
	if head.Type == frameAck || head.Type == frameError {
		var id struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(data, &id)
		if ch, ok := c.sends[id.ID]; ok && id.ID != "" && head.ReqID == "" {
			delete(c.sends, id.ID)
			ch <- sendResultFrom(head.Type, data)
			return true
		}
	}
	id := head.ReqID
	if id == "" {
		// A broker that does not echo _reqId: the oldest request waiting
		// for this reply type gets it.
		for _, o := range c.order {
			if p := c.pending[o]; p != nil && containsString(p.types, head.Type) {
				id = o
				break
			}
		}
	}
	p, ok := c.pending[id]
	if !ok {
		return false
	}
	delete(c.pending, id)
	if head.Type == frameError {
		var ef ErrorFrame
		_ = json.Unmarshal(data, &ef)
		p.ch <- replyResult{err: &BrokerError{Code: ef.Code, Message: ef.Message}}
		return true
	}
	p.ch <- replyResult{data: data}
	return true
}

func sendResultFrom(typ string, data []byte) sendResult {
	if typ == frameError {
		var ef ErrorFrame
		_ = json.Unmarshal(data, &ef)
		return sendResult{err: &BrokerError{Code: ef.Code, Message: ef.Message}}
	}
	var ack AckFrame
	if err := json.Unmarshal(data, &ack); err != nil {
		return sendResult{err: fmt.Errorf("bad ack: %w", err)}
	}
	return sendResult{ack: ack}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// watch keeps an open connection alive until it ends: a ping every
// PingInterval, and a forced close after SilenceTimeout without traffic.
func (c *rpcConn) watch(ctx context.Context, t LinkTiming) error {
	tick := time.NewTicker(t.PingInterval)
	defer tick.Stop()
	for {
		select {
		case <-c.closed:
			return c.readErr
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if c.sinceActivity() > t.SilenceTimeout {
				c.close(websocket.StatusGoingAway, "silent")
				<-c.closed
				return fmt.Errorf("no traffic for %s", t.SilenceTimeout)
			}
			go func() {
				pctx, cancel := context.WithTimeout(ctx, t.PingInterval)
				defer cancel()
				if c.ws.Ping(pctx) == nil {
					c.touch()
				}
			}()
		}
	}
}

// close ends the connection and waits (bounded) for the read loop.
func (c *rpcConn) close(code websocket.StatusCode, reason string) {
	go c.ws.Close(code, reason)
	select {
	case <-c.closed:
	case <-time.After(2 * time.Second):
		c.ws.CloseNow()
		<-c.closed
	}
}

// Handshake frames.

// lastHandshakeMs is a documented process-wide singleton: the timestamp of
// the last handshake this process signed. Brokers refuse a repeated
// pubkey+timestamp+signature as a replay, and ed25519 signatures are
// deterministic, so two handshakes by one key in one millisecond must not
// share a timestamp.
var lastHandshakeMs atomic.Int64

// handshakeTimestamp is now in ms, moved past the last one this process used.
func handshakeTimestamp(now time.Time) int64 {
	for {
		last := lastHandshakeMs.Load()
		ts := max(now.UnixMilli(), last+1)
		if lastHandshakeMs.CompareAndSwap(last, ts) {
			return ts
		}
	}
}

// memberHello builds the member link's hello for mesh m.
func memberHello(m Mesh, kp Keypair, pid int, cwd, hostname string) func(time.Time) (any, error) {
	return func(now time.Time) (any, error) {
		ts := handshakeTimestamp(now)
		return HelloFrame{
			Type: frameHello, MeshID: m.MeshID, MemberID: m.MemberID, Pubkey: kp.PublicHex(),
			SessionID: "daemon-" + strconv.Itoa(pid), Pid: pid, Cwd: cwd, Hostname: hostname,
			PeerType: "ai", Channel: channelDaemon, Capabilities: []string{capabilityReceipts, capabilitySystemBatches}, Timestamp: ts,
			Signature: kp.sign(helloSignedString(m.MeshID, m.MemberID, kp.PublicHex(), ts)),
		}, nil
	}
}

// sessionHelloParams is what a session link says about its session.
type sessionHelloParams struct {
	SessionID   string
	DisplayName string
	Pid         int
	Cwd         string
	Role        string
	Groups      []GroupRef
	Hostname    string
}

// sessionHello builds a session link's handshake. The attestation is signed
// afresh with the member key on every connect (12 h), so a long-lived
// session never presents an expired one.
func sessionHello(m Mesh, member, session Keypair, p sessionHelloParams) func(time.Time) (any, error) {
	return func(now time.Time) (any, error) {
		ts := handshakeTimestamp(now)
		att := signAttestation(member, session.PublicHex(), ts+attestationTTLMs)
		return SessionHelloFrame{
			Type: frameSessionHello, MeshID: m.MeshID, ParentMemberID: m.MemberID,
			ParentMemberPubkey: member.PublicHex(), SessionPubkey: session.PublicHex(),
			ParentAttestation: &att, DisplayName: p.DisplayName, SessionID: p.SessionID,
			Pid: p.Pid, Cwd: p.Cwd, Hostname: p.Hostname, PeerType: "ai", Channel: channelSession,
			Groups: p.Groups, Role: p.Role, Capabilities: []string{capabilityNoPresence}, Timestamp: ts,
			Signature: session.sign(sessionHelloSignedString(m.MeshID, member.PublicHex(), session.PublicHex(), ts)),
		}, nil
	}
}

// ColdLink is the CLI's one-shot broker connection when the daemon is not
// used: a member hello with an ephemeral session key (channel claude-code),
// a few requests, then close.
type ColdLink struct {
	Mesh Mesh
	// Key is the connection's ephemeral session key: the broker names it as
	// the sender of what this link sends, so DMs sent here are sealed by it.
	Key      Keypair
	Features []string // what the broker's hello_ack named
	conn     *rpcConn
}

// dialCold connects to m's broker as a cold-path client.
func dialCold(ctx context.Context, m Mesh, pid int, cwd, hostname string) (*ColdLink, error) {
	kp, err := m.Keypair()
	if err != nil {
		return nil, err
	}
	eph, err := newKeypair()
	if err != nil {
		return nil, err
	}
	hello := func(now time.Time) (any, error) {
		ts := handshakeTimestamp(now)
		return HelloFrame{
			Type: frameHello, MeshID: m.MeshID, MemberID: m.MemberID, Pubkey: kp.PublicHex(),
			SessionPubkey: eph.PublicHex(), SessionID: "cli-" + strconv.Itoa(pid) + "-" + randomHex(4),
			Pid: pid, Cwd: cwd, Hostname: hostname, PeerType: "ai", Channel: channelCLI, Timestamp: ts,
			Signature: kp.sign(helloSignedString(m.MeshID, m.MemberID, kp.PublicHex(), ts)),
		}, nil
	}
	t := defaultLinkTiming()
	// Pushes that arrive on a cold link are not acked: nothing stores them
	// here, so the broker keeps them for the daemon or the next session.
	tlsConf, err := meshTLSConfig(m)
	if err != nil {
		return nil, err
	}
	var conn *rpcConn
	var ack HelloAckFrame
	for _, url := range m.BrokerURLList() {
		conn, ack, err = dialBrokerTLS(ctx, url, tlsConf, t, hello, nil)
		if err == nil || !isDialError(err) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	return &ColdLink{Mesh: m, Key: eph, Features: ack.Features, conn: conn}, nil
}

// Request is Link.Request on the cold connection.
func (c *ColdLink) Request(ctx context.Context, frame any, replyTypes ...string) (json.RawMessage, error) {
	return c.conn.request(ctx, frame, replyTypes...)
}

// Send is Link.Send on the cold connection.
func (c *ColdLink) Send(ctx context.Context, f SendFrame) (AckFrame, error) {
	return c.conn.send(ctx, f)
}

// Write is Link.Write on the cold connection.
func (c *ColdLink) Write(ctx context.Context, frame any) error { return c.conn.write(ctx, frame) }

// Close ends the cold connection.
func (c *ColdLink) Close() { c.conn.close(websocket.StatusNormalClosure, "") }
