// The daemon's IPC: HTTP/1.1 with JSON bodies over daemon.sock (0600) and
// over loopback TCP.
//
// Policy, checked on every request in this order:
//  1. a `token` query parameter → 400 (tokens never go in URLs, which end
//     up in logs and browser history);
//  2. a Host that is not loopback → 403 (DNS rebinding);
//  3. any Origin header → 403 (no browser page may talk to the daemon);
//  4. on TCP, `Authorization: Bearer <local-token>` (constant-time compare),
//     except /v1/health with --public-health → otherwise 401;
//  5. the caller's session, from `Authorization: ClaudeMesh-Session <hex>`
//     on the socket or `X-ClaudeMesh-Session` (either transport). No token
//     is the machine-wide view; a token the daemon does not know (a session
//     that ended or was reaped) is not an identity and gets 401
//     unknown_session, so it never sees or deletes its siblings' messages —
//     except on the routes a session uses before it is registered or after
//     it is gone (version, health, register, deregister). A caller without
//     a token may name the Claude Code session it runs under
//     (X-ClaudeMesh-Claude-Session, or the claude process as
//     X-ClaudeMesh-Claude-Pid): a plain `claude` session its hooks
//     registered has no token file to read. That is no weaker than a
//     token: only this user reaches the socket (0600) and the TCP port (the
//     bearer), and this user can read sessions.json, tokens and all.
//
// No route ever returns a secret key. Errors are {"error":"<code>", …}
// with a status chosen by one function, ipcErrorStatus.
package main

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ipcRoute is one row of the route table.
type ipcRoute struct {
	method  string
	pattern string // segments; {name} matches one segment
	maxBody int64
	handle  func(d *Daemon, req *ipcRequest) (any, error)
	stream  func(d *Daemon, w http.ResponseWriter, req *ipcRequest) // instead of handle (SSE)
}

// bind makes the route of an endpoint: the request is decoded into the
// endpoint's request type (path, query, then body), and the handler answers
// with its reply type.
func bind[Req, Rep any](ep ipcEndpoint[Req, Rep], h func(d *Daemon, req *ipcRequest, in Req) (Rep, error)) ipcRoute {
	return ipcRoute{method: ep.method, pattern: ep.pattern, maxBody: ep.maxBody, handle: func(d *Daemon, req *ipcRequest) (any, error) {
		in, err := ep.decode(req)
		if err != nil {
			return nil, err
		}
		return h(d, req, in)
	}}
}

// ipcRoutes is every IPC route.
var ipcRoutes = []ipcRoute{
	bind(apiVersion, (*Daemon).handleVersion),
	bind(apiHealth, (*Daemon).handleHealth),
	bind(apiReload, (*Daemon).handleReload),
	bind(apiRegister, (*Daemon).handleRegister),
	bind(apiSessionMe, (*Daemon).handleSessionMe),
	bind(apiSessions, (*Daemon).handleSessions),
	bind(apiDeregister, (*Daemon).handleDeregister),
	bind(apiPeers, (*Daemon).handlePeers),
	bind(apiMembers, (*Daemon).handleMembers),
	bind(apiState, (*Daemon).handleState),
	bind(apiStateSet, (*Daemon).handleStateSet),
	bind(apiRecall, (*Daemon).handleRecall),
	bind(apiRemember, (*Daemon).handleRemember),
	bind(apiForget, (*Daemon).handleForget),
	bind(apiSkills, (*Daemon).handleSkills),
	bind(apiShareSkill, (*Daemon).handleShareSkill),
	bind(apiSkill, (*Daemon).handleSkill),
	bind(apiRemoveSkill, (*Daemon).handleRemoveSkill),
	bind(apiProfile, (*Daemon).handleProfile),
	{method: "GET", pattern: "/v1/events", stream: (*Daemon).streamEvents},
	bind(apiSend, (*Daemon).handleSend),
	bind(apiOutbox, (*Daemon).handleOutboxList),
	bind(apiOutboxRequeue, (*Daemon).handleOutboxRequeue),
	bind(apiMessage, (*Daemon).handleMessage),
	bind(apiMetrics, (*Daemon).handleMetrics),
	bind(apiInbox, (*Daemon).handleInboxList),
	bind(apiInboxSeen, (*Daemon).handleInboxSeen),
	bind(apiInboxFlush, (*Daemon).handleInboxFlush),
	bind(apiInboxDelete, (*Daemon).handleInboxDelete),
	bind(apiSurface, (*Daemon).handleSurface),
	bind(apiUnsurface, (*Daemon).handleUnsurface),
	bind(apiHistory, (*Daemon).handleHistory),
	bind(apiSearch, (*Daemon).handleSearch),
	bind(apiUIOpen, (*Daemon).handleUIOpen),
	bind(apiSessionMCP, (*Daemon).handleSessionMCP),
	bind(apiWelcome, (*Daemon).handleWelcomeClaim),
	bind(apiHook, (*Daemon).handleHook),
	bind(apiHookWait, (*Daemon).handleHookWait),
}

