// Tests of the mesh verbs: create, invite, join, list and leave against a
// real broker, and the running daemon taking each change.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// machine is one simulated machine for CLI tests: its own home and config dir.
type machine struct {
	t    *testing.T
	home string
	vars map[string]string
}

func newMachine(t *testing.T) *machine {
	home := t.TempDir()
	cfg := filepath.Join(home, "cfg")
	if err := ensurePrivateDir(cfg); err != nil {
		t.Fatal(err)
	}
	return &machine{t: t, home: home, vars: map[string]string{"HOME": home, "CLAUDEMESH_CONFIG_DIR": cfg,
		// The CLI runs in this process: a daemon it spawned would be the
		// test binary, so verbs take their direct path.
		"CLAUDEMESH_INTERNAL_NO_AUTOSPAWN": "1"}}
}

// run runs one command line; it returns the exit code, stdout and stderr.
func (m *machine) run(args ...string) (int, string, string) {
	m.t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, Env{Getenv: func(k string) string { return m.vars[k] }, Stdout: &out, Stderr: &errb})
	return code, out.String(), errb.String()
}

// must runs one command line that has to succeed and returns its stdout.
func (m *machine) must(args ...string) string {
	m.t.Helper()
	code, out, errs := m.run(args...)
	if code != 0 {
		m.t.Fatalf("%v = %d\n%s%s", args, code, out, errs)
	}
	return out
}

func (m *machine) config() *Config {
	m.t.Helper()
	cfg, err := loadConfig(filepath.Join(m.vars["CLAUDEMESH_CONFIG_DIR"], "config.json"))
	if err != nil {
		m.t.Fatal(err)
	}
	return cfg
}

func TestCLIMeshCreateInviteJoinListLeave(t *testing.T) {
	b, url := startTestBroker(t)
	alice, bob := newMachine(t), newMachine(t)

	if code, out, errs := alice.run("mesh", "create", "team", "--broker", url, "--name", "alice"); code != 0 || !strings.Contains(out, "created mesh team") {
		t.Fatalf("mesh create = %d\n%s%s", code, out, errs)
	}
	m, ok := alice.config().MeshBySlug("team")
	if !ok || m.RootKey == "" || m.BrokerURL != url || len(m.MeshID) != 32 {
		t.Fatalf("saved mesh = %+v", m)
	}
	if code, _, _ := alice.run("new", "team", "--broker", url); code != exitExists {
		t.Fatalf("creating the same slug again = %d, want %d", code, exitExists)
	}

	code, out, errs := alice.run("invite", "--uses", "2", "--json")
	if code != 0 {
		t.Fatalf("invite --json = %d %s", code, errs)
	}
	var inv struct {
		URL       string `json:"url"`
		ExpiresAt string `json:"expires_at"`
	}
	if err := json.Unmarshal([]byte(out), &inv); err != nil || !strings.HasPrefix(inv.URL, "ic://join/") {
		t.Fatalf("invite --json = %q (%v)", out, err)
	}
	if _, err := time.Parse(time.RFC3339, inv.ExpiresAt); err != nil {
		t.Fatalf("expires_at = %q", inv.ExpiresAt)
	}
	code, out, _ = alice.run("share", "--role", "admin", "--expires", "2h")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || !strings.HasPrefix(lines[len(lines)-1], "ic://join/") {
		t.Fatalf("share output's last line = %q", lines[len(lines)-1])
	}

	if code, out, errs := bob.run("join", inv.URL, "--name", "bob"); code != 0 || !strings.Contains(out, "joined team as bob") {
		t.Fatalf("join = %d\n%s%s", code, out, errs)
	}
	bm, ok := bob.config().MeshBySlug("team")
	if !ok || bm.MeshID != m.MeshID || bm.Pubkey == m.Pubkey || bm.BrokerURL != url {
		t.Fatalf("bob's mesh = %+v", bm)
	}
	if code, out, _ := bob.run("join", inv.URL); code != 0 || !strings.Contains(out, "already in team") {
		t.Fatalf("second join = %d %s", code, out)
	}
	// The joined member can say hello.
	connectMember(t, url, *bm)

	code, out, _ = bob.run("ls", "--json")
	var rows []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 1 || rows[0]["slug"] != "team" {
		t.Fatalf("ls --json = %d %s", code, out)
	}
	if strings.Contains(out, "secret") || strings.Contains(out, bm.SecretKey) {
		t.Fatal("mesh list leaks the secret key")
	}
	if code, out, _ := bob.run("mesh", "list"); code != 0 || !strings.Contains(out, "● team") {
		t.Fatalf("mesh list = %d %s", code, out)
	}
	// Only the owner key can register invites.
	if code, _, errs := bob.run("invite"); code != exitPermission {
		t.Fatalf("invite by a member = %d %s", code, errs)
	}

	if code, _, _ := bob.run("leave", "team"); code != 0 {
		t.Fatalf("leave = %d", code)
	}
	if code, _, _ := bob.run("leave", "team"); code != exitNotFound {
		t.Fatalf("second leave = %d, want %d", code, exitNotFound)
	}
	if code, _, _ := bob.run("invite"); code != exitNotFound {
		t.Fatalf("invite with no mesh = %d, want %d", code, exitNotFound)
	}
	_ = b
}

