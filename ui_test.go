// Tests of the web UI's gate and routes over real HTTP: the one-time login,
// the cookie, Host, Origin and CSRF checks, the page's own routes, and that
// no secret reaches the page. The browser tests are in ui_browser_test.go.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// uiFixture is mesh alpha on a real broker: alice's daemon (with its TCP
// listener, where the UI is) holding session "alice", and bob's daemon
// holding session "bert".
type uiFixture struct {
	*msgFixture
	alice, bert testSession
}

func withTCP(o *DaemonOptions) { o.NoTCP, o.TCPPort = false, 0 }

func newUIFixture(t testing.TB) *uiFixture {
	t.Helper()
	b, wsURL := startTestBrokerWith(t, msgBrokerOptions())
	f := &uiFixture{msgFixture: &msgFixture{broker: b, url: wsURL}}
	f.me = newTestMesh(t, b, wsURL, "alpha", "alice-laptop")
	f.bob = addTestMember(t, b, f.me, "bob-desktop", "member")
	f.h1, f.h2 = newTestHome(t), newTestHome(t)
	if err := saveConfig(f.h1.Paths.MachineConfigFile(), &Config{Version: 1, DisplayName: "alice-laptop", Meshes: []Mesh{f.me}}); err != nil {
		t.Fatal(err)
	}
	f.h2.writeConfig(t, f.bob)
	f.d1 = startTestDaemon(t, f.h1, withTCP)
	f.d2 = startTestDaemon(t, f.h2, nil)
	f.d1.waitLink(t, "alpha", LinkOpen)
	f.d2.waitLink(t, "alpha", LinkOpen)
	f.alice = registerTestSession(t, f.d1, f.me, "alice")
	f.bert = registerTestSession(t, f.d2, f.bob, "bert")
	return f
}

