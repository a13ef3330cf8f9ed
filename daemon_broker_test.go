// Tests of the daemon's embedded broker: serving sessions, a taken address,
// a block removed on reload.
package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeMachineConfig writes the machine config of h as given.
func (h testHome) writeMachineConfig(t testing.TB, cfg *Config) {
	t.Helper()
	if err := saveConfig(h.Paths.MachineConfigFile(), cfg); err != nil {
		t.Fatal(err)
	}
}

// embeddedHealthOf reads the daemon's view of its embedded broker over IPC.
func embeddedHealthOf(t testing.TB, td *testDaemon) *EmbeddedBrokerHealth {
	t.Helper()
	h, err := td.client("").Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h.EmbeddedBroker
}

// httpGet returns the status and body of a GET.
func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// A daemon whose config has a broker block serves that broker: /health and
// /metrics answer on its address, the daemon's member link connects to it
// like any other, and two sessions on it exchange DMs and broadcasts.
func TestEmbeddedBrokerServesSessions(t *testing.T) {
	h := newTestHome(t)
	h.writeMachineConfig(t, &Config{Version: 1, Broker: &BrokerConf{Listen: "127.0.0.1:0", Data: "broker"}})
	td := startTestDaemon(t, h, nil)

	eb := embeddedHealthOf(t, td)
	if eb == nil || eb.State != embeddedServing || !strings.HasPrefix(eb.URL, "ws://127.0.0.1:") {
		t.Fatalf("embedded broker = %+v, want serving on loopback", eb)
	}
	if want := filepath.Join(h.Paths.MachineConfigDir, "broker"); eb.Data != want {
		t.Fatalf("data dir = %s, want %s (relative to the config dir)", eb.Data, want)
	}
	base, err := brokerHTTPBase(eb.URL)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := httpGet(t, base+"/health"); code != 200 || !strings.Contains(body, `"ok":true`) {
		t.Fatalf("/health = %d %s", code, body)
	}
	if code, body := httpGet(t, base+"/metrics"); code != 200 || !strings.Contains(body, "claudemesh_") {
		t.Fatalf("/metrics = %d %.200s", code, body)
	}

	// A mesh on it, joined by this machine; the reload keeps the broker.
	td.brokerMu.Lock()
	b := td.embedded.sb.Broker
	td.brokerMu.Unlock()
	m := newTestMesh(t, b, eb.URL, "local", "me")
	h.writeMachineConfig(t, &Config{Version: 1, Meshes: []Mesh{m}, Broker: &BrokerConf{Listen: "127.0.0.1:0", Data: "broker"}})
	if err := td.client("").Do(context.Background(), "POST", "/v1/reload", nil, nil); err != nil {
		t.Fatal(err)
	}
	td.waitLink(t, "local", LinkOpen)
	if again := embeddedHealthOf(t, td); again.URL != eb.URL {
		t.Fatalf("reload with the same block moved the broker: %s → %s", eb.URL, again.URL)
	}

	a := registerTestSession(t, td, m, "alice")
	bo := registerTestSession(t, td, m, "bob")
	streamA, streamB := subscribe(t, td, a.reg.Token), subscribe(t, td, bo.reg.Token)
	sendAndSettle(t, a.cl, "bob", "hello bob")
	if ev := eventData(streamB.next(t, "alice's DM", messageWith("hello bob"))); ev["sender_pubkey"] != a.pub() {
		t.Fatalf("bob got %v", ev)
	}
	sendAndSettle(t, bo.cl, "alice", "hello alice")
	streamA.next(t, "bob's DM", messageWith("hello alice"))
	if n := countBody(inboxItems(t, bo.cl), "hello bob"); n != 1 {
		t.Fatalf("bob's inbox holds %d copies, want 1", n)
	}

	// One machine, one member: the sessions are siblings, and a broadcast
	// from one reaches the other (once), as does one from the member at a
	// shell outside any session.
	sendAndSettle(t, a.cl, "*", "lunch?")
	streamB.next(t, "alice's broadcast", messageWith("lunch?"))
	sendAndSettle(t, td.client(""), "*", "from the shell")
	streamA.next(t, "the member's broadcast at alice", messageWith("from the shell"))
	streamB.next(t, "the member's broadcast at bob", messageWith("from the shell"))
	for _, s := range []testSession{a, bo} {
		items := inboxItems(t, s.cl)
		if n := countBody(items, "from the shell"); n != 1 {
			t.Fatalf("%s's inbox holds %d copies of the member's broadcast, want 1", s.reg.DisplayName, n)
		}
	}
	if n := countBody(inboxItems(t, bo.cl), "lunch?"); n != 1 {
		t.Fatalf("bob's inbox holds %d copies of alice's broadcast, want 1", n)
	}
	if n := countBody(inboxItems(t, a.cl), "lunch?"); n != 0 {
		t.Fatalf("alice's broadcast came back to her %d times", n)
	}

	// Shutdown stops the broker with the daemon.
	td.shutdown(t)
	if conn, err := net.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(eb.URL, "ws://"), "/ws")); err == nil {
		conn.Close()
		t.Fatal("the embedded broker still listens after the daemon stopped")
	}
}

// A taken listen address does not stop the daemon: IPC answers, health says
// why the broker is not served, and a reload once the address is free
// serves it.
func TestEmbeddedBrokerAddressTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	h := newTestHome(t)
	h.writeMachineConfig(t, &Config{Version: 1, Broker: &BrokerConf{Listen: addr}})
	td := startTestDaemon(t, h, nil)

	if _, err := td.client("").Version(context.Background()); err != nil {
		t.Fatalf("IPC with a taken broker address: %v", err)
	}
	eb := embeddedHealthOf(t, td)
	if eb == nil || eb.State != embeddedFailed || !strings.Contains(eb.Error, "in use") || eb.Listen != addr {
		t.Fatalf("embedded broker = %+v, want failed: in use", eb)
	}

	taken.Close()
	if err := td.client("").Do(context.Background(), "POST", "/v1/reload", nil, nil); err != nil {
		t.Fatal(err)
	}
	eb = embeddedHealthOf(t, td)
	if eb.State != embeddedServing || eb.URL != "ws://"+addr+"/ws" {
		t.Fatalf("after the address came free and a reload: %+v", eb)
	}
}

// Removing the block stops the broker; the daemon keeps running.
func TestEmbeddedBrokerRemovedOnReload(t *testing.T) {
	h := newTestHome(t)
	data := filepath.Join(h.Home, "bdata")
	h.writeMachineConfig(t, &Config{Version: 1, Broker: &BrokerConf{Listen: "127.0.0.1:0", Data: data}})
	td := startTestDaemon(t, h, nil)
	eb := embeddedHealthOf(t, td)
	if eb == nil || eb.Data != data {
		t.Fatalf("embedded broker = %+v, want data %s", eb, data)
	}
	if _, err := os.Stat(filepath.Join(data)); err != nil {
		t.Fatalf("data dir: %v", err)
	}
	h.writeMachineConfig(t, &Config{Version: 1})
	if err := td.client("").Do(context.Background(), "POST", "/v1/reload", nil, nil); err != nil {
		t.Fatal(err)
	}
	if eb := embeddedHealthOf(t, td); eb != nil {
		t.Fatalf("embedded broker after removing the block = %+v", eb)
	}
}
