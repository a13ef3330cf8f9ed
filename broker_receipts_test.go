package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func (f frame) raw() string { b, _ := json.Marshal(f); return string(b) }

// connectReceiptMember dials and says hello as m's member, saying the
// connection takes receipts.
func connectReceiptMember(t *testing.T, wsURL string, m Mesh) *testClient {
	t.Helper()
	tc := dialTestClient(t, wsURL)
	h := signedHello(t, m, "daemon-"+m.MemberID[:6], "", time.Now())
	h.Capabilities = []string{capabilityReceipts}
	tc.sendJSON(h)
	ack := tc.expect(frameHelloAck, nil)
	if !strings.Contains(ack.raw(), `"`+featureReceipts+`"`) {
		t.Fatalf("hello_ack %s does not name the receipts feature", ack.raw())
	}
	return tc
}

// sendReceipt sends a receipt and returns its ack.
func (tc *testClient) sendReceipt(r ReceiptFrame) frame {
	tc.t.Helper()
	r.Type = frameReceipt
	if r.ID == "" {
		r.ID = "rc-" + newUUID()[:8]
	}
	tc.sendJSON(r)
	return tc.expect(frameAck, func(f frame) bool { return f.str("id") == r.ID })
}

// The whole route: a DM's recipient reports delivered and surfaced, the
// sender's member link gets each once as a receipt frame naming the
// recipient key and its name, a repeat is deduplicated, and an acked receipt
// is not pushed again.
func TestBrokerRoutesReceipts(t *testing.T) { forEachStore(t, testBrokerRoutesReceipts) }

func testBrokerRoutesReceipts(t *testing.T) {
	b, url, alice, bob, _ := newAliceBobMesh(t, BrokerOptions{})
	aliceLink := connectReceiptMember(t, url, alice)
	bobSession := mustNewKeypair()
	bs := connectSession(t, url, bob, bobSession, "bob-s")
	bobLink := connectReceiptMember(t, url, bob)

	ack := aliceLink.sendText(bobSession.PublicHex(), "hi bob", "c-1")
	msgID := ack.str("messageId")
	bs.ackPush(bs.expectPush("hi bob"))

	delivered := ReceiptFrame{To: alice.Pubkey, RecipientPubkey: bobSession.PublicHex(), ReceiptBody: ReceiptBody{
		MessageID: msgID, ClientMessageID: "c-1", State: receiptDelivered, DeliveredAt: isoTime(time.Now())}}
	if a := bobLink.sendReceipt(delivered); a.str("error") != "" || a.str("messageId") == "" {
		t.Fatalf("receipt ack = %s", a.raw())
	}
	n := aliceLink.expect(frameReceipt, nil)
	if n.str("messageId") != msgID || n.str("state") != receiptDelivered || n.str("recipientPubkey") != bobSession.PublicHex() ||
		n.str("recipientName") != "bob-s" || n.str("recipientMemberPubkey") != bob.Pubkey || n.str("client_message_id") != "c-1" {
		t.Fatalf("receipt notice = %s", n.raw())
	}
	aliceLink.sendJSON(ClientAckFrame{Type: frameClientAck, BrokerMessageID: n.str("receiptId")})

	// The same rung again: the original id, nothing new for alice.
	again := bobLink.sendReceipt(delivered)
	if again.str("messageId") != n.str("receiptId") {
		t.Fatalf("repeated receipt ack = %s, want the original id %s", again.raw(), n.str("receiptId"))
	}
	surfaced := delivered
	surfaced.State, surfaced.Via, surfaced.SurfacedAt, surfaced.Confirmed = receiptSurfaced, "hooks", isoTime(time.Now()), true
	bobLink.sendReceipt(surfaced)
	s := aliceLink.expect(frameReceipt, nil)
	if s.str("state") != receiptSurfaced || s.str("via") != "hooks" || s.raw() == n.raw() {
		t.Fatalf("second notice = %s", s.raw())
	}
	if got := b.metrics.receipts.Load(); got != 2 {
		t.Fatalf("receipts stored = %d, want 2", got)
	}
	if got := b.metrics.receiptsDuplicate.Load(); got != 1 {
		t.Fatalf("duplicate receipts = %d, want 1", got)
	}
}

// A receipt for a sender that is offline waits for it; a connection of the
// sender's key that did not say it takes receipts (another daemon's) is
// never pushed one, and the next one that does gets it.
func TestBrokerQueuesReceiptsForOfflineSender(t *testing.T) {
	forEachStore(t, testBrokerQueuesReceiptsForOfflineSender)
}

