// Tests of what the daemon does with pushes: echo guards, the self-join
// filter, and message pushes reaching the sink.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The echo guards and the self-join filter, per link kind.
func TestClassifyPush(t *testing.T) {
	const (
		M  = "member"  // our member key
		S  = "session" // the session link's own key
		S2 = "sibling" // another session of ours
		X  = "other"   // someone else's member key
		XS = "othersess"
	)
	member := pushContext{Kind: linkMember, MemberPubkey: M, OwnSessions: map[string]bool{S: true, S2: true}}
	session := pushContext{Kind: linkSession, MemberPubkey: M, SessionPubkey: S}
	sys := func(event string) PushFrame {
		return PushFrame{Type: framePush, Subtype: subtypeSystem, Event: event, SenderPubkey: "system"}
	}
	cases := []struct {
		name string
		pc   pushContext
		push PushFrame
		ev   SystemEventData
		want pushAction
	}{
		{"member: a stranger's DM", member, PushFrame{SenderPubkey: X, SenderMemberPubkey: X}, SystemEventData{}, pushDeliver},
		{"member: a stranger's session DM", member, PushFrame{SenderPubkey: XS, SenderMemberPubkey: X}, SystemEventData{}, pushDeliver},
		{"member: our own member's message", member, PushFrame{SenderPubkey: M, SenderMemberPubkey: M}, SystemEventData{}, pushDropEcho},
		{"member: our message, sender key absent", member, PushFrame{SenderMemberPubkey: M}, SystemEventData{}, pushDropEcho},
		{"member: a sibling session's DM to the member", member, PushFrame{SenderPubkey: S2, SenderMemberPubkey: M}, SystemEventData{}, pushDeliver},
		{"member: drain push without senderMemberPubkey", member, PushFrame{SenderPubkey: X}, SystemEventData{}, pushDeliver},
		{"member: a stranger joins", member, sys(eventPeerJoined), SystemEventData{Pubkey: XS}, pushPublishSystem},
		{"member: our member joins", member, sys(eventPeerJoined), SystemEventData{Pubkey: M}, pushDropSelfEvent},
		{"member: our session joins", member, sys(eventPeerJoined), SystemEventData{Pubkey: S2}, pushDropSelfEvent},
		{"member: our session leaves", member, sys(eventPeerLeft), SystemEventData{Pubkey: S}, pushDropSelfEvent},
		{"member: event without a pubkey", member, sys(eventPeerVisible), SystemEventData{}, pushPublishSystem},
		{"session: any system push", session, sys(eventPeerJoined), SystemEventData{Pubkey: XS}, pushDropSystem},
		{"session: its own message", session, PushFrame{SenderPubkey: S, SenderMemberPubkey: M}, SystemEventData{}, pushDropEcho},
		{"session: a sibling's DM", session, PushFrame{SenderPubkey: S2, SenderMemberPubkey: M}, SystemEventData{}, pushDeliver},
		{"session: a stranger's DM", session, PushFrame{SenderPubkey: X, SenderMemberPubkey: X}, SystemEventData{}, pushDeliver},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := classifyPush(tc.pc, tc.push, tc.ev); got != tc.want {
				t.Fatalf("classifyPush = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSystemEventKind(t *testing.T) {
	for in, want := range map[string]string{eventPeerJoined: eventPeerJoin, eventPeerLeft: eventPeerLeave,
		eventPeerReturned: eventSystem, eventPeerVisible: eventSystem, "mcp_restored": eventSystem} {
		if got := systemEventKind(in); got != want {
			t.Errorf("systemEventKind(%q) = %q, want %q", in, got, want)
		}
	}
}

// recordingSink is a MessageSink that records and acks.
type recordingSink struct {
	got chan InboundMessage
}

func (s *recordingSink) HandleMessage(ctx context.Context, m InboundMessage) {
	_ = m.Frame.Reply(ctx, ClientAckFrame{Type: frameClientAck, ClientMessageID: m.Push.ClientMessageID, BrokerMessageID: m.Push.MessageID})
	s.got <- m
}

// Message pushes reach the sink with the right recipient and keys: a DM
// to the member arrives on the member link, a DM to a session key on that
// session's link.
func TestMessagePushesReachTheSink(t *testing.T) {
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha)
	sink := &recordingSink{got: make(chan InboundMessage, 8)}
	td := startTestDaemon(t, h, func(o *DaemonOptions) { o.Messages = sink })
	td.waitLink(t, "alpha", LinkOpen)
	reg, key := registration(t, fx.alpha, "A", os.Getpid())
	if err := td.client("").RegisterSession(context.Background(), reg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "session link open", func() bool { return td.sessionLinkState(td.sessions.Resolve(reg.Token)) == LinkOpen })

	bob := connectMember(t, fx.url, fx.bob)
	bobKey, _ := fx.bob.Keypair()
	for _, dm := range []struct{ to, text, id string }{{fx.alpha.Pubkey, "to the member", "c1"}, {key.PublicHex(), "to the session", "c2"}} {
		nonce, ct, err := sealDM([]byte(dm.text), dm.to, bobKey)
		if err != nil {
			t.Fatal(err)
		}
		bob.sendJSON(SendFrame{Type: frameSend, ID: dm.id, ClientMessageID: dm.id, TargetSpec: dm.to, Priority: priorityNext, Nonce: nonce, Ciphertext: ct})
		bob.expect(frameAck, func(f frame) bool { return f.str("id") == dm.id })
	}
	seen := map[string]InboundMessage{}
	for len(seen) < 2 {
		select {
		case m := <-sink.got:
			seen[m.Push.ClientMessageID] = m
		case <-timeAfterTestWait():
			t.Fatalf("sink got %d of 2 messages", len(seen))
		}
	}
	if m := seen["c1"]; m.RecipientKind != recipientMember || m.RecipientPubkey != fx.alpha.Pubkey || len(m.Keys) != 1 {
		t.Errorf("member DM arrived as %s/%s with %d keys", m.RecipientKind, m.RecipientPubkey, len(m.Keys))
	}
	if m := seen["c2"]; m.RecipientKind != recipientSession || m.RecipientPubkey != key.PublicHex() || len(m.Keys) != 2 ||
		m.Keys[0].PublicHex() != key.PublicHex() {
		t.Errorf("session DM arrived as %s/%s with %d keys", m.RecipientKind, m.RecipientPubkey, len(m.Keys))
	}
	for _, m := range seen {
		if _, err := openDM(m.Push.Nonce, m.Push.Ciphertext, m.Push.SenderPubkey, m.Keys[0]); err != nil {
			t.Errorf("%s does not decrypt with the first key: %v", m.Push.ClientMessageID, err)
		}
	}
}

func timeAfterTestWait() <-chan time.Time { return time.After(testWait) }

// A message that comes back to its sender — a session's DM to its own key,
// a member's DM to its own member key — is dropped by the echo guard yet
// acked, so the broker stops redelivering it: no inbox row, no event,
// nothing left undelivered. The daemon's IPC refuses a session's send to
// itself, so that echo is sent on the session's link directly, as another
// client (a claudemesh daemon, a cold-path CLI) could.
func TestDroppedEchoesAreAcked(t *testing.T) {
	f := newMsgFixture(t, nil)
	alice := registerTestSession(t, f.d1, f.me, "alice")
	stream := subscribe(t, f.d1, "")
	selfSend := func(t *testing.T) {
		nonce, ct, err := sealDM([]byte("echo: a session to itself"), alice.pub(), alice.key)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		defer cancel()
		ack, err := f.d1.SessionLinkByPubkey(alice.pub()).Send(ctx, SendFrame{Type: frameSend, ID: "echo-self",
			ClientMessageID: "echo-self", TargetSpec: alice.pub(), Priority: priorityNext, Nonce: nonce, Ciphertext: ct})
		if err != nil || ack.Error != "" {
			t.Fatalf("send on the session link = %+v, %v", ack, err)
		}
	}
	if err := alice.cl.Do(context.Background(), "POST", "/v1/send", map[string]any{"to": alice.pub(), "message": "x"}, nil); err == nil ||
		!strings.Contains(err.Error(), "to_self") {
		t.Fatalf("IPC send from a session to itself = %v, want a to_self refusal", err)
	}
	for _, c := range []struct {
		name string
		send func(t *testing.T)
		to   string
	}{
		{"a session to itself", selfSend, alice.pub()},
		{"a member to itself", func(t *testing.T) { sendAndSettle(t, f.d1.client(""), f.me.Pubkey, "echo: a member to itself") }, f.me.Pubkey},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.send(t)
			waitFor(t, "the echo acked", func() bool { return pendingFor(t, f.broker, f.me.MeshID, c.to) == 0 })
		})
	}
	// A marker from bob is the first message event: no echo was published.
	sendAndSettle(t, f.d2.client(""), f.me.Pubkey, "marker")
	if ev := stream.next(t, "a message event", func(ev DaemonEvent) bool { return ev.Kind == eventMessage }); eventData(ev)["body"] != "marker" {
		t.Fatalf("first message event = %v, want bob's marker", eventData(ev))
	}
	if items := inboxItems(t, f.d1.client("")); len(items) != 1 || *items[0].Body != "marker" {
		t.Fatalf("inbox = %q, want only the marker", bodies(items))
	}
}

