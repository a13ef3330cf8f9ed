// Tests of the daemon's IPC: routes, the request gate on TCP, validation,
// body caps, and that no route leaks a secret.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// meshFixture is a broker with two meshes: "alpha" (this machine is a
// member, and so is bob) and "beta" (this machine and carol).
type meshFixture struct {
	broker      *Broker
	url         string
	alpha, beta Mesh // this machine's member entries
	bob, carol  Mesh // other members
}

func newMeshFixture(t testing.TB) meshFixture {
	t.Helper()
	b, url := startTestBroker(t)
	alpha := newTestMesh(t, b, url, "alpha", "me")
	beta := newTestMesh(t, b, url, "beta", "me")
	return meshFixture{
		broker: b, url: url, alpha: alpha, beta: beta,
		bob:   addTestMember(t, b, alpha, "bob", "member"),
		carol: addTestMember(t, b, beta, "carol", "member"),
	}
}

func TestDaemonServesVersionHealthAndPeers(t *testing.T) {
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha, fx.beta)
	td := startTestDaemon(t, h, nil)
	td.waitLink(t, "alpha", LinkOpen)
	td.waitLink(t, "beta", LinkOpen)
	ctx := context.Background()
	cl := td.client("")

	v, err := cl.Version(ctx)
	if err != nil || v.IPCAPI != "v1" || v.DaemonVersion != version || v.SchemaVersion != 1 {
		t.Fatalf("version = %+v, %v", v, err)
	}
	hl, err := cl.Health(ctx)
	if err != nil || !hl.OK || hl.Pid != os.Getpid() || hl.Brokers["alpha"] != "open" || hl.Brokers["beta"] != "open" {
		t.Fatalf("health = %+v, %v", hl, err)
	}
	st, err := os.Stat(h.Paths.SocketFile())
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, %v", st.Mode(), err)
	}
	for _, f := range []string{h.Paths.TokenFile(), h.Paths.DaemonInfoFile(), h.Paths.PidFile()} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode = %v, %v", f, st, err)
		}
	}

	// bob comes online on alpha; carol on beta.
	connectMember(t, fx.url, fx.bob)
	connectMember(t, fx.url, fx.carol)
	names := func(mesh string) map[string]string {
		var resp struct {
			Peers []map[string]any `json:"peers"`
		}
		if err := cl.Do(ctx, "GET", ipcPath("/v1/peers", "mesh", mesh), nil, &resp); err != nil {
			t.Fatalf("peers %q: %v", mesh, err)
		}
		out := map[string]string{}
		for _, p := range resp.Peers {
			out[p["displayName"].(string)] = p["mesh"].(string)
		}
		return out
	}
	waitFor(t, "bob and carol listed", func() bool {
		all := names("")
		return all["bob"] == "alpha" && all["carol"] == "beta"
	})
	if got := names("alpha"); got["carol"] != "" || got["bob"] != "alpha" {
		t.Fatalf("peers?mesh=alpha = %v, want bob and not carol", got)
	}
	if got := names("beta"); got["bob"] != "" || got["carol"] != "beta" {
		t.Fatalf("peers?mesh=beta = %v, want carol and not bob", got)
	}
	err = cl.Do(ctx, "GET", "/v1/peers?mesh=nope", nil, nil)
	if ipcStatus(err) != http.StatusNotFound {
		t.Fatalf("peers?mesh=nope = %v, want 404", err)
	}
}