func TestCLIJoinFailures(t *testing.T) {
	b, url := startTestBroker(t)
	alice := newMachine(t)
	if code, _, errs := alice.run("mesh", "create", "team", "--broker", url); code != 0 {
		t.Fatal(errs)
	}
	_, out, _ := alice.run("invite", "--json")
	var inv struct{ URL string }
	json.Unmarshal([]byte(out), &inv)

	cases := []struct {
		name   string
		invite string
		code   int
		errSub string
	}{
		{"garbage", "ic://join/!!!", exitFailure, "not a valid invite"},
		{"not a link", "hello", exitFailure, "not a valid invite"},
		{"cut short", inv.URL[:len(inv.URL)/2], exitFailure, "hint: an invite is one long ic://join/… line: copy all of it"},
		{"used up", inv.URL, exitFailure, "invite_exhausted"},
	}
	first := newMachine(t)
	if code, _, errs := first.run("join", inv.URL); code != 0 {
		t.Fatalf("first join: %s", errs)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := newMachine(t).run("join", tc.invite)
			if code != tc.code || !strings.Contains(errs, tc.errSub) {
				t.Fatalf("join = %d %q, want %d containing %q", code, errs, tc.code, tc.errSub)
			}
		})
	}
	t.Run("broker down", func(t *testing.T) {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		dead := "ws://" + l.Addr().String() + "/ws"
		l.Close()
		m, _ := alice.config().MeshBySlug("team")
		kp, _ := m.Keypair()
		_, token, _ := buildInvite(kp, m.MeshID, m.Slug, dead, m.RootKey, roleMember, time.Now().Add(time.Hour))
		if code, _, errs := newMachine(t).run("join", inviteURL(token)); code != exitNetwork {
			t.Fatalf("join to a dead broker = %d %s", code, errs)
		}
		if code, _, _ := newMachine(t).run("mesh", "create", "x1", "--broker", dead); code != exitNetwork {
			t.Fatalf("create on a dead broker = %d", code)
		}
	})
	t.Run("expired", func(t *testing.T) {
		m, _ := alice.config().MeshBySlug("team")
		kp, _ := m.Keypair()
		_, token, _ := buildInvite(kp, m.MeshID, m.Slug, url, m.RootKey, roleMember, time.Now().Add(-time.Minute))
		if code, _, errs := newMachine(t).run("join", inviteURL(token)); code != exitFailure || !strings.Contains(errs, "expired") {
			t.Fatalf("expired join = %d %s", code, errs)
		}
	})
	t.Run("create needs a broker", func(t *testing.T) {
		if code, _, _ := newMachine(t).run("mesh", "create", "solo"); code != exitUsage {
			t.Fatalf("create without --broker = %d", code)
		}
	})
	_ = b
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestCLIBrokerServe(t *testing.T) {
	m := newMachine(t)
	var bad bytes.Buffer
	if code := run(context.Background(), []string{"broker", "serve", "--listen", "nope"}, Env{Getenv: func(k string) string { return m.vars[k] }, Stderr: &bad}); code != exitUsage ||
		!strings.Contains(bad.String(), "host:port") {
		t.Fatalf("broker serve --listen nope = %d\n%s", code, bad.String())
	}
	url, stop := serveBrokerCLI(t, m)
	if code, _, errs := m.run("mesh", "create", "team", "--broker", url); code != 0 {
		t.Fatalf("mesh create against the served broker: %s", errs)
	}
	base, _ := brokerHTTPBase(url)
	resp, err := http.Get(base + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health = %v, %v", resp, err)
	}
	resp.Body.Close()
	if code, log := stop(); code != 0 || !strings.Contains(log, "broker_started") || !strings.Contains(log, "broker stopped") {
		t.Fatalf("broker serve exited %d: %s", code, log)
	}
}

