// Tests of the outbox drain: backoff, verdicts on broker answers, lanes that
// do not block each other, retries, give-up rules and banned links.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestDrainBackoff(t *testing.T) {
	tm := defaultDrainTiming()
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for attempts, w := range want {
		if got := tm.backoff(attempts); got != w {
			t.Errorf("backoff(%d) = %v, want %v", attempts, got, w)
		}
	}
	if got := tm.backoff(1000); got != 30*time.Second {
		t.Errorf("backoff(1000) = %v", got)
	}
}

// Which broker answers kill a row and which are retried.
func TestJudgeSend(t *testing.T) {
	cases := []struct {
		name string
		ack  AckFrame
		err  error
		want sendVerdict
	}{
		{"accepted", AckFrame{MessageID: "m", Queued: true}, nil, verdictDone},
		{"unknown target", AckFrame{Error: "unknown_target: no member or session key"}, nil, verdictDead},
		{"forbidden", AckFrame{Error: "forbidden: no"}, nil, verdictDead},
		{"invalid", AckFrame{Error: "invalid: targetSpec"}, nil, verdictDead},
		{"too large", AckFrame{Error: "payload_too_large: 70000 bytes > max 65536"}, nil, verdictDead},
		{"rate limited", AckFrame{Error: "rate_limit: max 60 msg/min"}, nil, verdictRetry},
		{"store down", AckFrame{Error: "internal: store unavailable"}, nil, verdictRetry},
		{"a code that merely mentions invalid", AckFrame{Error: "internal: invalid state"}, nil, verdictRetry},
		{"error frame, invalid", AckFrame{}, &BrokerError{Code: codeInvalid, Message: "x"}, verdictDead},
		{"error frame, rate limit", AckFrame{}, &BrokerError{Code: codeRateLimit}, verdictRetry},
		{"ack timeout", AckFrame{}, errBrokerTimeout, verdictRetry},
		{"link dropped", AckFrame{}, errLinkClosed, verdictRetry},
		{"link down", AckFrame{}, errLinkNotOpen, verdictRetry},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := judgeSend(tc.ack, tc.err); got != tc.want {
				t.Fatalf("judgeSend = %v, want %v", got, tc.want)
			}
		})
	}
}

// fakeBroker completes handshakes and answers sends as told: reply gets
// the send's number (1-based, across connections) and returns the frame to
// answer with, or nil for silence. It stands in for a broker of another
// implementation: a test pushes frames to the connections it holds, sets
// the peer list it answers, and reads the client_acks it got.
type fakeBroker struct {
	url   string
	mu    sync.Mutex
	sends []SendFrame
	reply func(n int, f SendFrame) any
	conns []*fakeConn
	acks  []ClientAckFrame
	peers []PeerRow
	seen  map[string]int // frames received, by type
	// features is what hello_ack names; refuseUnknown answers every frame
	// type it does not handle with unknown_message_type, as claudemesh's
	// broker does.
	features      []string
	refuseUnknown bool
}

// fakeConn is one connection to a fakeBroker: its handshake frame and
// socket.
type fakeConn struct {
	Hello         frameHead
	Pubkey        string // the member key of a hello, the session key of a session_hello
	SessionPubkey string
	ws            *websocket.Conn
}

func startFakeBroker(t *testing.T, reply func(n int, f SendFrame) any) *fakeBroker {
	t.Helper()
	fb := &fakeBroker{reply: reply, seen: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ctx := r.Context()
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			head, _ := decodeHead(data)
			fb.mu.Lock()
			fb.seen[head.Type]++
			fb.mu.Unlock()
			var out any
			switch head.Type {
			case frameHello, frameSessionHello:
				var h struct {
					Pubkey        string `json:"pubkey"`
					SessionPubkey string `json:"sessionPubkey"`
				}
				_ = json.Unmarshal(data, &h)
				fb.mu.Lock()
				fb.conns = append(fb.conns, &fakeConn{Hello: head, Pubkey: cmp.Or(h.SessionPubkey, h.Pubkey), SessionPubkey: h.SessionPubkey, ws: ws})
				fb.mu.Unlock()
				fb.mu.Lock()
				out = HelloAckFrame{Type: frameHelloAck, PresenceID: "p1", Features: fb.features}
				fb.mu.Unlock()
			case frameSend:
				var f SendFrame
				_ = json.Unmarshal(data, &f)
				fb.mu.Lock()
				fb.sends = append(fb.sends, f)
				n := len(fb.sends)
				fb.mu.Unlock()
				out = fb.reply(n, f)
			case frameClientAck:
				var a ClientAckFrame
				_ = json.Unmarshal(data, &a)
				fb.mu.Lock()
				fb.acks = append(fb.acks, a)
				fb.mu.Unlock()
			case frameListPeers:
				fb.mu.Lock()
				out = PeersListFrame{Type: framePeersList, Peers: nonNil(fb.peers), ReqID: head.ReqID}
				fb.mu.Unlock()
			default:
				fb.mu.Lock()
				if fb.refuseUnknown {
					out = ErrorFrame{Type: frameError, Code: codeUnknownMessageType, Message: "unknown message type", ReqID: head.ReqID}
				}
				fb.mu.Unlock()
			}
			if out != nil {
				b, _ := json.Marshal(out)
				if ws.Write(ctx, websocket.MessageText, b) != nil {
					return
				}
			}
		}
	}))
	t.Cleanup(srv.Close)
	fb.url = "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	return fb
}