// sessionlessRoutes answer a session token the daemon does not know: a
// session asks for them before it is registered, or after it is gone.
var sessionlessRoutes = map[string]bool{
	apiVersion.pattern: true, apiHealth.pattern: true, apiRegister.pattern: true, apiDeregister.pattern: true,
}

// ipcFeatures is what /v1/version advertises.
var ipcFeatures = []string{"version", "health", "reload", "sessions", "peers", "state", "memory", "skills", "profile", "events",
	"send", "outbox", "messages", "metrics", "receipts", "inbox", "surface", "history", "search", "ui", "hooks"}

// defaultMaxBody caps a body on routes that declare no cap of their own.
const defaultMaxBody = 64 << 10

// ipcRequest is one request after the gate.
type ipcRequest struct {
	*http.Request
	session *Session // nil without a (known) session token
	ui      *uiLogin // the browser's login, on the UI's routes
	params  map[string]string
	maxBody int64
}

// apiError is an error with its HTTP status and wire code.
type apiError struct {
	status int
	code   string
	msg    string
	extra  map[string]any
}

func (e *apiError) Error() string {
	if e.msg != "" {
		return e.code + ": " + e.msg
	}
	return e.code
}

func newAPIError(status int, code, msg string) *apiError {
	return &apiError{status: status, code: code, msg: msg}
}

func (e *apiError) with(k string, v any) *apiError {
	if e.extra == nil {
		e.extra = map[string]any{}
	}
	e.extra[k] = v
	return e
}

// ipcErrorStatus maps any error a handler returns to a status and body.
func ipcErrorStatus(err error) (int, map[string]any) {
	body := map[string]any{}
	var ae *apiError
	var be *BrokerError
	status := http.StatusInternalServerError
	switch {
	case errors.As(err, &ae):
		status = ae.status
		body["error"] = ae.code
		if ae.msg != "" {
			body["message"] = ae.msg
		}
		for k, v := range ae.extra {
			body[k] = v
		}
		return status, body
	case errors.Is(err, errLinkNotOpen):
		status, body["error"] = http.StatusServiceUnavailable, "broker_unavailable"
	case errors.Is(err, errBrokerTimeout):
		status, body["error"] = http.StatusGatewayTimeout, "broker_timeout"
	case errors.Is(err, errLinkClosed):
		status, body["error"] = http.StatusBadGateway, "broker_disconnected"
	case errors.As(err, &be):
		body["error"], body["broker_code"] = "broker_error", be.Code
		switch be.Code {
		case codeInvalid:
			status = http.StatusBadRequest
		case codeForbidden:
			status = http.StatusForbidden
		case codeNotFound:
			status = http.StatusNotFound
		case codeRateLimit:
			status = http.StatusTooManyRequests
		case codePayloadTooLarge:
			status = http.StatusRequestEntityTooLarge
		default:
			status = http.StatusBadGateway
		}
	case errors.Is(err, context.Canceled):
		status, body["error"] = http.StatusServiceUnavailable, "shutting_down"
	default:
		body["error"] = "internal"
	}
	body["message"] = err.Error()
	return status, body
}

// listen opens the socket and (unless disabled) the TCP listener and
// returns what starts serving both. Both listeners exist before either
// serves, so a request never sees the TCP port half-set, and the caller
// records the daemon as started before the first request is answered.
func (d *Daemon) listen(serveCtx context.Context) (serve func(), err error) {
	sock := d.paths.SocketFile()
	ul, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ul.Close()
		return nil, fmt.Errorf("chmod %s: %w", sock, err)
	}
	var tl net.Listener
	if !d.opts.NoTCP {
		tl, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(d.opts.TCPPort)))
		if err != nil && errors.Is(err, syscall.EADDRINUSE) {
			// Another user's daemon, or a test home, has the port: any
			// port will do, clients find it in daemon.json.
			d.log.Warn("tcp_port_taken", "port", d.opts.TCPPort)
			tl, err = net.Listen("tcp", "127.0.0.1:0")
		}
		if err != nil {
			ul.Close()
			return nil, fmt.Errorf("listen tcp: %w", err)
		}
		d.tcpPort = tl.Addr().(*net.TCPAddr).Port
	}
	return func() {
		d.serve(serveCtx, ul, false)
		if tl != nil {
			d.serve(serveCtx, tl, true)
		}
	}, nil
}

