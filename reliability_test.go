// At-least-once with exactly one inbox row: a recipient daemon
// killed between push and ack, a sender daemon killed with unsent rows, and
// a broker restarted with queued messages. The daemons that get killed run
// as processes of the built binary.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// daemonProc is `claudemesh daemon up --foreground` as a child process.
type daemonProc struct {
	cmd     *exec.Cmd
	done    chan struct{}
	home    testHome
	logPath string
}

// startDaemonProc starts the built binary's daemon in home and waits until
// it answers; it is SIGKILLed (by pid) at test end if still running.
func startDaemonProc(t *testing.T, h testHome) *daemonProc {
	t.Helper()
	logPath := filepath.Join(h.Home, "daemon-"+time.Now().Format("150405.000000")+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(claudemeshBinary(t), "daemon", "up", "--foreground", "--no-tcp")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range h.env() {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	p := &daemonProc{cmd: cmd, done: startChild(t, cmd, logPath), home: h, logPath: logPath}
	cl := newDaemonClient(h.Paths.SocketFile(), "")
	waitFor(t, "the daemon process to answer", func() bool {
		select {
		case <-p.done:
			log, _ := os.ReadFile(logPath)
			t.Fatalf("daemon exited during start:\n%s", log)
		default:
		}
		_, err := cl.Version(context.Background())
		return err == nil
	})
	return p
}

// startChild starts cmd and returns a channel closed when it has exited.
// When the test ends a child still running is killed with SIGKILL, and a
// failed test logs what it wrote to logPath.
func startChild(t *testing.T, cmd *exec.Cmd, logPath string) chan struct{} {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			log, _ := os.ReadFile(logPath)
			t.Logf("%s (pid %d) log:\n%s", filepath.Base(cmd.Path), cmd.Process.Pid, tailLines(string(log), 200))
		}
	})
	return done
}

// kill9 kills the process with SIGKILL and waits for it to be gone.
func (p *daemonProc) kill9(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(testWait):
		t.Fatal("killed daemon did not exit")
	}
}

func (p *daemonProc) client(token string) *DaemonClient {
	return newDaemonClient(p.home.Paths.SocketFile(), token)
}

// waitOpen waits until the process's member link of slug is open.
func (p *daemonProc) waitOpen(t *testing.T, slug string) {
	t.Helper()
	waitFor(t, "link "+slug+" open", func() bool {
		h, err := p.client("").Health(context.Background())
		return err == nil && h.Brokers[slug] == string(LinkOpen)
	})
}

// tcpProxy forwards TCP to a broker. Frozen, it drops everything the
// client side sends (acks, sends) while still forwarding what the broker
// sends: the way a daemon looks to a broker just before it crashes.
type tcpProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	frozen bool
	conns  []net.Conn
}

func startTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{l: l, target: target}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	return p
}

func (p *tcpProxy) url() string { return "ws://" + p.l.Addr().String() + "/ws" }

func (p *tcpProxy) setFrozen(v bool) {
	p.mu.Lock()
	p.frozen = v
	p.mu.Unlock()
}

func (p *tcpProxy) isFrozen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frozen
}