// broker serve --store postgres://… (or $CLAUDEMESH_BROKER_STORE) serves
// from PostgreSQL: a mesh created through one broker process is there for
// the next; a --store that is not a postgres URL is refused.
func TestCLIBrokerServeOnPostgres(t *testing.T) {
	m := newMachine(t)
	if code, _, errs := m.run("broker", "serve", "--store", "mysql://db/x"); code != exitUsage || !strings.Contains(errs, "postgres://") {
		t.Fatalf("broker serve --store mysql:// = %d\n%s", code, errs)
	}
	store := testPostgresSchemaURL(t)
	url, stop := serveBrokerCLI(t, m, "--store", store)
	if code, _, errs := m.run("mesh", "create", "team", "--broker", url); code != 0 {
		t.Fatalf("mesh create against the PostgreSQL broker: %s", errs)
	}
	if code, log := stop(); code != 0 || !strings.Contains(log, "store=\"postgres ") {
		t.Fatalf("broker serve --store exited %d: %s", code, log)
	}
	m.vars[envBrokerStore] = store
	url, stop = serveBrokerCLI(t, m)
	base, _ := brokerHTTPBase(url)
	resp, err := http.Get(base + "/health")
	if err != nil {
		t.Fatal(err)
	}
	var health struct{ Meshes int }
	json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if health.Meshes != 1 {
		t.Fatalf("a broker on $%s sees %d meshes, want the one made before", envBrokerStore, health.Meshes)
	}
	stop()
}

