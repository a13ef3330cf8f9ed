// The daemon process: one per user per machine. It holds a member link to
// every mesh in the machine config, a session link per registered session
// with presence, the session registry and the event bus, and serves IPC.
//
// Policy:
//   - Singleton by an exclusive flock on daemon.lock, taken before anything
//     else; a socket that answers is never replaced, a dead one is removed.
//   - The daemon reads the machine config (~/.claudemesh/config.json), never
//     CLAUDEMESH_CONFIG_DIR: a daemon autospawned from inside a launched
//     session must not serve that session's one-mesh temp config.
//   - Zero meshes is fine: IPC still serves, so `init`/`join` can come
//     later. The config is re-read on SIGHUP, on POST /v1/reload and when a
//     request names a mesh the daemon does not know yet; a re-read also
//     restarts member links the broker banned, in case of an unban.
//   - A `broker` block in the config is served in-process (daemon_broker.go).
//   - Shutdown: event streams end, listeners stop accepting and in-flight
//     requests finish (bounded), links close, the embedded broker stops,
//     then the files go.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// defaultTCPPort is the loopback IPC port claudemesh uses.
const defaultTCPPort = 47823

// daemonShutdownTimeout bounds how long in-flight IPC requests may finish.
const daemonShutdownTimeout = 5 * time.Second

// DaemonOptions configure a daemon; tests shorten the intervals.
type DaemonOptions struct {
	Paths        Paths
	ConfigFile   string // the machine config; default Paths.MachineConfigFile()
	NoTCP        bool
	TCPPort      int // 0 = an ephemeral port
	PublicHealth bool
	Log          *slog.Logger

	Link           LinkTiming
	ReaperInterval time.Duration
	SessionTTL     time.Duration
	// HookStatusDecay is how long a status the hooks set holds without a
	// hook; PresenceSweep how often decayed statuses are sent.
	HookStatusDecay time.Duration
	PresenceSweep   time.Duration
	// UnsurfacedSweep is how often sessions with a live channel are
	// looked at for messages that stayed unshown.
	UnsurfacedSweep time.Duration
	KeepAlive       time.Duration // SSE keepalive comments
	RPCTimeout      time.Duration // one broker request/reply
	StartTimes      func(pids []int) map[int]string
	PidAlive        func(pid int) bool

	// Messages takes message pushes instead of the inbox (tests). Nil: the
	// inbox stores them.
	Messages MessageSink
	// Drain holds the outbox drain's limits.
	Drain DrainTiming
	// MaxMessageBytes is the broker's per-message limit (ciphertext + nonce
	// + target); sends that cannot fit are refused at accept time.
	MaxMessageBytes int
	// PruneEvery and Retention: inbox rows, and outbox rows that are done,
	// aborted or dead, older than the retention are deleted at start and
	// then every PruneEvery.
	PruneEvery time.Duration
	Retention  time.Duration
	// Closers are closed last at shutdown (stores).
	Closers []io.Closer
	// Ready, if set, is closed once IPC is listening.
	Ready chan struct{}
}