// openUI asks alice's daemon for a login link, as `claudemesh ui` does.
func (f *uiFixture) openUI(t testing.TB) UIOpenReply {
	t.Helper()
	r, err := callIPC(context.Background(), f.d1.client(""), apiUIOpen, noRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// uiBrowser is an HTTP client that behaves like a page of the UI: it keeps
// the cookie, sends the page's Origin and does not follow redirects.
type uiBrowser struct {
	t      testing.TB
	base   string // http://127.0.0.1:port
	cookie *http.Cookie
	csrf   string
}

var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout: 10 * time.Second}

func (f *uiFixture) login(t testing.TB) *uiBrowser {
	t.Helper()
	open := f.openUI(t)
	u, _ := url.Parse(open.URL)
	b := &uiBrowser{t: t, base: "http://" + u.Host}
	resp, err := noRedirects.Get(open.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("login = %d → %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, c := range resp.Cookies() {
		b.cookie = c
	}
	var ov UIOverviewReply
	if st := b.json("GET", "/ui/api/v1/ui/overview", nil, &ov); st != 200 || ov.CSRF == "" {
		t.Fatalf("overview = %d %+v", st, ov)
	}
	b.csrf = ov.CSRF
	return b
}

// do sends one request as the page would, with the header changes given
// ("Host", "Origin", "Cookie", "X-CSRF-Token": "" removes one).
func (b *uiBrowser) do(method, path string, body any, change map[string]string) (*http.Response, []byte) {
	b.t.Helper()
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = strings.NewReader(string(data))
	}
	req, _ := http.NewRequest(method, b.base+path, rd)
	req.Header.Set("Origin", b.base)
	if method != "GET" {
		req.Header.Set("X-CSRF-Token", b.csrf)
		req.Header.Set("Content-Type", "application/json")
	} else {
		req.Header.Del("Origin") // a same-origin GET carries none
	}
	if b.cookie != nil {
		req.AddCookie(b.cookie)
	}
	for k, v := range change {
		switch {
		case k == "Host":
			req.Host = v
		case v == "":
			req.Header.Del(k)
		default:
			req.Header.Set(k, v)
		}
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

func (b *uiBrowser) json(method, path string, body, out any) int {
	b.t.Helper()
	resp, data := b.do(method, path, body, nil)
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(data, out); err != nil {
			b.t.Fatalf("%s %s: %v\n%s", method, path, err, data)
		}
	}
	return resp.StatusCode
}

func TestUIClosedUntilOpened(t *testing.T) {
	f := newUIFixture(t)
	base := "http://127.0.0.1:" + strconv.Itoa(f.d1.tcpPort)
	for _, p := range []string{"/ui/", "/ui/login?code=x", "/ui/api/v1/health", "/ui/app.js"} {
		resp, err := noRedirects.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s before the UI was opened = %d, want 404", p, resp.StatusCode)
		}
	}
	if r := f.openUI(t); !r.Started || !strings.HasPrefix(r.URL, base+"/ui/login?code=") || r.Page != base+"/ui/" {
		t.Fatalf("first open = %+v", r)
	}
	if r := f.openUI(t); r.Started {
		t.Fatalf("second open says it started the UI: %+v", r)
	}
	// A daemon without its TCP listener has no UI to open.
	h := newTestHome(t)
	td := startTestDaemon(t, h, nil)
	if _, err := callIPC(context.Background(), td.client(""), apiUIOpen, noRequest{}); ipcStatus(err) != http.StatusConflict {
		t.Fatalf("open without TCP: %v", err)
	}
}

func TestUILoginIsOneTime(t *testing.T) {
	f := newUIFixture(t)
	open := f.openUI(t)
	resp, err := noRedirects.Get(open.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cookies := resp.Cookies()
	if resp.StatusCode != http.StatusSeeOther || len(cookies) != 1 {
		t.Fatalf("login = %d, cookies %v", resp.StatusCode, cookies)
	}
	c := cookies[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/ui" || c.Name != "claudemesh_ui_"+strconv.Itoa(f.d1.tcpPort) ||
		c.Value == "" || strings.Contains(open.URL, c.Value) {
		t.Fatalf("the cookie = %+v", c)
	}
	again, err := noRedirects.Get(open.URL)
	if err != nil {
		t.Fatal(err)
	}
	again.Body.Close()
	if again.StatusCode != http.StatusForbidden || len(again.Cookies()) != 0 {
		t.Fatalf("the same link again = %d %v", again.StatusCode, again.Cookies())
	}
	// A link not used in time is dead.
	late := f.openUI(t)
	f.d1.ui.mu.Lock()
	f.d1.ui.now = func() time.Time { return time.Now().Add(uiCodeTTL + time.Second) }
	f.d1.ui.mu.Unlock()
	resp, err = noRedirects.Get(late.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("an expired link = %d", resp.StatusCode)
	}
	f.d1.ui.mu.Lock()
	f.d1.ui.now = time.Now
	f.d1.ui.mu.Unlock()
	// With the cookie, the page and its API answer, each with the policy.
	b := &uiBrowser{t: t, base: "http://127.0.0.1:" + strconv.Itoa(f.d1.tcpPort), cookie: c}
	page, body := b.do("GET", "/ui/", nil, nil)
	if page.StatusCode != 200 || !strings.Contains(string(body), `<script type="module" src="/ui/app.js">`) ||
		page.Header.Get("Content-Security-Policy") != uiCSP || page.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("the page = %d %v", page.StatusCode, page.Header)
	}
	if js, _ := b.do("GET", "/ui/app.js", nil, nil); js.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Fatalf("app.js is served as %q", js.Header.Get("Content-Type"))
	}
}

// Refusals: each request differs from an accepted one in one way.
func TestUIGateRefusals(t *testing.T) {
	f := newUIFixture(t)
	b := f.login(t)
	port := strconv.Itoa(f.d1.tcpPort)
	send := UISendRequest{As: f.alice.reg.SessionID, SendRequest: SendRequest{To: "bert", Message: "through the gate"}}
	cases := []struct {
		name   string
		method string
		path   string
		change map[string]string
		want   int
		code   string
	}{
		{"a read", "GET", "/ui/api/v1/health", nil, 200, ""},
		{"a read without the cookie", "GET", "/ui/api/v1/health", map[string]string{"Cookie": ""}, 401, "not_logged_in"},
		{"the page without the cookie", "GET", "/ui/", map[string]string{"Cookie": ""}, 401, ""},
		{"a forged cookie", "GET", "/ui/api/v1/health", map[string]string{"Cookie": "claudemesh_ui_" + port + "=forged"}, 401, "not_logged_in"},
		{"a foreign Origin", "GET", "/ui/api/v1/health", map[string]string{"Origin": "http://evil.example"}, 403, "forbidden_origin"},
		{"another port's Origin", "GET", "/ui/api/v1/health", map[string]string{"Origin": "http://127.0.0.1:1"}, 403, "forbidden_origin"},
		{"a cross-site fetch", "GET", "/ui/api/v1/health", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, "forbidden_origin"},
		{"a same-site fetch from another port", "GET", "/ui/api/v1/health", map[string]string{"Sec-Fetch-Site": "same-site"}, 403, "forbidden_origin"},
		{"a foreign Host", "GET", "/ui/api/v1/health", map[string]string{"Host": "evil.example:" + port}, 403, "forbidden_host"},
		{"another port in Host", "GET", "/ui/api/v1/health", map[string]string{"Host": "127.0.0.1:1"}, 403, "forbidden_host"},
		{"no port in Host", "GET", "/ui/", map[string]string{"Host": "localhost"}, 403, "forbidden_host"},
		{"localhost", "GET", "/ui/api/v1/health", map[string]string{"Host": "localhost:" + port}, 200, ""},
		{"a send without the CSRF token", "POST", "/ui/api/v1/ui/send", map[string]string{"X-CSRF-Token": ""}, 403, "csrf"},
		{"a send with a wrong CSRF token", "POST", "/ui/api/v1/ui/send", map[string]string{"X-CSRF-Token": "x" + b.csrf}, 403, "csrf"},
		{"a send without an Origin", "POST", "/ui/api/v1/ui/send", map[string]string{"Origin": ""}, 403, "csrf"},
		{"a send without the cookie", "POST", "/ui/api/v1/ui/send", map[string]string{"Cookie": ""}, 401, "not_logged_in"},
		{"a requeue without the CSRF token", "POST", "/ui/api/v1/outbox/requeue", map[string]string{"X-CSRF-Token": ""}, 403, "csrf"},
		{"an IPC route the page may not call", "GET", "/ui/api/v1/sessions", nil, 404, "not_found"},
		{"the page may not mint logins", "POST", "/ui/api/v1/ui/open", nil, 404, "not_found"},
		{"a send as it should be", "POST", "/ui/api/v1/ui/send", nil, 202, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.method == "POST" {
				body = send
			}
			b.t = t
			resp, data := b.do(tc.method, tc.path, body, tc.change)
			if resp.StatusCode != tc.want {
				t.Fatalf("%s %s = %d, want %d\n%s", tc.method, tc.path, resp.StatusCode, tc.want, data)
			}
			var e struct{ Error string }
			if tc.code != "" && (json.Unmarshal(data, &e) != nil || e.Error != tc.code) {
				t.Fatalf("error = %s, want %s", data, tc.code)
			}
		})
	}
	// The IPC gate is unchanged: the page's origin may not talk to it.
	status, _ := getJSON(t, http.DefaultClient, b.base+"/v1/health", map[string]string{"Origin": b.base, "Authorization": "Bearer " + f.d1.token})
	if status != http.StatusForbidden {
		t.Fatalf("IPC with an Origin = %d", status)
	}
}

