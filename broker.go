// The broker: a WebSocket server that authenticates members and sessions,
// holds presence, and routes messages with at-least-once delivery. It never
// decrypts a DM. A Broker is an in-process value: `claudemesh broker serve`
// runs one, tests start one on 127.0.0.1:0, and the daemon can embed one.
//
// Concurrency: all in-memory state (rooms, peers, leases, buckets) is guarded
// by Broker.mu, and nothing blocks while holding it — pushes to other
// connections are non-blocking offers into a bounded per-connection queue,
// and whatever does not fit stays pending in the store for that
// connection's next drain. Each socket has two goroutines: a reader (the
// HTTP handler goroutine) and a writer, which also drains and pings.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// BrokerOptions configure a Broker; zero values take the defaults.
type BrokerOptions struct {
	DataDir   string      // SQLite store location (ignored when Store or StoreURL is set)
	StoreURL  string      // a postgres:// URL: the store replicas share (ignored when Store is set)
	Store     brokerStore // optional: an already-open store the broker will own
	ReplicaID string      // this broker among the replicas of one store (default: a new id)
	PublicURL string      // the ws(s):// URL clients use, reported in /health
	TLS       *tls.Config // serve wss:// and https:// (startServingBroker)
	// CreateToken lets non-loopback clients create meshes when they present
	// it as a bearer token; without it only loopback clients may.
	CreateToken string

	MaxMessageBytes       int // per send: ciphertext + nonce + targetSpec (default 65536)
	MaxFrameBytes         int // per WebSocket frame (default MaxMessageBytes + 16 KiB of JSON envelope)
	MaxConnectionsPerMesh int // live connections per mesh (default 100)
	SendBurst             int // per-member send bucket size (default 10)
	SendPerMinute         int // per-member send refill (default 60)
	HandshakeBurst        int // per-IP handshake bucket size (default 30)
	HandshakePerMinute    int // per-IP handshake refill (default 120)

	Lease         time.Duration // how long a pushed delivery waits for client_ack (default 30 s)
	MaxInflight   int           // leased deliveries per connection, not yet acked (default 1000)
	SweepInterval time.Duration // lease and housekeeping sweep (default 15 s)
	Grace         time.Duration // presence kept after a socket drops (default 90 s)
	MessageTTL    time.Duration // undelivered messages kept (default 7 days)
	PingInterval  time.Duration // protocol ping period (default 30 s)
	PingTimeout   time.Duration // pong wait; interval + timeout = silence before drop (default 45 s)
	HelloTimeout  time.Duration // time allowed before a handshake (default 30 s)
	// HelloTimeoutUnderPressure replaces HelloTimeout for a socket that
	// opens while its address holds half its MaxPendingPerIP (default 5 s).
	HelloTimeoutUnderPressure time.Duration
	MaxPendingPerIP           int           // sockets one address may hold before their handshake (default 32)
	MaxSkew                   time.Duration // handshake timestamp tolerance (default 60 s)
	// Replicas of a shared (PostgreSQL) store.
	HeartbeatInterval time.Duration // how often this replica says it lives (default 2 s)
	ReplicaExpiry     time.Duration // a replica silent this long is dead (default 10 s)

	Logger *slog.Logger
}

// Defaults.
const (
	defaultMaxMessageBytes       = 65536
	defaultFrameEnvelopeBytes    = 16 << 10
	defaultMaxConnectionsPerMesh = 100
	defaultSendBurst             = 10
	defaultSendPerMinute         = 60
	defaultHandshakeBurst        = 30
	defaultHandshakePerMinute    = 120
	defaultLease                 = 30 * time.Second
	defaultMaxInflight           = 1000
	defaultSweepInterval         = 15 * time.Second
	defaultGrace                 = 90 * time.Second
	defaultPingInterval          = 30 * time.Second
	defaultPingTimeout           = 45 * time.Second
	defaultHelloTimeout          = 30 * time.Second
	defaultPressureHelloTimeout  = 5 * time.Second
	defaultMaxPendingPerIP       = 32
	defaultMaxSkew               = 60 * time.Second
	maxAttestationTTL            = 24 * time.Hour

	outQueueSize     = 256              // frames waiting for one socket's writer
	writeTimeout     = 10 * time.Second // a socket that cannot take a frame in this long is dropped
	purgeEvery       = time.Hour        // expired-message purge period
	drainPage        = 500              // pending messages read per store query
	bucketIdleAfter  = 10 * time.Minute // idle rate buckets are forgotten
	shutdownTimeout  = 5 * time.Second  // graceful HTTP shutdown
	storeOpenTimeout = 30 * time.Second // connecting to and migrating a PostgreSQL store
	maxHTTPBodyBytes = 1 << 20          // hard cap for HTTP bodies other than /join
)