func TestDaemonStateMemorySkillsProfile(t *testing.T) {
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha, fx.beta)
	td := startTestDaemon(t, h, nil)
	td.waitLink(t, "alpha", LinkOpen)
	td.waitLink(t, "beta", LinkOpen)
	ctx := context.Background()
	cl := td.client("")

	// Writes need a mesh when several are joined.
	err := cl.Do(ctx, "POST", "/v1/state", map[string]any{"key": "k", "value": 1}, nil)
	var ie *IPCError
	if ipcStatus(err) != 400 || !asIPC(err, &ie) || ie.Code != "mesh_required" {
		t.Fatalf("state set without mesh = %v, want 400 mesh_required", err)
	}
	if err := cl.Do(ctx, "POST", "/v1/state", map[string]any{"key": "k", "value": map[string]any{"n": 1}, "mesh": "alpha"}, nil); err != nil {
		t.Fatalf("state set: %v", err)
	}
	var got struct {
		State map[string]any `json:"state"`
	}
	if err := cl.Do(ctx, "GET", "/v1/state?key=k", nil, &got); err != nil || got.State["mesh"] != "alpha" {
		t.Fatalf("state get = %v, %v", got, err)
	}
	if err := cl.Do(ctx, "GET", "/v1/state?key=missing", nil, nil); ipcStatus(err) != 404 {
		t.Fatalf("state get missing = %v, want 404", err)
	}

	var mem struct {
		ID   string `json:"id"`
		Mesh string `json:"mesh"`
	}
	if err := cl.Do(ctx, "POST", "/v1/memory", map[string]any{"content": "the build uses go 1.26", "tags": []string{"build"}, "mesh": "beta"}, &mem); err != nil || mem.ID == "" {
		t.Fatalf("remember = %+v, %v", mem, err)
	}
	var rec struct {
		Matches []map[string]any `json:"matches"`
	}
	if err := cl.Do(ctx, "GET", "/v1/memory?q=build&mesh=beta", nil, &rec); err != nil || len(rec.Matches) != 1 || rec.Matches[0]["id"] != mem.ID {
		t.Fatalf("recall = %+v, %v", rec, err)
	}
	if err := cl.Do(ctx, "DELETE", "/v1/memory/"+mem.ID+"?mesh=beta", nil, nil); err != nil {
		t.Fatalf("forget: %v", err)
	}

	if err := cl.Do(ctx, "POST", "/v1/skills", map[string]any{"name": "review", "description": "code review", "instructions": "read the diff", "mesh": "alpha"}, nil); err != nil {
		t.Fatalf("share skill: %v", err)
	}
	var sk struct {
		Skill map[string]any `json:"skill"`
	}
	if err := cl.Do(ctx, "GET", "/v1/skills/review", nil, &sk); err != nil || sk.Skill["instructions"] != "read the diff" || sk.Skill["mesh"] != "alpha" {
		t.Fatalf("get skill = %+v, %v", sk, err)
	}
	if err := cl.Do(ctx, "DELETE", "/v1/skills/review?mesh=alpha", nil, nil); err != nil {
		t.Fatalf("remove skill: %v", err)
	}
	if err := cl.Do(ctx, "GET", "/v1/skills/review", nil, nil); ipcStatus(err) != 404 {
		t.Fatalf("get removed skill = %v, want 404", err)
	}

	var prof map[string]any
	if err := cl.Do(ctx, "POST", "/v1/profile", map[string]any{"summary": "testing", "title": "tester", "mesh": "alpha"}, &prof); err != nil {
		t.Fatalf("profile: %v", err)
	}
	if err := cl.Do(ctx, "POST", "/v1/profile", map[string]any{"sumary": "typo"}, nil); ipcStatus(err) != 400 {
		t.Fatalf("profile with an unknown key = %v, want 400", err)
	}
	if err := cl.Do(ctx, "POST", "/v1/profile", map[string]any{"status": "asleep"}, nil); ipcStatus(err) != 400 {
		t.Fatalf("profile with a bad status = %v, want 400", err)
	}
}

func asIPC(err error, target **IPCError) bool {
	ie, ok := err.(*IPCError)
	if ok {
		*target = ie
	}
	return ok
}

// A link that is not open is an honest 503, not a fake ok.
func TestDaemonBrokerDownIs503(t *testing.T) {
	h := newTestHome(t)
	m := Mesh{MeshID: "m1", MemberID: "u1", Slug: "gone", Name: "gone", BrokerURL: "ws://127.0.0.1:1/ws"}
	kp := mustNewKeypair()
	m.Pubkey, m.SecretKey = kp.PublicHex(), kp.SecretHex()
	h.writeConfig(t, m)
	td := startTestDaemon(t, h, nil)
	cl := td.client("")
	ctx := context.Background()
	for _, call := range []struct{ method, path string }{
		{"GET", "/v1/peers"}, {"GET", "/v1/state?key=x"}, {"POST", "/v1/state"}, {"POST", "/v1/memory"},
	} {
		var body any
		if call.method == "POST" {
			body = map[string]any{"key": "x", "value": 1, "content": "c"}
		}
		err := cl.Do(ctx, call.method, call.path, body, nil)
		var ie *IPCError
		if ipcStatus(err) != 503 || !asIPC(err, &ie) || ie.Code != "broker_unavailable" {
			t.Errorf("%s %s = %v, want 503 broker_unavailable", call.method, call.path, err)
		}
	}
	hl, _ := cl.Health(ctx)
	if st := hl.Brokers["gone"]; st != "connecting" && st != "reconnecting" {
		t.Errorf("link state = %q, want connecting or reconnecting", st)
	}
}

