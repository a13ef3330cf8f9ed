// Tests of the daemon's broker link: backoff, retries, pushes before
// hello_ack, ban and kick, request/reply and send/ack, the cold link.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	timing := defaultLinkTiming()
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30, 30}
	for n, w := range want {
		if got := timing.backoffDelay(n, nil); got != w*time.Second {
			t.Errorf("backoffDelay(%d) = %v, want %v", n, got, w*time.Second)
		}
		for i := 0; i < 50; i++ {
			got := timing.backoffDelay(n, randomJitter)
			if got < w*time.Second || got > w*time.Second*5/4 {
				t.Fatalf("backoffDelay(%d) with jitter = %v, outside [%v, %v]", n, got, w*time.Second, w*time.Second*5/4)
			}
		}
	}
}

func TestWithReqID(t *testing.T) {
	cases := map[string]string{
		`{"type":"list_peers"}`:  `{"type":"list_peers","_reqId":"r1"}`,
		`{}`:                     `{"_reqId":"r1"}`,
		"{\"type\":\"x\"}\n":     `{"type":"x","_reqId":"r1"}`,
		`{"type":"a","b":"}"}`:   `{"type":"a","b":"}","_reqId":"r1"}`,
		`{"k":{"nested":true}}`:  `{"k":{"nested":true},"_reqId":"r1"}`,
		`{"type":"say \"hi\""}`:  `{"type":"say \"hi\"","_reqId":"r1"}`,
		`{"type":"list_state"} `: `{"type":"list_state","_reqId":"r1"}`,
	}
	for in, want := range cases {
		if got := string(withReqID([]byte(in), "r1")); got != want {
			t.Errorf("withReqID(%s) = %s, want %s", in, got, want)
		}
		if !json.Valid(withReqID([]byte(in), "r1")) {
			t.Errorf("withReqID(%s) is not JSON", in)
		}
	}
}

// stateLog records a link's state changes.
type stateLog struct {
	mu     sync.Mutex
	states []LinkState
}

func (s *stateLog) record(_ *Link, st LinkState) {
	s.mu.Lock()
	s.states = append(s.states, st)
	s.mu.Unlock()
}

func (s *stateLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, st := range s.states {
		out = append(out, string(st))
	}
	return strings.Join(out, ",")
}

func memberLinkFor(t *testing.T, m Mesh, log *stateLog, onFrame func(*Link, Inbound)) *Link {
	t.Helper()
	kp, err := m.Keypair()
	if err != nil {
		t.Fatal(err)
	}
	cfg := LinkConfig{Kind: linkMember, Mesh: m.Slug, URL: m.BrokerURL, Hello: memberHello(m, kp, 4242, "/", "host"),
		Timing: fastLinkTiming(), OnFrame: onFrame}
	if log != nil {
		cfg.OnState = log.record
	}
	l := newLink(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); l.Close() })
	l.Start(ctx)
	return l
}

func waitState(t *testing.T, l *Link, st LinkState) {
	t.Helper()
	waitFor(t, "link "+string(st), func() bool { return l.State() == st })
}