func (o *DaemonOptions) defaults() {
	if o.ConfigFile == "" {
		o.ConfigFile = o.Paths.MachineConfigFile()
		if o.Paths.MachineConfigDir == "" {
			// Paths built by hand rather than by resolvePaths: their
			// config dir is all we know.
			o.ConfigFile = o.Paths.ConfigFile()
		}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Link.HelloTimeout == 0 {
		o.Link = defaultLinkTiming()
	}
	setDefault(&o.ReaperInterval, 5*time.Second)
	setDefault(&o.SessionTTL, sessionTTL)
	setDefault(&o.HookStatusDecay, hookStatusDecay)
	setDefault(&o.PresenceSweep, presenceSweep)
	setDefault(&o.UnsurfacedSweep, defaultUnsurfacedSweep)
	setDefault(&o.KeepAlive, 15*time.Second)
	setDefault(&o.RPCTimeout, 5*time.Second)
	o.Drain.fillDefaults()
	setDefault(&o.MaxMessageBytes, defaultMaxMessageBytes)
	setDefault(&o.PruneEvery, time.Hour)
	setDefault(&o.Retention, 30*24*time.Hour)
}

// Daemon is the running daemon.
type Daemon struct {
	opts  DaemonOptions
	log   *slog.Logger
	paths Paths

	ctx         context.Context // the daemon's life; links run under it
	cancelRun   context.CancelFunc
	cancelServe context.CancelFunc // ends IPC request contexts, after the shutdown grace
	bus         *Bus
	sessions    *Registry
	ui          *uiServer
	states      *sessionStates // what each session's hooks told
	hookRegMu   sync.Mutex     // one registration of a plain session at a time
	presenceMu  sync.Mutex     // one presence sync at a time (sessionpresence.go)

	mu           sync.Mutex
	meshes       map[string]*meshEntry   // slug → member link
	sessionLinks map[string]*sessionLink // session token → its link
	departed     map[string]time.Time    // session key → when its session deregistered
	reloadMu     sync.Mutex

	brokerMu sync.Mutex
	embedded *embeddedBroker // the config's broker block, served in-process

	displayName string        // the config's: what this machine's member goes by
	warnAfter   time.Duration // the config's unsurfacedWarnAfter: 0 tells no session of unshown messages

	token     string // local-token for TCP IPC
	tcpPort   int
	pid       int
	hostname  string
	cwd       string
	startedAt time.Time

	lock    *os.File
	servers []*http.Server

	outbox     *Outbox  // nil until Run opens it
	inbox      *Inbox   // nil until Run opens it
	drain      *drainer // sends the outbox
	pruner     sync.WaitGroup
	senders    *senderNames   // names for pushes that carry only a key
	lookups    sync.WaitGroup // pushes waiting for a sender's name
	storesOnce sync.Once

	receipts      *receiptSender // tells senders how far their messages got here
	ladderWaiters ladderWaiters  // requests waiting on a sent message's ladder
	metrics       daemonMetrics
}

// meshEntry is one joined mesh and its member link.
type meshEntry struct {
	Mesh Mesh
	Key  Keypair
	Link *Link
}

// sessionLink is a registered session's own broker link.
type sessionLink struct {
	Session *Session
	Link    *Link
}

// DaemonRunningError says another daemon holds the lock.
type DaemonRunningError struct{ Pid int }

func (e *DaemonRunningError) Error() string {
	if e.Pid > 0 {
		return fmt.Sprintf("daemon already running (pid %d)", e.Pid)
	}
	return "daemon already running"
}

// NewDaemon prepares a daemon; Run starts it.
func NewDaemon(opts DaemonOptions) *Daemon {
	opts.defaults()
	d := &Daemon{
		opts: opts, log: opts.Log, paths: opts.Paths, bus: newBus(256),
		meshes: map[string]*meshEntry{}, sessionLinks: map[string]*sessionLink{}, departed: map[string]time.Time{},
		pid: os.Getpid(), senders: newSenderNames(), ui: newUIServer(), states: newSessionStates(),
	}
	d.hostname, _ = os.Hostname()
	d.cwd, _ = os.Getwd()
	d.bus.onDrop = func(*Subscription) { d.log.Warn("sse_subscriber_dropped", "reason", "slow_consumer") }
	d.sessions = newRegistry(RegistryOptions{
		File: d.paths.SessionsFile(), TTL: opts.SessionTTL, StartTimes: opts.StartTimes, PidAlive: opts.PidAlive,
		Log: d.log, OnRegister: d.onSessionRegister, OnDeregister: d.onSessionDeregister,
	})
	return d
}

// Run boots the daemon, serves until ctx ends, then shuts down.
func (d *Daemon) Run(ctx context.Context) error {
	undo, err := d.boot(ctx)
	defer undo.run()
	if err != nil {
		return err
	}
	d.serveUntilDone(ctx)
	d.shutdown()
	return nil
}

// undoStack is what boot has set up, undone in reverse order: on a failed
// boot it unwinds what got done, after a shutdown it removes the lock and
// the pid file last.
type undoStack []func()

func (u *undoStack) push(f func()) { *u = append(*u, f) }

func (u undoStack) run() {
	for i := len(u) - 1; i >= 0; i-- {
		u[i]()
	}
}

// boot takes the singleton lock, writes the pid and token files, opens the
// stores, starts the embedded broker, the links, the reaper, the drain and
// the pruner, and listens for IPC. Ready is closed when it returns nil.
func (d *Daemon) boot(ctx context.Context) (undo undoStack, err error) {
	if err := ensurePrivateDir(d.paths.DaemonDir); err != nil {
		return undo, fmt.Errorf("daemon dir: %w", err)
	}
	// The dir is this daemon's own: one left open to others (an unpacked
	// backup, a mkdir by hand) is closed again rather than reported forever.
	if st, err := os.Stat(d.paths.DaemonDir); err == nil && st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(d.paths.DaemonDir, 0o700); err == nil {
			d.log.Warn("daemon_dir_mode_fixed", "dir", d.paths.DaemonDir, "was", fmt.Sprintf("%04o", st.Mode().Perm()))
		}
	}
	if err := d.acquireLock(); err != nil {
		return undo, err
	}
	undo.push(d.releaseLock)
	if err := d.clearStaleSocket(); err != nil {
		return undo, err
	}
	if err := writeFileAtomic(d.paths.PidFile(), []byte(strconv.Itoa(d.pid)+"\n"), 0o600); err != nil {
		return undo, fmt.Errorf("pid file: %w", err)
	}
	undo.push(func() { d.removeIfOurs(d.paths.PidFile()) })
	token, err := ensureLocalToken(d.paths.TokenFile())
	if err != nil {
		return undo, fmt.Errorf("local token: %w", err)
	}
	d.token = token
	cfg, err := loadConfig(d.opts.ConfigFile)
	if err != nil {
		return undo, err
	}
	if err := d.openStores(); err != nil {
		return undo, err
	}
	undo.push(d.closeStores)

	// runCtx is the links' and workers' life; serveCtx outlives it by the
	// shutdown grace, so in-flight requests can finish (SSE streams end
	// earlier, through the bus).
	runCtx, cancelRun := context.WithCancel(ctx)
	undo.push(cancelRun)
	serveCtx, cancelServe := context.WithCancel(context.WithoutCancel(ctx))
	undo.push(cancelServe)
	d.ctx, d.cancelRun, d.cancelServe = runCtx, cancelRun, cancelServe

	// The embedded broker first, so that links to it connect at once.
	d.applyBrokerConf(cfg.Broker)
	undo.push(d.closeEmbeddedBroker)
	d.applyConfig(cfg, false)
	d.restoreSessions()
	d.sessions.EnablePersistence()
	go d.sessions.RunReaper(runCtx, d.opts.ReaperInterval)
	go d.runPresenceSweep(runCtx)
	go d.runUnsurfacedSweep(runCtx)
	d.drain.Start(runCtx)
	d.receipts.Start(runCtx)
	d.startPruner(runCtx)

	d.startedAt = time.Now()
	serve, err := d.listen(serveCtx)
	if err != nil {
		d.closeLinks()
		return undo, err
	}
	d.writeDaemonInfo()
	tcp := any(nil)
	if d.tcpPort > 0 {
		tcp = "127.0.0.1:" + strconv.Itoa(d.tcpPort)
	}
	d.log.Info("daemon_started", "version", version, "pid", d.pid, "sock", d.paths.SocketFile(), "tcp", tcp,
		"meshes", d.meshSlugs(), "config", d.opts.ConfigFile)
	serve()
	if d.opts.Ready != nil {
		close(d.opts.Ready)
	}
	return undo, nil
}