func TestIPCTCPGuards(t *testing.T) {
	h := newTestHome(t)
	h.writeConfig(t)
	td := startTestDaemon(t, h, func(o *DaemonOptions) { o.NoTCP = false; o.TCPPort = 0 })
	tok, err := os.ReadFile(h.Paths.TokenFile())
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tok))
	var info struct {
		TCPPort int `json:"tcp_port"`
	}
	data, _ := os.ReadFile(h.Paths.DaemonInfoFile())
	if err := json.Unmarshal(data, &info); err != nil || info.TCPPort == 0 {
		t.Fatalf("daemon.json = %s, %v", data, err)
	}
	base := "http://127.0.0.1:" + strconv.Itoa(info.TCPPort)
	hc := &http.Client{Timeout: 10 * time.Second}
	cases := []struct {
		name   string
		path   string
		header map[string]string
		status int
		code   string
	}{
		{"no token", "/v1/version", nil, 401, "missing_bearer"},
		{"wrong token", "/v1/version", map[string]string{"Authorization": "Bearer nope"}, 401, "invalid_bearer"},
		{"session scheme is not a bearer", "/v1/version", map[string]string{"Authorization": "ClaudeMesh-Session " + randomHex(32)}, 401, "missing_bearer"},
		{"right token", "/v1/version", map[string]string{"Authorization": "Bearer " + token}, 200, ""},
		{"origin", "/v1/version", map[string]string{"Authorization": "Bearer " + token, "Origin": "http://evil.example"}, 403, "forbidden_origin"},
		{"foreign host", "/v1/version", map[string]string{"Authorization": "Bearer " + token, "Host": "evil.example:47823"}, 403, "forbidden_host"},
		{"ipv6 loopback host", "/v1/version", map[string]string{"Authorization": "Bearer " + token, "Host": "[::1]:47823"}, 200, ""},
		{"token in query", "/v1/version?token=" + token, map[string]string{"Authorization": "Bearer " + token}, 400, "token_in_query"},
		{"health needs the token", "/v1/health", nil, 401, "missing_bearer"},
		{"unknown route", "/v1/nope", map[string]string{"Authorization": "Bearer " + token}, 404, "not_found"},
		{"wrong method", "/v1/sessions/register", map[string]string{"Authorization": "Bearer " + token}, 405, "method_not_allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := getJSON(t, hc, base+tc.path, tc.header)
			if status != tc.status {
				t.Fatalf("GET %s = %d %v, want %d", tc.path, status, body, tc.status)
			}
			if tc.code != "" && body["error"] != tc.code {
				t.Fatalf("GET %s error = %v, want %s", tc.path, body["error"], tc.code)
			}
		})
	}
	// The TCP client with the session header.
	tcp := newTCPDaemonClient(info.TCPPort, token, "")
	if _, err := tcp.Version(context.Background()); err != nil {
		t.Fatalf("tcp client: %v", err)
	}
	_ = td
}

func TestIPCPublicHealth(t *testing.T) {
	h := newTestHome(t)
	h.writeConfig(t)
	td := startTestDaemon(t, h, func(o *DaemonOptions) { o.NoTCP = false; o.TCPPort = 0; o.PublicHealth = true })
	base := "http://127.0.0.1:" + strconv.Itoa(td.tcpPort)
	hc := &http.Client{Timeout: 10 * time.Second}
	if status, body := getJSON(t, hc, base+"/v1/health", nil); status != 200 || body["ok"] != true {
		t.Fatalf("public health = %d %v", status, body)
	}
	if status, _ := getJSON(t, hc, base+"/v1/version", nil); status != 401 {
		t.Fatalf("version without token = %d, want 401", status)
	}
}

