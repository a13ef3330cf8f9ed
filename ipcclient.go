// The CLI side of the daemon: an IPC client, and the connector
// that finds a daemon or starts one.
//
// Policy:
//   - Probe GET /v1/version (2.5 s). A socket nobody answers on is stale:
//     it and the pid file are removed, but only when the daemon's lock is
//     free, so a live (if slow) daemon is never replaced.
//   - A service-managed daemon (systemd user unit or launchd plist present)
//     is never spawned by the CLI: wait up to 8 s, else service-not-ready.
//   - Otherwise spawn `daemon up --foreground` detached, under .spawn.lock
//     (flock: two CLIs at once spawn one daemon), with
//     CLAUDEMESH_INTERNAL_NO_AUTOSPAWN=1 and without CLAUDEMESH_CONFIG_DIR,
//     its output appended to daemon.log; poll up to the budget (3 s, 10 s
//     for launch). A failure writes .spawn-failure, which suppresses spawns
//     for 30 s.
//   - The result is cached per process.
//   - Mode: --no-daemon (or CLAUDEMESH_NO_DAEMON=1) → cold path only;
//     --strict (or CLAUDEMESH_STRICT_DAEMON=1) → an error instead of the
//     cold path; flags beat env and --no-daemon beats --strict.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DaemonClient calls the daemon's IPC routes.
type DaemonClient struct {
	http         *http.Client
	base         string
	bearer       string // local-token, TCP only
	SessionToken string // sent as the caller's session identity, if set
	// Without a token, the Claude Code session the caller runs under, by
	// which the daemon finds the session its hooks registered.
	ClaudeSessionID string
	ClaudePid       int
	tcp             bool
}

// newDaemonClient talks over the unix socket at sock, each request on the
// caller's goroutine (ipctransport.go).
func newDaemonClient(sock, sessionToken string) *DaemonClient {
	return &DaemonClient{http: &http.Client{Transport: &unixTransport{sock: sock}}, base: "http://localhost", SessionToken: sessionToken}
}

// newDaemonClientAs is a socket client speaking for id.
func newDaemonClientAs(sock string, id callerIdentity) *DaemonClient {
	c := newDaemonClient(sock, id.Token)
	c.ClaudeSessionID, c.ClaudePid = id.ClaudeSessionID, id.ClaudePid
	return c
}

// hasIdentity reports whether the client names a session at all.
func (c *DaemonClient) hasIdentity() bool {
	return c.SessionToken != "" || c.ClaudeSessionID != "" || c.ClaudePid > 0
}

// IPCError is a non-2xx answer from the daemon.
type IPCError struct {
	Status  int
	Code    string
	Message string
	Body    map[string]any
}

func (e *IPCError) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("daemon: %s (%s)", e.Message, e.Code)
	}
	return "daemon: " + e.Code
}

// ipcStatus returns the HTTP status of err (0 when err is not an IPCError).
func ipcStatus(err error) int {
	var ie *IPCError
	if errors.As(err, &ie) {
		return ie.Status
	}
	return 0
}

// ipcTimeout bounds one ordinary IPC call; broker-backed routes answer
// within the daemon's own 5 s RPC timeout.
const ipcTimeout = 8 * time.Second

func (c *DaemonClient) newRequest(ctx context.Context, method, path string, in any) (*http.Request, error) {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.tcp {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
		if c.SessionToken != "" {
			req.Header.Set("X-ClaudeMesh-Session", c.SessionToken)
		}
	} else if c.SessionToken != "" {
		req.Header.Set("Authorization", "ClaudeMesh-Session "+c.SessionToken)
	}
	if c.SessionToken == "" {
		if c.ClaudeSessionID != "" {
			req.Header.Set(headerClaudeSession, c.ClaudeSessionID)
		}
		if c.ClaudePid > 0 {
			req.Header.Set(headerClaudePid, strconv.Itoa(c.ClaudePid))
		}
	}
	return req, nil
}

// Do calls one route: in (if not nil) is the JSON body, out (if not nil)
// receives the JSON answer. Non-2xx answers are *IPCError.
func (c *DaemonClient) Do(ctx context.Context, method, path string, in, out any) error {
	return c.doWithin(ctx, ipcTimeout, method, path, in, out)
}