func (p *tcpProxy) serve(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, client, server)
	p.mu.Unlock()
	closeBoth := func() { client.Close(); server.Close() }
	go func() { io.Copy(client, server); closeBoth() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 && !p.isFrozen() {
			if _, werr := server.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	closeBoth()
}

// cut drops every connection the proxy carries now; clients reconnect
// through it.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// route returns m with its broker reached through the proxy.
func (p *tcpProxy) route(m Mesh) Mesh {
	m.BrokerURL = p.url()
	return m
}

// newProxiedMesh is mesh alpha on a real broker with members me and bob,
// and a TCP proxy in front of that broker.
func newProxiedMesh(t *testing.T) (b *Broker, url string, me, bob Mesh, proxy *tcpProxy) {
	t.Helper()
	b, url = startTestBrokerWith(t, msgBrokerOptions())
	me = newTestMesh(t, b, url, "alpha", "me")
	bob = addTestMember(t, b, me, "bob", "member")
	proxy = startTCPProxy(t, strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/ws"))
	return b, url, me, bob, proxy
}

// pendingFor is the broker's undelivered messages for a key.
func pendingFor(t *testing.T, b *Broker, meshID, key string) int {
	t.Helper()
	msgs, err := b.store.PendingFor(context.Background(), meshID, key, 0, time.Now(), 100)
	if err != nil {
		t.Fatal(err)
	}
	return len(msgs)
}

// The recipient's daemon stores a push and is killed before its ack reaches
// the broker: after a restart the broker pushes again, the daemon acks, and
// the inbox still holds exactly one row — for a DM to the member key (member
// link) and to a session's key (its link, restored after the restart).
func TestRecipientKilledBeforeAckKeepsOneRow(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the built binary")
	}
	for _, toSession := range []bool{false, true} {
		t.Run(map[bool]string{false: "member", true: "session"}[toSession], func(t *testing.T) {
			b, url, me, bob, proxy := newProxiedMesh(t)
			h := newTestHome(t)
			h.writeConfig(t, proxy.route(bob))
			d := startDaemonProc(t, h)
			d.waitOpen(t, "alpha")
			target := bob.Pubkey
			if toSession {
				reg, key := registration(t, bob, "bert", os.Getpid())
				if err := d.client("").RegisterSession(context.Background(), reg); err != nil {
					t.Fatal(err)
				}
				target = key.PublicHex()
				waitFor(t, "bert's link open", func() bool {
					s, err := d.client(reg.Token).SessionMe(context.Background())
					return err == nil && s != nil && s.Link == LinkOpen
				})
			}

			proxy.setFrozen(true) // from now on the daemon's acks never arrive
			sender := connectMember(t, url, me)
			nonce, ct, _ := sealDM([]byte("survive the crash"), target, mustKeypair(t, me))
			sender.sendJSON(SendFrame{Type: frameSend, ID: "crash-1", ClientMessageID: "crash-1", TargetSpec: target, Priority: priorityNext, Nonce: nonce, Ciphertext: ct})
			sender.expect(frameAck, func(f frame) bool { return f.str("id") == "crash-1" })
			waitFor(t, "the push stored in the inbox", func() bool { return len(inboxItems(t, d.client(""))) == 1 })
			if n := pendingFor(t, b, me.MeshID, target); n != 1 {
				t.Fatalf("broker has %d undelivered, want 1: the ack must not have arrived", n)
			}

			d.kill9(t)
			proxy.setFrozen(false)
			d = startDaemonProc(t, h)
			waitFor(t, "the redelivered push acked", func() bool { return pendingFor(t, b, me.MeshID, target) == 0 })
			items := inboxItems(t, d.client(""))
			if len(items) != 1 || items[0].ClientMessageID != "crash-1" || items[0].Body == nil || *items[0].Body != "survive the crash" {
				t.Fatalf("inbox after the crash = %+v, want exactly one row", items)
			}
		})
	}
}

func mustKeypair(t *testing.T, m Mesh) Keypair {
	t.Helper()
	kp, err := m.Keypair()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// The sender's daemon is killed with one row inflight (sent, not acked) and
// more pending: after a restart all of them go out, each once, in order. A
// session's rows wait for that session to come back (from sessions.json and
// its stored key) and leave on its own link, sealed by its key.
func TestSenderKilledWithPendingRowsDeliversAfterRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the built binary")
	}
	for _, fromSession := range []bool{false, true} {
		name := map[bool]string{false: "member rows", true: "session rows"}[fromSession]
		t.Run(name, func(t *testing.T) {
			b, _, me, bob, proxy := newProxiedMesh(t)
			h1 := newTestHome(t)
			h1.writeConfig(t, proxy.route(me))
			h2 := newTestHome(t)
			h2.writeConfig(t, bob)
			d2 := startTestDaemon(t, h2, nil)
			d2.waitLink(t, "alpha", LinkOpen)
			stream := subscribe(t, d2, "")

			d1 := startDaemonProc(t, h1)
			d1.waitOpen(t, "alpha")
			sender, senderKey := d1.client(""), me.Pubkey
			if fromSession {
				reg, key := registration(t, me, "alice", os.Getpid())
				if err := sender.RegisterSession(context.Background(), reg); err != nil {
					t.Fatal(err)
				}
				sender, senderKey = d1.client(reg.Token), key.PublicHex()
				waitFor(t, "alice's link open", func() bool {
					s, err := sender.SessionMe(context.Background())
					return err == nil && s != nil && s.Link == LinkOpen
				})
			}
			proxy.setFrozen(true) // sends leave the daemon but never reach the broker
			texts := []string{"one", "two", "three"}
			var first string
			for i, text := range texts {
				var a SendReply
				if err := sender.Do(context.Background(), "POST", "/v1/send", map[string]any{"to": bob.Pubkey, "message": text}, &a); err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					first = a.ID
				}
			}
			waitFor(t, "the first row inflight", func() bool {
				var out struct {
					Items []outboxView `json:"items"`
				}
				err := d1.client("").Do(context.Background(), "GET", "/v1/outbox?status=inflight", nil, &out)
				return err == nil && len(out.Items) == 1 && out.Items[0].ID == first
			})
			d1.kill9(t)
			proxy.setFrozen(false)
			startDaemonProc(t, h1)
			for _, text := range texts {
				ev := stream.next(t, "message "+text, messageWith(text))
				if got := eventData(ev)["sender_pubkey"]; got != senderKey {
					t.Fatalf("%q from %v, want %s", text, got, senderKey)
				}
			}
			waitFor(t, "all delivered", func() bool { return pendingFor(t, b, me.MeshID, bob.Pubkey) == 0 })
			items := inboxItems(t, d2.client(""))
			if len(items) != 3 || bodies(items) != "three,two,one" {
				t.Fatalf("inbox = %q, want each message once", bodies(items))
			}
		})
	}
}