// pushedTwiceFixture is one daemon on a broker that, like claudemesh's,
// pushes a broadcast to the member's daemon link and to each of its session
// links alike.
type pushedTwiceFixture struct {
	fb          *fakeBroker
	td          *testDaemon
	mesh        Mesh
	a, b        testSession
	streams     map[string]*sseCollector // by session name
	linkOf      map[string]*fakeConn     // "member", "A", "B"
	sender      Keypair
	sentinelSeq int
}

func newPushedTwiceFixture(t *testing.T) *pushedTwiceFixture {
	fb, m, td := startFakeBrokerDaemon(t)
	f := &pushedTwiceFixture{fb: fb, td: td, mesh: m, sender: mustNewKeypair()}
	f.a, f.b = registerTestSession(t, td, m, "A"), registerTestSession(t, td, m, "B")
	f.streams = map[string]*sseCollector{"A": subscribe(t, td, f.a.reg.Token), "B": subscribe(t, td, f.b.reg.Token)}
	f.linkOf = map[string]*fakeConn{"member": fb.conn(t, m.Pubkey), "A": fb.conn(t, f.a.pub()), "B": fb.conn(t, f.b.pub())}
	return f
}

// seen pushes a sentinel on the member link and returns how many message
// events each session got for text before it: events are published in the
// order pushes are handled, so nothing for text can come after it.
func (f *pushedTwiceFixture) seen(t *testing.T, text string) map[string]int {
	t.Helper()
	f.sentinelSeq++
	sentinel := fmt.Sprintf("sentinel %d", f.sentinelSeq)
	nonce, ct := plainBody([]byte(sentinel))
	id := "sentinel-" + strconv.Itoa(f.sentinelSeq)
	f.fb.push(t, f.linkOf["member"], PushFrame{Type: framePush, MessageID: id, MeshID: f.mesh.MeshID, SenderPubkey: f.sender.PublicHex(),
		SenderMemberPubkey: f.sender.PublicHex(), SenderName: "zed", Priority: priorityNext, Nonce: nonce, Ciphertext: ct})
	counts := map[string]int{}
	for name, s := range f.streams {
		s.next(t, sentinel+" on "+name, func(ev DaemonEvent) bool {
			if ev.Kind == eventMessage && eventData(ev)["body"] == text {
				counts[name]++
			}
			return ev.Kind == eventMessage && eventData(ev)["body"] == sentinel
		})
	}
	return counts
}