func (d *Daemon) serve(serveCtx context.Context, l net.Listener, tcp bool) {
	srv := &http.Server{
		Handler:           d.ipcHandler(tcp),
		BaseContext:       func(net.Listener) context.Context { return serveCtx },
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	d.servers = append(d.servers, srv)
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("ipc_serve_failed", "err", err.Error(), "tcp", tcp)
		}
	}()
}

// ipcHandler is the gate in front of the route table for one transport.
func (d *Daemon) ipcHandler(tcp bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tcp && isUIPath(r.URL.Path) {
			d.serveUI(w, r) // a browser's: its own gate
			return
		}
		if r.URL.Query().Has("token") {
			d.log.Warn("ipc_token_in_query", "path", r.URL.Path)
			writeAPIError(w, newAPIError(http.StatusBadRequest, "token_in_query", "the token goes in the Authorization header, not the query string"))
			return
		}
		if !loopbackHost(r.Host) {
			writeAPIError(w, newAPIError(http.StatusForbidden, "forbidden_host", "Host must be localhost, 127.0.0.1 or [::1]"))
			return
		}
		if r.Header.Get("Origin") != "" {
			writeAPIError(w, newAPIError(http.StatusForbidden, "forbidden_origin", "requests with an Origin header are refused"))
			return
		}
		if tcp && !(d.opts.PublicHealth && r.URL.Path == "/v1/health") {
			if err := d.checkBearer(r); err != nil {
				writeAPIError(w, err)
				return
			}
		}
		route, params, err := matchRoute(r.Method, r.URL.EscapedPath())
		if err != nil {
			writeAPIError(w, err)
			return
		}
		req := &ipcRequest{Request: r, params: params, maxBody: route.maxBody}
		if tok := sessionTokenOf(r, tcp); tok != "" {
			req.session = d.sessions.Resolve(tok)
			if req.session == nil && !sessionlessRoutes[route.pattern] {
				writeAPIError(w, newAPIError(http.StatusUnauthorized, "unknown_session",
					"this session token is not registered with the daemon (the session ended or was reaped); register it again, or send no token"))
				return
			}
		} else {
			req.session = d.claudeSessionOf(r)
		}
		d.runRoute(w, route, req)
	})
}

// runRoute answers a request that passed its gate: a stream, or the
// handler's reply with its status.
func (d *Daemon) runRoute(w http.ResponseWriter, route *ipcRoute, req *ipcRequest) {
	if route.stream != nil {
		route.stream(d, w, req)
		return
	}
	out, err := route.handle(d, req)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	status := http.StatusOK
	if s, ok := out.(interface{ status() int }); ok && s.status() != 0 {
		status = s.status()
	}
	writeIPCJSON(w, status, out)
}

func (d *Daemon) checkBearer(r *http.Request) error {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return newAPIError(http.StatusUnauthorized, "missing_bearer", "TCP requests need Authorization: Bearer <local-token>")
	}
	if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(d.token)) != 1 {
		d.log.Warn("ipc_bearer_mismatch")
		return newAPIError(http.StatusUnauthorized, "invalid_bearer", "wrong local token")
	}
	return nil
}

// sessionTokenOf reads the caller's session token, lowercased; "" if none.
func sessionTokenOf(r *http.Request, tcp bool) string {
	if !tcp {
		if scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "ClaudeMesh-Session") {
			if t := strings.ToLower(strings.TrimSpace(tok)); isSessionToken(t) {
				return t
			}
		}
	}
	if t := strings.ToLower(strings.TrimSpace(r.Header.Get("X-ClaudeMesh-Session"))); isSessionToken(t) {
		return t
	}
	return ""
}

// claudeSessionOf is the session of a caller without a token that names
// the Claude Code session it runs under: by Claude Code's session id, else
// by the claude process a hook registered the session with. A session its
// hooks have not registered is no identity: the caller has the
// machine-wide view, as a plain `claude` without hooks always had.
func (d *Daemon) claudeSessionOf(r *http.Request) *Session {
	if sid := r.Header.Get(headerClaudeSession); sid != "" {
		if !safePathName(sid) {
			return nil
		}
		return d.sessions.BySessionID(sid)
	}
	if pid, err := strconv.Atoi(r.Header.Get(headerClaudePid)); err == nil {
		return d.sessions.ByClaudePid(pid)
	}
	return nil
}