// writeDaemonInfo writes daemon.json: what a client may know of this daemon
// without asking it (pid, version, TCP port, start time).
func (d *Daemon) writeDaemonInfo() {
	info := map[string]any{"pid": d.pid, "version": version, "tcp_port": nil, "started_at": d.startedAt.UTC().Format(time.RFC3339Nano)}
	if d.tcpPort > 0 {
		info["tcp_port"] = d.tcpPort
	}
	infoJSON, _ := json.Marshal(info)
	if err := writeFileAtomic(d.paths.DaemonInfoFile(), append(infoJSON, '\n'), 0o600); err != nil {
		d.log.Warn("daemon_info_write_failed", "err", err.Error())
	}
}

// serveUntilDone waits for ctx to end, re-reading the config on SIGHUP.
func (d *Daemon) serveUntilDone(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if _, _, err := d.Reload(); err != nil {
				d.log.Warn("config_reload_failed", "err", err.Error())
			}
		}
	}
}

// shutdown ends event streams, lets in-flight requests finish (bounded),
// closes the links, then the embedded broker, the drain and the stores.
func (d *Daemon) shutdown() {
	d.log.Info("daemon_shutdown")
	d.bus.Close()
	shCtx, cancel := context.WithTimeout(context.Background(), daemonShutdownTimeout)
	var wg sync.WaitGroup
	for _, srv := range d.servers {
		wg.Add(1)
		go func() { defer wg.Done(); _ = srv.Shutdown(shCtx) }()
	}
	wg.Wait()
	cancel()
	d.cancelServe()
	d.cancelRun()
	d.closeLinks()
	d.closeEmbeddedBroker() // after the links: they close against a live broker
	d.drain.Wait()
	d.lookups.Wait()
	d.closeStores()
	for _, c := range d.opts.Closers {
		if err := c.Close(); err != nil {
			d.log.Warn("store_close_failed", "err", err.Error())
		}
	}
	os.Remove(d.paths.SocketFile())
	d.removeIfOurs(d.paths.DaemonInfoFile())
	d.log.Info("daemon_stopped")
}