func (o *BrokerOptions) applyDefaults() {
	setDefault(&o.MaxMessageBytes, defaultMaxMessageBytes)
	setDefault(&o.MaxFrameBytes, o.MaxMessageBytes+defaultFrameEnvelopeBytes)
	setDefault(&o.MaxConnectionsPerMesh, defaultMaxConnectionsPerMesh)
	setDefault(&o.SendBurst, defaultSendBurst)
	setDefault(&o.SendPerMinute, defaultSendPerMinute)
	setDefault(&o.HandshakeBurst, defaultHandshakeBurst)
	setDefault(&o.HandshakePerMinute, defaultHandshakePerMinute)
	setDefault(&o.Lease, defaultLease)
	setDefault(&o.MaxInflight, defaultMaxInflight)
	setDefault(&o.SweepInterval, defaultSweepInterval)
	setDefault(&o.Grace, defaultGrace)
	setDefault(&o.MessageTTL, defaultMessageTTL)
	setDefault(&o.PingInterval, defaultPingInterval)
	setDefault(&o.PingTimeout, defaultPingTimeout)
	setDefault(&o.HelloTimeout, defaultHelloTimeout)
	setDefault(&o.HelloTimeoutUnderPressure, min(defaultPressureHelloTimeout, o.HelloTimeout))
	setDefault(&o.MaxPendingPerIP, defaultMaxPendingPerIP)
	setDefault(&o.MaxSkew, defaultMaxSkew)
	setDefault(&o.HeartbeatInterval, defaultHeartbeatInterval)
	setDefault(&o.ReplicaExpiry, defaultReplicaExpiry)
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Broker is one broker instance.
type Broker struct {
	opts   BrokerOptions
	store  brokerStore
	writes *groupCommitter // sends' appends and acks' marks, group-committed
	// replicas is the link to the other replicas of a shared store; nil
	// for a store of one broker (SQLite).
	replicas *replicaLink
	log      *slog.Logger
	started  time.Time
	metrics  brokerMetrics

	ctx    context.Context // ends when the broker closes; parent of every socket
	cancel context.CancelFunc
	wg     sync.WaitGroup // sockets' goroutines and background loops
	sockWG sync.WaitGroup // socket handlers, so Close can let them say goodbye

	mu          sync.Mutex
	closed      bool
	rooms       map[string]*meshRoom // by mesh id
	sockets     map[*brokerConn]struct{}
	seenHellos  map[string]time.Time // replay guard: pubkey|timestamp|signature → first seen
	ipBuckets   map[string]*tokenBucket
	pendingByIP map[string]int          // sockets of an address that have not completed a handshake
	sendBuckets map[string]*tokenBucket // by member id
	servers     []*http.Server
	lastPurge   time.Time
	closeOnce   sync.Once
	closeErr    error

	// grants caches the grants of every member that connected or changed
	// its grants since the broker started, by grantsKey (broker_grants.go).
	// Guarded by mu.
	grants map[string]grantMap
	// grantsMu serializes grant changes: read, change, store, cache.
	grantsMu sync.Mutex
	// roles holds the role of every member whose role this broker changed,
	// by grantsKey (broker_roles.go). Guarded by mu.
	roles map[string]string
	// rolesMu serializes role changes: read, store, cache.
	rolesMu sync.Mutex
}

// meshRoom is the live presence of one mesh, indexed so that routing, a
// handshake's checks and fan-out cost the presences concerned rather than
// the whole mesh.
type meshRoom struct {
	id       string
	peers    map[string]*peer   // by presence id
	byKey    map[string][]*peer // by routing key
	byMember map[string][]*peer // by member key
	live     int                // presences with a socket
	// each is the live presences whose connections take presence events
	// one push at a time; the others take batches or none.
	each map[*peer]struct{}
	systemBatch
}

func newMeshRoom(id string) *meshRoom {
	return &meshRoom{id: id, peers: map[string]*peer{}, byKey: map[string][]*peer{}, byMember: map[string][]*peer{},
		each: map[*peer]struct{}{}}
}

// add puts a new presence in the room. Caller holds b.mu.
func (r *meshRoom) add(p *peer) {
	r.peers[p.presenceID] = p
	r.byKey[p.key] = append(r.byKey[p.key], p)
	r.byMember[p.memberPubkey] = append(r.byMember[p.memberPubkey], p)
	if p.conn != nil {
		r.live++
	}
}

// remove takes a presence out of the room. Caller holds b.mu.
func (r *meshRoom) remove(p *peer) {
	if r.peers[p.presenceID] != p {
		return
	}
	delete(r.peers, p.presenceID)
	delete(r.each, p)
	unindex(r.byKey, p.key, p)
	unindex(r.byMember, p.memberPubkey, p)
	if p.conn != nil {
		r.live--
	}
}

// setConn gives a presence its socket, or takes it away (nil). Caller
// holds b.mu.
func (r *meshRoom) setConn(p *peer, c *brokerConn) {
	if r.peers[p.presenceID] == p {
		switch {
		case p.conn == nil && c != nil:
			r.live++
		case p.conn != nil && c == nil:
			r.live--
		}
		if c != nil && p.presenceEvents == presenceEach {
			r.each[p] = struct{}{}
		} else {
			delete(r.each, p)
		}
	}
	p.conn = c
}

// unindex removes p from the list under k.
func unindex(m map[string][]*peer, k string, p *peer) {
	list := m[k]
	for i, o := range list {
		if o == p {
			list[i] = list[len(list)-1]
			list[len(list)-1] = nil
			list = list[:len(list)-1]
			break
		}
	}
	if len(list) == 0 {
		delete(m, k)
	} else {
		m[k] = list
	}
}

// peer is one presence: a member connection (control-plane) or a session
// connection. It outlives its socket for the grace window, so a quick
// reconnect re-attaches to it silently.
type peer struct {
	presenceID    string
	meshID        string
	memberID      string
	memberPubkey  string
	sessionPubkey string
	key           string // routing key: the session key when there is one, else the member key
	role          string // peerRoleControlPlane | peerRoleSession
	memberRole    string // admin | member
	isOwner       bool   // its member key is the mesh owner key
	displayName   string
	status        string
	summary       string
	groups        []GroupRef
	sessionID     string
	pid           int
	cwd           string
	hostname      string
	peerType      string
	channel       string
	model         string
	visible       bool
	profile       Profile
	stats         json.RawMessage
	receipts      bool // its connection takes receipt frames (capabilityReceipts)
	// presenceEvents is how its connection takes presence events.
	presenceEvents presenceMode
	connectedAt    time.Time
	lastSeen       time.Time

	conn       *brokerConn // nil while in grace
	graceTimer *time.Timer
	removed    bool
	needsDrain bool
	inflight   map[string]*lease    // pushed, not yet acked, by message id
	acked      map[string]time.Time // recently acked message ids: guards a drain racing the ack's store write
}

// oneShot reports a CLI's one-shot link (a plain hello on channel
// claude-code, as `claudemesh kick` or `claudemesh status` open): it does
// one request and closes. It is not announced to the mesh, and it goes
// away when its socket does, without a grace window, so that a run of CLI
// verbs leaves no trail of ghost presences (nor joined / left reminders in
// other members' sessions). Caller holds b.mu.
func (p *peer) oneShot() bool { return p.channel == channelCLI && p.role == peerRoleControlPlane }

// lease is one pushed delivery waiting for client_ack.
type lease struct {
	seq             int64 // the message's store order: its ack retires the delivery by it
	clientMessageID string
	expires         time.Time
}

// brokerConn is one WebSocket.
type brokerConn struct {
	b  *Broker
	ws *websocket.Conn
	ip string
	// helloTimeout is this socket's deadline for a handshake, and
	// authenticated releases its place among its address's pending sockets.
	helloTimeout  time.Duration
	authenticated func()
	pushes        *pushQueue  // pushes, waiting for the writer
	replies       *replyQueue // replies, in the order of what they answer (broker_replies.go)
	drainCh       chan struct{}
	ctx           context.Context
	cancel        context.CancelFunc
	peer          *peer // set by the handshake; guarded by b.mu

	closing  atomic.Bool
	lastRead atomic.Int64 // unix ms of the last frame, ping or pong
}

// newBroker opens the store and starts the background sweep.
func newBroker(opts BrokerOptions) (*Broker, error) {
	opts.applyDefaults()
	if opts.ReplicaID == "" {
		opts.ReplicaID = newReplicaID()
	}
	store := opts.Store
	switch {
	case store != nil:
	case opts.StoreURL != "":
		if !isPostgresURL(opts.StoreURL) {
			return nil, fmt.Errorf("store %q: want a postgres:// URL", redactURL(opts.StoreURL))
		}
		ctx, cancel := context.WithTimeout(context.Background(), storeOpenTimeout)
		s, err := openPostgresBrokerStore(ctx, opts.StoreURL, opts.ReplicaID)
		cancel()
		if err != nil {
			return nil, err
		}
		store = s
	case opts.DataDir == "":
		return nil, errors.New("broker needs a data directory")
	default:
		s, err := openSQLiteBrokerStore(opts.DataDir)
		if err != nil {
			return nil, err
		}
		store = s
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{
		opts:        opts,
		store:       store,
		log:         opts.Logger,
		started:     time.Now(),
		ctx:         ctx,
		cancel:      cancel,
		rooms:       map[string]*meshRoom{},
		sockets:     map[*brokerConn]struct{}{},
		seenHellos:  map[string]time.Time{},
		ipBuckets:   map[string]*tokenBucket{},
		pendingByIP: map[string]int{},
		sendBuckets: map[string]*tokenBucket{},
		lastPurge:   time.Now(),
		grants:      map[string]grantMap{},
		roles:       map[string]string{},
	}
	b.metrics.init()
	b.writes = newGroupCommitter(store, b.log, func(n int) { b.metrics.delivered.Add(int64(n)) })
	if err := b.startReplicas(); err != nil {
		cancel()
		b.wg.Wait()
		b.writes.close()
		store.Close()
		return nil, fmt.Errorf("replica: %w", err)
	}
	b.wg.Add(2)
	go b.sweepLoop()
	go func() {
		defer b.wg.Done()
		select {
		case <-time.After(b.opts.Grace):
			b.endStalePresences(b.started)
		case <-b.ctx.Done():
		}
	}()
	return b, nil
}

// Handler is the broker's HTTP surface: /ws, /health, /metrics, /join and
// the mesh-creation routes.
func (b *Broker) Handler() http.Handler { return b.routes() }

// Serve answers HTTP and WebSocket requests on l until the broker closes; it
// returns nil then. On a broker already closed it closes l and returns nil.
func (b *Broker) Serve(l net.Listener) error {
	srv := &http.Server{
		Handler:           b.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return b.ctx },
		ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelDebug),
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		l.Close()
		return nil
	}
	b.servers = append(b.servers, srv)
	b.mu.Unlock()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops accepting, closes every socket with 1001 "going away" (clients
// reconnect elsewhere or later; nothing they had pending is lost), waits for
// the background work and closes the store.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		servers := b.servers
		sockets := make([]*brokerConn, 0, len(b.sockets))
		for c := range b.sockets {
			sockets = append(sockets, c)
		}
		b.mu.Unlock()
		for _, srv := range servers {
			ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			_ = srv.Shutdown(ctx)
			cancel()
		}
		for _, c := range sockets {
			c.closeWith(websocket.StatusGoingAway, "broker shutting down")
		}
		done := make(chan struct{})
		go func() { b.sockWG.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(shutdownTimeout):
		}
		b.cancel()
		b.wg.Wait()
		b.writes.close() // after the sockets: nothing can queue a write any more
		if b.replicas != nil {
			b.replicas.leave()
		}
		b.mu.Lock()
		for _, room := range b.rooms {
			for _, p := range room.peers {
				if p.graceTimer != nil {
					p.graceTimer.Stop()
				}
			}
		}
		b.mu.Unlock()
		b.closeErr = b.store.Close()
	})
	return b.closeErr
}

