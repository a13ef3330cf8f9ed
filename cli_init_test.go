// Tests of `claudemesh init`: idempotent, resumable, kind to joined meshes
// and to a running daemon.
package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"
)

// initJSON runs `claudemesh init --json` as the built binary in home h.
func initJSON(t *testing.T, h testHome, args ...string) (initReport, procResult) {
	t.Helper()
	res := runBinary(t, h.env(), append([]string{"init", "--json"}, args...)...)
	var rep initReport
	if res.code == 0 {
		if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
			t.Fatalf("init --json: %v\n%s", err, res.stdout)
		}
	}
	return rep, res
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// init on a fresh machine: the broker block, a running daemon that serves
// it, mesh local with an open link. The second run changes nothing.
func TestInitTwiceChangesNothing(t *testing.T) {
	h := newTestHome(t)
	stopDaemonAt(t, h.Paths)
	rep, res := initJSON(t, h, "--name", "alice", "--listen", "127.0.0.1:0")
	if res.code != 0 {
		t.Fatalf("init exited %d: %s%s", res.code, res.stdout, res.stderr)
	}
	if !rep.Changed || len(rep.Actions) != 3 || !strings.Contains(strings.Join(rep.Actions, "\n"), "mesh local created") {
		t.Fatalf("first init did %v", rep.Actions)
	}
	if rep.Broker == nil || rep.Broker.State != embeddedServing || len(rep.Meshes) != 1 || rep.Meshes[0].Slug != "local" ||
		rep.Meshes[0].Link != string(LinkOpen) || rep.Meshes[0].BrokerURL != rep.Broker.URL || !rep.Daemon.Running {
		t.Fatalf("first init = %+v", rep)
	}
	cfg, err := loadConfig(h.Paths.MachineConfigFile())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Broker == nil || strings.HasSuffix(cfg.Broker.Listen, ":0") || len(cfg.Meshes) != 1 {
		t.Fatalf("config after init: broker %+v, meshes %v (port 0 must be pinned)", cfg.Broker, cfg.Slugs())
	}
	before := readFile(t, h.Paths.MachineConfigFile())

	rep2, res := initJSON(t, h, "--name", "alice")
	if res.code != 0 {
		t.Fatalf("second init exited %d: %s%s", res.code, res.stdout, res.stderr)
	}
	if rep2.Changed || len(rep2.Actions) != 0 || len(rep2.Meshes) != 1 || rep2.Daemon.Pid != rep.Daemon.Pid {
		t.Fatalf("second init = %+v, want no change", rep2)
	}
	if after := readFile(t, h.Paths.MachineConfigFile()); !bytes.Equal(before, after) {
		t.Fatalf("second init rewrote the config:\n%s\n→\n%s", before, after)
	}
	res = runBinary(t, h.env(), "init")
	if res.code != 0 || !strings.Contains(res.stdout, "nothing changed") || !strings.Contains(res.stdout, "claudemesh launch --name alice") {
		t.Fatalf("human second run: %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	// A name given to a set-up machine changes nothing, and init says so.
	if _, res := initJSON(t, h, "--name", "zed"); res.code != 0 || !strings.Contains(res.stderr, "--name is ignored") ||
		!strings.Contains(res.stderr, "launch --name zed") {
		t.Fatalf("init --name on a set-up machine: %d\n%s", res.code, res.stderr)
	}
	res = runBinary(t, h.env(), "status")
	if res.code != 0 || !strings.Contains(res.stdout, "embedded broker: "+rep.Broker.URL) || !strings.Contains(res.stdout, "mesh local: open") {
		t.Fatalf("status after init: %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}

// A machine that has joined a mesh gets no 'local'; its config is left as
// it was.
func TestInitKeepsJoinedMeshes(t *testing.T) {
	b, url := startTestBroker(t)
	m := newTestMesh(t, b, url, "team", "me")
	h := newTestHome(t)
	h.writeConfig(t, m)
	stopDaemonAt(t, h.Paths)
	before := readFile(t, h.Paths.MachineConfigFile())
	rep, res := initJSON(t, h)
	if res.code != 0 {
		t.Fatalf("init exited %d: %s%s", res.code, res.stdout, res.stderr)
	}
	if len(rep.Meshes) != 1 || rep.Meshes[0].Slug != "team" || rep.Broker != nil {
		t.Fatalf("init = %+v, want only team and no broker", rep)
	}
	if after := readFile(t, h.Paths.MachineConfigFile()); !bytes.Equal(before, after) {
		t.Fatalf("init changed a joined machine's config:\n%s", after)
	}
	res = runBinary(t, h.env(), "init")
	if res.code != 0 || !strings.Contains(res.stdout, "created no 'local' mesh") {
		t.Fatalf("human run: %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}

// A daemon that is already running is reloaded, not replaced: it starts
// serving the broker block and links to local.
func TestInitReloadsRunningDaemon(t *testing.T) {
	h := newTestHome(t)
	td := startTestDaemon(t, h, nil)
	rep, res := initJSON(t, h, "--listen", "127.0.0.1:0")
	if res.code != 0 {
		t.Fatalf("init exited %d: %s%s", res.code, res.stdout, res.stderr)
	}
	if rep.Daemon.Pid != os.Getpid() || !strings.Contains(strings.Join(rep.Actions, "\n"), "daemon reloaded") {
		t.Fatalf("init = %+v, want this process's daemon reloaded", rep)
	}
	td.waitLink(t, "local", LinkOpen)
	if eb := embeddedHealthOf(t, td); eb == nil || eb.State != embeddedServing {
		t.Fatalf("embedded broker = %+v", eb)
	}
}

// A taken port stops init with the reason; once the port is free the next
// run finishes the job.
func TestInitResumesAfterTakenPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	h := newTestHome(t)
	stopDaemonAt(t, h.Paths)
	res := runBinary(t, h.env(), "init", "--listen", taken.Addr().String())
	if res.code != exitFailure || !strings.Contains(res.stderr, "in use") || !strings.Contains(res.stderr, "hint:") ||
		!strings.Contains(res.stderr, "claudemesh init --listen") {
		t.Fatalf("init on a taken port: %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	taken.Close()
	rep, res := initJSON(t, h)
	if res.code != 0 || len(rep.Meshes) != 1 || rep.Meshes[0].Link != string(LinkOpen) {
		t.Fatalf("init after the port came free: %d %+v\n%s", res.code, rep, res.stderr)
	}
	if rep.Broker.Listen != taken.Addr().String() {
		t.Fatalf("broker moved to %s", rep.Broker.Listen)
	}
}

func TestEmbeddedBrokerURLs(t *testing.T) {
	cases := []struct{ listen, url, post string }{
		{"127.0.0.1:7900", "ws://127.0.0.1:7900/ws", ""},
		{"0.0.0.0:7900", "ws://127.0.0.1:7900/ws", "ws://127.0.0.1:7900/ws"},
		{"[::]:7901", "ws://127.0.0.1:7901/ws", "ws://127.0.0.1:7901/ws"},
		{":7902", "ws://127.0.0.1:7902/ws", "ws://127.0.0.1:7902/ws"},
		{"10.0.0.5:7900", "ws://10.0.0.5:7900/ws", ""},
	}
	for _, tc := range cases {
		t.Run(tc.listen, func(t *testing.T) {
			url, post := embeddedBrokerURLs(tc.listen)
			if url != tc.url || post != tc.post {
				t.Fatalf("embeddedBrokerURLs(%q) = %q, %q, want %q, %q", tc.listen, url, post, tc.url, tc.post)
			}
		})
	}
}

// Before any mesh is joined the broker may move: leave local, init with a
// new --listen, and local is made again on the new address.
func TestInitMovesBrokerBeforeAnyMesh(t *testing.T) {
	h := newTestHome(t)
	stopDaemonAt(t, h.Paths)
	first, res := initJSON(t, h, "--listen", "127.0.0.1:0")
	if res.code != 0 {
		t.Fatalf("init: %d %s", res.code, res.stderr)
	}
	if res := runBinary(t, h.env(), "leave", "local", "--yes"); res.code != 0 {
		t.Fatalf("leave: %d %s", res.code, res.stderr)
	}
	moved, res := initJSON(t, h, "--listen", "127.0.0.1:0")
	if res.code != 0 {
		t.Fatalf("init again: %d %s%s", res.code, res.stdout, res.stderr)
	}
	if moved.Broker.Listen == first.Broker.Listen || len(moved.Meshes) != 1 || moved.Meshes[0].BrokerURL != moved.Broker.URL ||
		moved.Meshes[0].Link != string(LinkOpen) {
		t.Fatalf("after the move: %+v (was %s)", moved, first.Broker.Listen)
	}
}