// openStores opens outbox.db and inbox.db (after the lock, so that a second
// daemon never touches a live one's rows), adopting files another claudemesh
// left there, and routes message pushes to the inbox.
func (d *Daemon) openStores() error {
	now := time.Now()
	if err := adoptForeignStore(d.paths.OutboxDB(), "outbox", outboxMigrations, d.log, now); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	if err := adoptForeignStore(d.paths.InboxDB(), "inbox", inboxMigrations, d.log, now); err != nil {
		return fmt.Errorf("inbox: %w", err)
	}
	ob, recovered, err := openOutbox(d.paths.OutboxDB())
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	if recovered > 0 {
		d.log.Info("outbox_inflight_recovered", "rows", recovered)
	}
	ib, err := openInbox(d.paths.InboxDB())
	if err != nil {
		ob.Close()
		return fmt.Errorf("inbox: %w", err)
	}
	d.outbox, d.inbox = ob, ib
	d.drain = newDrainer(ob, d, d.opts.Drain, d.log)
	d.drain.onChange = d.outboxRowChanged
	d.receipts = newReceiptSender(d)
	if d.opts.Messages == nil {
		d.opts.Messages = &inboxSink{ib: ib, bus: d.bus, log: d.log, stored: d.inboxStored}
	}
	return nil
}

// inboxStored hears of each new inbox row: its receipt may be due, and it
// may answer a message this machine sent.
func (d *Daemon) inboxStored(r *inboxRow) {
	if r.ReceiptTo != "" {
		d.receipts.wake()
	}
	d.noteReply(r)
}

// closeStores waits for the drain and the pruner (whose context must have
// ended) and closes the stores, once.
func (d *Daemon) closeStores() {
	d.storesOnce.Do(func() {
		d.drain.Wait()
		d.receipts.Wait()
		d.pruner.Wait()
		if d.outbox != nil {
			if err := d.outbox.Close(); err != nil {
				d.log.Warn("store_close_failed", "store", "outbox", "err", err.Error())
			}
		}
		if d.inbox != nil {
			if err := d.inbox.Close(); err != nil {
				d.log.Warn("store_close_failed", "store", "inbox", "err", err.Error())
			}
		}
	})
}