// liveChanged tells other replicas of p's new state. Caller holds b.mu.
func (b *Broker) liveChanged(p *peer) {
	if b.replicas != nil {
		b.replicas.changed(p)
	}
}

// liveRemoved tells other replicas p is gone. Caller holds b.mu.
func (b *Broker) liveRemoved(p *peer) {
	if b.replicas != nil {
		b.replicas.removed(p)
	}
}

// room returns the mesh's room, creating it. Caller holds b.mu.
func (b *Broker) room(meshID string) *meshRoom {
	r := b.rooms[meshID]
	if r == nil {
		r = newMeshRoom(meshID)
		b.rooms[meshID] = r
	}
	return r
}

// Socket I/O.

// serveWS upgrades the request and runs the socket until it ends.
func (b *Broker) serveWS(w http.ResponseWriter, r *http.Request) {
	var c *brokerConn
	touch := func(context.Context, []byte) {
		if c != nil {
			c.lastRead.Store(time.Now().UnixMilli())
		}
	}
	ip := remoteIP(r)
	helloTimeout, ok := b.admitPending(ip)
	if !ok {
		http.Error(w, fmt.Sprintf("too many connections from %s waiting for a handshake (max %d)", ip, b.opts.MaxPendingPerIP),
			http.StatusTooManyRequests)
		return
	}
	pending := true
	defer func() {
		if pending {
			b.leavePending(ip)
		}
	}()
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		OnPingReceived: func(ctx context.Context, p []byte) bool { touch(ctx, p); return true },
		OnPongReceived: touch,
	})
	if err != nil {
		return // Accept has answered the request
	}
	ws.SetReadLimit(int64(b.opts.MaxFrameBytes))
	ctx, cancel := context.WithCancel(b.ctx)
	c = &brokerConn{b: b, ws: ws, ip: ip, pushes: newPushQueue(), replies: newReplyQueue(),
		drainCh: make(chan struct{}, 1), ctx: ctx, cancel: cancel, helloTimeout: helloTimeout,
		authenticated: func() { pending = false; b.leavePending(ip) }}
	c.lastRead.Store(time.Now().UnixMilli())

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		ws.Close(websocket.StatusGoingAway, "broker shutting down")
		cancel()
		return
	}
	b.sockets[c] = struct{}{}
	b.wg.Add(2)
	b.sockWG.Add(1)
	b.mu.Unlock()
	b.metrics.connections.Add(1)
	end := func(err error) {
		cancel()
		ws.CloseNow()
		b.detach(c, leftOnPurpose(err))
		b.mu.Lock()
		delete(b.sockets, c)
		b.mu.Unlock()
		b.metrics.connections.Add(-1)
		b.sockWG.Done()
		b.wg.Done()
	}

	go func() { defer b.wg.Done(); c.writeLoop() }()

	if err := c.readHello(); err != nil {
		end(err)
		return
	}
	// The rest is read on a fresh goroutine and this handler returns: the
	// stack the handshake grew (JSON, signatures, store queries) and the
	// HTTP request go with it, which halves what an idle connection holds.
	go func() { end(c.readLoop()) }()
}