func (fb *fakeBroker) sent() []SendFrame {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return append([]SendFrame{}, fb.sends...)
}

// startFakeBrokerDaemon starts a daemon whose one mesh, "fake", is on a
// fake broker that acks every send, and waits for its member link.
func startFakeBrokerDaemon(t *testing.T) (*fakeBroker, Mesh, *testDaemon) {
	t.Helper()
	fb := startFakeBroker(t, func(_ int, s SendFrame) any { return ackFor(s) })
	m := fakeMesh("fake", fb.url)
	h := newTestHome(t)
	h.writeConfig(t, m)
	td := startTestDaemon(t, h, nil)
	td.waitLink(t, "fake", LinkOpen)
	return fb, m, td
}

// received is how many frames of type typ the broker got.
func (fb *fakeBroker) received(typ string) int {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return fb.seen[typ]
}

// setPeers sets the peer list the broker answers list_peers with.
func (fb *fakeBroker) setPeers(rows ...PeerRow) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	fb.peers = rows
}

// conn waits for the latest connection whose key is pubkey.
func (fb *fakeBroker) conn(t *testing.T, pubkey string) *fakeConn {
	t.Helper()
	var found *fakeConn
	waitFor(t, "a connection of "+shortKey(pubkey), func() bool {
		fb.mu.Lock()
		defer fb.mu.Unlock()
		for _, c := range fb.conns {
			if c.Pubkey == pubkey {
				found = c
			}
		}
		return found != nil
	})
	return found
}

// push writes a frame to a connection.
func (fb *fakeBroker) push(t *testing.T, c *fakeConn, frame any) {
	t.Helper()
	b, _ := json.Marshal(frame)
	if err := c.ws.Write(context.Background(), websocket.MessageText, b); err != nil {
		t.Fatalf("push: %v", err)
	}
}

// waitAcks waits until n client_acks name brokerMessageID.
func (fb *fakeBroker) waitAcks(t *testing.T, brokerMessageID string, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d acks of %s", n, brokerMessageID), func() bool {
		fb.mu.Lock()
		defer fb.mu.Unlock()
		got := 0
		for _, a := range fb.acks {
			if a.BrokerMessageID == brokerMessageID {
				got++
			}
		}
		return got >= n
	})
}

// fakeMesh is a mesh config entry for a fake broker.
func fakeMesh(slug, url string) Mesh {
	kp := mustNewKeypair()
	return Mesh{MeshID: "mesh-" + slug, MemberID: "member-" + slug, Slug: slug, Name: slug, Pubkey: kp.PublicHex(),
		SecretKey: kp.SecretHex(), BrokerURL: url}
}

func ackFor(f SendFrame) any {
	return AckFrame{Type: frameAck, ID: f.ID, MessageID: "bm-" + f.ID, Queued: true}
}

