// The daemon's web UI: a live view of this machine's meshes, peers and
// conversations, served under /ui/ on the daemon's loopback TCP listener.
// The pages are static files embedded in the binary (no build step, nothing
// fetched from elsewhere); they read the routes of uiRoutes and follow the
// event stream.
//
// Policy, on every request under /ui/:
//  1. Host must be 127.0.0.1, localhost or [::1] with the daemon's own
//     port, so that a DNS-rebinding page gets nothing;
//  2. the UI answers only once `claudemesh ui` has opened it (POST
//     /v1/ui/open over IPC); before that every path but the style sheet
//     is 404;
//  3. an Origin, when sent, must be the UI's own (http:// and that Host),
//     and Sec-Fetch-Site, when sent, same-origin or none;
//  4. /ui/login exchanges a one-time code (one use, two minutes) for a
//     session cookie (HttpOnly, SameSite=Strict, Path=/ui); every other
//     path but the style sheet needs that cookie;
//  5. a request that changes anything (any method but GET and HEAD) needs
//     the session's CSRF token in X-CSRF-Token and an Origin.
//
// Every answer carries a Content-Security-Policy that lets the page run
// only its own script and talk only to its own origin, and forbids framing.
// No secret reaches the page: no key, no session token, no local token;
// the page acts as a session by naming its id, never by holding its token.
package main