func TestRegisterValidation(t *testing.T) {
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha)
	td := startTestDaemon(t, h, nil)
	cl := td.client("")
	ctx := context.Background()
	good, _ := registration(t, fx.alpha, "a", os.Getpid())
	otherMember, _ := registration(t, fx.bob, "x", os.Getpid()) // attested by bob, not by us
	expired, _ := registration(t, fx.alpha, "e", os.Getpid())
	expired.Presence.ParentAttestation.ExpiresAt = time.Now().Add(-time.Minute).UnixMilli()
	badSig, _ := registration(t, fx.alpha, "s", os.Getpid())
	badSig.Presence.ParentAttestation.Signature = strings.Repeat("0", 128)
	mismatch, _ := registration(t, fx.alpha, "m", os.Getpid())
	mismatch.Presence.SessionSecretKey = mustNewKeypair().SecretHex()

	with := func(f func(*RegisterRequest)) RegisterRequest {
		r := good
		p := *good.Presence
		r.Presence = &p
		r.Token = randomHex(32)
		f(&r)
		return r
	}
	cases := []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"empty body", nil, 400, "missing_body"},
		{"not json", json.RawMessage(`{"token":`), 400, "invalid_json"},
		{"bad token", with(func(r *RegisterRequest) { r.Token = "abc" }), 400, "invalid_token"},
		{"missing session id", with(func(r *RegisterRequest) { r.SessionID = "" }), 400, "missing_field"},
		{"missing pid", with(func(r *RegisterRequest) { r.Pid = 0 }), 400, "missing_field"},
		{"missing name", with(func(r *RegisterRequest) { r.DisplayName = "" }), 400, "missing_field"},
		{"path in session id", with(func(r *RegisterRequest) { r.SessionID = "../../x" }), 400, "invalid_session_id"},
		{"unknown mesh", with(func(r *RegisterRequest) { r.Mesh = "nowhere" }), 404, "mesh_not_attached"},
		{"short session pubkey", with(func(r *RegisterRequest) { r.Presence.SessionPubkey = "ab" }), 400, "invalid_presence"},
		{"short secret", with(func(r *RegisterRequest) { r.Presence.SessionSecretKey = "ab" }), 400, "invalid_presence"},
		{"secret of another key", mismatch, 400, "invalid_presence"},
		{"attested by another member", func() RegisterRequest { r := otherMember; r.Mesh = "alpha"; return r }(), 400, "invalid_presence"},
		{"expired attestation", expired, 400, "invalid_presence"},
		{"bad attestation signature", badSig, 400, "invalid_presence"},
		{"valid", good, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var raw []byte
			switch b := tc.body.(type) {
			case nil:
			case json.RawMessage:
				raw = b
			default:
				raw, _ = json.Marshal(b)
			}
			status, body := rawRequest(t, td, "POST", "/v1/sessions/register", raw, "")
			if status != tc.status || (tc.code != "" && body["error"] != tc.code) {
				t.Fatalf("register = %d %v, want %d %s", status, body, tc.status, tc.code)
			}
		})
	}
	if n := td.sessions.Len(); n != 1 {
		t.Fatalf("%d sessions registered, want only the valid one", n)
	}
	// The valid registration stored its key, 0600, and opened its link.
	st, err := os.Stat(h.Paths.SessionKeyFile("alpha", good.SessionID))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("session key file: %v %v", st, err)
	}
	waitFor(t, "session link open", func() bool {
		s := td.sessions.Resolve(good.Token)
		return s != nil && td.sessionLinkState(s) == LinkOpen
	})
	me, err := td.client(good.Token).SessionMe(ctx)
	if err != nil || me == nil || me.SessionID != good.SessionID || me.Presence == nil || me.Link != LinkOpen {
		t.Fatalf("sessions/me = %+v, %v", me, err)
	}
	_ = cl
}

// rawRequest sends a raw body over the daemon's socket.
func rawRequest(t testing.TB, td *testDaemon, method, path string, body []byte, sessionToken string) (int, map[string]any) {
	t.Helper()
	cl := td.client(sessionToken)
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://localhost"+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if sessionToken != "" {
		req.Header.Set("Authorization", "ClaudeMesh-Session "+sessionToken)
	}
	resp, err := cl.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestOversizeBodyIs413(t *testing.T) {
	h := newTestHome(t)
	h.writeConfig(t)
	td := startTestDaemon(t, h, nil)
	big := []byte(`{"summary":"` + strings.Repeat("x", 20<<10) + `"}`)
	status, body := rawRequest(t, td, "POST", "/v1/profile", big, "")
	if status != 413 || body["error"] != "payload_too_large" {
		t.Fatalf("oversize profile = %d %v, want 413", status, body)
	}
}