// startPruner deletes what the stores no longer need once it is older than
// the retention: inbox rows, and outbox rows that are done, aborted or
// dead. It prunes at once, then every PruneEvery until ctx ends.
func (d *Daemon) startPruner(ctx context.Context) {
	stores := []struct {
		name  string
		prune func(context.Context, time.Time) (int64, error)
	}{{"inbox", d.inbox.Prune}, {"outbox", d.outbox.Prune}}
	d.pruner.Add(1)
	go func() {
		defer d.pruner.Done()
		t := time.NewTicker(d.opts.PruneEvery)
		defer t.Stop()
		for {
			cutoff := time.Now().Add(-d.opts.Retention)
			for _, st := range stores {
				n, err := st.prune(ctx, cutoff)
				switch {
				case err != nil && ctx.Err() == nil:
					d.log.Warn(st.name+"_prune_failed", "err", err.Error())
				case n > 0:
					d.log.Info(st.name+"_prune_completed", "removed", n, "retention_days", int(d.opts.Retention.Hours()/24))
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// acquireLock takes the singleton lock without waiting.
func (d *Daemon) acquireLock() error {
	f, err := os.OpenFile(d.paths.LockFile(), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return &DaemonRunningError{Pid: readPidFile(d.paths.PidFile())}
	}
	d.lock = f
	return nil
}

func (d *Daemon) releaseLock() {
	if d.lock != nil {
		syscall.Flock(int(d.lock.Fd()), syscall.LOCK_UN)
		d.lock.Close()
	}
}

// clearStaleSocket removes a socket nobody answers on; one that answers
// belongs to a live daemon (say, an older one that predates the lock) and
// is left alone.
func (d *Daemon) clearStaleSocket() error {
	sock := d.paths.SocketFile()
	if _, err := os.Lstat(sock); err != nil {
		return nil
	}
	conn, err := net.DialTimeout("unix", sock, 500*time.Millisecond)
	if err == nil {
		conn.Close()
		return &DaemonRunningError{Pid: readPidFile(d.paths.PidFile())}
	}
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	d.log.Info("stale_socket_removed", "sock", sock)
	return nil
}

// removeIfOurs removes a pid-bearing file only if it names this process.
func (d *Daemon) removeIfOurs(path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	s := strings.TrimSpace(string(data))
	if s == strconv.Itoa(d.pid) {
		os.Remove(path)
		return
	}
	var info struct {
		Pid int `json:"pid"`
	}
	if json.Unmarshal(data, &info) == nil && info.Pid == d.pid {
		os.Remove(path)
	}
}

// readPidFile returns the pid in daemon.pid, 0 when absent or unreadable.
func readPidFile(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// ensureLocalToken returns the TCP bearer token, creating it (32 random
// bytes, base64url) if missing or malformed. An existing token is kept so
// that clients holding it keep working across restarts.
func ensureLocalToken(path string) (string, error) {
	if data, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(data))
		if len(tok) >= 32 {
			_ = os.Chmod(path, 0o600)
			return tok, nil
		}
	}
	b := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	if err := writeFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", err
	}
	return tok, nil
}

// Meshes and links.

// applyConfig brings the member links in line with cfg: new meshes get a
// link, removed ones lose theirs, changed ones are reconnected (and count
// as added). With restartBanned, a banned link of an unchanged mesh is
// restarted: the member may have been unbanned, and a ban it still has
// costs one refused hello.
func (d *Daemon) applyConfig(cfg *Config, restartBanned bool) (added, removed, restarted []string) {
	want := map[string]Mesh{}
	for _, m := range cfg.Meshes {
		if m.Slug == "" {
			continue
		}
		want[m.Slug] = m
	}
	d.mu.Lock()
	d.displayName = cfg.DisplayName
	warnAfter, err := parseUnsurfacedAfter(cfg.UnsurfacedWarnAfter)
	if err != nil {
		d.log.Warn("config_invalid", "err", err.Error(), "using", defaultUnsurfacedAfter.String())
		warnAfter = defaultUnsurfacedAfter
	}
	d.warnAfter = warnAfter
	var stop []*Link
	for slug, e := range d.meshes {
		m, ok := want[slug]
		unchanged := ok && m.MeshID == e.Mesh.MeshID && m.Pubkey == e.Mesh.Pubkey && m.SecretKey == e.Mesh.SecretKey &&
			m.BrokerURL == e.Mesh.BrokerURL && m.MemberID == e.Mesh.MemberID
		if unchanged && !(restartBanned && e.Link.State() == LinkBanned) {
			delete(want, slug)
			continue
		}
		stop = append(stop, e.Link)
		delete(d.meshes, slug)
		switch {
		case unchanged:
			restarted = append(restarted, slug)
		case !ok:
			removed = append(removed, slug)
		}
	}
	var start []*Link
	for slug, m := range want {
		kp, err := m.Keypair()
		if err != nil {
			d.log.Warn("mesh_key_invalid", "mesh", slug, "err", err.Error())
			continue
		}
		e := &meshEntry{Mesh: m, Key: kp}
		e.Link = d.newMemberLink(e)
		d.meshes[slug] = e
		start = append(start, e.Link)
		if !containsString(restarted, slug) {
			added = append(added, slug)
		}
	}
	d.mu.Unlock()
	for _, l := range stop {
		l.Close()
	}
	for _, slug := range restarted {
		d.log.Info("member_link_restarted", "mesh", slug, "was", string(LinkBanned))
	}
	for _, l := range start {
		l.Start(d.ctx)
	}
	return added, removed, restarted
}

// Reload re-reads the machine config and applies it (SIGHUP, POST
// /v1/reload), restarting member links the broker banned. Sessions of a
// mesh that was added get their links, and so do sessions whose links the
// ban of a restarted member link ended; a kicked session stays out until
// it registers again.
func (d *Daemon) Reload() (added, removed []string, err error) { return d.reload(true) }

func (d *Daemon) reload(restartBanned bool) (added, removed []string, err error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	cfg, err := loadConfig(d.opts.ConfigFile)
	if err != nil {
		return nil, nil, err
	}
	d.applyBrokerConf(cfg.Broker)
	added, removed, restarted := d.applyConfig(cfg, restartBanned)
	d.log.Info("config_reloaded", "added", added, "removed", removed, "restarted", restarted, "meshes", d.meshSlugs())
	for _, s := range d.sessions.List() {
		if s.Presence == nil {
			continue
		}
		if containsString(added, s.Mesh) || containsString(restarted, s.Mesh) && d.sessionLinkState(s) == LinkBanned {
			d.onSessionRegister(s)
		}
	}
	return added, removed, nil
}

// meshTLS is how the mesh's links verify a wss:// broker. A caFile that
// cannot be read is logged, and the system roots alone are used: the
// link's dial error then says the certificate is not trusted.
func (d *Daemon) meshTLS(m Mesh) *tls.Config {
	conf, err := meshTLSConfig(m)
	if err != nil {
		d.log.Error("broker_tls", "mesh", m.Slug, "err", err.Error())
	}
	return conf
}

func (d *Daemon) newMemberLink(e *meshEntry) *Link {
	memberPub := e.Key.PublicHex()
	var l *Link
	l = newLink(LinkConfig{
		Kind: linkMember, Mesh: e.Mesh.Slug, URL: e.Mesh.BrokerURL, Fallbacks: e.Mesh.FallbackURLs(), TLS: d.meshTLS(e.Mesh),
		Hello:   memberHello(e.Mesh, e.Key, d.pid, d.cwd, d.hostname),
		Timing:  d.opts.Link,
		Log:     d.log,
		OnState: d.publishLinkState,
		OnFrame: func(l *Link, f Inbound) {
			d.onLinkFrame(l, func() pushContext {
				return pushContext{Kind: linkMember, MemberPubkey: memberPub, OwnSessions: d.ownSessionKeys()}
			}, func() []Keypair { return []Keypair{e.Key} }, f)
		},
	})
	return l
}

func (d *Daemon) publishLinkState(l *Link, st LinkState) { d.publishLinkStateOf(l, st, "") }

// publishLinkStateOf publishes a link's state; sessionID names the session
// of a session link, so that its MCP server can tell it was kicked.
func (d *Daemon) publishLinkStateOf(l *Link, st LinkState, sessionID string) {
	if st == LinkOpen || st == LinkBanned {
		d.drain.Wake() // rows waiting for this link can go, or die with the ban
	}
	if st == LinkOpen && l.Kind() == linkMember {
		d.receipts.wake() // receipts produced while it was down
	}
	d.bus.Publish(Event{Kind: eventBrokerStatus, Mesh: l.Mesh(),
		Data: &BrokerStatusEvent{Mesh: l.Mesh(), Status: string(st), Link: l.Kind(), SessionID: sessionID}})
}

// ownSessionKeys is the set of session keys this daemon holds links for.
func (d *Daemon) ownSessionKeys() map[string]bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]bool, len(d.sessionLinks))
	for _, sl := range d.sessionLinks {
		out[sl.Session.Presence.SessionPubkey] = true
	}
	return out
}