// remoteIP is the client's address without the port.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// send queues a reply for this socket behind the replies already placed,
// waiting while maxRepliesWaiting wait; it gives up when the socket ends.
// Used for replies on the socket's own goroutines.
func (c *brokerConn) send(v any) {
	place := c.replies.reserve(c.ctx.Done())
	if place == nil {
		return
	}
	data, err := json.Marshal(v)
	if err != nil {
		c.b.log.Error("encode frame", "err", err)
		data = nil
	}
	c.replies.fill(place, data)
}

// offer queues a push without waiting; false when outQueueSize pushes
// wait already or the socket is closing. Safe under b.mu.
func (c *brokerConn) offer(data []byte) bool {
	if c.closing.Load() {
		return false
	}
	return c.pushes.offer(data)
}

// closeWith closes the socket after the replies already placed (so an
// error frame goes out before the close). Safe under b.mu; never blocks.
func (c *brokerConn) closeWith(code websocket.StatusCode, reason string) {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	c.replies.closeAfter(code, reason)
}

// drop ends the socket at once, without a close handshake: its writer
// failed or its peer went silent.
func (c *brokerConn) drop() {
	c.ws.CloseNow()
	c.cancel()
}

// writeLoop is the socket's writer: it sends pushes and replies, runs
// drains page by page (so replies are not held up behind a long one), and
// pings every PingInterval; a socket that answers a ping with nothing
// within PingTimeout is dropped. One goroutine does all of it, so an idle
// connection costs two (its reader and this), plus one for the length of
// each ping.
func (c *brokerConn) writeLoop() {
	ping := time.NewTicker(c.b.opts.PingInterval)
	defer ping.Stop()
	pinged := make(chan error, 1)
	pinging := false
	var drain drainPass
	var nextPage <-chan struct{} // ready while a drain has more pages
	for {
		select {
		case <-c.pushes.ready:
			for _, data := range c.pushes.take() {
				if !c.write(data) {
					return
				}
			}
		case <-c.replies.ready:
			for _, p := range c.replies.take() {
				if p.close {
					c.ws.Close(p.code, p.reason)
					c.cancel()
					return
				}
				if p.data != nil && !c.write(p.data) {
					return
				}
			}
		case <-c.drainCh:
			drain = drainPass{}
			nextPage = c.drainNext(&drain)
		case <-nextPage:
			nextPage = c.drainNext(&drain)
		case <-ping.C:
			if !pinging {
				pinging = true
				c.b.wg.Add(1)
				go func() {
					defer c.b.wg.Done()
					ctx, cancel := context.WithTimeout(c.ctx, c.b.opts.PingTimeout)
					defer cancel()
					pinged <- c.ws.Ping(ctx)
				}()
			}
		case err := <-pinged:
			pinging = false
			if err != nil {
				if c.ctx.Err() == nil {
					c.b.log.Info("dropping silent connection", "ip", c.ip)
				}
				c.drop()
				return
			}
		case <-c.ctx.Done():
			return
		}
	}
}

