// Tests of what the daemon does with pushes: echo guards, the self-join
// filter, and message pushes reaching the sink.
package main

import (
	"context"
	"os"
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