// The handle exists before the first attempt, a failed first connect is
// retried, and requests fail fast until the link opens.
func TestLinkRetriesFailedFirstConnect(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: the first connects fail

	b, err := newBroker(BrokerOptions{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	url := "ws://" + addr + "/ws"
	m := newTestMesh(t, b, url, "late", "me")
	log := &stateLog{}
	link := memberLinkFor(t, m, log, nil)
	if _, err := link.Request(context.Background(), ListPeersFrame{Type: frameListPeers}, framePeersList); err == nil {
		t.Fatal("request on a link that never opened succeeded")
	}
	waitFor(t, "a failed attempt", func() bool { return link.LastError() != "" })

	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s was taken meanwhile: %v", addr, err)
	}
	served := make(chan struct{})
	go func() { defer close(served); b.Serve(l2) }()
	t.Cleanup(func() { b.Close(); <-served })

	waitState(t, link, LinkOpen)
	raw, err := link.Request(context.Background(), ListPeersFrame{Type: frameListPeers}, framePeersList)
	if err != nil || !strings.Contains(string(raw), m.Pubkey) {
		t.Fatalf("list_peers after the late open = %s, %v", raw, err)
	}
	if !strings.HasPrefix(log.String(), "reconnecting") {
		t.Fatalf("states = %s, want a reconnect before open", log)
	}
}

// Pushes queued while the member was offline arrive on connect (the broker
// drains before hello_ack) and are handed to the inbound hook.
func TestLinkHandlesQueuedPushesOnConnect(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "q", "owner")
	victim := addTestMember(t, b, owner, "victim", "member")
	sender := connectMember(t, url, owner)
	for _, id := range []string{"q1", "q2", "q3"} {
		ack := sender.sendText(victim.Pubkey, "hello "+id, id)
		if ack["queued"] != true {
			t.Fatalf("queue to an offline member: %v", ack)
		}
	}
	var mu sync.Mutex
	got := map[string]bool{}
	link := memberLinkFor(t, victim, nil, func(l *Link, f Inbound) {
		if f.Head.Type != framePush {
			return
		}
		var p PushFrame
		_ = json.Unmarshal(f.Data, &p)
		mu.Lock()
		got[p.ClientMessageID] = true
		mu.Unlock()
		_ = f.Reply(context.Background(), ClientAckFrame{Type: frameClientAck, ClientMessageID: p.ClientMessageID, BrokerMessageID: p.MessageID})
	})
	waitState(t, link, LinkOpen)
	waitFor(t, "three queued pushes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got["q1"] && got["q2"] && got["q3"]
	})
}

// A ban closes 4002: the member link stops for good in state banned.
func TestMemberLinkBannedStops(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "ban", "owner")
	victim := addTestMember(t, b, owner, "victim", "member")
	log := &stateLog{}
	link := memberLinkFor(t, victim, log, nil)
	waitState(t, link, LinkOpen)
	admin := connectMember(t, url, owner)
	if f := admin.roundTrip(map[string]any{"type": frameBan, "target": "victim"}); f.str("type") == frameError {
		t.Fatalf("ban: %v", f)
	}
	waitState(t, link, LinkBanned)
	if _, err := link.Request(context.Background(), ListPeersFrame{Type: frameListPeers}, framePeersList); err == nil {
		t.Fatal("request on a banned link succeeded")
	}
	// Whether the close code or the refused re-hello told it, the link
	// ends banned and never opens again.
	if s := log.String(); !strings.HasSuffix(s, ",banned") || strings.Count(s, "open") != 1 {
		t.Fatalf("states = %s, want one open and the end in banned", s)
	}
}

// A kick closes a session link 4001: it stops in state kicked; the member
// link is not kicked (control-plane) and stays open.
func TestSessionLinkKickedStops(t *testing.T) {
	b, url := startTestBroker(t)
	mesh := newTestMesh(t, b, url, "kick", "me")
	admin := addTestMember(t, b, mesh, "admin", "admin")
	memberKey, _ := mesh.Keypair()
	sessionKey := mustNewKeypair()
	memberLink := memberLinkFor(t, mesh, nil, nil)
	sl := newLink(LinkConfig{Kind: linkSession, Mesh: mesh.Slug, URL: url, Timing: fastLinkTiming(),
		Hello: sessionHello(mesh, memberKey, sessionKey, sessionHelloParams{SessionID: newUUID(), DisplayName: "worker", Pid: 4343, Cwd: "/"})})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); sl.Close() })
	sl.Start(ctx)
	waitState(t, memberLink, LinkOpen)
	waitState(t, sl, LinkOpen)
	ac := connectMember(t, url, admin)
	f := ac.roundTrip(map[string]any{"type": frameKick, "target": sessionKey.PublicHex()})
	if f.str("type") != frameKickAck {
		t.Fatalf("kick: %v", f)
	}
	waitState(t, sl, LinkKicked)
	if st := memberLink.State(); st != LinkOpen {
		t.Fatalf("member link = %s after a session kick, want open", st)
	}
}