// drainNext runs the next page of a drain and returns a ready channel
// when there is another.
func (c *brokerConn) drainNext(pass *drainPass) <-chan struct{} {
	if !c.b.drainPage(c, pass) {
		return nil
	}
	return readyChan
}

// readyChan is always ready to receive from.
var readyChan = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

// write sends one frame, dropping the socket when it cannot take it
// within writeTimeout.
func (c *brokerConn) write(data []byte) bool {
	ctx, cancel := context.WithTimeout(c.ctx, writeTimeout)
	err := c.ws.Write(ctx, websocket.MessageText, data)
	cancel()
	if err != nil {
		c.drop()
		return false
	}
	return true
}

// answerSend fills a send's place among the socket's replies.
func (c *brokerConn) answerSend(place *replyPlace, ack AckFrame) {
	data, err := json.Marshal(ack)
	if err != nil {
		c.b.log.Error("encode frame", "err", err)
	}
	c.replies.fill(place, data)
}

// leftOnPurpose reports whether a socket ended with the client's normal
// close saying it leaves.
func leftOnPurpose(readErr error) bool {
	var ce websocket.CloseError
	return errors.As(readErr, &ce) && ce.Code == websocket.StatusNormalClosure && ce.Reason == closeReasonLeave
}

// readHello reads frames until one authenticates the socket, or returns why
// the socket ended first.
func (c *brokerConn) readHello() error {
	helloTimer := time.AfterFunc(c.helloTimeout, func() {
		c.b.mu.Lock()
		authed := c.peer != nil
		c.b.mu.Unlock()
		if !authed {
			c.b.refuse(c, handshakeError{code: codeHelloTimeout, message: "no hello within " + c.helloTimeout.String(), close: closePolicy})
		}
	})
	defer helloTimer.Stop()
	for {
		data, text, err := c.readText()
		if err != nil {
			return err
		}
		if text && c.b.handleUnauthenticated(c, data) {
			helloTimer.Stop()
			c.authenticated()
			return nil
		}
	}
}