// The page's own routes: the overview, a send as a session or the member,
// and the refusal of a session this machine does not have.
func TestUIRoutes(t *testing.T) {
	f := newUIFixture(t)
	b := f.login(t)
	var ov UIOverviewReply
	b.json("GET", "/ui/api/v1/ui/overview", nil, &ov)
	if ov.DisplayName != "alice-laptop" || len(ov.Meshes) != 1 || ov.Meshes[0].MemberPubkey != f.me.Pubkey || ov.Meshes[0].Link != LinkOpen ||
		len(ov.Sessions) != 1 || ov.Sessions[0].DisplayName != "alice" || ov.Sessions[0].SessionPubkey != f.alice.pub() {
		t.Fatalf("overview = %+v", ov)
	}
	streamB := subscribe(t, f.d2, f.bert.reg.Token)
	var sent SendReply
	if st := b.json("POST", "/ui/api/v1/ui/send", UISendRequest{As: f.alice.reg.SessionID,
		SendRequest: SendRequest{To: "bert", Message: "from the page as alice", WaitMs: 5000}}, &sent); st != 200 || sent.Status != "done" {
		t.Fatalf("send as alice = %d %+v", st, sent)
	}
	ev := eventData(streamB.next(t, "the page's DM", messageWith("from the page as alice")))
	if ev["sender_pubkey"] != f.alice.pub() {
		t.Fatalf("the DM came from %v, want alice's session", ev["sender_pubkey"])
	}
	if st := b.json("POST", "/ui/api/v1/ui/send", UISendRequest{SendRequest: SendRequest{To: "bert", Message: "from the page as the member", WaitMs: 5000}}, &sent); st != 200 {
		t.Fatalf("send as the member = %d", st)
	}
	ev = eventData(streamB.next(t, "the member's DM", messageWith("from the page as the member")))
	if ev["sender_pubkey"] != f.me.Pubkey {
		t.Fatalf("the DM came from %v, want the member", ev["sender_pubkey"])
	}
	resp, data := b.do("POST", "/ui/api/v1/ui/send", UISendRequest{As: "no-such-session", SendRequest: SendRequest{To: "bert", Message: "x"}}, nil)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(data), "session_not_found") {
		t.Fatalf("send as a stranger = %d %s", resp.StatusCode, data)
	}
	var hist HistoryReply
	if st := b.json("GET", "/ui/api/v1/history?latest=true", nil, &hist); st != 200 || len(hist.Messages) != 2 || hist.Messages[0].FromName != "alice" ||
		hist.Messages[1].FromName != "alice-laptop" {
		t.Fatalf("history = %d %+v", st, hist)
	}
}