func TestDeregister(t *testing.T) {
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha)
	td := startTestDaemon(t, h, nil)
	ctx := context.Background()
	a, _ := registration(t, fx.alpha, "a", os.Getpid())
	b, _ := registration(t, fx.alpha, "b", os.Getpid())
	for _, r := range []RegisterRequest{a, b} {
		if err := td.client("").RegisterSession(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := td.client(a.Token).DeregisterSession(ctx, b.Token); ipcStatus(err) != 403 {
		t.Fatalf("a deregistering b = %v, want 403", err)
	}
	if err := td.client("").DeregisterSession(ctx, "xyz"); ipcStatus(err) != 400 {
		t.Fatalf("deregister bad token = %v, want 400", err)
	}
	if err := td.client(a.Token).DeregisterSession(ctx, a.Token); err != nil {
		t.Fatalf("a deregistering itself: %v", err)
	}
	if err := td.client("").DeregisterSession(ctx, a.Token); ipcStatus(err) != 404 {
		t.Fatalf("deregister twice = %v, want 404", err)
	}
}

// No JSON answer from any route ever carries a secret key we know.
func TestNoRouteLeaksSecrets(t *testing.T) {
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha, fx.beta)
	td := startTestDaemon(t, h, nil)
	td.waitLink(t, "alpha", LinkOpen)
	td.waitLink(t, "beta", LinkOpen)
	ctx := context.Background()
	reg, session := registration(t, fx.alpha, "leaky", os.Getpid())
	if err := td.client("").RegisterSession(ctx, reg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "session link open", func() bool { return td.sessionLinkState(td.sessions.Resolve(reg.Token)) == LinkOpen })
	secrets := []string{fx.alpha.SecretKey, fx.beta.SecretKey, session.SecretHex(), reg.Token,
		// The seed halves alone are secrets too.
		fx.alpha.SecretKey[:64], fx.beta.SecretKey[:64], session.SecretHex()[:64]}
	tok, _ := os.ReadFile(h.Paths.TokenFile())
	secrets = append(secrets, strings.TrimSpace(string(tok)))
	calls := []struct{ method, path, body string }{
		{"GET", "/v1/version", ""}, {"GET", "/v1/health", ""}, {"GET", "/v1/sessions", ""},
		{"GET", "/v1/sessions/me", ""}, {"GET", "/v1/peers", ""}, {"GET", "/v1/peers?mesh=beta", ""},
		{"POST", "/v1/state", `{"key":"k","value":"v"}`}, {"GET", "/v1/state", ""}, {"GET", "/v1/state?key=k", ""},
		{"POST", "/v1/memory", `{"content":"remember me"}`}, {"GET", "/v1/memory?q=remember", ""},
		{"POST", "/v1/skills", `{"name":"s","instructions":"i"}`}, {"GET", "/v1/skills", ""}, {"GET", "/v1/skills/s", ""},
		{"POST", "/v1/profile", `{"summary":"x"}`}, {"POST", "/v1/reload", ""},
		{"POST", "/v1/sessions/register", `{"token":"bad"}`}, {"DELETE", "/v1/sessions/" + strings.Repeat("ab", 32), ""},
	}
	for _, tok := range []string{"", reg.Token} {
		for _, c := range calls {
			var body []byte
			if c.body != "" {
				body = []byte(c.body)
			}
			status, out := rawRequest(t, td, c.method, c.path, body, tok)
			data, _ := json.Marshal(out)
			for _, s := range secrets {
				if s != "" && bytes.Contains(data, []byte(s)) {
					t.Errorf("%s %s (session %v) → %d leaks a secret: %s", c.method, c.path, tok != "", status, data)
				}
			}
		}
	}
	// And sessions.json holds none either (the token is its key, by design).
	data, _ := os.ReadFile(h.Paths.SessionsFile())
	for _, s := range []string{session.SecretHex(), session.SecretHex()[:64], fx.alpha.SecretKey} {
		if bytes.Contains(data, []byte(s)) {
			t.Errorf("sessions.json holds a secret key")
		}
	}
}

