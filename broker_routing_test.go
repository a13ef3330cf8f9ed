// Tests of routing and delivery: offline queues, leases and re-pushes,
// duplicates, fan-out, restarts, rate and size limits, priority gating.
package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestBrokerOfflineSessionDMDeliveredOnReconnect(t *testing.T) {
	forEachStore(t, testBrokerOfflineSessionDMDeliveredOnReconnect)
}

func testBrokerOfflineSessionDMDeliveredOnReconnect(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	a := connectMember(t, url, owner)
	sess := mustNewKeypair()
	s := connectSession(t, url, bob, sess, "bob-1")
	s.ws.Close(websocket.StatusNormalClosure, "going")

	// Even after the grace window the key is known: the DM queues.
	b.mu.Lock()
	for _, p := range b.rooms[owner.MeshID].peers {
		if p.key == sess.PublicHex() {
			b.removePeer(p, 0, "", true)
		}
	}
	b.mu.Unlock()
	ack := a.sendText(sess.PublicHex(), "while you were out", "c-1")
	if ack["queued"] != true || ack["error"] != nil {
		t.Fatalf("ack = %v", ack)
	}
	s2 := connectSession(t, url, bob, sess, "bob-1")
	push := s2.expectPush("while you were out")
	if push.str("client_message_id") != "c-1" || push.str("senderMemberPubkey") != owner.Pubkey || push.str("senderName") != "alice" {
		t.Fatalf("drained push lacks fields: %v", push)
	}
}

func TestBrokerUnknownTargetRefused(t *testing.T) { forEachStore(t, testBrokerUnknownTargetRefused) }

func testBrokerUnknownTargetRefused(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	a := connectMember(t, url, owner)
	ack := a.sendText(mustNewKeypair().PublicHex(), "anyone?", "")
	if ack["queued"] != false || !strings.HasPrefix(ack.str("error"), codeUnknownTarget+": ") || ack.str("messageId") != "" {
		t.Fatalf("ack = %v", ack)
	}
	ack = a.sendText("bob", "by name", "")
	if !strings.HasPrefix(ack.str("error"), codeInvalid+": ") {
		t.Fatalf("ack for a display-name target = %v", ack)
	}
}

func TestBrokerRepushAfterLeaseWithoutAck(t *testing.T) {
	forEachStore(t, testBrokerRepushAfterLeaseWithoutAck)
}

func testBrokerRepushAfterLeaseWithoutAck(t *testing.T) {
	b, url := startTestBrokerWith(t, BrokerOptions{Lease: 50 * time.Millisecond, SweepInterval: 10 * time.Millisecond})
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	a := connectMember(t, url, owner)
	bc := connectMember(t, url, bob)
	ack := a.sendText(bob.Pubkey, "ack me", "c-lease")
	first := bc.expectPush("ack me")
	second := bc.expectPush("ack me")
	if first.str("messageId") != ack.str("messageId") || second.str("messageId") != ack.str("messageId") {
		t.Fatalf("re-push ids %s, %s; want %s", first.str("messageId"), second.str("messageId"), ack.str("messageId"))
	}
	bc.ackPush(second)
	waitFor(t, "delivered", func() bool {
		n, _ := b.store.CountPendingDeliveries(context.Background(), time.Now())
		return n == 0
	})
}

func TestBrokerClosedConnectionReleasesLeases(t *testing.T) {
	forEachStore(t, testBrokerClosedConnectionReleasesLeases)
}

func testBrokerClosedConnectionReleasesLeases(t *testing.T) {
	// A lease far longer than the test: only the release can explain a re-push.
	b, url := startTestBrokerWith(t, BrokerOptions{Lease: time.Hour})
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	a := connectMember(t, url, owner)
	sess := mustNewKeypair()
	s := connectSession(t, url, bob, sess, "bob-1")
	a.sendText(sess.PublicHex(), "unacked", "")
	s.expectPush("unacked")
	s.ws.Close(websocket.StatusNormalClosure, "crash")
	s2 := connectSession(t, url, bob, sess, "bob-1")
	s2.expectPush("unacked")
}