func testBrokerQueuesReceiptsForOfflineSender(t *testing.T) {
	b, url, alice, bob, aliceOld := newAliceBobMesh(t, BrokerOptions{})
	bobLink := connectReceiptMember(t, url, bob)
	ack := aliceOld.sendText(bob.Pubkey, "while you sleep", "c-2")
	bobLink.ackPush(bobLink.expectPush("while you sleep"))
	aliceOld.ws.CloseNow()
	waitFor(t, "alice offline", func() bool {
		return !b.receiptReachable(alice.MeshID, alice.Pubkey) && findPeer(b, alice.MeshID, func(p *peer) bool { return p.key == alice.Pubkey && p.conn != nil }) == nil
	})

	r := ReceiptFrame{To: alice.Pubkey, RecipientPubkey: bob.Pubkey, ReceiptBody: ReceiptBody{
		MessageID: ack.str("messageId"), State: receiptDelivered, DeliveredAt: isoTime(time.Now())}}
	if a := bobLink.sendReceipt(r); a.str("error") != "" {
		t.Fatalf("receipt ack = %s", a.raw())
	}
	if got := b.metrics.receiptsQueued.Load(); got != 1 {
		t.Fatalf("queued receipts = %d, want 1", got)
	}

	// Queued after the receipt, so a drain that reaches it has passed the
	// receipt.
	bobLink.sendText(alice.Pubkey, "after the receipt", "c-2b")
	plain := connectMember(t, url, alice) // no receipts capability
	plain.expectPush("after the receipt")
	for _, f := range plain.backlog {
		if f.str("type") == frameReceipt {
			t.Fatalf("a connection that does not take receipts got %s", f.raw())
		}
	}
	plain.ws.CloseNow()

	fresh := connectReceiptMember(t, url, alice)
	n := fresh.expect(frameReceipt, nil)
	if n.str("messageId") != ack.str("messageId") || n.str("recipientName") != "bob" {
		t.Fatalf("drained receipt = %s", n.raw())
	}
}

// A receipt speaks only for keys of the connection's member, for keys the
// mesh knows; a send may not pose as one.
func TestBrokerRefusesForeignReceipts(t *testing.T) {
	forEachStore(t, testBrokerRefusesForeignReceipts)
}

func testBrokerRefusesForeignReceipts(t *testing.T) {
	_, url, alice, bob, aliceLink := newAliceBobMesh(t, BrokerOptions{})
	carolSession := mustNewKeypair()
	connectSession(t, url, alice, carolSession, "alice-s") // a key of alice's member, not bob's
	bobLink := connectReceiptMember(t, url, bob)
	body := ReceiptBody{MessageID: "m-1", State: receiptDelivered, DeliveredAt: isoTime(time.Now())}
	cases := []struct {
		name string
		r    ReceiptFrame
		code string
	}{
		{"another member's session key", ReceiptFrame{To: alice.Pubkey, RecipientPubkey: carolSession.PublicHex(), ReceiptBody: body}, codeForbidden},
		{"a key nobody has", ReceiptFrame{To: alice.Pubkey, RecipientPubkey: strings.Repeat("ab", 32), ReceiptBody: body}, codeForbidden},
		{"a sender the mesh never saw", ReceiptFrame{To: strings.Repeat("cd", 32), RecipientPubkey: bob.Pubkey, ReceiptBody: body}, codeUnknownTarget},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := bobLink.sendReceipt(tc.r)
			if ackErrorCode(a.str("error")) != tc.code {
				t.Fatalf("ack = %s, want %s", a.raw(), tc.code)
			}
		})
	}
	bad := bobLink.roundTrip(map[string]any{"type": frameReceipt, "id": "x", "to": alice.Pubkey, "recipientPubkey": bob.Pubkey,
		"messageId": "m", "state": "read", "deliveredAt": "now"})
	if bad.str("code") != codeInvalid {
		t.Fatalf("a receipt with an unknown state got %s", bad.raw())
	}
	nonce, ct := plainBody([]byte("fake"))
	aliceLink.sendJSON(SendFrame{Type: frameSend, ID: "s1", TargetSpec: bob.Pubkey, Priority: priorityNext, Nonce: nonce, Ciphertext: ct, Subtype: subtypeReceipt})
	if a := aliceLink.expect(frameAck, func(f frame) bool { return f.str("id") == "s1" }); ackErrorCode(a.str("error")) != codeInvalid {
		t.Fatalf("a send posing as a receipt got %s", a.raw())
	}
}

// A multicast's ack says how many delivery keys it resolved to: the
// ladders its sender can expect.
func TestBrokerAckCountsMulticastRecipients(t *testing.T) {
	_, url, _, bob, aliceLink := newAliceBobMesh(t, BrokerOptions{})
	connectSession(t, url, bob, mustNewKeypair(), "bob-1")
	connectSession(t, url, bob, mustNewKeypair(), "bob-2")
	ack := aliceLink.sendText("*", "everyone", "c-3")
	if got := ack["recipients"]; got != float64(2) {
		t.Fatalf("broadcast ack recipients = %v, want 2 (%s)", got, ack.raw())
	}
	dm := aliceLink.sendText(bob.Pubkey, "just bob", "c-4")
	if _, ok := dm["recipients"]; ok {
		t.Fatalf("a DM's ack has recipients: %s", dm.raw())
	}
}