// doWithin is Do under another deadline than ipcTimeout: a route that
// holds the request until something happens (a hook's wait) needs longer.
func (c *DaemonClient) doWithin(ctx context.Context, timeout time.Duration, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := c.newRequest(ctx, method, path, in)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("daemon unreachable: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		e := &IPCError{Status: resp.StatusCode}
		if json.Unmarshal(data, &e.Body) == nil {
			e.Code, _ = e.Body["error"].(string)
			e.Message, _ = e.Body["message"].(string)
		}
		if e.Code == "" {
			e.Code = http.StatusText(resp.StatusCode)
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("daemon sent a bad answer: %w", err)
		}
	}
	return nil
}

// callIPC calls one endpoint: in's path and query fields go in the URL,
// its other fields are the JSON body of the routes that have one, and the
// answer is decoded into the endpoint's reply type.
func callIPC[Req, Rep any](ctx context.Context, c *DaemonClient, ep ipcEndpoint[Req, Rep], in Req) (Rep, error) {
	return callIPCWithin(ctx, c, ipcTimeout, ep, in)
}

// callIPCWithin is callIPC under its own deadline.
func callIPCWithin[Req, Rep any](ctx context.Context, c *DaemonClient, timeout time.Duration, ep ipcEndpoint[Req, Rep], in Req) (Rep, error) {
	var out Rep
	var body any
	if ep.body {
		body = in
	}
	err := c.doWithin(ctx, timeout, ep.method, requestTarget(ep.pattern, in), body, &out)
	return out, err
}

// Version asks the daemon what it is.
func (c *DaemonClient) Version(ctx context.Context) (VersionReply, error) {
	return callIPC(ctx, c, apiVersion, noRequest{})
}

// Health asks for link and session state.
func (c *DaemonClient) Health(ctx context.Context) (HealthReply, error) {
	return callIPC(ctx, c, apiHealth, noRequest{})
}

// Reload has the daemon read its config again.
func (c *DaemonClient) Reload(ctx context.Context) (ReloadReply, error) {
	return callIPC(ctx, c, apiReload, noRequest{})
}

// RegisterSession registers (or replaces) a session.
func (c *DaemonClient) RegisterSession(ctx context.Context, r RegisterRequest) error {
	_, err := callIPC(ctx, c, apiRegister, r)
	return err
}

// DeregisterSession removes a session by token.
func (c *DaemonClient) DeregisterSession(ctx context.Context, token string) error {
	_, err := callIPC(ctx, c, apiDeregister, DeregisterRequest{Token: token})
	return err
}