// loopbackHost accepts localhost, 127.0.0.1 and ::1 with or without a port
// (and an empty Host, which HTTP/1.0 clients send).
func loopbackHost(host string) bool {
	host = strings.ToLower(strings.TrimSpace(host))
	if host == "" {
		return true
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// matchRoute finds the IPC route for method and path.
func matchRoute(method, path string) (*ipcRoute, map[string]string, error) {
	return matchRouteIn(ipcRoutes, method, path)
}

// matchRouteIn finds the route of a table for method and path.
func matchRouteIn(routes []ipcRoute, method, path string) (*ipcRoute, map[string]string, error) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	var allowed []string
	for i := range routes {
		rt := &routes[i]
		params, ok := matchPattern(rt.pattern, segs)
		if !ok {
			continue
		}
		if rt.method != method {
			allowed = append(allowed, rt.method)
			continue
		}
		return rt, params, nil
	}
	if len(allowed) > 0 {
		return nil, nil, newAPIError(http.StatusMethodNotAllowed, "method_not_allowed", "use "+strings.Join(allowed, " or "))
	}
	return nil, nil, newAPIError(http.StatusNotFound, "not_found", "no such route")
}

func matchPattern(pattern string, segs []string) (map[string]string, bool) {
	psegs := strings.Split(strings.Trim(pattern, "/"), "/")
	if len(psegs) != len(segs) {
		return nil, false
	}
	var params map[string]string
	for i, p := range psegs {
		if strings.HasPrefix(p, "{") {
			v, err := url.PathUnescape(segs[i])
			if err != nil || v == "" {
				return nil, false
			}
			if params == nil {
				params = map[string]string{}
			}
			params[p[1:len(p)-1]] = v
			continue
		}
		if p != segs[i] {
			return nil, false
		}
	}
	return params, true
}

func writeIPCJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		data = []byte(`{"error":"internal","message":"response encoding failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)+1))
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
}

func writeAPIError(w http.ResponseWriter, err error) {
	status, body := ipcErrorStatus(err)
	writeIPCJSON(w, status, body)
}

// readBody reads the body under the route's cap: 413 over it.
func (req *ipcRequest) readBody() ([]byte, error) {
	limit := req.maxBody
	if limit == 0 {
		limit = defaultMaxBody
	}
	data, err := io.ReadAll(io.LimitReader(req.Body, limit+1))
	if err != nil {
		return nil, newAPIError(http.StatusBadRequest, "bad_body", err.Error())
	}
	if int64(len(data)) > limit {
		return nil, newAPIError(http.StatusRequestEntityTooLarge, "payload_too_large",
			fmt.Sprintf("body over %d bytes", limit))
	}
	return data, nil
}

// decodeBody reads a JSON object body into v: 413 over the route's cap,
// 400 for an empty body, bad JSON or trailing data.
func (req *ipcRequest) decodeBody(v any) error {
	data, err := req.readBody()
	if err != nil {
		return err
	}
	return decodeJSONObject(data, v)
}

// decodeJSONObject decodes one JSON object into v (numbers kept exact;
// unknown fields refused when v asks for it with strictJSON).
func decodeJSONObject(data []byte, v any) error {
	if len(strings.TrimSpace(string(data))) == 0 {
		return newAPIError(http.StatusBadRequest, "missing_body", "a JSON object body is required")
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.UseNumber()
	if _, strict := v.(interface{ strictJSON() }); strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return newAPIError(http.StatusBadRequest, "invalid_json", err.Error())
	}
	if dec.More() {
		return newAPIError(http.StatusBadRequest, "invalid_json", "trailing data after the JSON object")
	}
	return nil
}

// Handlers: check, decode, one core call, answer.

func (d *Daemon) handleVersion(req *ipcRequest, _ noRequest) (VersionReply, error) {
	return VersionReply{DaemonVersion: version, IPCAPI: "v1", IPCFeatures: ipcFeatures, SchemaVersion: 1}, nil
}

func (d *Daemon) handleHealth(req *ipcRequest, _ noRequest) (HealthReply, error) {
	return d.health(), nil
}

func (d *Daemon) handleReload(req *ipcRequest, _ noRequest) (ReloadReply, error) {
	added, removed, err := d.Reload()
	if err != nil {
		return ReloadReply{}, newAPIError(http.StatusInternalServerError, "config_unreadable", err.Error())
	}
	return ReloadReply{OK: true, Added: nonNil(added), Removed: nonNil(removed), Meshes: d.meshSlugs()}, nil
}

func (d *Daemon) handleRegister(req *ipcRequest, in RegisterRequest) (RegisterReply, error) {
	return d.registerSession(in)
}

func (d *Daemon) handleSessionMe(req *ipcRequest, _ noRequest) (SessionMeReply, error) {
	if req.session == nil {
		return SessionMeReply{}, newAPIError(http.StatusUnauthorized, "no_session", "send the session token as Authorization: ClaudeMesh-Session <token>")
	}
	return SessionMeReply{Session: d.sessionView(req.session)}, nil
}

func (d *Daemon) handleSessions(req *ipcRequest, _ noRequest) (SessionsReply, error) {
	views := []sessionView{}
	for _, s := range d.sessions.List() {
		views = append(views, d.sessionView(s))
	}
	return SessionsReply{Sessions: views}, nil
}

func (d *Daemon) handleDeregister(req *ipcRequest, in DeregisterRequest) (DeregisterReply, error) {
	tok := strings.ToLower(in.Token)
	if !isSessionToken(tok) {
		return DeregisterReply{}, newAPIError(http.StatusBadRequest, "invalid_token", "token must be 64 hex characters")
	}
	if req.session != nil && req.session.Token != tok {
		return DeregisterReply{}, newAPIError(http.StatusForbidden, "not_your_session", "a session may deregister only itself")
	}
	if !d.sessions.Deregister(tok, "deregistered") {
		return DeregisterReply{}, newAPIError(http.StatusNotFound, "session_not_found", "no session with that token").with("ok", false)
	}
	return DeregisterReply{OK: true, TokenPrefix: tok[:8]}, nil
}

func (d *Daemon) handlePeers(req *ipcRequest, in MeshQuery) (PeersReply, error) {
	meshes, err := d.meshesFor(in.Mesh, req.session)
	if err != nil {
		return PeersReply{}, err
	}
	return d.peers(req.Context(), meshes)
}

func (d *Daemon) handleState(req *ipcRequest, in StateQuery) (StateReply, error) {
	meshes, err := d.meshesFor(in.Mesh, req.session)
	if err != nil {
		return StateReply{}, err
	}
	if in.Key != nil {
		if *in.Key == "" {
			return StateReply{}, newAPIError(http.StatusBadRequest, "missing_key", "key must not be empty")
		}
		return d.getState(req.Context(), meshes, *in.Key)
	}
	return d.listState(req.Context(), meshes)
}

func (d *Daemon) handleStateSet(req *ipcRequest, in StateSetRequest) (StateSetReply, error) {
	if in.Key == "" {
		return StateSetReply{}, newAPIError(http.StatusBadRequest, "missing_key", "missing 'key' (string)")
	}
	if len(in.Value) == 0 {
		in.Value = json.RawMessage("null")
	}
	e, err := d.pickMesh(in.Mesh, req.session)
	if err != nil {
		return StateSetReply{}, err
	}
	return d.setState(req.Context(), e, in.Key, in.Value)
}

func (d *Daemon) handleRecall(req *ipcRequest, in RecallQuery) (RecallReply, error) {
	meshes, err := d.meshesFor(in.Mesh, req.session)
	if err != nil {
		return RecallReply{}, err
	}
	return d.recall(req.Context(), meshes, in.Q)
}

func (d *Daemon) handleRemember(req *ipcRequest, in RememberRequest) (RememberReply, error) {
	if strings.TrimSpace(in.Content) == "" {
		return RememberReply{}, newAPIError(http.StatusBadRequest, "missing_content", "missing 'content' (string)")
	}
	e, err := d.pickMesh(in.Mesh, req.session)
	if err != nil {
		return RememberReply{}, err
	}
	return d.remember(req.Context(), e, in.Content, in.Tags)
}

func (d *Daemon) handleForget(req *ipcRequest, in ForgetRequest) (ForgetReply, error) {
	e, err := d.pickMesh(in.Mesh, req.session)
	if err != nil {
		return ForgetReply{}, err
	}
	return d.forget(req.Context(), e, in.ID)
}

func (d *Daemon) handleSkills(req *ipcRequest, in SkillsQuery) (SkillsReply, error) {
	meshes, err := d.meshesFor(in.Mesh, req.session)
	if err != nil {
		return SkillsReply{}, err
	}
	return d.listSkills(req.Context(), meshes, in.Query)
}

func (d *Daemon) handleSkill(req *ipcRequest, in SkillRequest) (SkillReply, error) {
	meshes, err := d.meshesFor(in.Mesh, req.session)
	if err != nil {
		return SkillReply{}, err
	}
	return d.getSkill(req.Context(), meshes, in.Name)
}

func (d *Daemon) handleShareSkill(req *ipcRequest, in ShareSkillRequest) (SkillActionReply, error) {
	if in.Name == "" || in.Instructions == "" {
		return SkillActionReply{}, newAPIError(http.StatusBadRequest, "missing_field", "'name' and 'instructions' are required")
	}
	e, err := d.pickMesh(in.Mesh, req.session)
	if err != nil {
		return SkillActionReply{}, err
	}
	return d.shareSkill(req.Context(), e, ShareSkillFrame{Name: in.Name, Description: in.Description,
		Instructions: in.Instructions, Tags: in.Tags, Manifest: in.Manifest})
}

func (d *Daemon) handleRemoveSkill(req *ipcRequest, in SkillRequest) (SkillActionReply, error) {
	e, err := d.pickMesh(in.Mesh, req.session)
	if err != nil {
		return SkillActionReply{}, err
	}
	return d.removeSkill(req.Context(), e, in.Name)
}

func (d *Daemon) handleProfile(req *ipcRequest, in ProfileRequest) (ProfileReply, error) {
	if err := in.validate(); err != nil {
		return ProfileReply{}, err
	}
	in.Mesh = cmp.Or(in.Mesh, in.QueryMesh)
	return d.setProfile(req.Context(), req.session, in)
}

// streamEvents serves GET /v1/events for the caller's session.
func (d *Daemon) streamEvents(w http.ResponseWriter, req *ipcRequest) {
	var f EventFilter
	if s := req.session; s != nil {
		f.MeshSlug = s.Mesh
		if s.Presence != nil {
			f.SessionPubkey = s.Presence.SessionPubkey
		}
		f.MemberPubkey = d.memberKeyOf(s)
		defer d.streamOpened(s)()
	}
	serveSSE(req.Context(), w, d.bus.Subscribe(f), d.opts.KeepAlive)
}

// health is the /v1/health body.
func (d *Daemon) health() HealthReply {
	brokers := map[string]string{}
	links := []LinkHealth{}
	d.mu.Lock()
	for slug, e := range d.meshes {
		st := e.Link.State()
		brokers[slug] = string(st)
		row := LinkHealth{Kind: linkMember, Mesh: slug, State: st, URL: e.Mesh.BrokerURL}
		if st != LinkOpen {
			row.LastError = e.Link.LastError()
		}
		links = append(links, row)
	}
	for _, sl := range d.sessionLinks {
		st := sl.Link.State()
		row := LinkHealth{Kind: linkSession, Mesh: sl.Session.Mesh, State: st, SessionID: sl.Session.SessionID}
		if st != LinkOpen {
			row.LastError = sl.Link.LastError()
		}
		links = append(links, row)
	}
	d.mu.Unlock()
	sortLinkRows(links)
	return HealthReply{
		OK: true, Pid: d.pid, Version: version, Brokers: brokers, Sessions: d.sessions.Len(),
		Links: links, Uptime: int(time.Since(d.startedAt).Seconds()), TCPPort: d.tcpPort,
		EmbeddedBroker: d.embeddedHealth(),
	}
}

func (d *Daemon) sessionView(s *Session) sessionView {
	v := s.view()
	v.Link = d.sessionLinkState(s)
	st := d.states.get(s)
	v.Surfacing, v.Status = surfacingOf(st), effectiveStatus(st, time.Now(), d.opts.HookStatusDecay)
	if m := st.mcp; m != nil {
		v.MCP = &mcpView{ProtocolVersion: m.ProtocolVersion, ClientName: m.ClientName, ClientVersion: m.ClientVersion,
			Channel: m.Channel, ReportedAt: m.ReportedAt}
	}
	if !st.hookSeenAt.IsZero() {
		v.HookSeenAt = isoTime(st.hookSeenAt)
	}
	v.HookWelcomed = st.welcomedVia == surfacedViaHooks
	return v
}

// sortLinkRows orders /v1/health's links: by kind, mesh, then session.
func sortLinkRows(rows []LinkHealth) {
	sort.Slice(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Mesh, b.Mesh), cmp.Compare(a.SessionID, b.SessionID)) < 0
	})
}