// A link whose broker never answers holds up only its own lane: rows of
// another mesh go out meanwhile.
func TestStalledLinkDoesNotBlockOtherMeshes(t *testing.T) {
	slow := startFakeBroker(t, func(int, SendFrame) any { return nil })
	b, url := startTestBrokerWith(t, msgBrokerOptions())
	alpha := newTestMesh(t, b, url, "alpha", "me")
	bob := addTestMember(t, b, alpha, "bob", "member")
	h := newTestHome(t)
	h.writeConfig(t, alpha, fakeMesh("slow", slow.url))
	td := startTestDaemon(t, h, func(o *DaemonOptions) { o.Drain.AckTimeout = time.Hour })
	td.waitLink(t, "alpha", LinkOpen)
	td.waitLink(t, "slow", LinkOpen)
	cl := td.client("")
	stuck := ipcSend(t, cl, map[string]any{"to": "*", "message": "into the void", "mesh": "slow"})
	waitFor(t, "the slow broker to get the send", func() bool { return len(slow.sent()) == 1 })

	out := ipcSend(t, cl, map[string]any{"to": bob.Pubkey, "message": "meanwhile", "mesh": "alpha", "wait_ms": 10_000})
	if out.Status != "done" {
		t.Fatalf("send on alpha while slow is stalled = %+v, want done", out)
	}
	r, _ := td.outbox.get(context.Background(), stuck.ID)
	if r.Status != outboxInflight {
		t.Fatalf("stalled row is %s, want inflight", r.Status)
	}
}

// A send the broker does not ack in time is retried, and the retry's ack
// finishes the row.
func TestAckTimeoutRetries(t *testing.T) {
	fb := startFakeBroker(t, func(n int, f SendFrame) any {
		if n == 1 {
			return nil
		}
		return ackFor(f)
	})
	h := newTestHome(t)
	h.writeConfig(t, fakeMesh("fake", fb.url))
	td := startTestDaemon(t, h, func(o *DaemonOptions) {
		o.Drain = DrainTiming{AckTimeout: 200 * time.Millisecond, BackoffBase: time.Millisecond, BackoffMax: 10 * time.Millisecond,
			MaxAttempts: 25, MaxAge: time.Hour}
	})
	td.waitLink(t, "fake", LinkOpen)
	out := ipcSend(t, td.client(""), map[string]any{"to": "*", "message": "second time lucky", "client_message_id": "c-retry"})
	waitFor(t, "the retried row to be done", func() bool {
		r, err := td.outbox.get(context.Background(), out.ID)
		return err == nil && r.Status == outboxDone
	})
	r, _ := td.outbox.get(context.Background(), out.ID)
	sends := fb.sent()
	if r.Attempts != 2 || r.BrokerMessageID != "bm-c-retry" || r.LastError != "" || r.DeliveredAt == 0 || len(sends) != 2 {
		t.Fatalf("row = %+v after %d sends, want done on attempt 2", r, len(sends))
	}
	if sends[0].ClientMessageID != "c-retry" || sends[1].ID != "c-retry" || sends[0].Ciphertext != sends[1].Ciphertext {
		t.Fatalf("retry changed the frame: %+v vs %+v", sends[0], sends[1])
	}
}

// Retryable refusals end in dead after MaxAttempts; a row older than
// MaxAge dies without being sent.
func TestDrainGivesUp(t *testing.T) {
	fb := startFakeBroker(t, func(n int, f SendFrame) any {
		return AckFrame{Type: frameAck, ID: f.ID, Error: "rate_limit: slow down"}
	})
	h := newTestHome(t)
	h.writeConfig(t, fakeMesh("fake", fb.url))
	td := startTestDaemon(t, h, func(o *DaemonOptions) {
		o.Drain = DrainTiming{AckTimeout: time.Minute, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond,
			MaxAttempts: 3, MaxAge: 24 * time.Hour}
	})
	td.waitLink(t, "fake", LinkOpen)
	out := ipcSend(t, td.client(""), map[string]any{"to": "*", "message": "never", "wait_ms": 10_000})
	waitFor(t, "the row to die", func() bool {
		r, err := td.outbox.get(context.Background(), out.ID)
		return err == nil && r.Status == outboxDead
	})
	r, _ := td.outbox.get(context.Background(), out.ID)
	if r.Attempts != 3 || !strings.HasPrefix(r.LastError, "max_attempts: rate_limit") {
		t.Fatalf("row = %+v, want dead after 3 attempts", r)
	}

	old := time.Now().Add(-25 * time.Hour).UnixMilli()
	seedOutboxRow(t, td.outbox, outboxRow{ID: "old", ClientMessageID: "c-old", Fingerprint: []byte{1}, Payload: []byte("x"),
		EnqueuedAt: old, NextAttemptAt: old, Status: outboxPending, Mesh: "fake", TargetSpec: "*", Nonce: "bg==", Ciphertext: "eA==", Priority: "next"})
	before := len(fb.sent())
	td.drain.Wake()
	waitFor(t, "the old row to expire", func() bool {
		r, err := td.outbox.get(context.Background(), "old")
		return err == nil && r.Status == outboxDead
	})
	if r, _ := td.outbox.get(context.Background(), "old"); !strings.HasPrefix(r.LastError, "expired") || len(fb.sent()) != before {
		t.Fatalf("old row = %+v, sends %d → %d", r, before, len(fb.sent()))
	}
}

