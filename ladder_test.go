package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// messageLadderOf reads a sent message's ladder, waiting up to wait for it
// to climb no further.
func messageLadderOf(t *testing.T, cl *DaemonClient, id string, wait time.Duration) messageLadder {
	t.Helper()
	rep, err := callIPC(context.Background(), cl, apiMessage, MessageQuery{ID: id, WaitMs: int(wait / time.Millisecond)})
	if err != nil {
		t.Fatalf("GET /v1/messages/%s: %v", id, err)
	}
	if rep.Message.Ladder == nil {
		t.Fatalf("message %s has no ladder: %+v", id, rep.Message)
	}
	return *rep.Message.Ladder
}

// waitRung waits for the ladder's first recipient to reach rung.
func waitRung(t *testing.T, cl *DaemonClient, id, rung string) messageLadder {
	t.Helper()
	var l messageLadder
	waitFor(t, "message "+id+" at "+rung, func() bool {
		l = messageLadderOf(t, cl, id, 0)
		return l.Rung == rung
	})
	return l
}

// inboxCount is how many rows a daemon's inbox holds.
func inboxCount(t *testing.T, td *testDaemon) int {
	t.Helper()
	var n int
	if err := td.inbox.db.QueryRow(`SELECT count(*) FROM inbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// The whole ladder through a broker and two daemons: sent, delivered,
// surfaced through the recipient's hook, replied. Receipts reach the
// sending session's stream and nobody else's, and never become an inbox
// row or a message event on the sender's side.
func TestReceiptLadderEndToEnd(t *testing.T) {
	f := newMsgFixture(t, nil)
	alice := registerTestSession(t, f.d1, f.me, "alice")
	other := registerTestSession(t, f.d1, f.me, "carol")
	bob := registerTestSession(t, f.d2, f.bob, "bob")
	aliceStream, otherStream := subscribe(t, f.d1, alice.reg.Token), subscribe(t, f.d1, other.reg.Token)

	sent := sendAndSettle(t, alice.cl, bob.pub(), "please review")
	if l := messageLadderOf(t, alice.cl, sent.ID, 0); l.Receipts != receiptsOn {
		t.Fatalf("ladder after the ack = %+v, want receipts on", l)
	}
	l := waitRung(t, alice.cl, sent.ID, rungDelivered)
	if r := l.Recipients[0]; r.Pubkey != bob.pub() || r.Name != "bob" || r.DeliveredMs == nil {
		t.Fatalf("delivered rung = %+v", r)
	}

	// bob's next hook shows it to his model.
	hook, err := callIPC(context.Background(), bob.cl, apiHook, HookRequest{Event: hookUserPromptSubmit})
	if err != nil || len(hook.Messages) != 1 {
		t.Fatalf("bob's hook = %+v, %v", hook, err)
	}
	l = messageLadderOf(t, alice.cl, sent.ID, testWait)
	if r := l.Recipients[0]; l.Rung != rungSurfaced || r.Via != surfacedViaHooks || !r.Confirmed || r.SurfacedMs == nil {
		t.Fatalf("ladder after bob's hook = %+v", l)
	}
	ev := aliceStream.next(t, "a surfaced receipt event", func(e DaemonEvent) bool {
		var re ReceiptEvent
		return e.Kind == eventReceipt && json.Unmarshal(e.Data, &re) == nil && re.Ladder.Rung == rungSurfaced
	})
	if ev.Kind != eventReceipt {
		t.Fatal(ev)
	}
	if n := inboxCount(t, f.d1); n != 0 {
		t.Fatalf("alice's daemon has %d inbox rows from receipts, want none", n)
	}

	// bob answers it: alice's ladder reaches replied.
	reply := ipcSend(t, bob.cl, map[string]any{"to": alice.pub(), "message": "done", "reply_to_id": deref(sent.BrokerMessageID),
		"wait_ms": int(testWait / time.Millisecond)})
	if reply.Status != "done" {
		t.Fatalf("reply = %+v", reply)
	}
	l = waitRung(t, alice.cl, sent.ID, rungReplied)
	if r := l.Recipients[0]; r.ReplyID == "" || r.RepliedMs == nil {
		t.Fatalf("replied rung = %+v", r)
	}
	for _, e := range otherStream.seen() {
		if e.Kind == eventReceipt {
			t.Fatalf("another session of alice's machine heard alice's receipt: %s", e.Data)
		}
	}
	for _, e := range aliceStream.seen() {
		if e.Kind == eventMessage && eventData(e)["body"] != "done" {
			t.Fatalf("a receipt became a message event: %s", e.Data)
		}
	}
	if n := inboxCount(t, f.d1); n != 1 {
		t.Fatalf("alice's daemon has %d inbox rows, want just bob's reply", n)
	}
	m, err := callIPC(context.Background(), f.d1.client(""), apiMetrics, noRequest{})
	if err != nil || m.SendToSurfaced.Count != 1 || m.SendToDelivered.Count != 1 {
		t.Fatalf("metrics = %+v, %v", m, err)
	}
}

// Receipts produced while the sender's daemon is down wait at the broker,
// and the ladder has them once it is back.
func TestReceiptsCrossAnOfflineSender(t *testing.T) {
	f := newMsgFixture(t, nil)
	alice := registerTestSession(t, f.d1, f.me, "alice")
	bob := registerTestSession(t, f.d2, f.bob, "bob")
	sent := sendAndSettle(t, alice.cl, bob.pub(), "while you are away")
	waitRung(t, alice.cl, sent.ID, rungDelivered)
	f.d1.shutdown(t)

	if _, err := callIPC(context.Background(), bob.cl, apiHook, HookRequest{Event: hookUserPromptSubmit}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's surfaced receipt taken by the broker", func() bool {
		var sentRung string
		_ = f.d2.inbox.db.QueryRow(`SELECT COALESCE(receipt_sent, '') FROM inbox`).Scan(&sentRung)
		return sentRung == "surfaced:hooks:true"
	})

	back := startTestDaemon(t, f.h1, nil)
	back.waitLink(t, "alpha", LinkOpen)
	l := waitRung(t, back.client(""), sent.ID, rungSurfaced)
	if r := l.Recipients[0]; r.Via != surfacedViaHooks {
		t.Fatalf("ladder after the restart = %+v", l)
	}
}

// A re-send after a lost send_ack can be stored anew under another broker
// id once every recipient acked the first (the SQLite store keeps no
// message past its last ack): the recipient's inbox drops the second copy,
// so its receipts name only the first id. Matched by the sender's
// client_message_id, they still climb the ladder.
func TestReceiptsForTheFirstIDOfAResentMessage(t *testing.T) {
	f := newMsgFixture(t, nil)
	alice := registerTestSession(t, f.d1, f.me, "alice")
	bob := registerTestSession(t, f.d2, f.bob, "bob")
	sent := sendAndSettle(t, alice.cl, bob.pub(), "sent twice")
	waitRung(t, alice.cl, sent.ID, rungDelivered)
	if _, err := f.d1.outbox.db.Exec(`UPDATE outbox SET broker_message_id = 'id-of-the-resend' WHERE id = ?`, sent.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := callIPC(context.Background(), bob.cl, apiHook, HookRequest{Event: hookUserPromptSubmit}); err != nil {
		t.Fatal(err)
	}
	if l := waitRung(t, alice.cl, sent.ID, rungSurfaced); l.Recipients[0].Via != surfacedViaHooks {
		t.Fatalf("ladder = %+v", l)
	}
}

// A broadcast has one ladder per recipient key, summarised.
func TestReceiptLadderOfABroadcast(t *testing.T) {
	f := newMsgFixture(t, nil)
	alice := registerTestSession(t, f.d1, f.me, "alice")
	b1 := registerTestSession(t, f.d2, f.bob, "bob-1")
	b2 := registerTestSession(t, f.d2, f.bob, "bob-2")
	b3 := registerTestSession(t, f.d2, f.bob, "bob-3")
	sent := sendAndSettle(t, alice.cl, "*", "standup in 5")
	var l messageLadder
	waitFor(t, "three delivered ladders", func() bool {
		l = messageLadderOf(t, alice.cl, sent.ID, 0)
		return l.Rung == rungDelivered && len(l.Recipients) == 3
	})
	if l.Expected == nil || *l.Expected != 3 || l.Summary != "3/3 delivered" {
		t.Fatalf("broadcast ladder = %+v", l)
	}
	for _, s := range []testSession{b1, b2} {
		if _, err := callIPC(context.Background(), s.cl, apiHook, HookRequest{Event: hookUserPromptSubmit}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "two of three surfaced", func() bool {
		l = messageLadderOf(t, alice.cl, sent.ID, 0)
		return l.Summary == "2/3 surfaced"
	})
	if l.Rung != rungDelivered || l.Recipients[2].Pubkey != b3.pub() {
		t.Fatalf("ladder with one left = %+v", l)
	}
	if ladderTop(l) {
		t.Fatal("a ladder with a recipient still at delivered counts as finished")
	}
}

// A recipient that shares only delivered: its senders' ladders stop there,
// and say so.
func TestReceiptsWithheldBeyondDelivered(t *testing.T) {
	f := newMsgFixture(t, nil)
	alice := registerTestSession(t, f.d1, f.me, "alice")
	bob := registerTestSession(t, f.d2, f.bob, "bob")
	if _, err := callIPC(context.Background(), bob.cl, apiProfile, ProfileRequest{Receipts: ptr(sharesDelivered)}); err != nil {
		t.Fatal(err)
	}
	sent := sendAndSettle(t, alice.cl, bob.pub(), "quiet please")
	l := waitRung(t, alice.cl, sent.ID, rungDelivered)
	if l.Recipients[0].Shares != sharesDelivered || !ladderTop(l) {
		t.Fatalf("ladder = %+v, want delivered and no more to come", l)
	}
	if _, err := callIPC(context.Background(), bob.cl, apiHook, HookRequest{Event: hookUserPromptSubmit}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's row shown", func() bool {
		var n int
		_ = f.d2.inbox.db.QueryRow(`SELECT count(*) FROM inbox WHERE surfaced_at IS NOT NULL AND receipt_due = 0`).Scan(&n)
		return n == 1
	})
	if l := messageLadderOf(t, alice.cl, sent.ID, 0); l.Rung != rungDelivered {
		t.Fatalf("a withheld surfacing reached the sender: %+v", l)
	}
	_, err := callIPC(context.Background(), bob.cl, apiProfile, ProfileRequest{Receipts: ptr("everything")})
	if ipcStatus(err) != http.StatusBadRequest {
		t.Fatalf("receipts=everything: %v, want 400", err)
	}
}

// On a broker without the receipt frame the ladder stops at sent, and says
// so: one that does not name the feature is never sent a receipt; one that
// names it but answers unknown_message_type turns receipts off for the link.
func TestReceiptsOffOnABrokerWithoutTheFrame(t *testing.T) {
	cases := []struct {
		name     string
		features []string
		receipts int // receipt frames the broker sees for two messages
	}{
		{"feature not named", nil, 0},
		{"named, then refused", []string{featureReceipts}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fb := startFakeBroker(t, func(_ int, s SendFrame) any { return ackFor(s) })
			fb.features, fb.refuseUnknown = tc.features, true
			m := fakeMesh("fake", fb.url)
			h := newTestHome(t)
			h.writeConfig(t, m)
			td := startTestDaemon(t, h, nil)
			td.waitLink(t, "fake", LinkOpen)
			link := fb.conn(t, m.Pubkey)
			sender := mustNewKeypair()
			for i, text := range []string{"first", "second"} {
				nonce, ct := plainBody([]byte(text))
				id := fmt.Sprintf("bm-in-%d", i)
				fb.push(t, link, PushFrame{Type: framePush, MessageID: id, MeshID: m.MeshID, SenderPubkey: sender.PublicHex(),
					SenderMemberPubkey: sender.PublicHex(), SenderName: "ts", Priority: priorityNext, Nonce: nonce, Ciphertext: ct,
					TargetSpec: "*", ClientMessageID: "c-" + id, CreatedAt: isoTime(time.Now())})
				fb.waitAcks(t, id, 1)
				if i == 0 && tc.receipts > 0 {
					waitFor(t, "the refused receipt", func() bool { return fb.received(frameReceipt) == 1 && !td.MemberLink("fake").Receipts() })
				}
			}
			if got := fb.received(frameReceipt); got != tc.receipts {
				t.Fatalf("receipt frames = %d, want %d", got, tc.receipts)
			}
			sent := sendAndSettle(t, td.client(""), sender.PublicHex(), "to a claudemesh broker")
			l := messageLadderOf(t, td.client(""), sent.ID, time.Second)
			if l.Receipts != receiptsOff || l.Rung != rungSent || !ladderTop(l) {
				t.Fatalf("ladder = %+v, want sent with receipts off", l)
			}
		})
	}
}