// readLoop reads and handles an authenticated socket's frames until it
// ends, and returns why it ended.
func (c *brokerConn) readLoop() error {
	for {
		data, text, err := c.readText()
		if err != nil {
			return err
		}
		if text {
			c.b.handleFrame(c, data)
		}
	}
}

// readText reads the next frame; a binary one is answered with an error
// and reported as not text.
func (c *brokerConn) readText() (data []byte, text bool, err error) {
	typ, data, err := c.ws.Read(c.ctx)
	if err != nil {
		return nil, false, err
	}
	c.lastRead.Store(time.Now().UnixMilli())
	if typ != websocket.MessageText {
		c.send(ErrorFrame{Type: frameError, Code: codeInvalid, Message: "frames must be UTF-8 JSON text"})
		return nil, false, nil
	}
	return data, true, nil
}

// requestDrain asks the socket's drainer to run. Safe under b.mu.
func (c *brokerConn) requestDrain() {
	select {
	case c.drainCh <- struct{}{}:
	default:
	}
}

// replyError sends an error frame echoing the request id.
func (c *brokerConn) replyError(code, message, reqID string) {
	c.send(ErrorFrame{Type: frameError, Code: code, Message: message, ReqID: reqID})
}

// detach runs when a socket ends: its presence enters the grace window (or
// goes away at once when the broker is closing or the client left on
// purpose), and its leases are released so its next connection gets them
// immediately.
func (b *Broker) detach(c *brokerConn, leaving bool) {
	b.mu.Lock()
	p := c.peer
	if p == nil || p.conn != c {
		b.mu.Unlock()
		return
	}
	c.peer = nil
	b.room(p.meshID).setConn(p, nil)
	p.inflight = map[string]*lease{}
	p.lastSeen = time.Now()
	ps := p.peerState()
	switch {
	case b.closed || p.oneShot():
		// A one-shot CLI link left on purpose: nothing to re-attach to.
		p.removed = true
		b.room(p.meshID).remove(p)
		b.liveRemoved(p)
	case leaving:
		b.removePeer(p, 0, "", b.lastOfKey(p))
	default:
		p.graceTimer = time.AfterFunc(b.opts.Grace, func() { b.expireGrace(p) })
		b.liveChanged(p)
	}
	b.mu.Unlock()
	if p.role == peerRoleControlPlane {
		b.savePeerState(ps)
	}
}