// A broker that pushes one broadcast (or one DM to the member key) to the
// member link and to every session link: each session sees it once, on its
// event stream and in its inbox, whichever link's copy arrives first.
func TestPushesOfOneMessageOnSeveralLinksShowOnce(t *testing.T) {
	f := newPushedTwiceFixture(t)
	member, _ := f.mesh.Keypair()
	cases := []struct {
		name  string
		dm    bool // sealed to the member key, else a broadcast body
		links []string
	}{
		{"broadcast, member link first", false, []string{"member", "A", "B"}},
		{"broadcast, a session link first", false, []string{"A", "member", "B"}},
		{"broadcast, sessions only", false, []string{"B", "A"}},
		{"DM to the member on a session link, then on the member link", true, []string{"A", "member"}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			text := fmt.Sprintf("message %d", i)
			// As claudemesh's fan-out builds it: no client_message_id, no targetSpec.
			push := PushFrame{Type: framePush, MessageID: fmt.Sprintf("q%d", i), MeshID: f.mesh.MeshID, SenderPubkey: f.sender.PublicHex(),
				SenderMemberPubkey: f.sender.PublicHex(), SenderName: "zed", Priority: priorityNext, CreatedAt: isoTime(time.Now())}
			if tc.dm {
				var err error
				if push.Nonce, push.Ciphertext, err = sealDM([]byte(text), member.PublicHex(), f.sender); err != nil {
					t.Fatal(err)
				}
			} else {
				push.Nonce, push.Ciphertext = plainBody([]byte(text))
			}
			for _, l := range tc.links {
				f.fb.push(t, f.linkOf[l], push)
			}
			f.fb.waitAcks(t, push.MessageID, len(tc.links))
			if got := f.seen(t, text); got["A"] != 1 || got["B"] != 1 {
				t.Fatalf("message events per session = %v, want one each", got)
			}
			for _, s := range []testSession{f.a, f.b} {
				if n := countBody(inboxItems(t, s.cl), text); n != 1 {
					t.Fatalf("%s's inbox has %d rows of it, want 1", s.reg.DisplayName, n)
				}
			}
		})
	}
}