import (
	"cmp"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"io"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed ui
var uiFiles embed.FS

// UI limits.
const (
	uiCodeTTL     = 2 * time.Minute // a login link works this long, once
	uiSessionIdle = 12 * time.Hour  // a browser's login lasts this long unused
	uiMaxCodes    = 8               // unused login links kept; the oldest goes first
	uiMaxSessions = 16              // browser logins kept; the least recently used goes first
)

// uiCSP lets the page load its own script, style and images and connect to
// its own origin, and nothing else.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// uiRoutes is what the page may call, under /ui/api: reads of the whole
// machine, a send as a session or the member, and the outbox requeue.
var uiRoutes = []ipcRoute{
	bind(apiUIOverview, (*Daemon).handleUIOverview),
	bind(apiHealth, (*Daemon).handleHealth),
	bind(apiPeers, (*Daemon).handlePeers),
	bind(apiMembers, (*Daemon).handleMembers),
	bind(apiState, (*Daemon).handleState),
	bind(apiRecall, (*Daemon).handleRecall),
	bind(apiOutbox, (*Daemon).handleOutboxList),
	bind(apiOutboxRequeue, (*Daemon).handleOutboxRequeue),
	bind(apiHistory, (*Daemon).handleHistory),
	bind(apiSearch, (*Daemon).handleSearch),
	bind(apiUISend, (*Daemon).handleUISend),
	{method: "GET", pattern: "/v1/events", stream: (*Daemon).streamEvents},
}

// uiServer holds the UI's logins.
type uiServer struct {
	mu       sync.Mutex
	open     bool
	codes    map[string]time.Time // one-time login code → when it expires
	sessions map[string]*uiLogin  // cookie value → the login
	now      func() time.Time
}

// uiLogin is one browser's login.
type uiLogin struct {
	csrf     string
	lastUsed time.Time
}

func newUIServer() *uiServer {
	return &uiServer{codes: map[string]time.Time{}, sessions: map[string]*uiLogin{}, now: time.Now}
}

// uiSecret is 32 random bytes, base64url.
func uiSecret() string {
	b := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		panic("crypto/rand: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// mintCode opens the UI (started reports whether it was closed) and makes
// a one-time login code.
func (u *uiServer) mintCode() (code string, expires time.Time, started bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := u.now()
	for c, exp := range u.codes {
		if !now.Before(exp) {
			delete(u.codes, c)
		}
	}
	for len(u.codes) >= uiMaxCodes {
		oldest := ""
		for c, exp := range u.codes {
			if oldest == "" || exp.Before(u.codes[oldest]) {
				oldest = c
			}
		}
		delete(u.codes, oldest)
	}
	started = !u.open
	u.open = true
	code, expires = uiSecret(), now.Add(uiCodeTTL)
	u.codes[code] = expires
	return code, expires, started
}

// redeem spends a login code: a new login, or nil for a code that is
// unknown, used or expired. Codes are compared in constant time.
func (u *uiServer) redeem(code string) (cookie string, l *uiLogin) {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := u.now()
	found := ""
	for c, exp := range u.codes {
		if subtle.ConstantTimeCompare([]byte(c), []byte(code)) == 1 && now.Before(exp) {
			found = c
		}
	}
	if found == "" {
		return "", nil
	}
	delete(u.codes, found)
	for len(u.sessions) >= uiMaxSessions {
		var oldest string
		for id, s := range u.sessions {
			if oldest == "" || s.lastUsed.Before(u.sessions[oldest].lastUsed) {
				oldest = id
			}
		}
		delete(u.sessions, oldest)
	}
	cookie, l = uiSecret(), &uiLogin{csrf: uiSecret(), lastUsed: now}
	u.sessions[cookie] = l
	return cookie, l
}

// login is the browser's login by its cookie, nil when it has none.
func (u *uiServer) login(cookie string) *uiLogin {
	if cookie == "" {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	now := u.now()
	for id, s := range u.sessions {
		if subtle.ConstantTimeCompare([]byte(id), []byte(cookie)) == 1 {
			if now.Sub(s.lastUsed) > uiSessionIdle {
				delete(u.sessions, id)
				return nil
			}
			s.lastUsed = now
			return s
		}
	}
	return nil
}

func (u *uiServer) isOpen() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.open
}

// uiCookieName is per port: two daemons of one machine (two users, or a
// test's) each keep their own login in one browser.
func (d *Daemon) uiCookieName() string { return "claudemesh_ui_" + strconv.Itoa(d.tcpPort) }

// uiBaseURL is the UI's address.
func (d *Daemon) uiBaseURL() string { return "http://127.0.0.1:" + strconv.Itoa(d.tcpPort) + "/ui/" }

// isUIPath reports whether a TCP request is the UI's.
func isUIPath(p string) bool { return p == "/ui" || strings.HasPrefix(p, "/ui/") }

// serveUI is the gate in front of the UI.
func (d *Daemon) serveUI(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", uiCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-store")
	if !d.uiHostAllowed(r.Host) {
		writeAPIError(w, newAPIError(http.StatusForbidden, "forbidden_host", "Host must be this daemon's own loopback address"))
		return
	}
	if r.URL.Path == "/ui/style.css" { // the notice pages' style holds nothing
		d.serveUIFile(w, r)
		return
	}
	if !d.ui.isOpen() {
		if strings.HasPrefix(r.URL.Path, "/ui/api/") {
			writeAPIError(w, newAPIError(http.StatusNotFound, "ui_closed", "the UI is not open: run 'claudemesh ui'"))
		} else {
			uiMessagePage(w, http.StatusNotFound, "The UI is not open", "Run claudemesh ui on this machine to open it.")
		}
		return
	}
	origin := r.Header.Get("Origin")
	if origin != "" && origin != "http://"+r.Host {
		writeAPIError(w, newAPIError(http.StatusForbidden, "forbidden_origin", "requests from another origin are refused"))
		return
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		writeAPIError(w, newAPIError(http.StatusForbidden, "forbidden_origin", "requests from another site are refused"))
		return
	}
	if r.URL.Path == "/ui/login" {
		d.uiLogin(w, r)
		return
	}
	var login *uiLogin
	if c, err := r.Cookie(d.uiCookieName()); err == nil {
		login = d.ui.login(c.Value)
	}
	if login == nil {
		if strings.HasPrefix(r.URL.Path, "/ui/api/") {
			writeAPIError(w, newAPIError(http.StatusUnauthorized, "not_logged_in", "log in with the link 'claudemesh ui' prints"))
			return
		}
		uiMessagePage(w, http.StatusUnauthorized, "Not logged in",
			"Run claudemesh ui on this machine: it opens this page with a one-time login link.")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		tok := r.Header.Get("X-CSRF-Token")
		if origin == "" || tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(login.csrf)) != 1 {
			writeAPIError(w, newAPIError(http.StatusForbidden, "csrf", "a change needs the page's CSRF token and its origin"))
			return
		}
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, "/ui/api"); ok {
		d.serveUIAPI(w, r, rest, login)
		return
	}
	d.serveUIFile(w, r)
}

// uiHostAllowed: a loopback name with this daemon's port.
func (d *Daemon) uiHostAllowed(host string) bool {
	h, port, err := net.SplitHostPort(strings.ToLower(host))
	if err != nil || port != strconv.Itoa(d.tcpPort) {
		return false
	}
	return h == "127.0.0.1" || h == "localhost" || h == "::1"
}

// uiLogin spends the link's code: a cookie, then the page without the code
// in its address.
func (d *Daemon) uiLogin(w http.ResponseWriter, r *http.Request) {
	cookie, l := d.ui.redeem(r.URL.Query().Get("code"))
	if l == nil {
		d.log.Warn("ui_login_refused", "remote", r.RemoteAddr)
		uiMessagePage(w, http.StatusForbidden, "This login link cannot be used",
			"It was used already or it has expired. Run claudemesh ui again for a new one.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: d.uiCookieName(), Value: cookie, Path: "/ui", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(uiSessionIdle.Seconds())})
	d.log.Info("ui_login")
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

// serveUIAPI runs one route of uiRoutes for a logged-in page.
func (d *Daemon) serveUIAPI(w http.ResponseWriter, r *http.Request, p string, login *uiLogin) {
	route, params, err := matchRouteIn(uiRoutes, r.Method, p)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	d.runRoute(w, route, &ipcRequest{Request: r, params: params, maxBody: route.maxBody, ui: login})
}

// serveUIFile serves the embedded page; / is index.html.
func (d *Daemon) serveUIFile(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeAPIError(w, newAPIError(http.StatusMethodNotAllowed, "method_not_allowed", "use GET"))
		return
	}
	name := strings.TrimPrefix(r.URL.Path, "/ui")
	if name == "" || name == "/" {
		name = "/index.html"
	}
	data, err := fs.ReadFile(uiFiles, "ui"+path.Clean(name))
	if err != nil {
		if name == "/" || r.URL.Path == "/ui" {
			http.Redirect(w, r, "/ui/", http.StatusSeeOther)
			return
		}
		writeAPIError(w, newAPIError(http.StatusNotFound, "not_found", "no such file"))
		return
	}
	w.Header().Set("Content-Type", cmp.Or(mime.TypeByExtension(path.Ext(name)), "application/octet-stream"))
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(data)
	}
}

// uiMessagePage is a small page of fixed text (never anything from a
// request) for a visitor who cannot see the UI.
func uiMessagePage(w http.ResponseWriter, status int, title, text string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, `<!doctype html><meta charset="utf-8"><title>claudemesh</title><link rel="stylesheet" href="/ui/style.css">`+
		`<main class="notice"><h1>`+title+`</h1><p>`+text+`</p></main>`)
}

// The UI's own routes.

// handleUIOpen is POST /v1/ui/open (IPC only): it opens the UI and returns
// a one-time login link.
func (d *Daemon) handleUIOpen(req *ipcRequest, _ noRequest) (UIOpenReply, error) {
	if d.tcpPort == 0 {
		return UIOpenReply{}, newAPIError(http.StatusConflict, "ui_unavailable", "this daemon has no TCP listener (it runs with --no-tcp), and the UI is served there")
	}
	code, expires, started := d.ui.mintCode()
	if started {
		d.log.Info("ui_opened", "url", d.uiBaseURL())
	}
	return UIOpenReply{URL: d.uiBaseURL() + "login?code=" + code, Page: d.uiBaseURL(), ExpiresAt: isoTime(expires), Started: started}, nil
}

// handleUIOverview is the page's first read: who this machine is on each
// mesh, its sessions (never their tokens or keys' secrets), and the
// login's CSRF token.
func (d *Daemon) handleUIOverview(req *ipcRequest, _ noRequest) (UIOverviewReply, error) {
	out := UIOverviewReply{DisplayName: d.memberName(), Meshes: []uiMeshView{}, Sessions: []uiSessionView{}}
	if req.ui != nil {
		out.CSRF = req.ui.csrf
	}
	for _, e := range d.allMeshes() {
		st := e.Link.State()
		v := uiMeshView{Slug: e.Mesh.Slug, Name: e.Mesh.Name, MemberPubkey: e.Key.PublicHex(), Role: e.Mesh.Role,
			BrokerURL: e.Mesh.BrokerURL, Link: st}
		if st != LinkOpen {
			v.LastError = e.Link.LastError()
		}
		out.Meshes = append(out.Meshes, v)
	}
	for _, s := range d.sessions.List() {
		v := uiSessionView{SessionID: s.SessionID, Mesh: s.Mesh, DisplayName: s.DisplayName, Role: s.Role,
			Groups: nonNil(s.Groups), Cwd: s.Cwd, Pid: s.Pid, Link: d.sessionLinkState(s),
			RegisteredAt: isoTime(s.RegisteredAt)}
		if s.Presence != nil {
			v.SessionPubkey = s.Presence.SessionPubkey
		}
		out.Sessions = append(out.Sessions, v)
	}
	return out, nil
}

// handleUISend is POST /v1/ui/send: a send as the session named by its id
// (As), or as the member when As is empty.
func (d *Daemon) handleUISend(req *ipcRequest, in UISendRequest) (SendReply, error) {
	as := req.session
	if in.As != "" {
		for _, s := range d.sessions.List() {
			if s.SessionID == in.As {
				as = s
			}
		}
		if as == nil {
			return SendReply{}, newAPIError(http.StatusNotFound, "session_not_found", "no session "+in.As+" on this machine").with("as", in.As)
		}
	}
	sub := *req
	sub.session = as
	return d.handleSend(&sub, in.SendRequest)
}