// expireGrace removes a presence whose socket did not come back in time.
func (b *Broker) expireGrace(p *peer) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.removed || p.conn != nil || b.closed {
		return
	}
	b.removePeer(p, 0, "", b.lastOfKey(p))
}

// lastOfKey reports whether p is the only presence with its key: peer_left
// is told only then, since a daemon that restarted is back under a new
// sessionId and has not left. Caller holds b.mu.
func (b *Broker) lastOfKey(p *peer) bool {
	for _, o := range b.room(p.meshID).byKey[p.key] {
		if o != p && o.key == p.key {
			return false
		}
	}
	return true
}

// removePeer takes a presence out of its room, closing its socket with code
// (when it has one) and telling the others it left. Caller holds b.mu.
func (b *Broker) removePeer(p *peer, code websocket.StatusCode, reason string, announce bool) {
	if p.removed {
		return
	}
	p.removed = true
	if p.graceTimer != nil {
		p.graceTimer.Stop()
	}
	room := b.room(p.meshID)
	room.remove(p)
	if c := p.conn; c != nil {
		c.peer = nil
		p.conn = nil
		c.closeWith(code, reason)
	}
	p.inflight = map[string]*lease{}
	b.recordAbsence(p)
	b.liveRemoved(p)
	if announce {
		skipMember := ""
		if p.role == peerRoleControlPlane {
			skipMember = p.memberID
		}
		b.systemPush(room, eventPeerLeft, SystemEventData{Name: p.displayName, Pubkey: p.key}, func(o *peer) bool {
			return p.role == peerRoleControlPlane && o.memberID == p.memberID
		}, skipMember)
	}
}

// savePeerState writes what a member connection leaves behind.
func (b *Broker) savePeerState(ps storedPeerState) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.store.SavePeerState(ctx, ps); err != nil {
		b.log.Warn("save peer state", "err", err)
	}
}