// startBrokerAt runs a broker on a fixed address with a given data dir;
// stop closes it (tests restart a broker in place with it).
func startBrokerAt(t *testing.T, addr string, opts BrokerOptions) (b *Broker, stop func()) {
	t.Helper()
	b, err := newBroker(opts)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); b.Serve(l) }()
	var once sync.Once
	stop = func() { once.Do(func() { b.Close(); <-served }) }
	t.Cleanup(stop)
	return b, stop
}

// A broker restarted with DMs queued for an offline member delivers them
// when that member's daemon comes up.
func TestBrokerRestartWithQueuedDMs(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	opts := msgBrokerOptions()
	opts.DataDir = dir
	b1, stop1 := startBrokerAt(t, addr, opts)
	url := "ws://" + addr + "/ws"
	me := newTestMesh(t, b1, url, "alpha", "me")
	bob := addTestMember(t, b1, me, "bob", "member")
	h1 := newTestHome(t)
	h1.writeConfig(t, me)
	d1 := startTestDaemon(t, h1, nil)
	d1.waitLink(t, "alpha", LinkOpen)
	a := registerTestSession(t, d1, me, "alice")
	sendAndSettle(t, a.cl, bob.Pubkey, "queued one")
	sendAndSettle(t, d1.client(""), bob.Pubkey, "queued two")

	stop1()
	b2, _ := startBrokerAt(t, addr, opts)
	h2 := newTestHome(t)
	h2.writeConfig(t, bob)
	d2 := startTestDaemon(t, h2, nil) // the broker pushes what it queued as soon as the link opens
	waitFor(t, "both delivered and acked", func() bool { return pendingFor(t, b2, me.MeshID, bob.Pubkey) == 0 })
	items := inboxItems(t, d2.client(""))
	if got := bodies(items); got != "queued two,queued one" && got != "queued one,queued two" {
		t.Fatalf("inbox = %q, want each queued DM once", got)
	}
	for _, it := range items {
		if *it.Body == "queued one" && it.SenderPubkey != a.pub() {
			t.Fatalf("queued DM from %s, want alice's session", it.SenderPubkey)
		}
	}
}

