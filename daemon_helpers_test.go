// Test helpers for anything that needs a real daemon: an in-process Daemon
// on a short socket path, a machine config pointing at a real broker, and
// the built binary for tests that must run claudemesh as a user would.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// shortTempDir is a temp dir with a short path: unix socket paths must fit
// in sun_path (about 108 bytes), which t.TempDir() names can exceed.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// testHome is a fake $HOME with claudemesh's directories under it.
type testHome struct {
	Home  string
	Paths Paths
}

func newTestHome(t testing.TB) testHome {
	t.Helper()
	home := shortTempDir(t)
	base := filepath.Join(home, ".claudemesh")
	p := Paths{ConfigDir: base, DaemonDir: filepath.Join(base, "d"), SessionsDir: filepath.Join(base, "sessions"), MachineConfigDir: base}
	return testHome{Home: home, Paths: p}
}

// writeConfig writes the machine config with these meshes.
func (h testHome) writeConfig(t testing.TB, meshes ...Mesh) {
	t.Helper()
	if err := saveConfig(h.Paths.MachineConfigFile(), &Config{Version: 1, Meshes: meshes}); err != nil {
		t.Fatal(err)
	}
}

// env is the environment a claudemesh process in this home sees.
func (h testHome) env(extra ...string) map[string]string {
	m := map[string]string{
		"HOME":                  h.Home,
		"CLAUDEMESH_DAEMON_DIR": h.Paths.DaemonDir,
		"NO_COLOR":              "1",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return m
}

// fastLinkTiming keeps reconnects quick in tests.
func fastLinkTiming() LinkTiming {
	return LinkTiming{
		Backoff:        []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond},
		HelloTimeout:   5 * time.Second,
		PingInterval:   time.Second,
		SilenceTimeout: 10 * time.Second,
		DialTimeout:    5 * time.Second,
	}
}

// testDaemon is an in-process daemon.
type testDaemon struct {
	*Daemon
	home     testHome
	done     chan error
	stop     context.CancelFunc
	stopOnce sync.Once
}

// startTestDaemon runs a daemon in this home until the test ends.
func startTestDaemon(t testing.TB, h testHome, mutate func(*DaemonOptions)) *testDaemon {
	t.Helper()
	opts := DaemonOptions{
		Paths: h.Paths, NoTCP: true, Link: fastLinkTiming(), ReaperInterval: 50 * time.Millisecond,
		KeepAlive: 200 * time.Millisecond, RPCTimeout: 5 * time.Second, Ready: make(chan struct{}),
	}
	if testing.Verbose() {
		opts.Log = testLogger(t)
	}
	if mutate != nil {
		mutate(&opts)
	}
	d := NewDaemon(opts)
	ctx, cancel := context.WithCancel(context.Background())
	td := &testDaemon{Daemon: d, home: h, done: make(chan error, 1), stop: cancel}
	go func() { td.done <- d.Run(ctx) }()
	select {
	case <-opts.Ready:
	case err := <-td.done:
		cancel()
		t.Fatalf("daemon did not start: %v", err)
	case <-time.After(testWait):
		cancel()
		t.Fatal("daemon did not start in time")
	}
	t.Cleanup(func() { td.shutdown(t) })
	return td
}

// shutdown stops the daemon and waits for it; safe to call twice.
func (td *testDaemon) shutdown(t testing.TB) {
	td.stopOnce.Do(func() {
		td.stop()
		select {
		case err := <-td.done:
			if err != nil {
				t.Errorf("daemon run: %v", err)
			}
		case <-time.After(testWait):
			t.Error("daemon did not stop in time")
		}
	})
}

// client is a socket client, optionally with a session token.
func (td *testDaemon) client(sessionToken string) *DaemonClient {
	return newDaemonClient(td.home.Paths.SocketFile(), sessionToken)
}

// waitLink waits until the member link of slug is in state st.
func (td *testDaemon) waitLink(t testing.TB, slug string, st LinkState) {
	t.Helper()
	waitFor(t, "mesh "+slug+" link "+string(st), func() bool {
		l := td.MemberLink(slug)
		return l != nil && l.State() == st
	})
}