// SessionMe returns the caller's session, or nil when it has none.
func (c *DaemonClient) SessionMe(ctx context.Context) (*sessionView, error) {
	if !c.hasIdentity() {
		return nil, nil
	}
	out, err := callIPC(ctx, c, apiSessionMe, noRequest{})
	if ipcStatus(err) == http.StatusUnauthorized {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &out.Session, nil
}

// DaemonEvent is one event read from /v1/events.
type DaemonEvent struct {
	ID   string
	Kind string
	Data json.RawMessage
}

// OpenEvents opens GET /v1/events with the client's session identity and
// returns the body: the raw Server-Sent Events stream (parse it with
// readSSEStream). Closing it ends the subscription.
func (c *DaemonClient) OpenEvents(ctx context.Context) (io.ReadCloser, error) {
	req, err := c.newRequest(ctx, "GET", "/v1/events", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("daemon unreachable: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, &IPCError{Status: resp.StatusCode, Code: http.StatusText(resp.StatusCode)}
	}
	return resp.Body, nil
}

// Events opens the SSE stream with the client's session identity. Events
// arrive on the returned channel, which closes when the stream ends or ctx
// ends (the reason is then available from the returned func: nil for a
// clean end of stream).
func (c *DaemonClient) Events(ctx context.Context) (<-chan DaemonEvent, func() error, error) {
	body, err := c.OpenEvents(ctx)
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan DaemonEvent, 16)
	var streamErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		defer body.Close()
		stop := context.AfterFunc(ctx, func() { body.Close() })
		defer stop()
		streamErr = readSSEStream(ctx, body, func(ev sseClientEvent) error {
			select {
			case ch <- DaemonEvent{ID: ev.ID, Kind: ev.Event, Data: json.RawMessage(ev.Data)}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if errors.Is(streamErr, errSSEStreamEnded) {
			streamErr = nil
		}
	}()
	return ch, func() error { <-done; return streamErr }, nil
}

// sessionTokenFromEnv reads the caller's session token:
// CLAUDEMESH_IPC_TOKEN, else the file named by CLAUDEMESH_IPC_TOKEN_FILE.
// Anything that is not 64 hex is ignored.
func sessionTokenFromEnv(getenv func(string) string) string {
	if t := strings.ToLower(strings.TrimSpace(getenv("CLAUDEMESH_IPC_TOKEN"))); isSessionToken(t) {
		return t
	}
	if f := getenv("CLAUDEMESH_IPC_TOKEN_FILE"); f != "" {
		if data, err := os.ReadFile(f); err == nil {
			if t := strings.ToLower(strings.TrimSpace(string(data))); isSessionToken(t) {
				return t
			}
		}
	}
	return ""
}

// callerIdentity is who a CLI call, an MCP server or a hook speaks for: a
// launched session's token, else the Claude Code session it runs under.
type callerIdentity struct {
	Token           string
	ClaudeSessionID string
	ClaudePid       int
}

// callerIdentityFromEnv is the caller's identity: the session token, else,
// inside Claude Code (CLAUDECODE=1), the session id Claude Code exports
// (CLAUDE_CODE_SESSION_ID) or, for a Claude Code that exports none, its
// process found among the caller's parents.
func callerIdentityFromEnv(getenv func(string) string) callerIdentity {
	if t := sessionTokenFromEnv(getenv); t != "" {
		return callerIdentity{Token: t}
	}
	var id callerIdentity
	if sid := strings.TrimSpace(getenv("CLAUDE_CODE_SESSION_ID")); safePathName(sid) {
		id.ClaudeSessionID = sid
	} else if getenv("CLAUDECODE") == "1" {
		id.ClaudePid = claudeProcessOf(os.Getpid(), false)
	}
	return id
}

// Policy.

// daemonMode is how a verb may use the daemon.
type daemonMode int

const (
	modeAuto     daemonMode = iota // daemon, else the cold path
	modeStrict                     // daemon, else an error
	modeNoDaemon                   // cold path only
)

func (m daemonMode) String() string { return [...]string{"auto", "strict", "no-daemon"}[m] }

// daemonPolicy decides the mode: flags beat env, --no-daemon beats --strict.
func daemonPolicy(noDaemonFlag, strictFlag bool, getenv func(string) string) daemonMode {
	switch {
	case noDaemonFlag:
		return modeNoDaemon
	case strictFlag:
		return modeStrict
	case getenv("CLAUDEMESH_NO_DAEMON") == "1":
		return modeNoDaemon
	case getenv("CLAUDEMESH_STRICT_DAEMON") == "1":
		return modeStrict
	}
	return modeAuto
}

// Connector.

// daemonState is the connector's verdict.
type daemonState string

const (
	daemonUp              daemonState = "up"
	daemonStarted         daemonState = "started"
	daemonDown            daemonState = "down"
	daemonSpawnSuppressed daemonState = "spawn-suppressed"
	daemonSpawnFailed     daemonState = "spawn-failed"
	daemonServiceNotReady daemonState = "service-not-ready"
	daemonUnresponsive    daemonState = "unresponsive"
)

// ensureResult is what the connector found or did.
type ensureResult struct {
	State    daemonState
	Reason   string
	Duration time.Duration
}

func (r ensureResult) usable() bool { return r.State == daemonUp || r.State == daemonStarted }

// daemonConnector finds or starts the daemon.
type daemonConnector struct {
	paths        Paths
	home         string
	getenv       func(string) string
	exe          string // the binary to spawn
	goos         string
	probeTimeout time.Duration
	serviceWait  time.Duration
	failureTTL   time.Duration
	pollEvery    time.Duration
	// lookPath finds the service manager (systemctl, launchctl).
	lookPath func(string) (string, error)
	// client, if set, is the one the caller will use: probing with it
	// leaves its connection open for the caller's first request.
	client *DaemonClient
}

// spawnPollEvery is how often a starting daemon is asked whether it is up:
// until its socket exists a poll is one stat, and a spawned daemon answers
// within a few tens of milliseconds (autospawn to first answer is
// budgeted at 100 ms), so a coarse poll would be most of the wait.
const spawnPollEvery = 5 * time.Millisecond

func newDaemonConnector(paths Paths, getenv func(string) string) *daemonConnector {
	exe, _ := os.Executable()
	return &daemonConnector{
		paths: paths, home: homeDir(getenv), getenv: getenv, exe: exe, goos: runtime.GOOS,
		probeTimeout: 2500 * time.Millisecond, serviceWait: 8 * time.Second,
		failureTTL: 30 * time.Second, pollEvery: spawnPollEvery, lookPath: exec.LookPath,
	}
}

func serviceStatusHint(goos string) string {
	if goos == "darwin" {
		return "check it with: launchctl print gui/$(id -u)/com.claudemesh.daemon"
	}
	return "check it with: systemctl --user status claudemesh-daemon.service"
}

// serviceManaged reports whether the daemon belongs to a service: its unit
// file is installed and the service manager that runs it is on this
// machine. A unit file without its manager (copied home directory, a
// container without systemd) runs nothing, so the CLI spawns the daemon
// itself rather than wait for a service that never comes.
func (dc *daemonConnector) serviceManaged() bool {
	if !serviceInstalled(serviceUnitFor(dc.goos, dc.home, dc.getenv("XDG_CONFIG_HOME"))) {
		return false
	}
	_, err := dc.lookPath(serviceManagerFor(dc.goos))
	return err == nil
}

type probeResult int

const (
	probeAbsent probeResult = iota
	probeStale
	probeUp
)

// probe asks the socket for /v1/version.
func (dc *daemonConnector) probe(ctx context.Context) probeResult {
	if _, err := os.Stat(dc.paths.SocketFile()); err != nil {
		return probeAbsent
	}
	ctx, cancel := context.WithTimeout(ctx, dc.probeTimeout)
	defer cancel()
	cl := dc.client
	if cl == nil {
		cl = newDaemonClient(dc.paths.SocketFile(), "")
		defer cl.http.CloseIdleConnections()
	}
	if _, err := cl.Version(ctx); err != nil {
		return probeStale
	}
	return probeUp
}

// daemonLockHeld reports whether a daemon holds the singleton lock.
func daemonLockHeld(paths Paths) bool {
	f, err := os.OpenFile(paths.LockFile(), os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return true
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// clearStale removes a dead daemon's socket and pid file; never a live
// daemon's.
func (dc *daemonConnector) clearStale() {
	if daemonLockHeld(dc.paths) {
		return
	}
	os.Remove(dc.paths.SocketFile())
	os.Remove(dc.paths.PidFile())
}

// waitUp polls until the daemon answers, the budget ends, or exited fires.
func (dc *daemonConnector) waitUp(ctx context.Context, budget time.Duration, exited <-chan struct{}) bool {
	deadline := time.Now().Add(budget)
	for {
		if dc.probe(ctx) == probeUp {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-exited:
			return dc.probe(ctx) == probeUp
		case <-time.After(dc.pollEvery):
		}
	}
}

// ensure finds the daemon or starts it within budget.
func (dc *daemonConnector) ensure(ctx context.Context, budget time.Duration) ensureResult {
	start := time.Now()
	res := func(st daemonState, reason string) ensureResult {
		return ensureResult{State: st, Reason: reason, Duration: time.Since(start)}
	}
	p := dc.probe(ctx)
	if p == probeUp {
		return res(daemonUp, "")
	}
	if dc.serviceManaged() {
		if p == probeStale {
			dc.clearStale()
		}
		if dc.waitUp(ctx, dc.serviceWait, nil) {
			return res(daemonUp, "")
		}
		return res(daemonServiceNotReady, fmt.Sprintf("service-managed daemon not answering within %s (%s)", dc.serviceWait, serviceStatusHint(dc.goos)))
	}
	if p == probeStale && daemonLockHeld(dc.paths) {
		// A daemon runs but does not answer (stopped, stuck): another one
		// would only fail on its lock, after seconds of waiting.
		return res(daemonUnresponsive, unresponsiveReason(dc.paths))
	}
	if p == probeStale {
		dc.clearStale()
	}
	if dc.getenv("CLAUDEMESH_INTERNAL_NO_AUTOSPAWN") == "1" {
		return res(daemonDown, "auto-spawn disabled")
	}
	if st, err := os.Stat(dc.paths.SpawnFailureFile()); err == nil && time.Since(st.ModTime()) < dc.failureTTL &&
		!modifiedAfter(dc.paths.MachineConfigFile(), st.ModTime()) {
		// A config edited since the failure (the usual fix) gets a new try.
		return res(daemonSpawnSuppressed, fmt.Sprintf("daemon failed to start within the last %s", dc.failureTTL))
	}
	if err := ensurePrivateDir(dc.paths.DaemonDir); err != nil {
		return res(daemonSpawnFailed, err.Error())
	}
	lock, err := os.OpenFile(dc.paths.SpawnLockFile(), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return res(daemonSpawnFailed, err.Error())
	}
	defer lock.Close()
	if !flockWithin(ctx, lock, budget, dc.pollEvery) {
		// Someone else is spawning and has not finished: their daemon may
		// still come up.
		if dc.probe(ctx) == probeUp {
			return res(daemonUp, "")
		}
		return res(daemonSpawnFailed, "another process is still starting the daemon")
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	lock.Truncate(0)
	lock.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	if dc.probe(ctx) == probeUp {
		return res(daemonUp, "") // the previous holder started it
	}
	_, exited, err := dc.spawn()
	if err == nil && dc.waitUp(ctx, budget, exited) {
		os.Remove(dc.paths.SpawnFailureFile())
		return res(daemonStarted, "")
	}
	reason := fmt.Sprintf("daemon did not answer within %s", budget)
	if err != nil {
		reason = err.Error()
	} else {
		select {
		case <-exited:
			reason = "daemon exited during start-up"
		default:
		}
	}
	_ = writeFileAtomic(dc.paths.SpawnFailureFile(), []byte(strconv.FormatInt(time.Now().UnixMilli(), 10)+"\n"), 0o600)
	return res(daemonSpawnFailed, reason)
}

// modifiedAfter reports whether path exists and changed after t.
func modifiedAfter(path string, t time.Time) bool {
	st, err := os.Stat(path)
	return err == nil && st.ModTime().After(t)
}

// unresponsiveReason describes a daemon that holds the lock but does not
// answer, and the way out.
func unresponsiveReason(paths Paths) string {
	who := "a daemon"
	if pid := readPidFile(paths.PidFile()); pid > 0 {
		who = fmt.Sprintf("the daemon (pid %d)", pid)
	}
	return who + " holds the lock but does not answer on " + paths.SocketFile() +
		"; restart it: claudemesh daemon down && claudemesh daemon up"
}

// flockWithin takes an exclusive flock, polling until budget runs out.
func flockWithin(ctx context.Context, f *os.File, budget, every time.Duration) bool {
	deadline := time.Now().Add(budget)
	for {
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(every):
		}
	}
}

// spawn starts `daemon up --foreground` in its own session, output to
// daemon.log. The returned channel closes when that process exits.
func (dc *daemonConnector) spawn() (int, <-chan struct{}, error) {
	env := daemonSpawnEnv(os.Environ())
	return startDetachedDaemon(dc.exe, dc.paths, env, []string{"daemon", "up", "--foreground"})
}

// daemonSpawnEnv is the autospawned daemon's environment: the caller's,
// minus CLAUDEMESH_CONFIG_DIR (a launched session's temp config must not
// leak into the machine's daemon), plus the recursion guard.
func daemonSpawnEnv(environ []string) []string {
	out := make([]string, 0, len(environ)+1)
	for _, kv := range environ {
		if strings.HasPrefix(kv, "CLAUDEMESH_CONFIG_DIR=") || strings.HasPrefix(kv, "CLAUDEMESH_INTERNAL_NO_AUTOSPAWN=") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "CLAUDEMESH_INTERNAL_NO_AUTOSPAWN=1")
}

// startDetachedDaemon runs exe args with output appended to daemon.log, in
// a new session so that it outlives the caller's terminal.
func startDetachedDaemon(exe string, paths Paths, env, args []string) (int, <-chan struct{}, error) {
	if exe == "" {
		return 0, nil, errors.New("cannot find the claudemesh binary to start the daemon")
	}
	if err := ensurePrivateDir(paths.DaemonDir); err != nil {
		return 0, nil, err
	}
	logf, err := os.OpenFile(paths.LogFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, nil, err
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, nil, err
	}
	defer devnull.Close()
	cmd := exec.Command(exe, args...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, nil, fmt.Errorf("start daemon: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	return cmd.Process.Pid, exited, nil
}