// sessionKeysOf is the session keys this daemon holds links for on mesh:
// all of them sessions of its one member there.
func (d *Daemon) sessionKeysOf(mesh string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, sl := range d.sessionLinks {
		if sl.Session.Mesh == mesh {
			out = append(out, sl.Session.Presence.SessionPubkey)
		}
	}
	return out
}

// ownSessionSender is what one of this daemon's sessions on mesh is known
// as, by its session key.
func (d *Daemon) ownSessionSender(mesh, key string) (knownSender, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, sl := range d.sessionLinks {
		if sl.Session.Mesh == mesh && sl.Session.Presence.SessionPubkey == key {
			member := ""
			if e := d.meshes[mesh]; e != nil {
				member = e.Mesh.Pubkey
			}
			return knownSender{Name: sl.Session.DisplayName, MemberPubkey: member}, true
		}
	}
	return knownSender{}, false
}

func (d *Daemon) meshSlugs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.meshes))
	for slug := range d.meshes {
		out = append(out, slug)
	}
	sort.Strings(out)
	return out
}

// mesh finds a joined mesh; an unknown slug triggers one config re-read
// (a mesh joined after the daemon started), which leaves banned links be.
func (d *Daemon) mesh(slug string) (*meshEntry, bool) {
	if e, ok := d.joinedMesh(slug); ok {
		return e, true
	}
	if _, _, err := d.reload(false); err != nil {
		return nil, false
	}
	return d.joinedMesh(slug)
}