// No secret reaches the page: not in any route it may read, not in the
// event stream, not in the files it loads.
func TestUINoSecretReachesThePage(t *testing.T) {
	f := newUIFixture(t)
	b := f.login(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", b.base+"/ui/api/v1/events", nil)
	req.AddCookie(b.cookie)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// Things happen while the stream is open: a send, a session, state.
	sendAndSettle(t, f.alice.cl, f.bert.pub(), "a message while the page watches")
	sendAndSettle(t, f.bert.cl, f.alice.pub(), "and an answer")
	second := registerTestSession(t, f.d1, f.me, "alice-2")
	if _, err := callIPC(ctx, f.d1.client(""), apiStateSet, StateSetRequest{Key: "k", Value: json.RawMessage(`1`), Mesh: "alpha"}); err != nil {
		t.Fatal(err)
	}

	var seen strings.Builder
	for _, p := range []string{"/ui/", "/ui/app.js", "/ui/style.css", "/ui/api/v1/ui/overview", "/ui/api/v1/health", "/ui/api/v1/peers", "/ui/api/v1/members",
		"/ui/api/v1/state", "/ui/api/v1/memory?q=x", "/ui/api/v1/outbox", "/ui/api/v1/history", "/ui/api/v1/search?q=message"} {
		r, data := b.do("GET", p, nil, nil)
		if r.StatusCode != 200 {
			t.Fatalf("GET %s = %d %s", p, r.StatusCode, data)
		}
		seen.Write(data)
	}
	var sent SendReply
	b.json("POST", "/ui/api/v1/ui/send", UISendRequest{As: second.reg.SessionID, SendRequest: SendRequest{To: "bert", Message: "hi", WaitMs: 5000}}, &sent)
	raw, _ := json.Marshal(sent)
	seen.Write(raw)
	deadline := time.After(2 * time.Second)
collect:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				break collect
			}
			seen.WriteString(l + "\n")
		case <-deadline:
			break collect
		}
	}
	page := seen.String()
	if !strings.Contains(page, "a message while the page watches") || !strings.Contains(page, "event: outbox") {
		t.Fatalf("the stream carried too little to judge:\n%.2000s", page)
	}
	secrets := map[string]string{
		"alice's member secret key": f.me.SecretKey, "bob's member secret key": f.bob.SecretKey,
		"alice's session secret key": f.alice.key.SecretHex(), "alice-2's session secret key": second.key.SecretHex(),
		"alice's session token": f.alice.reg.Token, "alice-2's session token": second.reg.Token,
		"the daemon's local token": f.d1.token,
	}
	for what, secret := range secrets {
		if secret == "" {
			t.Fatalf("%s is empty in the fixture", what)
		}
		for _, piece := range []string{secret, secret[:16]} {
			if strings.Contains(page, piece) {
				t.Errorf("%s reached the page", what)
			}
		}
	}
}