func TestBrokerDuplicateClientMessageID(t *testing.T) {
	forEachStore(t, testBrokerDuplicateClientMessageID)
}

func testBrokerDuplicateClientMessageID(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	a := connectMember(t, url, owner)
	bc := connectMember(t, url, bob)
	first := a.sendText(bob.Pubkey, "once", "dup-1")
	second := a.sendText(bob.Pubkey, "once", "dup-1")
	if first.str("messageId") == "" || second.str("messageId") != first.str("messageId") || second["queued"] != true {
		t.Fatalf("acks = %v / %v", first, second)
	}
	push := bc.expectPush("once")
	bc.ackPush(push)
	// A marker proves nothing else was queued for bob before it.
	a.sendText(bob.Pubkey, "marker", "m-1")
	if next := bc.expect(framePush, func(f frame) bool { return f.str("subtype") == "" }); pushText(next) != "marker" {
		t.Fatalf("after the duplicate bob got %q, want the marker", pushText(next))
	}
	if got := b.metrics.accepted.Load(); got != 2 {
		t.Fatalf("accepted = %d, want 2 (one message plus the marker)", got)
	}
}

// Broadcasts reach every connection but the sender's and its own daemon's:
// the sender's sibling sessions too; a member's daemon (control-plane) only
// when none of its sessions is reached, so no session sees one twice.
func TestBrokerBroadcastAndGroupFanOut(t *testing.T) {
	forEachStore(t, testBrokerBroadcastAndGroupFanOut)
}

func testBrokerBroadcastAndGroupFanOut(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	carol := addTestMember(t, b, owner, "carol", roleMember)
	aMember := connectMember(t, url, owner)
	siblingKey := mustNewKeypair()
	aSibling := connectSession(t, url, owner, siblingKey, "alice-2")
	senderKey := mustNewKeypair()
	aSender := connectSession(t, url, owner, senderKey, "alice-1")
	bMember := connectMember(t, url, bob)
	bSess, _ := connectSessionIn(t, url, bob, "bob-1", GroupRef{Name: "eng/backend"})
	cMember := connectMember(t, url, carol)

	for _, tc := range []struct {
		target  string
		reached []*testClient
	}{
		// bob's session gets its copy and his daemon none; carol has no
		// session, so her daemon gets hers.
		{"*", []*testClient{aSibling, bSess, cMember}},
		{"@all", []*testClient{aSibling, bSess, cMember}},
		{"@eng", []*testClient{bSess}},
		{"@eng/backend", []*testClient{bSess}},
	} {
		t.Run(tc.target, func(t *testing.T) {
			text := "to " + tc.target
			if ack := aSender.sendText(tc.target, text, ""); ack["queued"] != true {
				t.Fatalf("ack = %v", ack)
			}
			for _, r := range tc.reached {
				r.ackPush(r.expectPush(text))
			}
		})
	}
	// The sender's own daemon never gets its broadcasts, nor does the
	// sender: a DM marker sent after them is the first thing each sees.
	aSender.sendText(owner.Pubkey, "marker", "")
	if f := aMember.expect(framePush, func(f frame) bool { return f.str("subtype") == "" }); pushText(f) != "marker" {
		t.Fatalf("the sender's own daemon got %q", pushText(f))
	}
	aSibling.sendText(senderKey.PublicHex(), "sender marker", "")
	if f := aSender.expect(framePush, func(f frame) bool { return f.str("subtype") == "" }); pushText(f) != "sender marker" {
		t.Fatalf("the sender got %q back", pushText(f))
	}
	// A broadcast from the member itself (a CLI outside any session)
	// reaches its sessions, not its daemon.
	if ack := aMember.sendText("*", "from the member", ""); ack["queued"] != true {
		t.Fatalf("ack = %v", ack)
	}
	for _, r := range []*testClient{aSender, aSibling, bSess, cMember} {
		r.ackPush(r.expectPush("from the member"))
	}
	// bob's daemon stood back for his session: a DM marker is the first
	// message it sees.
	aSender.sendText(bob.Pubkey, "bob marker", "")
	if f := bMember.expect(framePush, func(f frame) bool { return f.str("subtype") == "" }); pushText(f) != "bob marker" {
		t.Fatalf("bob's daemon got %q, want only the marker", pushText(f))
	}
	// carol is in no group: the marker comes before any group message.
	aSender.sendText(carol.Pubkey, "carol marker", "")
	got := []string{}
	for {
		f := cMember.expect(framePush, func(f frame) bool { return f.str("subtype") == "" })
		got = append(got, pushText(f))
		if pushText(f) == "carol marker" {
			break
		}
	}
	if strings.Contains(strings.Join(got, ","), "@eng") {
		t.Fatalf("carol got group messages: %v", got)
	}
}