// A push drained from a broker's queue may carry only the sender's key: the
// daemon names the sender from the broker's peer list, or from its own
// sessions, before storing it; a key nobody can name keeps its short form.
func TestPushWithoutSenderNameIsNamed(t *testing.T) {
	f := newPushedTwiceFixture(t)
	zedMember, zedSession, stranger := mustNewKeypair(), mustNewKeypair(), mustNewKeypair()
	f.fb.setPeers(PeerRow{Pubkey: zedSession.PublicHex(), MemberPubkey: zedMember.PublicHex(), DisplayName: "zed", PeerRole: peerRoleSession})
	cases := []struct {
		name, link       string
		from             Keypair
		wantName, member string
	}{
		{"a peer's session, from the peer list", "member", zedSession, "zed", zedMember.PublicHex()},
		{"a sibling session of this daemon", "A", f.b.key, "B", f.mesh.Pubkey},
		{"a key nobody knows", "member", stranger, shortID(stranger.PublicHex()), ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			text := fmt.Sprintf("drained %d", i)
			nonce, ct := plainBody([]byte(text))
			// As claudemesh's queue drain builds it: no senderName, no senderMemberPubkey.
			f.fb.push(t, f.linkOf[tc.link], PushFrame{Type: framePush, MessageID: fmt.Sprintf("d%d", i), MeshID: f.mesh.MeshID,
				SenderPubkey: tc.from.PublicHex(), Priority: priorityNext, Nonce: nonce, Ciphertext: ct, ClientMessageID: fmt.Sprintf("dc%d", i)})
			ev := eventData(f.streams["A"].next(t, text, messageWith(text)))
			if ev["sender_name"] != tc.wantName || (tc.member != "" && ev["sender_member_pubkey"] != tc.member) {
				t.Fatalf("event names the sender %v (member %v), want %q (%.8s)", ev["sender_name"], ev["sender_member_pubkey"], tc.wantName, tc.member)
			}
			items := inboxItems(t, f.a.cl)
			for _, it := range items {
				if it.Body != nil && *it.Body == text && it.SenderName != tc.wantName {
					t.Fatalf("inbox row names the sender %q, want %q", it.SenderName, tc.wantName)
				}
			}
		})
	}
}