// The page is made of its own files: nothing loaded from elsewhere, and no
// markup built from strings (so a peer's text can only ever be text).
func TestUIFilesStandAlone(t *testing.T) {
	err := fs.WalkDir(uiFiles, "ui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, _ := fs.ReadFile(uiFiles, p)
		text := strings.ReplaceAll(string(data), "http://www.w3.org/2000/svg", "")
		for _, bad := range []string{"http://", "https://", "//cdn", "@import"} {
			if strings.Contains(text, bad) {
				t.Errorf("%s refers to %q: the UI must load nothing from elsewhere", p, bad)
			}
		}
		if strings.HasSuffix(p, ".js") {
			for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
				if strings.Contains(text, bad) {
					t.Errorf("%s uses %s: build elements with h() and text nodes", p, bad)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// `claudemesh ui`: --no-open prints the link; otherwise the browser opener
// is run with it.
func TestUIVerb(t *testing.T) {
	f := newUIFixture(t)
	env := f.h1.env()
	r := runCLI(t, env, "ui", "--no-open")
	link := strings.TrimSpace(r.stdout)
	if r.code != 0 || !strings.HasPrefix(link, "http://127.0.0.1:"+strconv.Itoa(f.d1.tcpPort)+"/ui/login?code=") {
		t.Fatalf("ui --no-open = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	resp, err := noRedirects.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the printed link = %d", resp.StatusCode)
	}
	r = runCLI(t, env, "ui", "--no-open", "--json")
	var out UIOpenReply
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil || out.URL == link || out.Started {
		t.Fatalf("ui --no-open --json = %d\n%s", r.code, r.stdout)
	}

	bin := t.TempDir()
	got := filepath.Join(bin, "opened")
	opener := "#!/bin/sh\nprintf '%s' \"$1\" > " + got + "\n"
	for _, name := range []string{"xdg-open", "open"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(opener), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env["PATH"] = bin + ":" + os.Getenv("PATH")
	r = runCLI(t, env, "ui")
	opened, _ := os.ReadFile(got)
	if r.code != 0 || !strings.Contains(string(opened), "/ui/login?code=") || strings.Contains(r.stdout, "code=") ||
		!strings.Contains(r.stdout, "/ui/") {
		t.Fatalf("ui = %d, opened %q\n%s%s", r.code, opened, r.stdout, r.stderr)
	}
	// An opener that fails: the link is printed instead.
	if err := os.WriteFile(filepath.Join(bin, "xdg-open"), []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(bin, "open"), []byte("#!/bin/sh\nexit 3\n"), 0o755)
	r = runCLI(t, env, "ui")
	if r.code != 0 || !strings.Contains(r.stdout, "/ui/login?code=") || !strings.Contains(r.stderr, "could not open a browser") {
		t.Fatalf("ui with a failing opener = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