// A link opens, serves a request, and closes cleanly with state closed.
func TestLinkCloseState(t *testing.T) {
	b, url := startTestBroker(t)
	m := newTestMesh(t, b, url, "c", "me")
	log := &stateLog{}
	link := memberLinkFor(t, m, log, nil)
	waitState(t, link, LinkOpen)
	link.Close()
	if st := link.State(); st != LinkClosed {
		t.Fatalf("state after Close = %s", st)
	}
	if err := link.WaitOpen(context.Background()); err == nil {
		t.Fatal("WaitOpen on a closed link succeeded")
	}
}

// The cold path: a one-shot hello with an ephemeral session key on
// channel claude-code, listed as control-plane.
func TestColdLink(t *testing.T) {
	b, url := startTestBroker(t)
	m := newTestMesh(t, b, url, "cold", "me")
	cl, err := dialCold(context.Background(), m, 777, "/", "host")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	raw, err := cl.Request(ctx, ListPeersFrame{Type: frameListPeers}, framePeersList)
	if err != nil {
		t.Fatal(err)
	}
	var f PeersListFrame
	if err := json.Unmarshal(raw, &f); err != nil || len(f.Peers) != 1 {
		t.Fatalf("peers_list = %s, %v", raw, err)
	}
	if p := f.Peers[0]; p.Channel != channelCLI || p.PeerRole != peerRoleControlPlane || p.MemberPubkey != m.Pubkey || p.Pubkey == m.Pubkey {
		t.Fatalf("cold row = %+v", p)
	}
}

// Send waits for the broker's ack keyed on id: a queued DM gets a message
// id, a DM to a key the mesh has never seen gets the broker's error.
func TestLinkSendWaitsForAck(t *testing.T) {
	b, url := startTestBroker(t)
	m := newTestMesh(t, b, url, "send", "me")
	bob := addTestMember(t, b, m, "bob", "member")
	link := memberLinkFor(t, m, nil, nil)
	waitState(t, link, LinkOpen)
	kp, _ := m.Keypair()
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	send := func(to string) (AckFrame, error) {
		nonce, ct, err := sealDM([]byte("hi"), to, kp)
		if err != nil {
			t.Fatal(err)
		}
		id := newUUID()
		fp, _ := requestFingerprint(to, "", priorityNext, nil, []byte("hi"))
		return link.Send(ctx, SendFrame{ClientMessageID: id, RequestFingerprint: hex.EncodeToString(fp[:]), TargetSpec: to,
			Priority: priorityNext, Nonce: nonce, Ciphertext: ct})
	}
	ack, err := send(bob.Pubkey)
	if err != nil || !ack.Queued || ack.MessageID == "" || ack.Error != "" {
		t.Fatalf("send to bob = %+v, %v", ack, err)
	}
	ack, err = send(mustNewKeypair().PublicHex())
	if err != nil || ack.Queued || !strings.HasPrefix(ack.Error, codeUnknownTarget) {
		t.Fatalf("send to a stranger = %+v, %v; want an unknown_target ack", ack, err)
	}
}

// Two handshakes signed by one process in the same millisecond must differ,
// or the broker refuses the second as a replay.
func TestHandshakeTimestampsNeverRepeat(t *testing.T) {
	now := time.Now()
	seen := map[int64]bool{}
	prev := int64(0)
	for i := 0; i < 100; i++ {
		ts := handshakeTimestamp(now)
		if seen[ts] || ts <= prev {
			t.Fatalf("handshakeTimestamp repeated or went back: %d after %d", ts, prev)
		}
		seen[ts], prev = true, ts
	}
}