// joinedMesh finds a mesh among those the daemon has links for now.
func (d *Daemon) joinedMesh(slug string) (*meshEntry, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.meshes[slug]
	return e, ok
}

// memberKeyOf is this machine's member key on the session's mesh ("" when
// the mesh is not joined).
func (d *Daemon) memberKeyOf(s *Session) string {
	if e, ok := d.joinedMesh(s.Mesh); ok {
		return e.Key.PublicHex()
	}
	return ""
}

// MemberLink is the member link of a mesh: the drain sends its rows on it.
func (d *Daemon) MemberLink(slug string) *Link {
	if e, ok := d.mesh(slug); ok {
		return e.Link
	}
	return nil
}

// SessionLinkByPubkey is the link of the session with this key, if any:
// a session's messages leave only on its own link.
func (d *Daemon) SessionLinkByPubkey(pubkey string) *Link {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, sl := range d.sessionLinks {
		if sl.Session.Presence.SessionPubkey == pubkey {
			return sl.Link
		}
	}
	return nil
}

// Sessions.

// onSessionRegister tells the machine's event stream, and opens the
// session's link when it has presence.
func (d *Daemon) onSessionRegister(s *Session) {
	d.bus.Publish(Event{Kind: eventSession, Mesh: s.Mesh,
		Data: &SessionEvent{SessionID: s.SessionID, Mesh: s.Mesh, DisplayName: s.DisplayName, State: "registered"}})
	if s.Presence == nil {
		return
	}
	d.mu.Lock()
	e, ok := d.meshes[s.Mesh]
	var stale []*Link
	if old, had := d.sessionLinks[s.Token]; had {
		stale = append(stale, old.Link)
		delete(d.sessionLinks, s.Token)
	}
	// One presence per session key: a link for the same key under another
	// token is a ghost of an earlier registration.
	for tok, sl := range d.sessionLinks {
		if sl.Session.Presence.SessionPubkey == s.Presence.SessionPubkey {
			stale = append(stale, sl.Link)
			delete(d.sessionLinks, tok)
		}
	}
	d.mu.Unlock()
	for _, l := range stale {
		l.Close()
	}
	if !ok {
		d.log.Warn("session_link_no_mesh", "session_id", s.SessionID, "mesh", s.Mesh)
		return
	}
	sessionKey := s.Presence.Keypair()
	sessionPub := sessionKey.PublicHex()
	memberPub := e.Key.PublicHex()
	l := newLink(LinkConfig{
		Kind: linkSession, Mesh: s.Mesh, URL: e.Mesh.BrokerURL, Fallbacks: e.Mesh.FallbackURLs(), TLS: d.meshTLS(e.Mesh),
		Hello: sessionHello(e.Mesh, e.Key, sessionKey, sessionHelloParams{
			SessionID: s.SessionID, DisplayName: s.DisplayName, Pid: s.Pid, Cwd: s.Cwd, Role: s.Role,
			Groups: parseGroupList(s.Groups), Hostname: d.hostname,
		}),
		Timing: d.opts.Link,
		Log:    d.log.With("session_id", s.SessionID),
		OnState: func(l *Link, st LinkState) {
			d.publishLinkStateOf(l, st, s.SessionID)
			if st == LinkOpen {
				d.linkOpened(s)
			}
		},
		OnFrame: func(l *Link, f Inbound) {
			d.onLinkFrame(l, func() pushContext {
				return pushContext{Kind: linkSession, MemberPubkey: memberPub, SessionPubkey: sessionPub}
			}, func() []Keypair { return []Keypair{sessionKey, e.Key} }, f)
		},
	})
	d.mu.Lock()
	d.sessionLinks[s.Token] = &sessionLink{Session: s, Link: l}
	d.mu.Unlock()
	l.Start(d.ctx)
}

// onSessionDeregister closes the session's link, drops its state and tells
// the machine's event stream.
func (d *Daemon) onSessionDeregister(s *Session, reason string) {
	if !d.sessions.Has(s.Token) {
		d.states.forget(s)
	}
	d.bus.Publish(Event{Kind: eventSession, Mesh: s.Mesh,
		Data: &SessionEvent{SessionID: s.SessionID, Mesh: s.Mesh, DisplayName: s.DisplayName, State: "deregistered", Reason: reason}})
	d.mu.Lock()
	sl, ok := d.sessionLinks[s.Token]
	if ok && sl.Session == s {
		delete(d.sessionLinks, s.Token)
		d.noteDeparted(sl.Session.Presence.SessionPubkey, time.Now())
	} else {
		ok = false
	}
	d.mu.Unlock()
	if ok {
		sl.Link.Close()
	}
}