// peerState snapshots p for the store. Caller holds b.mu.
func (p *peer) peerState() storedPeerState {
	return storedPeerState{MeshID: p.meshID, MemberID: p.memberID, Groups: append([]GroupRef{}, p.groups...),
		Visible: p.visible, Profile: p.profile, Summary: p.summary, Stats: p.stats, LastSeenAt: time.Now()}
}

// systemPush sends a presence event to every live connection of the room
// except those skip selects, and to the connections other replicas hold
// except skipMember's. System pushes are not stored: they describe the
// present. Caller holds b.mu.
func (b *Broker) systemPush(room *meshRoom, event string, data SystemEventData, skip func(*peer) bool, skipMember string) {
	b.systemPushHere(room, event, data, skip)
	if b.replicas != nil {
		raw, _ := json.Marshal(data)
		b.publishLater(replicaEvent{Kind: replicaEventSystem, Mesh: room.id, Event: event, Data: raw, SkipMember: skipMember})
	}
}

// systemPushHere is systemPush on this replica's connections only. Caller
// holds b.mu.
func (b *Broker) systemPushHere(room *meshRoom, event string, data SystemEventData, skip func(*peer) bool) {
	raw, _ := json.Marshal(data)
	ev := SystemEvent{Event: event, EventData: raw, CreatedAt: isoTime(time.Now())}
	if len(room.each) > 0 {
		frame, _ := json.Marshal(ev.push(room.id))
		for o := range room.each {
			if skip == nil || !skip(o) {
				o.conn.offer(frame)
			}
		}
	}
	b.batchSystemEvent(room, ev)
}

// sweepLoop re-pushes expired leases, drains connections that fell behind,
// forgets stale replay and rate state, and purges expired messages.
func (b *Broker) sweepLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			b.sweep(time.Now())
		case <-b.ctx.Done():
			return
		}
	}
}

func (b *Broker) sweep(now time.Time) {
	b.mu.Lock()
	for _, room := range b.rooms {
		for _, p := range room.peers {
			if p.conn == nil {
				continue
			}
			expired := false
			for id, l := range p.inflight {
				if now.After(l.expires) {
					delete(p.inflight, id)
					expired = true
				}
			}
			for id, at := range p.acked {
				if now.Sub(at) > 2*b.opts.Lease {
					delete(p.acked, id)
				}
			}
			if expired || p.needsDrain {
				p.conn.requestDrain()
			}
		}
		if len(room.peers) == 0 {
			delete(b.rooms, room.id)
		}
	}
	for k, at := range b.seenHellos {
		if now.Sub(at) > 2*b.opts.MaxSkew {
			delete(b.seenHellos, k)
		}
	}
	for k, tb := range b.ipBuckets {
		if tb.idle(now, bucketIdleAfter) {
			delete(b.ipBuckets, k)
		}
	}
	for k, tb := range b.sendBuckets {
		if tb.idle(now, bucketIdleAfter) {
			delete(b.sendBuckets, k)
		}
	}
	purge := now.Sub(b.lastPurge) >= purgeEvery
	if purge {
		b.lastPurge = now
	}
	b.mu.Unlock()
	if purge {
		ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
		if n, err := b.store.PurgeExpired(ctx, now); err != nil {
			b.log.Warn("purge expired messages", "err", err)
		} else if n > 0 {
			b.log.Info("purged expired messages", "count", n)
		}
		cancel()
	}
}

// storeCtx bounds one store call made while serving a frame.
func (b *Broker) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, 10*time.Second)
}

// storeCall serves a frame from the store: one call for the socket's
// presence (a copy) under a store deadline. A socket without a presence
// gets nothing; a failed call is answered with an internal error. ok says
// whether to answer with the result.
func storeCall[T any](b *Broker, c *brokerConn, reqID string, call func(ctx context.Context, me *peer) (T, error)) (out T, ok bool) {
	me := b.self(c)
	if me == nil {
		return out, false
	}
	ctx, cancel := b.storeCtx()
	defer cancel()
	out, err := call(ctx, me)
	if err != nil {
		c.internalError(reqID, err)
		return out, false
	}
	return out, true
}

// internalError answers a frame whose store call failed.
func (c *brokerConn) internalError(reqID string, err error) {
	c.b.log.Error("store", "err", err)
	c.replyError(codeInternal, fmt.Sprintf("internal error: %v", err), reqID)
}