func TestBrokerRestartLosesNoQueuedMessage(t *testing.T) {
	forEachStore(t, testBrokerRestartLosesNoQueuedMessage)
}

func testBrokerRestartLosesNoQueuedMessage(t *testing.T) {
	store := newTestStore(t)
	b, url := startTestBrokerWith(t, store)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	sess := mustNewKeypair()
	s := connectSession(t, url, bob, sess, "bob-1")
	s.ws.Close(websocket.StatusNormalClosure, "away")
	a := connectMember(t, url, owner)
	for i, text := range []string{"one", "two", "three"} {
		target := bob.Pubkey
		if i == 1 {
			target = sess.PublicHex()
		}
		if ack := a.sendText(target, text, ""); ack["queued"] != true {
			t.Fatalf("ack = %v", ack)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b2, url2 := startTestBrokerWith(t, store)
	bob.BrokerURL = url2
	bm := connectMember(t, url2, bob)
	bm.ackPush(bm.expectPush("one"))
	bm.ackPush(bm.expectPush("three"))
	s2 := connectSession(t, url2, bob, sess, "bob-1")
	s2.ackPush(s2.expectPush("two"))
	waitFor(t, "all delivered", func() bool {
		n, _ := b2.store.CountPendingDeliveries(context.Background(), time.Now())
		return n == 0
	})
}

func TestBrokerSendRateLimitAndSize(t *testing.T) { forEachStore(t, testBrokerSendRateLimitAndSize) }

func testBrokerSendRateLimitAndSize(t *testing.T) {
	b, url := startTestBrokerWith(t, BrokerOptions{SendBurst: 3, SendPerMinute: 1, MaxMessageBytes: 1024})
	owner := newTestMesh(t, b, url, "team", "alice")
	a := connectMember(t, url, owner)
	for i := 0; i < 3; i++ {
		if ack := a.sendText("*", "hi", ""); ack["queued"] != true {
			t.Fatalf("send %d: %v", i, ack)
		}
	}
	ack := a.sendText("*", "hi", "")
	if !strings.HasPrefix(ack.str("error"), "rate_limit: max 1 msg/min (burst 3)") {
		t.Fatalf("4th send ack = %v", ack)
	}
	// The bucket is the member's: its session shares it, another member
	// has its own, and a duplicate costs nothing.
	if ack := connectSession(t, url, owner, mustNewKeypair(), "alice-1").sendText("*", "hi", ""); !strings.HasPrefix(ack.str("error"), codeRateLimit+": ") {
		t.Fatalf("the member's session send ack = %v, want rate_limit", ack)
	}
	bob := connectMember(t, url, addTestMember(t, b, owner, "bob", roleMember))
	first := bob.sendText("*", "once", "dup")
	for i := 0; i < 3; i++ {
		if ack := bob.sendText("*", "once", "dup"); ack.str("messageId") != first.str("messageId") || ack["queued"] != true {
			t.Fatalf("bob's duplicate %d = %v", i, ack)
		}
	}
	if ack := bob.sendText("*", "second", ""); ack["queued"] != true {
		t.Fatalf("bob's second message = %v: duplicates were charged", ack)
	}
	ack = a.sendText("*", strings.Repeat("x", 2000), "")
	if !strings.HasPrefix(ack.str("error"), codePayloadTooLarge+": ") {
		t.Fatalf("oversize send ack = %v", ack)
	}
	a.sendJSON(map[string]any{"type": frameSend, "ciphertext": strings.Repeat("x", 1024+defaultFrameEnvelopeBytes+10)})
	if code, _ := a.expectClose(); code != websocket.StatusMessageTooBig {
		t.Fatalf("oversize frame closed with %d, want 1009", code)
	}
}

func TestBrokerGraceReattachIsSilent(t *testing.T) { forEachStore(t, testBrokerGraceReattachIsSilent) }

func testBrokerGraceReattachIsSilent(t *testing.T) {
	b, url := startTestBrokerWith(t, BrokerOptions{Grace: time.Hour})
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	a := connectMember(t, url, owner)
	b1 := dialTestClient(t, url)
	b1.hello(bob, "daemon-bob")
	a.expect(framePush, func(f frame) bool { return f.str("event") == eventPeerJoined })
	b1.ws.Close(websocket.StatusNormalClosure, "flap")
	// In grace: still listed, DMs still accepted.
	waitFor(t, "bob offline", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.rooms[owner.MeshID].liveCount() == 1
	})
	if names := strings.Join(peersOf(a), ","); !strings.Contains(names, "bob") {
		t.Fatalf("peers during grace = %s", names)
	}
	a.sendText(bob.Pubkey, "during grace", "")
	a.sendText("*", "broadcast during grace", "") // claudemesh lost these
	b2 := dialTestClient(t, url)
	b2.hello(bob, "daemon-bob")
	b2.expectPush("during grace")
	b2.expectPush("broadcast during grace")
	// No peer_joined for the reattach: the next system event alice sees is
	// the one a marker session causes.
	connectSession(t, url, bob, mustNewKeypair(), "marker")
	ev := a.expect(framePush, func(f frame) bool { return f.str("subtype") == subtypeSystem })
	if ev.str("event") != eventPeerJoined || ev["eventData"].(map[string]any)["name"] != "marker" {
		t.Fatalf("first system event after reattach = %v", ev)
	}

	// After the grace window, peer_left.
	b3 := connectSession(t, url, bob, mustNewKeypair(), "short")
	p := findPeer(b, owner.MeshID, func(o *peer) bool { return o.displayName == "short" })
	b3.ws.Close(websocket.StatusNormalClosure, "bye")
	waitOffline(t, b, p)
	b.expireGrace(p)
	left := a.expect(framePush, func(f frame) bool { return f.str("event") == eventPeerLeft })
	if left["eventData"].(map[string]any)["name"] != "short" {
		t.Fatalf("peer_left = %v", left)
	}
}

// A client that closes normally saying it leaves ends its presence at once:
// peer_left goes out, the key is gone from peers_list, and nothing waits out
// the grace. Any other close keeps it listed, not connected, for the grace.
func TestBrokerLeaveEndsPresenceAtOnce(t *testing.T) {
	forEachStore(t, testBrokerLeaveEndsPresenceAtOnce)
}

func testBrokerLeaveEndsPresenceAtOnce(t *testing.T) {
	b, url := startTestBrokerWith(t, BrokerOptions{Grace: time.Hour})
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	a := connectMember(t, url, owner)
	cases := []struct {
		name, reason string
		code         websocket.StatusCode
		leaves       bool
	}{
		{"normal close saying leave", closeReasonLeave, websocket.StatusNormalClosure, true},
		{"normal close with another reason", "flap", websocket.StatusNormalClosure, false},
		{"going away saying leave", closeReasonLeave, websocket.StatusGoingAway, false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("s%d", i)
			key := mustNewKeypair()
			s := connectSession(t, url, bob, key, name)
			a.expect(framePush, func(f frame) bool {
				return f.str("event") == eventPeerJoined && f["eventData"].(map[string]any)["name"] == name
			})
			p := findPeer(b, owner.MeshID, func(o *peer) bool { return o.displayName == name })
			s.ws.Close(tc.code, tc.reason)
			waitOffline(t, b, p)
			rows := a.roundTrip(map[string]any{"type": frameListPeers})["peers"].([]any)
			var row map[string]any
			for _, r := range rows {
				if r.(map[string]any)["pubkey"] == key.PublicHex() {
					row = r.(map[string]any)
				}
			}
			if tc.leaves {
				left := a.expect(framePush, func(f frame) bool { return f.str("event") == eventPeerLeft })
				if left["eventData"].(map[string]any)["pubkey"] != key.PublicHex() || row != nil {
					t.Fatalf("after a leave: peer_left %v, row %v", left, row)
				}
				return
			}
			if row == nil || row["connected"] != false {
				t.Fatalf("in its grace the row is %v, want listed with connected false", row)
			}
		})
	}
}