// departedMemory is how long the daemon remembers a session key it let go:
// as long as a broker that does not honour a leave keeps its presence.
const departedMemory = defaultGrace + 30*time.Second

// noteDeparted remembers a session key whose session this daemon let go,
// and forgets those older than departedMemory. Caller holds d.mu.
func (d *Daemon) noteDeparted(key string, now time.Time) {
	for k, at := range d.departed {
		if now.Sub(at) > departedMemory {
			delete(d.departed, k)
		}
	}
	d.departed[key] = now
}

// departedSince reports whether key is a session this daemon let go within
// departedMemory: a broker that keeps such a presence for its grace window
// lists it as live, but it will not come back.
func (d *Daemon) departedSince(key string, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	at, ok := d.departed[key]
	return ok && now.Sub(at) <= departedMemory
}

// markDeparted marks the rows of sessions this daemon let go as not
// connected.
func (d *Daemon) markDeparted(rows []PeerRow, now time.Time) {
	for i, r := range rows {
		if d.departedSince(r.Pubkey, now) {
			gone := false
			rows[i].Connected = &gone
		}
	}
}

// sessionLinkState is the state of a session's link ("" without one).
func (d *Daemon) sessionLinkState(s *Session) LinkState {
	d.mu.Lock()
	defer d.mu.Unlock()
	if sl, ok := d.sessionLinks[s.Token]; ok {
		return sl.Link.State()
	}
	return ""
}

// restoreSessions brings back the sessions of a previous daemon whose
// processes still run, with their stored keys and a fresh attestation.
func (d *Daemon) restoreSessions() {
	persisted, err := loadPersistedSessions(d.paths.SessionsFile())
	if err != nil {
		d.log.Warn("sessions_restore_failed", "err", err.Error())
		return
	}
	revived := 0
	var pids []int
	for _, p := range persisted {
		pids = append(pids, p.Pid)
	}
	starts := d.sessions.opts.StartTimes(pids)
	for _, p := range persisted {
		if !isSessionToken(p.Token) || !d.sessions.opts.PidAlive(p.Pid) {
			continue
		}
		if p.StartTime != "" && starts[p.Pid] != "" && starts[p.Pid] != p.StartTime {
			continue // the pid belongs to another process now
		}
		s := p.session()
		if p.SessionPubkey != "" && safePathName(p.Mesh) && safePathName(p.SessionID) {
			e, ok := d.joinedMesh(p.Mesh)
			if !ok {
				continue // the mesh was left: the session cannot come back
			}
			kp, created, err := loadOrCreateSessionKeypair(d.paths.SessionKeyFile(p.Mesh, p.SessionID), p.Mesh, p.SessionID)
			if err != nil {
				d.log.Warn("session_key_restore_failed", "session_id", p.SessionID, "err", err.Error())
				continue
			}
			if created || kp.PublicHex() != p.SessionPubkey {
				d.log.Warn("session_key_replaced", "session_id", p.SessionID)
			}
			s.Presence = &SessionPresence{
				SessionPubkey: kp.PublicHex(), keypair: kp,
				Attestation: signAttestation(e.Key, kp.PublicHex(), time.Now().UnixMilli()+attestationTTLMs),
			}
		}
		d.sessions.Register(s)
		revived++
	}
	if len(persisted) > 0 {
		d.log.Info("sessions_restored", "revived", revived, "persisted", len(persisted))
	}
}

func (d *Daemon) closeLinks() {
	d.mu.Lock()
	var links []*Link
	for _, e := range d.meshes {
		links = append(links, e.Link)
	}
	for _, sl := range d.sessionLinks {
		links = append(links, sl.Link)
	}
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range links {
		wg.Add(1)
		go func() { defer wg.Done(); l.Close() }()
	}
	wg.Wait()
}

// parseGroupList turns "name:role" / "@name:role" strings into group refs.
func parseGroupList(groups []string) []GroupRef {
	var out []GroupRef
	for _, g := range groups {
		g = strings.TrimPrefix(strings.TrimSpace(g), "@")
		if g == "" {
			continue
		}
		name, role, _ := strings.Cut(g, ":")
		out = append(out, GroupRef{Name: name, Role: role})
	}
	return out
}

// isSessionToken reports whether s is a 64-hex lowercase session token.
func isSessionToken(s string) bool { return isHexKey(s) }