// testLogger logs the daemon's JSON lines through t.Log (with -v).
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewJSONHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// registration builds a valid session registration with presence for mesh m.
func registration(t testing.TB, m Mesh, name string, pid int) (RegisterRequest, Keypair) {
	t.Helper()
	member, err := m.Keypair()
	if err != nil {
		t.Fatal(err)
	}
	session := mustNewKeypair()
	att := signAttestation(member, session.PublicHex(), time.Now().Add(12*time.Hour).UnixMilli())
	return RegisterRequest{
		Token: randomHex(32), SessionID: newUUID(), Mesh: m.Slug, DisplayName: name, Pid: pid,
		Cwd: "/tmp/" + name, Presence: newPresenceRegistration(session, att),
	}, session
}

// The built binary, for tests that run claudemesh as a process. TestMain
// starts building it before the first test, so the build overlaps the
// in-process tests, and every process test waits for it before it starts
// any deadline of its own: a cold build cache costs time, never a timeout.
// A run of benchmarks builds it only when one first asks for it: a build
// beside a benchmark's timed loop (on a cold cache, every core for most of
// a minute) would be measured as the benchmark's own latency.

var (
	binDone  = make(chan struct{}) // closed when the build has finished
	binPath  string
	binErr   error
	binStart func() // starts the build, once
)

// TestMain builds the binary in the background during the run and removes
// it afterwards.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && !strings.HasPrefix(os.Args[1], "-") {
		// Started as if it were claudemesh (an in-process CLI that spawned
		// os.Executable as its daemon): running the suite again here would
		// spawn again, without end.
		fmt.Fprintf(os.Stderr, "the test binary is not claudemesh; refusing %q\n", os.Args[1:])
		os.Exit(2)
	}
	flag.Parse()
	ctx, cancel := context.WithCancel(context.Background())
	dir, err := os.MkdirTemp("", "cmbin")
	var started atomic.Bool
	binStart = sync.OnceFunc(func() {
		started.Store(true)
		if err != nil {
			binErr = err
			close(binDone)
			return
		}
		go buildBinary(ctx, filepath.Join(dir, "claudemesh"))
	})
	if flag.Lookup("test.bench").Value.String() == "" {
		binStart()
	}
	code := m.Run()
	stopTestPostgres()
	cancel() // a run that needed no binary does not wait for its build
	if started.Load() {
		<-binDone
	}
	if dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// buildBinary builds claudemesh at path, as it ships (static, no cgo).
func buildBinary(ctx context.Context, path string) {
	defer close(binDone)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		binErr = fmt.Errorf("%v: %s", err, out)
		return
	}
	binPath = path
}

// claudemeshBinary waits for the build and returns the binary's path. Call
// it before starting a deadline: on a cold build cache the build alone can
// take minutes.
func claudemeshBinary(t testing.TB) string {
	t.Helper()
	binStart()
	<-binDone
	if binErr != nil {
		t.Fatalf("go build: %v", binErr)
	}
	return binPath
}

// procResult is one finished claudemesh process.
type procResult struct {
	code           int
	stdout, stderr string
}

// runBinary runs claudemesh with exactly this environment (plus PATH).
func runBinary(t testing.TB, env map[string]string, args ...string) procResult {
	t.Helper()
	return runWithStdin(t, env, nil, args...)
}

// runWithStdin is runBinary with stdin (nil: none).
func runWithStdin(t testing.TB, env map[string]string, stdin []byte, args ...string) procResult {
	t.Helper()
	bin := claudemeshBinary(t) // before the deadline: the build is not the process's time
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run claudemesh %v: %v", args, err)
	}
	return procResult{code: code, stdout: out.String(), stderr: errb.String()}
}

// stopDaemonAt stops a daemon started by a binary test, by the pid in its
// pid file, when the test ends.
func stopDaemonAt(t testing.TB, p Paths) {
	t.Cleanup(func() {
		pid := readPidFile(p.PidFile())
		if pid <= 0 {
			return
		}
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(testWait)
		for daemonLockHeld(p) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if daemonLockHeld(p) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// getJSON calls a route and decodes the body whatever the status.
func getJSON(t testing.TB, cl *http.Client, url string, header map[string]string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}