// waitLong is waitFor with a longer bound, for a convergence that has many
// reconnects to go through on a slow machine.
func waitLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(6 * testWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Links flapping during a burst of sends: every few sends the proxy in front
// of the broker drops every connection of both daemons (member and session
// links), so sends, acks, pushes and client_acks are cut wherever they
// happen to be; cuts go on while the recipient stores the pushes, between a
// push and its client_ack. At the end each message is in the recipient's inbox exactly
// once, published once, every outbox row is done, and the broker holds
// nothing undelivered.
func TestLinksFlappingDuringBurstDeliverExactlyOnce(t *testing.T) {
	// Every link reconnects at each cut, all from 127.0.0.1: lift the
	// per-IP handshake rate, which would only slow the test down.
	opts := msgBrokerOptions()
	opts.HandshakeBurst, opts.HandshakePerMinute = 10_000, 1_000_000
	b, url := startTestBrokerWith(t, opts)
	me := newTestMesh(t, b, url, "alpha", "me")
	bob := addTestMember(t, b, me, "bob", "member")
	proxy := startTCPProxy(t, strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/ws"))
	quickRetry := func(o *DaemonOptions) {
		o.Drain.BackoffBase, o.Drain.BackoffMax = 5*time.Millisecond, 50*time.Millisecond
	}
	h1, h2 := newTestHome(t), newTestHome(t)
	h1.writeConfig(t, proxy.route(me))
	h2.writeConfig(t, proxy.route(bob))
	d1 := startTestDaemon(t, h1, quickRetry)
	d2 := startTestDaemon(t, h2, quickRetry)
	d1.waitLink(t, "alpha", LinkOpen)
	d2.waitLink(t, "alpha", LinkOpen)
	alice := registerTestSession(t, d1, me, "alice")
	bert := registerTestSession(t, d2, bob, "bert")
	stream := subscribe(t, d2, "")

	// Three flows: session to session, member to member, and a broadcast
	// from the session (bob's copy goes to his session, not his daemon).
	const n = 60
	want := map[string]bool{}
	for i := 0; i < n; i++ {
		text := fmt.Sprintf("flap %02d", i)
		want[text] = true
		switch i % 3 {
		case 0:
			ipcSend(t, alice.cl, map[string]any{"to": bert.pub(), "message": text})
		case 1:
			ipcSend(t, d1.client(""), map[string]any{"to": bob.Pubkey, "message": text})
		case 2:
			ipcSend(t, alice.cl, map[string]any{"to": "*", "message": text})
		}
		if i%6 == 5 {
			proxy.cut()
		}
	}

	seen := map[string]int{}
	for len(seen) < n {
		ev := stream.next(t, "the burst's message events", func(ev DaemonEvent) bool { return ev.Kind == eventMessage })
		body, _ := eventData(ev)["body"].(string)
		if !want[body] {
			t.Fatalf("unexpected message event %v", eventData(ev))
		}
		seen[body]++
		if len(seen)%7 == 0 {
			proxy.cut() // just after a push was stored: its client_ack may be lost
		}
	}
	waitLong(t, "every outbox row done", func() bool {
		var out struct {
			Items []outboxView `json:"items"`
		}
		err := d1.client("").Do(context.Background(), "GET", "/v1/outbox?status=done&limit=500", nil, &out)
		return err == nil && len(out.Items) == n
	})
	waitLong(t, "nothing undelivered at the broker", func() bool {
		return pendingFor(t, b, me.MeshID, bob.Pubkey) == 0 && pendingFor(t, b, me.MeshID, bert.pub()) == 0
	})
	items := inboxItems(t, d2.client(""), "limit", "1000")
	if len(items) != n {
		t.Fatalf("inbox holds %d rows, want %d: %s", len(items), n, bodies(items))
	}
	for _, it := range items {
		if it.Body == nil || !want[*it.Body] || countBody(items, *it.Body) != 1 {
			t.Fatalf("inbox row %+v is not one of the burst's messages exactly once", it)
		}
	}
	for body, k := range seen {
		if k != 1 {
			t.Fatalf("%q published %d times", body, k)
		}
	}
}

// No secret key ever lands in a log: a run through the broker,
// a daemon process (restarted, so sessions come back from disk), a second
// daemon logging at debug level, an MCP server process and a few refused
// requests leaves daemon logs, mcp-<pid>.log and broker logs that hold none
// of the secrets the test knows — member and session secret keys (whole or
// their seed half), the local token, session tokens.
func TestNoSecretInAnyLog(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the built binary")
	}
	logDir := shortTempDir(t)
	open := func(name string) *os.File {
		f, err := os.Create(filepath.Join(logDir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	debug := &slog.HandlerOptions{Level: slog.LevelDebug}
	opts := msgBrokerOptions()
	opts.Logger = slog.New(slog.NewTextHandler(open("broker.log"), debug))
	b, url := startTestBrokerWith(t, opts)
	me := newTestMesh(t, b, url, "alpha", "me")
	bob := addTestMember(t, b, me, "bob", "member")

	h1, h2 := newTestHome(t), newTestHome(t)
	h1.writeConfig(t, me)
	h2.writeConfig(t, bob)
	d1 := startDaemonProc(t, h1)
	d1.waitOpen(t, "alpha")
	d2 := startTestDaemon(t, h2, func(o *DaemonOptions) { o.Log = slog.New(slog.NewJSONHandler(open("daemon2.log"), debug)) })
	d2.waitLink(t, "alpha", LinkOpen)

	// A session on each daemon, registered with its secret key over IPC.
	reg1, key1 := registration(t, me, "alice", os.Getpid())
	if err := d1.client("").RegisterSession(context.Background(), reg1); err != nil {
		t.Fatal(err)
	}
	bert := registerTestSession(t, d2, bob, "bert")
	alice := d1.client(reg1.Token)
	waitFor(t, "alice's link open", func() bool {
		me, err := alice.SessionMe(context.Background())
		return err == nil && me != nil && me.Link == LinkOpen
	})
	// Refused registrations that carry secrets: a secret of another key, and
	// an attestation that does not verify.
	bad, _ := registration(t, me, "mallory", os.Getpid())
	bad.Presence.SessionSecretKey = key1.SecretHex()
	if err := d1.client("").RegisterSession(context.Background(), bad); err == nil {
		t.Fatal("a registration with another key's secret was accepted")
	}
	bad2, key3 := registration(t, me, "trudy", os.Getpid())
	bad2.Presence.ParentAttestation.Signature = strings.Repeat("0", 128)
	if err := d1.client("").RegisterSession(context.Background(), bad2); err == nil {
		t.Fatal("a registration with a forged attestation was accepted")
	}

	sendAndSettle(t, alice, bert.pub(), "alice to bert")
	sendAndSettle(t, bert.cl, key1.PublicHex(), "bert to alice")
	sendAndSettle(t, d2.client(""), me.Pubkey, "bob to me")
	sendAndSettle(t, alice, "*", "to everyone")
	status, _ := rawIPC(t, alice, "POST", "/v1/send", map[string]any{"to": mustNewKeypair().PublicHex(), "message": "nobody", "wait_ms": 10_000}, nil)
	if status != 200 {
		t.Fatalf("send to an unknown key = %d", status)
	}

	// The MCP server of alice's session relays a DM as a channel message.
	p := startMCPProc(t, h1.env("CLAUDEMESH_IPC_TOKEN", reg1.Token, "CLAUDEMESH_WELCOME_DELAY_MS", "0"))
	p.call("initialize", map[string]any{"protocolVersion": "2025-06-18", "capabilities": map[string]any{},
		"clientInfo": map[string]any{"name": "test", "version": "1"}})
	p.notify("notifications/initialized")
	p.await("the welcome", isChannel("welcome"))
	sendAndSettle(t, bert.cl, key1.PublicHex(), "through mcp")
	p.await("the channel message", func(m map[string]any) bool {
		return isChannel("")(m) && strings.HasSuffix(m["params"].(map[string]any)["content"].(string), "through mcp")
	})
	p.stdin.Close()
	p.waitExit()

	// A crash and a restart: alice's session comes back with its stored key.
	d1.kill9(t)
	d1 = startDaemonProc(t, h1)
	waitFor(t, "alice's session restored", func() bool {
		me, err := alice.SessionMe(context.Background())
		return err == nil && me != nil && me.Link == LinkOpen
	})
	sendAndSettle(t, bert.cl, key1.PublicHex(), "after the restart")

	localToken, err := os.ReadFile(filepath.Join(h1.Paths.DaemonDir, "local-token"))
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{"local token": strings.TrimSpace(string(localToken)),
		"alice's session token": reg1.Token, "bert's session token": bert.reg.Token}
	for name, hexKey := range map[string]string{"my member key": me.SecretKey, "bob's member key": bob.SecretKey,
		"alice's session key": key1.SecretHex(), "bert's session key": bert.key.SecretHex(), "trudy's session key": key3.SecretHex()} {
		secrets[name] = hexKey
		secrets[name+" (seed)"] = hexKey[:64]
	}
	var logs []string
	for _, pattern := range []string{filepath.Join(logDir, "*.log"), filepath.Join(h1.Home, "*.log"),
		filepath.Join(h1.Paths.DaemonDir, "*.log"), filepath.Join(h2.Paths.DaemonDir, "*.log")} {
		m, _ := filepath.Glob(pattern)
		logs = append(logs, m...)
	}
	sawMCP := false
	for _, path := range logs {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) == 0 && filepath.Base(path) != "broker.log" { // the broker logs only trouble
			t.Errorf("%s is empty: nothing was scanned", path)
		}
		sawMCP = sawMCP || strings.HasPrefix(filepath.Base(path), "mcp-")
		for name, s := range secrets {
			if strings.Contains(string(data), s) {
				t.Errorf("%s holds %s", path, name)
			}
		}
	}
	if !sawMCP || len(logs) < 5 {
		t.Fatalf("scanned %v: want the broker's, both daemons' and an mcp-<pid>.log", logs)
	}
}

// The sender's daemon is killed (SIGKILL) after the broker took its
// message and before the recipient stored it: the recipient's delivered
// receipt waits at the broker, and the restarted sender's ladder has it.
func TestSenderKilledBetweenSentAndDeliveredKeepsItsReceipt(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the built binary")
	}
	b, url := startTestBrokerWith(t, msgBrokerOptions())
	me := newTestMesh(t, b, url, "alpha", "me")
	bob := addTestMember(t, b, me, "bob", "member")
	h1, h2 := newTestHome(t), newTestHome(t)
	h1.writeConfig(t, me)
	h2.writeConfig(t, bob)
	d1 := startDaemonProc(t, h1)
	d1.waitOpen(t, "alpha")
	var sent SendReply
	if err := d1.client("").Do(context.Background(), "POST", "/v1/send",
		map[string]any{"to": bob.Pubkey, "message": "are you there?", "wait_ms": 10000}, &sent); err != nil || sent.Status != "done" {
		t.Fatalf("send = %+v, %v", sent, err)
	}
	d1.kill9(t)

	d2 := startTestDaemon(t, h2, nil) // bob comes online only now
	waitFor(t, "bob's delivered receipt taken by the broker", func() bool {
		var rung string
		_ = d2.inbox.db.QueryRow(`SELECT COALESCE(receipt_sent, '') FROM inbox`).Scan(&rung)
		return strings.HasPrefix(rung, receiptDelivered)
	})
	back := startDaemonProc(t, h1)
	back.waitOpen(t, "alpha")
	var l messageLadder
	waitFor(t, "the ladder at delivered after the restart", func() bool {
		rep, err := callIPC(context.Background(), back.client(""), apiMessage, MessageQuery{ID: sent.ID})
		if err != nil || rep.Message.Ladder == nil {
			return false
		}
		l = *rep.Message.Ladder
		return l.Rung == rungDelivered
	})
	if r := l.Recipients[0]; r.Pubkey != bob.Pubkey || r.Name != "bob" {
		t.Fatalf("ladder = %+v", l)
	}
}
