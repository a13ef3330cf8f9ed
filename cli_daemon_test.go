// Tests of the daemon verbs and the CLI's way to the daemon: policy, spawn
// environment, the connector, and verbs run in-process and as processes.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The daemon policy: flags beat env, --no-daemon beats --strict.
func TestDaemonPolicy(t *testing.T) {
	cases := []struct {
		name             string
		noDaemon, strict bool
		env              map[string]string
		want             daemonMode
	}{
		{"default", false, false, nil, modeAuto},
		{"--strict", false, true, nil, modeStrict},
		{"--no-daemon", true, false, nil, modeNoDaemon},
		{"both flags: no-daemon wins", true, true, nil, modeNoDaemon},
		{"env no-daemon", false, false, map[string]string{"CLAUDEMESH_NO_DAEMON": "1"}, modeNoDaemon},
		{"env strict", false, false, map[string]string{"CLAUDEMESH_STRICT_DAEMON": "1"}, modeStrict},
		{"both env: no-daemon wins", false, false, map[string]string{"CLAUDEMESH_NO_DAEMON": "1", "CLAUDEMESH_STRICT_DAEMON": "1"}, modeNoDaemon},
		{"--strict beats env no-daemon", false, true, map[string]string{"CLAUDEMESH_NO_DAEMON": "1"}, modeStrict},
		{"--no-daemon beats env strict", true, false, map[string]string{"CLAUDEMESH_STRICT_DAEMON": "1"}, modeNoDaemon},
		{"env other values are off", false, false, map[string]string{"CLAUDEMESH_NO_DAEMON": "true"}, modeAuto},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := daemonPolicy(tc.noDaemon, tc.strict, func(k string) string { return tc.env[k] })
			if got != tc.want {
				t.Fatalf("daemonPolicy = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDaemonSpawnEnv(t *testing.T) {
	got := daemonSpawnEnv([]string{"HOME=/h", "CLAUDEMESH_CONFIG_DIR=/tmp/launch", "CLAUDEMESH_INTERNAL_NO_AUTOSPAWN=0", "PATH=/bin"})
	want := "HOME=/h PATH=/bin CLAUDEMESH_INTERNAL_NO_AUTOSPAWN=1"
	if strings.Join(got, " ") != want {
		t.Fatalf("daemonSpawnEnv = %v, want %s", got, want)
	}
}

// A service-managed daemon is never spawned: the CLI waits, then reports
// service-not-ready with a hint.
func TestConnectorServiceManaged(t *testing.T) {
	h, dc := homeWithUnitFile(t)
	dc.goos, dc.serviceWait, dc.exe = "linux", 200*time.Millisecond, "/nonexistent/claudemesh"
	dc.lookPath = func(string) (string, error) { return "/usr/bin/systemctl", nil }
	r := dc.ensure(context.Background(), time.Second)
	if r.State != daemonServiceNotReady || !strings.Contains(r.Reason, "systemctl --user status") {
		t.Fatalf("ensure = %+v, want service-not-ready with a systemctl hint", r)
	}
	if _, err := os.Stat(h.Paths.LogFile()); err == nil {
		t.Fatal("a service-managed setup spawned a daemon")
	}
}

// A unit file whose service manager is missing runs nothing: the CLI
// spawns the daemon itself instead of waiting for a service.
func TestConnectorUnitWithoutManager(t *testing.T) {
	_, dc := homeWithUnitFile(t)
	dc.goos, dc.exe = "linux", "/nonexistent/claudemesh"
	dc.lookPath = func(string) (string, error) { return "", exec.ErrNotFound }
	if r := dc.ensure(context.Background(), 200*time.Millisecond); r.State != daemonSpawnFailed {
		t.Fatalf("ensure = %+v, want a spawn attempt (spawn-failed with a missing binary)", r)
	}
}

// homeWithUnitFile is a test home with a (minimal) systemd unit file, and
// a connector for it.
func homeWithUnitFile(t *testing.T) (testHome, *daemonConnector) {
	h := newTestHome(t)
	unit := serviceUnitFor("linux", h.Home, "")
	os.MkdirAll(filepath.Dir(unit), 0o700)
	os.WriteFile(unit, []byte("[Service]\n"), 0o644)
	return h, newDaemonConnector(h.Paths, mapEnv(h.env()))
}

// A recent spawn failure suppresses spawning for 30 s.
func TestConnectorSpawnSuppressed(t *testing.T) {
	h := newTestHome(t)
	os.MkdirAll(h.Paths.DaemonDir, 0o700)
	os.WriteFile(h.Paths.SpawnFailureFile(), []byte("1\n"), 0o600)
	dc := newDaemonConnector(h.Paths, mapEnv(h.env()))
	dc.exe = "/nonexistent/claudemesh"
	if r := dc.ensure(context.Background(), time.Second); r.State != daemonSpawnSuppressed {
		t.Fatalf("ensure = %+v, want spawn-suppressed", r)
	}
	// The config edited after the failure (the usual fix): a new try.
	h.writeConfig(t)
	later := time.Now().Add(time.Second)
	os.Chtimes(h.Paths.MachineConfigFile(), later, later)
	if r := dc.ensure(context.Background(), 200*time.Millisecond); r.State != daemonSpawnFailed {
		t.Fatalf("ensure after a config edit = %+v, want a spawn attempt", r)
	}
	os.Remove(h.Paths.MachineConfigFile())
	// A failure writes the marker.
	os.Remove(h.Paths.SpawnFailureFile())
	if r := dc.ensure(context.Background(), 200*time.Millisecond); r.State != daemonSpawnFailed {
		t.Fatalf("ensure with a missing binary = %+v, want spawn-failed", r)
	}
	if _, err := os.Stat(h.Paths.SpawnFailureFile()); err != nil {
		t.Fatalf("no .spawn-failure after a failed spawn: %v", err)
	}
}

// A daemon that holds the lock but does not answer (stopped, stuck) is
// reported as such: no second daemon is spawned to fail on its lock, and
// `daemon status` does not call it "not running".
func TestConnectorUnresponsiveDaemon(t *testing.T) {
	h := newTestHome(t)
	os.MkdirAll(h.Paths.DaemonDir, 0o700)
	// A socket nobody answers on: bound, then its listener closed.
	l, err := net.Listen("unix", h.Paths.SocketFile())
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	lock, err := os.OpenFile(h.Paths.LockFile(), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(h.Paths.PidFile(), []byte("4242\n"), 0o600)
	dc := newDaemonConnector(h.Paths, mapEnv(h.env()))
	dc.exe = "/nonexistent/claudemesh"
	r := dc.ensure(context.Background(), time.Second)
	if r.State != daemonUnresponsive || !strings.Contains(r.Reason, "pid 4242") || !strings.Contains(r.Reason, "daemon down") {
		t.Fatalf("ensure = %+v, want unresponsive naming the pid and the way out", r)
	}
	if _, err := os.Stat(h.Paths.SocketFile()); err != nil {
		t.Fatal("the live daemon's socket was removed")
	}
	res := runCLI(t, h.env(), "daemon", "status")
	if res.code != exitFailure || strings.Contains(res.stdout, "not running") || !strings.Contains(res.stderr, "does not answer") {
		t.Fatalf("daemon status = %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}

func mapEnv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// runCLI runs one in-process claudemesh invocation.
func runCLI(t *testing.T, env map[string]string, args ...string) procResult {
	t.Helper()
	var out, errb bytes.Buffer
	env["CLAUDEMESH_INTERNAL_NO_AUTOSPAWN"] = "1" // never spawn the test binary
	code := run(context.Background(), args, Env{Getenv: mapEnv(env), Stdout: &out, Stderr: &errb})
	return procResult{code: code, stdout: out.String(), stderr: errb.String()}
}

// peer list through the daemon: control-plane rows hidden with a count,
// this session first and marked, the sibling tagged with its sid, role and
// groups shown, --mesh scoping, --all, and --json projections.
func TestPeerListVerb(t *testing.T) {
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha, fx.beta)
	td := startTestDaemon(t, h, nil)
	td.waitLink(t, "alpha", LinkOpen)
	td.waitLink(t, "beta", LinkOpen)
	ctx := context.Background()
	regA, keyA := registration(t, fx.alpha, "alice", os.Getpid())
	regA.Role, regA.Groups = "lead", []string{"@frontend:lead"}
	regB, _ := registration(t, fx.alpha, "alice-2", os.Getpid())
	for _, r := range []RegisterRequest{regA, regB} {
		if err := td.client("").RegisterSession(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	connectMember(t, fx.url, fx.carol)
	waitFor(t, "both sessions open", func() bool {
		return td.sessionLinkState(td.sessions.Resolve(regA.Token)) == LinkOpen && td.sessionLinkState(td.sessions.Resolve(regB.Token)) == LinkOpen
	})

	env := h.env("CLAUDEMESH_IPC_TOKEN", regA.Token)
	r := runCLI(t, env, "peer", "list")
	if r.code != 0 {
		t.Fatalf("peer list = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(r.stdout, "\n")
	if !strings.HasPrefix(lines[0], "peers on alpha (2, 1 control-plane hidden — use --all)") {
		t.Fatalf("header = %q", lines[0])
	}
	if !strings.Contains(lines[1], "alice (this session)") || !strings.Contains(lines[1], "sid:"+regA.SessionID[:8]) {
		t.Fatalf("first row = %q, want this session marked with its sid", lines[1])
	}
	if !strings.Contains(r.stdout, "sid:"+regB.SessionID[:8]) {
		t.Fatalf("sibling not tagged with its sid:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "role: (none)  groups: (none)") {
		t.Fatalf("empty role/groups not shown as (none):\n%s", r.stdout)
	}
	if strings.Contains(r.stdout, "carol") {
		t.Fatalf("a session's peer list shows another mesh:\n%s", r.stdout)
	}

	// --all shows the control-plane row; --mesh beta really scopes.
	if r := runCLI(t, env, "peers", "--all", "--json"); r.code != 0 || strings.Count(r.stdout, `"peerRole": "control-plane"`) != 1 {
		t.Fatalf("peers --all --json = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, env, "peers", "--mesh", "beta", "--all", "--json=name,mesh")
	var rows []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil || r.code != 0 {
		t.Fatalf("peers --mesh beta --json=… = %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	if r := runCLI(t, env, "peers", "--json", "name,mesh"); r.code != exitUsage || !strings.Contains(r.stderr, "hint: for a field list write --json=name,mesh") {
		t.Fatalf("peers --json name,mesh = %d\n%s", r.code, r.stderr)
	}
	var names []string
	for _, row := range rows {
		if row["mesh"] != "beta" || len(row) != 2 {
			t.Fatalf("projected beta row = %v, want name and mesh on beta", row)
		}
		names = append(names, row["name"].(string))
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "carol,me" {
		t.Fatalf("beta peers = %v, want carol and our member", names)
	}

	// JSON keeps the marks; this session first.
	r = runCLI(t, env, "peers", "--json")
	rows = nil
	_ = json.Unmarshal([]byte(r.stdout), &rows)
	if len(rows) != 2 || rows[0]["pubkey"] != keyA.PublicHex() || rows[0]["isThisSession"] != true || rows[1]["isSelf"] != true {
		t.Fatalf("peers --json = %v", rows)
	}

	// No session: every mesh, grouped.
	r = runCLI(t, h.env(), "peers", "--json")
	var grouped []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &grouped); err != nil || len(grouped) != 2 {
		t.Fatalf("peers --json without a session = %v\n%s", err, r.stdout)
	}
}

// whoami shows the session (no secrets) and the local identities.
func TestWhoamiVerb(t *testing.T) {
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha)
	td := startTestDaemon(t, h, nil)
	reg, key := registration(t, fx.alpha, "alice", os.Getpid())
	if err := td.client("").RegisterSession(context.Background(), reg); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, h.env("CLAUDEMESH_IPC_TOKEN", reg.Token), "whoami", "--json")
	if r.code != 0 {
		t.Fatalf("whoami = %d %s", r.code, r.stderr)
	}
	for _, secret := range []string{key.SecretHex()[:64], fx.alpha.SecretKey[:64], reg.Token} {
		if strings.Contains(r.stdout, secret) {
			t.Fatalf("whoami --json prints a secret:\n%s", r.stdout)
		}
	}
	var out whoamiDoc
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.Session == nil || out.Session.SessionID != reg.SessionID ||
		out.Session.SessionPubkey != key.PublicHex() || len(out.Local.Meshes) != 1 || strings.Contains(r.stdout, "sessionId") {
		t.Fatalf("whoami session = %+v, %v", out.Session, err)
	}
	if r := runCLI(t, newTestHome(t).env(), "whoami"); r.code != exitAuth {
		t.Fatalf("whoami with nothing = %d, want %d", r.code, exitAuth)
	}
}

// The shared-state verbs work warm (daemon) and cold (--no-daemon) alike.
func TestStateMemorySkillVerbs(t *testing.T) {
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha)
	td := startTestDaemon(t, h, nil)
	td.waitLink(t, "alpha", LinkOpen)
	for _, mode := range [][]string{nil, {"--no-daemon"}} {
		name := "warm"
		if mode != nil {
			name = "cold"
		}
		t.Run(name, func(t *testing.T) {
			env := h.env()
			do := func(args ...string) procResult {
				r := runCLI(t, env, append(args, mode...)...)
				if r.code != 0 {
					t.Fatalf("%v = %d\n%s%s", args, r.code, r.stdout, r.stderr)
				}
				return r
			}
			key := "k-" + name
			do("state", "set", key, `{"n":1}`)
			if r := do("state", "get", key, "--json"); !strings.Contains(r.stdout, `"n": 1`) {
				t.Fatalf("state get = %s", r.stdout)
			}
			if r := do("state", "list"); !strings.Contains(r.stdout, key) {
				t.Fatalf("state list = %s", r.stdout)
			}
			if r := runCLI(t, env, append([]string{"state", "get", "nothing"}, mode...)...); r.code != exitNotFound {
				t.Fatalf("state get of an unset key = %d, want %d", r.code, exitNotFound)
			}
			r := do("remember", "deploys", "go", "through", "ci", "--tags", "ops", "--json")
			var mem struct{ ID string }
			json.Unmarshal([]byte(r.stdout), &mem)
			if r := do("recall", "deploys", "--json"); !strings.Contains(r.stdout, mem.ID) {
				t.Fatalf("recall = %s, want %s", r.stdout, mem.ID)
			}
			do("forget", mem.ID)
			if r := runCLI(t, env, append([]string{"forget", mem.ID}, mode...)...); r.code != exitNotFound || !strings.Contains(r.stderr, "hint: memory ids are in 'claudemesh recall") ||
				strings.Contains(r.stderr, "broker: ") {
				t.Fatalf("forget twice = %d\n%s", r.code, r.stderr)
			}
			for _, verb := range []string{"get", "remove"} {
				if r := runCLI(t, env, append([]string{"skill", verb, "no-such-skill"}, mode...)...); r.code != exitNotFound || !strings.Contains(r.stderr, "hint: see 'claudemesh skill list'") {
					t.Fatalf("skill %s of an unknown skill = %d\n%s", verb, r.code, r.stderr)
				}
			}
			skill := "sk-" + name
			file := filepath.Join(t.TempDir(), "skill.md")
			os.WriteFile(file, []byte("do the thing"), 0o600)
			do("skill", "share", skill, "--file", file, "--description", "a skill")
			if r := do("skill", "get", skill); !strings.Contains(r.stdout, "do the thing") {
				t.Fatalf("skill get = %s", r.stdout)
			}
			if r := do("skill", "list", "--json"); !strings.Contains(r.stdout, skill) {
				t.Fatalf("skill list = %s", r.stdout)
			}
			// Without a description a skill is its name, with no dangling dash.
			bare := skill + "-bare"
			do("skill", "share", bare, "--file", file)
			if r := do("skill", "list"); !strings.Contains(r.stdout, "  "+skill+" — a skill (by ") || !strings.Contains(r.stdout, "  "+bare+" (by ") {
				t.Fatalf("skill list = %s", r.stdout)
			}
			if r := do("skill", "get", bare); !strings.HasPrefix(r.stdout, bare+"\n") {
				t.Fatalf("skill get without a description = %q", r.stdout)
			}
			do("skill", "remove", bare)
			do("skill", "remove", skill)
		})
	}
	if r := runCLI(t, h.env(), "profile", "--summary", "busy", "--no-daemon"); r.code == 0 {
		t.Fatalf("profile change without the daemon succeeded: %s", r.stdout)
	}
	if r := runCLI(t, h.env(), "profile", "--summary", "busy", "--status", "working"); r.code != 0 {
		t.Fatalf("profile = %d %s", r.code, r.stderr)
	}
}

// skill share reading a terminal says so (and how to end) instead of
// waiting silently; from a pipe it says nothing.
func TestSkillShareFromTerminal(t *testing.T) {
	for _, tty := range []bool{true, false} {
		var errb bytes.Buffer
		code := run(context.Background(), []string{"skill", "share", "x"}, Env{Stdin: strings.NewReader(""), StdinTTY: tty, Stderr: &errb})
		if code != exitUsage || strings.Contains(errb.String(), "Ctrl-D") != tty {
			t.Errorf("stdin tty %v: exit %d\n%s", tty, code, errb.String())
		}
	}
}

// --no-daemon never touches the socket: a listener at daemon.sock counts
// connections while the verb works through its cold path.
func TestNoDaemonNeverTouchesSocket(t *testing.T) {
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha)
	os.MkdirAll(h.Paths.DaemonDir, 0o700)
	l, err := net.Listen("unix", h.Paths.SocketFile())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	for _, env := range []map[string]string{h.env(), h.env("CLAUDEMESH_NO_DAEMON", "1")} {
		args := []string{"peers", "--json", "--all"}
		if env["CLAUDEMESH_NO_DAEMON"] == "" {
			args = append(args, "--no-daemon")
		}
		r := runCLI(t, env, args...)
		if r.code != 0 || !strings.Contains(r.stdout, fx.alpha.Pubkey) {
			t.Fatalf("peers --no-daemon = %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("--no-daemon connected to the socket %d times", n)
	}
}

// closingListener is a loopback TCP address where nothing answers: every
// connection is closed at once, and counted.
func closingListener(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var accepted atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	return l.Addr().String(), &accepted
}

// --strict with no daemon fails and never takes the cold path: the mesh's
// broker address is a listener that counts connections.
func TestStrictWithoutDaemonFails(t *testing.T) {
	h := newTestHome(t)
	addr, dialed := closingListener(t)
	kp := mustNewKeypair()
	h.writeConfig(t, Mesh{MeshID: "m", MemberID: "u", Slug: "s", Pubkey: kp.PublicHex(), SecretKey: kp.SecretHex(), BrokerURL: "ws://" + addr + "/ws"})
	for _, env := range []map[string]string{h.env(), h.env("CLAUDEMESH_STRICT_DAEMON", "1")} {
		args := []string{"peers"}
		if env["CLAUDEMESH_STRICT_DAEMON"] == "" {
			args = append(args, "--strict")
		}
		r := runCLI(t, env, args...)
		if r.code != exitFailure || !strings.Contains(r.stderr, "--strict refuses") {
			t.Fatalf("peers --strict without a daemon = %d\n%s", r.code, r.stderr)
		}
	}
	if n := dialed.Load(); n != 0 {
		t.Fatalf("--strict dialed the broker %d times", n)
	}
}

// Without a daemon: a verb with a direct path says once that it takes it,
// a verb only the daemon serves says why it cannot (and nothing about a
// direct path), and an embedded broker that is down with its daemon is
// named as such.
func TestWithoutDaemonSaysWhy(t *testing.T) {
	h := newTestHome(t)
	listen, _ := closingListener(t)
	kp := mustNewKeypair()
	u, _ := embeddedBrokerURLs(listen)
	if err := saveConfig(h.Paths.MachineConfigFile(), &Config{Version: 1, Broker: &BrokerConf{Listen: listen, Data: h.Home},
		Meshes: []Mesh{{MeshID: "m", MemberID: "u", Slug: "local", Pubkey: kp.PublicHex(), SecretKey: kp.SecretHex(), BrokerURL: u}}}); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, h.env(), "send", "bob", "hi")
	if r.code != exitNetwork || strings.Count(r.stderr, "using the direct broker connection") != 1 ||
		!strings.Contains(r.stderr, "hint: mesh local's broker runs inside the daemon: start it with 'claudemesh daemon up'") {
		t.Fatalf("send without a daemon = %d\n%s", r.code, r.stderr)
	}
	for _, argv := range [][]string{{"inbox"}, {"whoami"}} {
		r = runCLI(t, h.env(), argv...)
		if strings.Contains(r.stderr, "direct broker connection") {
			t.Errorf("%q mentions a direct path it does not take:\n%s", argv, r.stderr)
		}
	}
	r = runCLI(t, h.env(), "inbox")
	if r.code != exitFailure || !strings.Contains(r.stderr, "the inbox lives in the daemon, and it is not running") {
		t.Fatalf("inbox without a daemon = %d\n%s", r.code, r.stderr)
	}
	if r := runCLI(t, h.env(), "inbox", "--no-daemon"); !strings.Contains(r.stderr, "--no-daemon") {
		t.Fatalf("inbox --no-daemon = %d\n%s", r.code, r.stderr)
	}
}

func TestDialProblem(t *testing.T) {
	op := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	err := fmt.Errorf("failed to WebSocket dial: failed to send handshake request: Get \"http://x/ws\": %w", op)
	if got := dialProblem(err); got != "dial tcp: connect: connection refused" {
		t.Errorf("dialProblem = %q", got)
	}
	if got := dialProblem(errors.New("bad handshake")); got != "bad handshake" {
		t.Errorf("dialProblem = %q", got)
	}
}

// A new user's first verbs on a machine with no mesh: each says how to
// set up, and none starts a daemon for nothing.
func TestVerbsBeforeAnyMesh(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	h := newTestHome(t)
	stopDaemonAt(t, h.Paths)
	for _, argv := range [][]string{{"peers"}, {"send", "bob", "hi"}, {"state", "list"}, {"remember", "x"}, {"skill", "list"}} {
		r := runBinary(t, h.env(), argv...)
		if r.code != exitNotFound || !strings.Contains(r.stderr, "no mesh joined yet") || !strings.Contains(r.stderr, "hint: set this machine up with 'claudemesh init'") {
			t.Errorf("%q = %d\n%s%s", argv, r.code, r.stdout, r.stderr)
		}
	}
	if _, err := os.Stat(h.Paths.LogFile()); !os.IsNotExist(err) {
		t.Fatalf("a daemon was started on a machine with no mesh (log: %v)", err)
	}
}

// As a user would: a stale socket left by a dead daemon, then `peer list`
// spawns a daemon (logging to daemon.log) and answers through it.
func TestAutospawnFromDeadSocket(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha)
	stopDaemonAt(t, h.Paths)
	os.MkdirAll(h.Paths.DaemonDir, 0o700)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: h.Paths.SocketFile(), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close() // the socket file stays, nobody answers: a dead daemon's
	os.WriteFile(h.Paths.PidFile(), []byte("999999\n"), 0o600)

	launchDir := shortTempDir(t) // a launched session's config dir: the daemon must ignore it
	r := runBinary(t, h.env("CLAUDEMESH_CONFIG_DIR", launchDir), "peers", "--all", "--json")
	if r.code != 0 {
		t.Fatalf("peers = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "daemon started automatically") {
		t.Fatalf("no autospawn info line: %s", r.stderr)
	}
	log, _ := os.ReadFile(h.Paths.LogFile())
	if !bytes.Contains(log, []byte(`"msg":"daemon_started"`)) || !bytes.Contains(log, []byte(`"version":"`+version+`"`)) {
		t.Fatalf("daemon.log has no daemon_started with the version:\n%s", log)
	}
	if !bytes.Contains(log, []byte(`"stale_socket_removed"`)) && !bytes.Contains(log, []byte(`"daemon_started"`)) {
		t.Fatalf("daemon.log: %s", log)
	}
	// The spawned daemon reads the machine config, not the launch dir.
	cl := newDaemonClient(h.Paths.SocketFile(), "")
	hl, err := cl.Health(context.Background())
	if err != nil || hl.Brokers["alpha"] == "" {
		t.Fatalf("spawned daemon health = %+v, %v", hl, err)
	}
}

// Two CLIs at once spawn one daemon.
func TestConcurrentCLIsSpawnOneDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha)
	stopDaemonAt(t, h.Paths)
	claudemeshBinary(t)
	var wg sync.WaitGroup
	results := make([]procResult, 3)
	for i := range results {
		wg.Add(1)
		go func() { defer wg.Done(); results[i] = runBinary(t, h.env(), "peers", "--all", "--json") }()
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Fatalf("cli %d = %d\n%s%s", i, r.code, r.stdout, r.stderr)
		}
	}
	log, _ := os.ReadFile(h.Paths.LogFile())
	if n := bytes.Count(log, []byte(`"msg":"daemon_started"`)); n != 1 {
		t.Fatalf("%d daemons started, want 1:\n%s", n, log)
	}
}

// daemon up (detached) / status / version / down, as a user runs them;
// the daemon reads ~/.claudemesh/config.json even with
// CLAUDEMESH_CONFIG_DIR set, and --mesh is accepted with a warning.
func TestDaemonVerbsAsProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha)
	other := shortTempDir(t)
	kp := mustNewKeypair()
	saveConfig(filepath.Join(other, "config.json"), &Config{Version: 1, Meshes: []Mesh{{MeshID: "x", MemberID: "y", Slug: "temp-only",
		Pubkey: kp.PublicHex(), SecretKey: kp.SecretHex(), BrokerURL: fx.url}}})
	env := h.env("CLAUDEMESH_CONFIG_DIR", other)
	stopDaemonAt(t, h.Paths)

	if r := runBinary(t, env, "daemon", "status"); r.code != exitFailure || !strings.Contains(r.stdout, "not running") {
		t.Fatalf("status before up = %d %s", r.code, r.stdout)
	}
	r := runBinary(t, env, "daemon", "up", "--mesh", "alpha", "--tcp-port", "0")
	if r.code != 0 || !strings.Contains(r.stdout, "daemon started (pid") || !strings.Contains(r.stderr, "--mesh is ignored") {
		t.Fatalf("daemon up = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runBinary(t, env, "daemon", "up"); r.code != 0 || !strings.Contains(r.stdout, "already running") {
		t.Fatalf("second daemon up = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runBinary(t, env, "daemon", "status", "--json")
	var st struct {
		Running bool        `json:"running"`
		Health  HealthReply `json:"health"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || !st.Running {
		t.Fatalf("daemon status --json = %s %v", r.stdout, err)
	}
	if _, ok := st.Health.Brokers["alpha"]; !ok || len(st.Health.Brokers) != 1 {
		t.Fatalf("daemon attached to %v, want only alpha from the machine config", st.Health.Brokers)
	}
	if r := runBinary(t, env, "daemon", "version"); r.code != 0 || !strings.Contains(r.stdout, "daemon "+version+" (ipc v1") {
		t.Fatalf("daemon version = %d %s%s", r.code, r.stdout, r.stderr)
	}
	var info map[string]any
	data, _ := os.ReadFile(h.Paths.DaemonInfoFile())
	if json.Unmarshal(data, &info) != nil || info["version"] != version || info["pid"] == nil || info["started_at"] == nil {
		t.Fatalf("daemon.json = %s", data)
	}
	if r := runBinary(t, env, "status"); r.code != 0 || !strings.Contains(r.stdout, "mesh alpha: open") {
		t.Fatalf("status = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	reg, _ := registration(t, fx.alpha, "alice", os.Getpid())
	if err := newDaemonClient(h.Paths.SocketFile(), "").RegisterSession(context.Background(), reg); err != nil {
		t.Fatal(err)
	}
	if r := runBinary(t, env, "daemon", "down"); r.code != 0 || !strings.Contains(r.stdout, "stopped") ||
		!strings.Contains(r.stdout, "1 launched session stays registered but gets no messages until the daemon is back") {
		t.Fatalf("daemon down = %d %s%s", r.code, r.stdout, r.stderr)
	}
	for _, f := range []string{h.Paths.SocketFile(), h.Paths.PidFile(), h.Paths.DaemonInfoFile()} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s left behind after daemon down", f)
		}
	}
	if r := runBinary(t, env, "daemon", "down"); r.code != 0 || !strings.Contains(r.stdout, "not running") {
		t.Fatalf("daemon down again = %d %s", r.code, r.stdout)
	}
}

// A daemon that cannot boot: `daemon up` says so, names the log, exits 1.
func TestDaemonUpBootFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	h := newTestHome(t)
	os.MkdirAll(h.Paths.MachineConfigDir, 0o700)
	os.WriteFile(h.Paths.MachineConfigFile(), []byte("{not json"), 0o600)
	stopDaemonAt(t, h.Paths)
	// A broken config is the config's error, before any daemon is started.
	r := runBinary(t, h.env(), "daemon", "up")
	if r.code != exitIO || !strings.Contains(r.stderr, "not valid JSON") || !strings.Contains(r.stderr, "nothing was changed") {
		t.Fatalf("daemon up with a broken config = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(h.Paths.LogFile()); !os.IsNotExist(err) {
		t.Fatalf("a daemon was started for a broken config (log: %v)", err)
	}
	// A daemon that dies at start (its inbox cannot be opened): said as
	// such, with what it logged this time.
	h.writeConfig(t)
	os.MkdirAll(h.Paths.DaemonDir, 0o700)
	os.WriteFile(h.Paths.LogFile(), []byte("an older run's line\n"), 0o600)
	os.MkdirAll(filepath.Join(h.Paths.DaemonDir, "inbox.db"), 0o700)
	r = runBinary(t, h.env(), "daemon", "up")
	if r.code != exitFailure || !strings.Contains(r.stderr, "exited during start-up") || !strings.Contains(r.stderr, h.Paths.LogFile()) ||
		!strings.Contains(r.stderr, "inbox") || strings.Contains(r.stderr, "an older run's line") {
		t.Fatalf("daemon up that dies at start = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// A daemon dir that cannot be one is an I/O error that names it.
func TestDaemonUpBadDaemonDir(t *testing.T) {
	h := newTestHome(t)
	file := filepath.Join(h.Home, "not-a-dir")
	os.WriteFile(file, nil, 0o600)
	r := runCLI(t, h.env("CLAUDEMESH_DAEMON_DIR", file), "daemon", "up")
	if r.code != exitIO || !strings.Contains(r.stderr, "hint: the daemon dir "+file+" must be a directory") {
		t.Fatalf("daemon up with a file for its dir = %d\n%s", r.code, r.stderr)
	}
}

// A daemon with no mesh serves IPC and picks up a mesh joined later on
// POST /v1/reload.
func TestDaemonZeroMeshesThenReload(t *testing.T) {
	fx := newMeshFixture(t)
	h := newTestHome(t)
	// A daemon dir left open to others is made private again.
	if err := os.MkdirAll(h.Paths.DaemonDir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(h.Paths.DaemonDir, 0o755)
	td := startTestDaemon(t, h, nil)
	if st, err := os.Stat(h.Paths.DaemonDir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("daemon dir mode = %v, %v; want 0700", st.Mode().Perm(), err)
	}
	ctx := context.Background()
	hl, err := td.client("").Health(ctx)
	if err != nil || len(hl.Brokers) != 0 {
		t.Fatalf("health with no mesh = %+v %v", hl, err)
	}
	h.writeConfig(t, fx.alpha)
	var out struct {
		Added []string `json:"added"`
	}
	if err := td.client("").Do(ctx, "POST", "/v1/reload", nil, &out); err != nil || len(out.Added) != 1 || out.Added[0] != "alpha" {
		t.Fatalf("reload = %+v %v", out, err)
	}
	td.waitLink(t, "alpha", LinkOpen)
}

// BenchmarkPeerListProcess is a warm `claudemesh peer list --json` as a
// whole process against a running daemon and broker.
func BenchmarkPeerListProcess(b *testing.B) {
	fx := newMeshFixture(b)
	h := newTestHome(b)
	h.writeConfig(b, fx.alpha)
	td := startTestDaemon(b, h, nil)
	td.waitLink(b, "alpha", LinkOpen)
	env := h.env()
	claudemeshBinary(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r := runBinary(b, env, "peer", "list", "--json"); r.code != 0 {
			b.Fatalf("peer list = %d %s", r.code, r.stderr)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/process")
}

// SIGHUP makes a running daemon re-read the machine config.
func TestDaemonReloadsOnSIGHUP(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha)
	stopDaemonAt(t, h.Paths)
	if r := runBinary(t, h.env(), "daemon", "up", "--no-tcp"); r.code != 0 {
		t.Fatalf("daemon up = %d %s", r.code, r.stderr)
	}
	h.writeConfig(t, fx.alpha, fx.beta)
	if err := syscall.Kill(readPidFile(h.Paths.PidFile()), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	cl := newDaemonClient(h.Paths.SocketFile(), "")
	waitFor(t, "beta attached after SIGHUP", func() bool {
		hl, err := cl.Health(context.Background())
		return err == nil && hl.Brokers["beta"] == string(LinkOpen)
	})
}

// A daemon started (even in the foreground, by hand) with
// CLAUDEMESH_CONFIG_DIR pointing at a launched session's temp config still
// serves the machine config.
func TestForegroundDaemonIgnoresConfigDir(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha)
	launchDir := shortTempDir(t)
	if err := saveConfig(filepath.Join(launchDir, "config.json"), &Config{Version: 1, Meshes: []Mesh{fx.beta}}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(claudemeshBinary(t), "daemon", "up", "--foreground", "--no-tcp")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range h.env("CLAUDEMESH_CONFIG_DIR", launchDir) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	cl := newDaemonClient(h.Paths.SocketFile(), "")
	waitFor(t, "the daemon answering", func() bool { _, err := cl.Version(context.Background()); return err == nil })
	hl, err := cl.Health(context.Background())
	if err != nil || len(hl.Brokers) != 1 || hl.Brokers["alpha"] == "" {
		t.Fatalf("daemon attached to %v (%v), want alpha from ~/.claudemesh only", hl.Brokers, err)
	}
}

// The config cache answers a second read without decoding again, and sees
// every write: an atomic rewrite, an edit in place, a removal.
func TestConfigCacheSeesEveryWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	var cc configCache
	if err := saveConfig(path, &Config{Version: 1, DisplayName: "one"}); err != nil {
		t.Fatal(err)
	}
	first, err := cc.load(path)
	if err != nil || first.DisplayName != "one" {
		t.Fatalf("load = %+v, %v", first, err)
	}
	if again, _ := cc.load(path); again != first {
		t.Fatal("an unchanged file was decoded again")
	}
	if err := saveConfig(path, &Config{Version: 1, DisplayName: "two"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := cc.load(path); got.DisplayName != "two" {
		t.Fatalf("after a rewrite: %q, want two", got.DisplayName)
	}
	if err := os.WriteFile(path, []byte(`{"version":1,"displayName":"three, longer"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := cc.load(path); got.DisplayName != "three, longer" {
		t.Fatalf("after an edit in place: %q", got.DisplayName)
	}
	os.Remove(path)
	if got, err := cc.load(path); err != nil || got.DisplayName != "" {
		t.Fatalf("after removal: %+v, %v", got, err)
	}
}