func TestLeftOnPurpose(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"leave", websocket.CloseError{Code: websocket.StatusNormalClosure, Reason: closeReasonLeave}, true},
		{"wrapped leave", fmt.Errorf("read: %w", websocket.CloseError{Code: websocket.StatusNormalClosure, Reason: closeReasonLeave}), true},
		{"normal close without a reason", websocket.CloseError{Code: websocket.StatusNormalClosure}, false},
		{"policy close saying leave", websocket.CloseError{Code: websocket.StatusPolicyViolation, Reason: closeReasonLeave}, false},
		{"a dropped socket", io.EOF, false},
	}
	for _, tc := range cases {
		if got := leftOnPurpose(tc.err); got != tc.want {
			t.Errorf("leftOnPurpose(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// fullSend sends text with every optional field set and returns the frame
// and its ack.
func (tc *testClient) fullSend(target, text, priority string) (SendFrame, frame) {
	tc.t.Helper()
	nonce, ct := plainBody([]byte(text))
	id := newUUID()
	f := SendFrame{Type: frameSend, ID: id, ClientMessageID: id, RequestFingerprint: "fp-" + id[:8], TargetSpec: target,
		Priority: priority, Nonce: nonce, Ciphertext: ct, ReplyToID: "reply-" + id[:4], Subtype: "reminder"}
	tc.sendJSON(f)
	ack := tc.expect(frameAck, func(a frame) bool { return a.str("id") == id })
	if ack["queued"] != true {
		tc.t.Fatalf("send %q: ack = %v", text, ack)
	}
	return f, ack
}

// checkFullPush checks that a push carries every field of the send it
// delivers, whichever path it took.
func checkFullPush(t *testing.T, push frame, sent SendFrame, ack frame, meshID, senderKey, senderMember, senderName string) {
	t.Helper()
	want := map[string]string{"messageId": ack.str("messageId"), "meshId": meshID, "senderPubkey": senderKey,
		"senderMemberPubkey": senderMember, "senderName": senderName, "priority": sent.Priority, "nonce": sent.Nonce,
		"ciphertext": sent.Ciphertext, "client_message_id": sent.ClientMessageID, "request_fingerprint": sent.RequestFingerprint,
		"replyToId": sent.ReplyToID, "subtype": sent.Subtype}
	if topic, ok := strings.CutPrefix(sent.TargetSpec, "#"); ok {
		want["topic"] = topic
	}
	for k, v := range want {
		if push.str(k) != v {
			t.Errorf("push[%s] = %q, want %q (push %v)", k, push.str(k), v, push)
		}
	}
	if _, err := time.Parse(time.RFC3339, push.str("createdAt")); err != nil {
		t.Errorf("push createdAt = %q", push.str("createdAt"))
	}
}

// Every push carries the full field set whichever way it reached the
// recipient: at send time, re-pushed after its lease, fanned out to a
// broadcast or a topic, drained when an offline key connects, released when
// a busy recipient is idle again, or drained by a restarted broker.
func TestBrokerEveryPushCarriesTheFullFieldSet(t *testing.T) {
	forEachStore(t, testBrokerEveryPushCarriesTheFullFieldSet)
}

func testBrokerEveryPushCarriesTheFullFieldSet(t *testing.T) {
	opts := newTestStore(t)
	opts.Lease, opts.SweepInterval, opts.Grace = 100*time.Millisecond, 20*time.Millisecond, time.Hour
	b, url, owner, bob, aMember := newAliceBobMesh(t, opts)
	aliceKey := mustNewKeypair()
	aSess := connectSession(t, url, owner, aliceKey, "alice-1")
	bMember := connectMember(t, url, bob)
	bobKey := mustNewKeypair()
	fromSession := func(push frame, sent SendFrame, ack frame) {
		t.Helper()
		checkFullPush(t, push, sent, ack, owner.MeshID, aliceKey.PublicHex(), owner.Pubkey, "alice-1")
	}
	fromMember := func(push frame, sent SendFrame, ack frame) {
		t.Helper()
		checkFullPush(t, push, sent, ack, owner.MeshID, owner.Pubkey, owner.Pubkey, "alice")
	}
	body := func(sent SendFrame) string { raw, _ := unb64(sent.Ciphertext); return string(raw) }

	t.Run("at send time", func(t *testing.T) {
		sent, ack := aSess.fullSend(bob.Pubkey, "live", priorityNow)
		push := bMember.expectPush(body(sent))
		fromSession(push, sent, ack)
		bMember.ackPush(push)
	})
	t.Run("re-pushed after its lease", func(t *testing.T) {
		sent, ack := aMember.fullSend(bob.Pubkey, "lease", priorityNext)
		bMember.expectPush(body(sent)) // not acked
		push := bMember.expectPush(body(sent))
		fromMember(push, sent, ack)
		bMember.ackPush(push)
	})
	t.Run("broadcast", func(t *testing.T) {
		sent, ack := aSess.fullSend("*", "to everyone", priorityLow)
		push := bMember.expectPush(body(sent))
		fromSession(push, sent, ack)
		bMember.ackPush(push)
	})
	t.Run("topic", func(t *testing.T) {
		sent, ack := aSess.fullSend("#news", "on the topic", priorityNext)
		push := bMember.expectPush(body(sent))
		fromSession(push, sent, ack)
		bMember.ackPush(push)
	})
	t.Run("drained when an offline key connects", func(t *testing.T) {
		s := connectSession(t, url, bob, bobKey, "bob-1")
		p := findPeer(b, owner.MeshID, func(p *peer) bool { return p.key == bobKey.PublicHex() })
		s.ws.Close(websocket.StatusNormalClosure, "away")
		waitOffline(t, b, p)
		sent, ack := aSess.fullSend(bobKey.PublicHex(), "while away", priorityNext)
		s2 := connectSession(t, url, bob, bobKey, "bob-1")
		push := s2.expectPush(body(sent))
		fromSession(push, sent, ack)
		s2.ackPush(push)
	})
	t.Run("released when the recipient is idle again", func(t *testing.T) {
		bMember.roundTrip(map[string]any{"type": frameSetStatus, "status": statusDND})
		sent, ack := aMember.fullSend(bob.Pubkey, "held", priorityLow)
		bMember.roundTrip(map[string]any{"type": frameSetStatus, "status": statusIdle})
		push := bMember.expectPush(body(sent))
		fromMember(push, sent, ack)
		bMember.ackPush(push)
	})
	t.Run("drained by a restarted broker", func(t *testing.T) {
		bMember.ws.Close(websocket.StatusNormalClosure, "away")
		sent, ack := aSess.fullSend(bob.Pubkey, "across a restart", priorityNext)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		b2, url2 := startTestBrokerWith(t, opts)
		bob.BrokerURL = url2
		bm := connectMember(t, url2, bob)
		push := bm.expectPush(body(sent))
		fromSession(push, sent, ack)
		bm.ackPush(push)
		waitFor(t, "delivered", func() bool { return pendingFor(t, b2, owner.MeshID, bob.Pubkey) == 0 })
	})
}

// Priority gating by status: working and dnd recipients get only `now`
// messages — DMs, broadcasts and group messages alike — and what was held
// is pushed when the status returns to idle.
func TestBrokerPriorityGatingTruthTable(t *testing.T) {
	forEachStore(t, testBrokerPriorityGatingTruthTable)
}

func testBrokerPriorityGatingTruthTable(t *testing.T) {
	for _, status := range []string{statusIdle, statusWorking, statusDND} {
		for _, priority := range []string{priorityNow, priorityNext, priorityLow} {
			want := status != statusIdle && priority != priorityNow
			if got := held(status, priority); got != want {
				t.Errorf("held(%s, %s) = %v, want %v", status, priority, got, want)
			}
		}
	}

	_, url, _, bob, a := newAliceBobMesh(t, msgBrokerOptions())
	bc, bobKey := connectSessionIn(t, url, bob, "bob-1", GroupRef{Name: "ops"})
	send := func(target, text, priority string) {
		nonce, ct := plainBody([]byte(text))
		id := newUUID()
		a.sendJSON(SendFrame{Type: frameSend, ID: id, TargetSpec: target, Priority: priority, Nonce: nonce, Ciphertext: ct})
		if ack := a.expect(frameAck, func(f frame) bool { return f.str("id") == id }); ack["queued"] != true {
			t.Fatalf("ack = %v", ack)
		}
	}
	nextPush := func() string {
		f := bc.expect(framePush, func(f frame) bool { return f.str("subtype") != subtypeSystem })
		bc.ackPush(f)
		return pushText(f)
	}
	for _, status := range []string{statusWorking, statusDND} {
		for _, target := range []string{bobKey, "*", "@ops"} {
			bc.roundTrip(map[string]any{"type": frameSetStatus, "status": status})
			send(target, status+" next", priorityNext)
			send(target, status+" low", priorityLow)
			send(target, status+" now", priorityNow)
			if got := nextPush(); got != status+" now" {
				t.Fatalf("%s: a %s recipient got %q first, want only the now message", target, status, got)
			}
			// Another busy status holds them still; idle releases them, oldest first.
			other := map[string]string{statusWorking: statusDND, statusDND: statusWorking}[status]
			bc.roundTrip(map[string]any{"type": frameSetStatus, "status": other})
			send(target, status+" marker", priorityNow)
			if got := nextPush(); got != status+" marker" {
				t.Fatalf("%s: after %s → %s the recipient got %q, want the marker", target, status, other, got)
			}
			bc.roundTrip(map[string]any{"type": frameSetStatus, "status": statusIdle})
			if got := nextPush(); got != status+" next" {
				t.Fatalf("%s: idle again: got %q first, want the next message", target, got)
			}
			if got := nextPush(); got != status+" low" {
				t.Fatalf("%s: idle again: got %q second, want the low message", target, got)
			}
		}
	}
}

// A daemon that restarts comes back under a new sessionId, so its old
// presence stays in grace beside the new one; when that grace runs out the
// member has not left, and nobody is told it did.
func TestBrokerNoPeerLeftWhileTheKeyIsStillPresent(t *testing.T) {
	forEachStore(t, testBrokerNoPeerLeftWhileTheKeyIsStillPresent)
}

func testBrokerNoPeerLeftWhileTheKeyIsStillPresent(t *testing.T) {
	b, url, owner, bob, observer := newAliceBobMesh(t, BrokerOptions{Grace: time.Hour})
	old := dialTestClient(t, url)
	old.hello(bob, "daemon-100")
	observer.expect(framePush, func(f frame) bool { return f.str("event") == eventPeerJoined })
	stale := findPeer(b, owner.MeshID, func(p *peer) bool { return p.sessionID == "daemon-100" })
	old.ws.Close(websocket.StatusNormalClosure, "crash")
	waitOffline(t, b, stale)
	restarted := dialTestClient(t, url)
	restarted.hello(bob, "daemon-200")
	b.expireGrace(stale)
	connectSession(t, url, owner, mustNewKeypair(), "marker")
	for {
		ev := observer.expect(framePush, func(f frame) bool { return f.str("subtype") == subtypeSystem })
		if ev.str("event") == eventPeerLeft {
			t.Fatalf("observer got %v while bob is still here", ev)
		}
		if ev["eventData"].(map[string]any)["name"] == "marker" {
			break
		}
	}
	// Once the last presence of the key goes, peer_left is told.
	last := findPeer(b, owner.MeshID, func(p *peer) bool { return p.sessionID == "daemon-200" })
	restarted.ws.Close(websocket.StatusNormalClosure, "bye")
	waitOffline(t, b, last)
	b.expireGrace(last)
	observer.expect(framePush, func(f frame) bool { return f.str("event") == eventPeerLeft })
}