// serveBrokerCLI runs `broker serve` on a free loopback port with extra
// flags until stop, which returns its exit code and stderr.
func serveBrokerCLI(t *testing.T, m *machine, extra ...string) (url string, stop func() (int, string)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var out, errb syncBuffer
	done := make(chan int, 1)
	args := append([]string{"broker", "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(m.home, "broker-data"), "--json"}, extra...)
	go func() {
		done <- run(ctx, args, Env{Getenv: func(k string) string { return m.vars[k] }, Stdout: &out, Stderr: &errb})
	}()
	var info struct{ URL string }
	waitFor(t, "broker listening", func() bool { return json.Unmarshal([]byte(out.String()), &info) == nil && info.URL != "" })
	return info.URL, func() (int, string) {
		cancel()
		select {
		case code := <-done:
			return code, errb.String()
		case <-time.After(testWait):
			t.Fatal("broker serve did not stop")
		}
		return 0, ""
	}
}

// A running daemon takes a mesh created or joined on this machine at once,
// and lets go of one left: nothing waits for a restart.
func TestMeshChangesReachTheRunningDaemon(t *testing.T) {
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha)
	td := startTestDaemon(t, h, nil)
	td.waitLink(t, "alpha", LinkOpen)
	brokers := func() map[string]string {
		hl, err := td.client("").Health(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return hl.Brokers
	}
	if r := runCLI(t, h.env(), "mesh", "create", "gamma", "--broker", fx.url); r.code != 0 {
		t.Fatalf("mesh create = %d\n%s", r.code, r.stderr)
	}
	waitFor(t, "the daemon linked to gamma", func() bool { return brokers()["gamma"] == string(LinkOpen) })
	r := runCLI(t, h.env(), "invite", "--mesh", "gamma", "--json")
	invite := jsonField(t, r.stdout, "url")
	h2 := newTestHome(t)
	h2.writeConfig(t)
	td2 := startTestDaemon(t, h2, nil)
	if r := runCLI(t, h2.env(), "join", invite); r.code != 0 {
		t.Fatalf("join = %d\n%s", r.code, r.stderr)
	}
	waitFor(t, "the joiner's daemon linked to gamma", func() bool {
		hl, err := td2.client("").Health(context.Background())
		return err == nil && hl.Brokers["gamma"] == string(LinkOpen)
	})
	if r := runCLI(t, h.env(), "leave", "gamma", "--yes"); r.code != 0 {
		t.Fatalf("leave = %d\n%s", r.code, r.stderr)
	}
	if _, linked := brokers()["gamma"]; linked {
		t.Fatalf("the daemon still links to a mesh this machine left: %v", brokers())
	}
}

// A second machine that has its own mesh of the invite's slug still joins:
// under a free name like it (said on stderr), or the one --slug gives; a
// --slug that is taken too is refused.
func TestJoinWithClashingSlug(t *testing.T) {
	_, url1 := startTestBroker(t)
	_, url2 := startTestBroker(t)
	alice, bob := newMachine(t), newMachine(t)
	if code, _, errs := alice.run("mesh", "create", "team", "--broker", url1, "--name", "alice"); code != 0 {
		t.Fatalf("alice's mesh create = %d %s", code, errs)
	}
	if code, _, errs := bob.run("mesh", "create", "team", "--broker", url2, "--name", "bob"); code != 0 {
		t.Fatalf("bob's mesh create = %d %s", code, errs)
	}
	invite := func() string {
		code, out, errs := alice.run("invite", "--json")
		if code != 0 {
			t.Fatalf("invite = %d %s", code, errs)
		}
		return jsonField(t, out, "url")
	}
	if code, out, errs := bob.run("join", invite(), "--name", "bob"); code != 0 || !strings.Contains(errs, `so this one is "team-2" here`) ||
		!strings.Contains(out, "joined team-2") {
		t.Fatalf("join with a clashing slug = %d\n%s%s", code, out, errs)
	}
	alicesTeam := alice.config().Meshes[0]
	if m, ok := bob.config().MeshBySlug("team-2"); !ok || m.MeshID != alicesTeam.MeshID || m.Role != roleMember {
		t.Fatalf("bob's team-2 = %+v, want alice's mesh %s as a member", m, alicesTeam.MeshID)
	}
	carol := newMachine(t)
	if code, _, errs := carol.run("mesh", "create", "work", "--broker", url2); code != 0 {
		t.Fatalf("carol's mesh create = %d %s", code, errs)
	}
	if code, _, errs := carol.run("join", invite(), "--slug", "work"); code != exitExists || !strings.Contains(errs, "--slug") {
		t.Fatalf("join --slug of a taken name = %d %s, want %d", code, errs, exitExists)
	}
	if code, out, errs := carol.run("join", invite(), "--slug", "alices"); code != 0 || !strings.Contains(out, "joined alices") {
		t.Fatalf("join --slug = %d\n%s%s", code, out, errs)
	}
}

// leave of a mesh this machine owns is refused, saying what would be lost,
// unless --yes or a yes on the terminal; a mesh joined as a member leaves
// without a question.
func TestLeaveOwnedMeshAsks(t *testing.T) {
	_, url := startTestBroker(t)
	alice := newMachine(t)
	for _, slug := range []string{"team", "other"} {
		if code, _, errs := alice.run("mesh", "create", slug, "--broker", url); code != 0 {
			t.Fatalf("mesh create %s = %d %s", slug, code, errs)
		}
	}
	if m, _ := alice.config().MeshBySlug("team"); m.Role != roleOwner {
		t.Fatalf("a created mesh has role %q, want owner", m.Role)
	}
	if code, _, errs := alice.run("leave", "team"); code != exitFailure || !strings.Contains(errs, "owner key") ||
		!strings.Contains(errs, "claudemesh leave team --yes") {
		t.Fatalf("leave of an owned mesh = %d %s", code, errs)
	}
	if _, ok := alice.config().MeshBySlug("team"); !ok {
		t.Fatal("the refused leave removed the mesh")
	}
	answer := func(reply string) int {
		var out, errb bytes.Buffer
		return run(context.Background(), []string{"leave", "team"}, Env{Getenv: func(k string) string { return alice.vars[k] },
			Stdin: strings.NewReader(reply), StdinTTY: true, Stdout: &out, Stderr: &errb})
	}
	if code := answer("n\n"); code != exitFailure {
		t.Fatalf("leave answered no = %d", code)
	}
	if code := answer("y\n"); code != 0 {
		t.Fatalf("leave answered yes = %d", code)
	}
	if code, _, errs := alice.run("leave", "other", "-y"); code != 0 {
		t.Fatalf("leave -y = %d %s", code, errs)
	}
	if n := len(alice.config().Meshes); n != 0 {
		t.Fatalf("%d meshes left after leaving both", n)
	}
}

// broker serve --log-format json writes one JSON object a line on stderr,
// for log collectors; another format is a usage error.
func TestBrokerServeLogFormat(t *testing.T) {
	m := newMachine(t)
	if code, _, errs := m.run("broker", "serve", "--log-format", "xml"); code != exitUsage || !strings.Contains(errs, "text or json") {
		t.Fatalf("--log-format xml = %d\n%s", code, errs)
	}
	_, stop := serveBrokerCLI(t, m, "--log-format", "json")
	code, log := stop()
	if code != 0 {
		t.Fatalf("broker serve exited %d: %s", code, log)
	}
	lines := strings.Split(strings.TrimSpace(log), "\n")
	msgs := map[string]bool{}
	for _, l := range lines {
		var rec struct{ Msg, Level string }
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec.Level == "" {
			t.Fatalf("log line %q is not a JSON record: %v", l, err)
		}
		msgs[rec.Msg] = true
	}
	if !msgs["broker_started"] || len(lines) < 2 {
		t.Fatalf("log = %s", log)
	}
}