// A session's rows leave only on its own link: while that link is down
// they wait (the member lane keeps going), and they go out, attributed to
// the session, once it is back.
func TestSessionRowsWaitForTheirLink(t *testing.T) {
	f := newMsgFixture(t, nil)
	a := registerTestSession(t, f.d1, f.me, "alice")
	streamB := subscribe(t, f.d2, "")
	owner := connectMember(t, f.url, f.me)
	if ack := owner.roundTrip(map[string]any{"type": frameKick, "target": a.pub()}); ack.str("type") != frameKickAck {
		t.Fatalf("kick = %v", ack)
	}
	waitFor(t, "alice's link kicked", func() bool { return f.d1.sessionLinkState(f.d1.sessions.Resolve(a.reg.Token)) == LinkKicked })

	held := ipcSend(t, a.cl, map[string]any{"to": f.bob.Pubkey, "message": "held for alice's link", "wait_ms": 5_000})
	if held.Status != "queued" {
		t.Fatalf("send from a session whose link is down = %+v, want queued", held)
	}
	sendAndSettle(t, f.d1.client(""), f.bob.Pubkey, "the member lane still runs")
	streamB.next(t, "the member's DM", messageWith("the member lane still runs"))
	waitFor(t, "the held row to say why it waits", func() bool {
		r, _ := f.d1.outbox.get(context.Background(), held.ID)
		return strings.Contains(r.LastError, "session")
	})
	if r, _ := f.d1.outbox.get(context.Background(), held.ID); r.Status != outboxPending || r.Attempts != 0 {
		t.Fatalf("held row = %+v, want pending with no attempts spent", r)
	}

	// The session registers again: its link opens and the row goes out,
	// sealed and attributed by the session.
	if err := f.d1.client("").RegisterSession(context.Background(), a.reg); err != nil {
		t.Fatal(err)
	}
	ev := eventData(streamB.next(t, "the held DM", messageWith("held for alice's link")))
	if ev["sender_pubkey"] != a.pub() {
		t.Fatalf("held DM sent as %v, want alice's session", ev["sender_pubkey"])
	}
}

// A member link the broker banned never reopens by itself, so its rows die
// with the ban as their reason instead of waiting out their seven days; a
// row held for a session link waits, since the session can register again.
func TestBannedMemberLinkKillsItsRows(t *testing.T) {
	f := newMsgFixture(t, nil)
	now := time.Now().UnixMilli()
	for _, r := range []outboxRow{
		// A retry due in an hour, and a row of a session whose link is gone.
		{ID: "retry", ClientMessageID: "c-retry", NextAttemptAt: now + time.Hour.Milliseconds()},
		{ID: "session", ClientMessageID: "c-session", NextAttemptAt: now, SenderSessionPubkey: mustNewKeypair().PublicHex()},
	} {
		r.Fingerprint, r.Payload, r.EnqueuedAt, r.Status = []byte{1}, []byte("x"), now, outboxPending
		r.Mesh, r.TargetSpec, r.Nonce, r.Ciphertext, r.Priority = "alpha", "*", "bg==", "eA==", "next"
		seedOutboxRow(t, f.d2.outbox, r)
	}
	f.d2.drain.Wake()
	waitFor(t, "the session row to say why it waits", func() bool {
		r, _ := f.d2.outbox.get(context.Background(), "session")
		return strings.HasPrefix(r.LastError, "waiting")
	})

	owner := connectMember(t, f.url, f.me)
	if ack := owner.roundTrip(map[string]any{"type": frameBan, "target": "bob"}); ack.str("type") != frameBanAck {
		t.Fatalf("ban = %v", ack)
	}
	f.d2.waitLink(t, "alpha", LinkBanned)
	waitFor(t, "the member row to die", func() bool {
		r, _ := f.d2.outbox.get(context.Background(), "retry")
		return r.Status == outboxDead
	})
	if r, _ := f.d2.outbox.get(context.Background(), "retry"); !strings.HasPrefix(r.LastError, "banned: ") || !strings.Contains(r.LastError, "alpha") {
		t.Fatalf("dead row's last_error = %q, want the ban named", r.LastError)
	}
	if r, _ := f.d2.outbox.get(context.Background(), "session"); r.Status != outboxPending {
		t.Fatalf("session row = %s, want pending", r.Status)
	}
}