// FuzzIPCBodies throws arbitrary bodies at every POST route of a daemon
// with no broker: nothing may panic or answer 500.
func FuzzIPCBodies(f *testing.F) {
	for _, s := range []string{`{}`, `{"token":"` + strings.Repeat("a", 64) + `","session_id":"s","mesh":"m","display_name":"d","pid":1,"presence":{}}`,
		`{"key":"k","value":{"a":[1,2]}}`, `{"content":"x","tags":[1]}`, `{"summary":null,"visible":"yes"}`, `[]`, `null`, `"x"`, `{"a":1}{"b":2}`} {
		f.Add(s)
	}
	h := newTestHome(f)
	kp := mustNewKeypair()
	m := Mesh{MeshID: "m1", MemberID: "u1", Slug: "m", BrokerURL: "ws://127.0.0.1:1/ws", Pubkey: kp.PublicHex(), SecretKey: kp.SecretHex()}
	h.writeConfig(f, m)
	d := NewDaemon(DaemonOptions{Paths: h.Paths, RPCTimeout: 10 * time.Millisecond})
	d.ctx = context.Background()
	d.applyConfig(&Config{Meshes: []Mesh{m}}, false)
	f.Cleanup(d.closeLinks)
	handler := d.ipcHandler(false)
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/v1/sessions/register", "/v1/state", "/v1/memory", "/v1/skills", "/v1/profile"} {
			req := httptest.NewRequest("POST", "http://localhost"+path, strings.NewReader(body))
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, req)
			if rec.Code >= 500 && rec.Code != 503 && rec.Code != 504 {
				t.Fatalf("POST %s %q → %d %s", path, body, rec.Code, rec.Body.String())
			}
			if !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("POST %s %q → non-JSON answer %q", path, body, rec.Body.String())
			}
		}
	})
}

// BenchmarkIPCVersion is one GET /v1/version round trip over the socket.
func BenchmarkIPCVersion(b *testing.B) {
	h := newTestHome(b)
	h.writeConfig(b)
	td := startTestDaemon(b, h, nil)
	cl := td.client("")
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := cl.Version(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/roundtrip")
}

var _ = fmt.Sprint

// newTCPDaemonClient talks over loopback TCP with the local token.
func newTCPDaemonClient(port int, localToken, sessionToken string) *DaemonClient {
	return &DaemonClient{
		http: &http.Client{Transport: &http.Transport{MaxIdleConns: 4}}, base: "http://127.0.0.1:" + strconv.Itoa(port),
		bearer: localToken, SessionToken: sessionToken, tcp: true,
	}
}

// A session token the daemon does not know is not an identity: every route
// that acts for a session answers 401 unknown_session, and the messages of
// other sessions stay where they are; no token keeps the machine-wide view.
func TestUnknownSessionTokenIs401(t *testing.T) {
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha)
	td := startTestDaemon(t, h, nil)
	ctx := context.Background()
	reaped, _ := registration(t, fx.alpha, "reaped", os.Getpid())
	if err := td.client("").RegisterSession(ctx, reaped); err != nil {
		t.Fatal(err)
	}
	if err := td.client(reaped.Token).DeregisterSession(ctx, reaped.Token); err != nil {
		t.Fatal(err)
	}
	stale := td.client(reaped.Token)
	routes := []struct{ method, path string }{
		{"GET", "/v1/inbox"},
		{"POST", "/v1/inbox/seen"},
		{"DELETE", "/v1/inbox?all=true"},
		{"DELETE", "/v1/inbox/some-id"},
		{"GET", "/v1/events"},
		{"POST", "/v1/send"},
		{"GET", "/v1/outbox"},
		{"GET", "/v1/peers"},
		{"GET", "/v1/sessions/me"},
	}
	for _, r := range routes {
		var body any
		if r.method == "POST" {
			body = map[string]any{"to": "*", "message": "hi", "ids": []string{"x"}}
		}
		err := stale.Do(ctx, r.method, r.path, body, nil)
		var ie *IPCError
		if !errors.As(err, &ie) || ie.Status != 401 || ie.Code != "unknown_session" {
			t.Errorf("%s %s with a stale token = %v, want 401 unknown_session", r.method, r.path, err)
		}
	}
	if _, err := td.client("").Version(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := stale.Version(ctx); err != nil {
		t.Fatalf("version with a stale token: %v", err)
	}
	var out InboxReply
	if err := td.client("").Do(ctx, "GET", "/v1/inbox", nil, &out); err != nil {
		t.Fatalf("no token: %v", err)
	}
}
