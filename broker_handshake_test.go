package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// refusedWith sends a handshake frame and checks the error code and close.
func refusedWith(t *testing.T, url string, hello any, code string, closeCode websocket.StatusCode) {
	t.Helper()
	tc := dialTestClient(t, url)
	tc.sendJSON(hello)
	f := tc.expect(frameError, nil)
	if f.str("code") != code {
		t.Fatalf("error code = %q (%s), want %q", f.str("code"), f.str("message"), code)
	}
	gotCode, reason := tc.expectClose()
	wantReason := code
	if closeCode == closeBanned {
		wantReason = "banned"
	}
	if gotCode != closeCode || reason != wantReason {
		t.Fatalf("close = %d %q, want %d %q", gotCode, reason, closeCode, wantReason)
	}
}

func TestBrokerHelloRejections(t *testing.T) {
	b, url := startTestBroker(t)
	m := newTestMesh(t, b, url, "team", "alice")
	stranger := m
	kp := mustNewKeypair()
	stranger.Pubkey, stranger.SecretKey = kp.PublicHex(), kp.SecretHex()
	now := time.Now()

	cases := []struct {
		name   string
		mutate func(h *HelloFrame)
		mesh   Mesh
		code   string
	}{
		{"bad session pubkey", func(h *HelloFrame) { h.SessionPubkey = strings.ToUpper(kp.PublicHex()) }, m, codeBadSessionPubkey},
		{"timestamp too old", func(h *HelloFrame) { h.Timestamp = now.Add(-61 * time.Second).UnixMilli() }, m, codeTimestampSkew},
		{"timestamp in the future", func(h *HelloFrame) { h.Timestamp = now.Add(61 * time.Second).UnixMilli() }, m, codeTimestampSkew},
		{"short signature", func(h *HelloFrame) { h.Signature = h.Signature[:100] }, m, codeMalformed},
		{"pubkey not hex", func(h *HelloFrame) { h.Pubkey = strings.Repeat("z", 64) }, m, codeMalformed},
		{"bad signature", func(h *HelloFrame) { h.MemberID = "someone-else" }, m, codeBadSignature},
		{"not a member", nil, stranger, codeUnauthorized},
		{"unknown mesh", func(h *HelloFrame) {
			h.MeshID = "nomesh"
			h.Signature = kp.sign(helloSignedString("nomesh", h.MemberID, h.Pubkey, h.Timestamp))
			h.Pubkey = kp.PublicHex()
		}, stranger, codeUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := signedHello(t, tc.mesh, "s-"+tc.name, "", now)
			if tc.mutate != nil {
				tc.mutate(&h)
			}
			refusedWith(t, url, h, tc.code, closePolicy)
		})
	}
	t.Run("malformed json types", func(t *testing.T) {
		refusedWith(t, url, map[string]any{"type": frameHello, "meshId": m.MeshID, "timestamp": "soon"}, codeMalformed, closePolicy)
	})
}

func TestBrokerSessionHelloRejections(t *testing.T) {
	b, url := startTestBroker(t)
	m := newTestMesh(t, b, url, "team", "alice")
	other := addTestMember(t, b, m, "bob", roleMember)
	sess := mustNewKeypair()
	member, _ := m.Keypair()
	now := time.Now()
	resign := func(h *SessionHelloFrame) {
		h.Signature = sess.sign(sessionHelloSignedString(h.MeshID, h.ParentMemberPubkey, h.SessionPubkey, h.Timestamp))
	}
	attest := func(h *SessionHelloFrame, expires time.Time) {
		a := signAttestation(member, sess.PublicHex(), expires.UnixMilli())
		h.ParentAttestation = &a
	}

	cases := []struct {
		name   string
		mutate func(h *SessionHelloFrame)
		code   string
	}{
		{"bad session pubkey", func(h *SessionHelloFrame) { h.SessionPubkey = "abc" }, codeBadSessionPubkey},
		{"bad parent pubkey", func(h *SessionHelloFrame) { h.ParentMemberPubkey = strings.ToUpper(h.ParentMemberPubkey) }, codeBadParentPubkey},
		{"attestation missing", func(h *SessionHelloFrame) { h.ParentAttestation = nil }, codeAttestationMismatch},
		{"attestation for another session", func(h *SessionHelloFrame) {
			a := *h.ParentAttestation
			a.SessionPubkey = mustNewKeypair().PublicHex()
			h.ParentAttestation = &a
		}, codeAttestationMismatch},
		{"attestation expired", func(h *SessionHelloFrame) { attest(h, now.Add(-time.Second)) }, codeExpired},
		{"attestation over 24h", func(h *SessionHelloFrame) { attest(h, now.Add(25*time.Hour)) }, codeTTLTooLong},
		{"attestation bad signature", func(h *SessionHelloFrame) {
			a := *h.ParentAttestation
			a.ExpiresAt++
			h.ParentAttestation = &a
		}, codeBadSignature},
		{"attestation malformed signature", func(h *SessionHelloFrame) {
			a := *h.ParentAttestation
			a.Signature = "00"
			h.ParentAttestation = &a
		}, codeMalformed},
		{"attestation by another member", func(h *SessionHelloFrame) {
			okp, _ := other.Keypair()
			a := signAttestation(okp, sess.PublicHex(), now.Add(time.Hour).UnixMilli())
			a.ParentMemberPubkey = h.ParentMemberPubkey
			h.ParentAttestation = &a
		}, codeBadSignature},
		{"session timestamp skew", func(h *SessionHelloFrame) { h.Timestamp = now.Add(-2 * time.Minute).UnixMilli(); resign(h) }, codeTimestampSkew},
		{"session bad signature", func(h *SessionHelloFrame) { h.Signature = mustNewKeypair().sign("x") }, codeBadSignature},
		{"parent member id mismatch", func(h *SessionHelloFrame) { h.ParentMemberID = other.MemberID }, codeParentMemberIDMismatch},
		{"unknown parent", func(h *SessionHelloFrame) {
			stranger := mustNewKeypair()
			a := signAttestation(stranger, sess.PublicHex(), now.Add(time.Hour).UnixMilli())
			h.ParentAttestation = &a
			h.ParentMemberPubkey = stranger.PublicHex()
			h.ParentMemberID = ""
			resign(h)
		}, codeUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := signedSessionHello(t, m, sess, "s", "x", now)
			tc.mutate(&h)
			refusedWith(t, url, h, tc.code, closePolicy)
		})
	}
	t.Run("absent parentMemberId is accepted", func(t *testing.T) {
		tc := dialTestClient(t, url)
		h := signedSessionHello(t, m, sess, "s", "x", time.Now())
		h.ParentMemberID = ""
		tc.sendJSON(h)
		tc.expect(frameHelloAck, nil)
	})
}

func TestBrokerHandshakeReplayRefused(t *testing.T) {
	b, url := startTestBroker(t)
	m := newTestMesh(t, b, url, "team", "alice")
	h := signedHello(t, m, "daemon-1", "", time.Now())
	first := dialTestClient(t, url)
	first.sendJSON(h)
	first.expect(frameHelloAck, nil)
	refusedWith(t, url, h, codeReplayed, closePolicy)

	sess := mustNewKeypair()
	sh := signedSessionHello(t, m, sess, "s1", "x", time.Now())
	sc := dialTestClient(t, url)
	sc.sendJSON(sh)
	sc.expect(frameHelloAck, nil)
	refusedWith(t, url, sh, codeReplayed, closePolicy)
}

func TestBrokerNoHelloKeepsSocketOpen(t *testing.T) {
	b, url := startTestBroker(t)
	m := newTestMesh(t, b, url, "team", "alice")
	tc := dialTestClient(t, url)
	tc.sendJSON(map[string]any{"type": frameListPeers, "_reqId": "x1"})
	f := tc.expect(frameError, nil)
	if f.str("code") != codeNoHello || f.str("_reqId") != "x1" {
		t.Fatalf("error = %v, want no_hello echoing _reqId", f)
	}
	tc.sendJSON(map[string]any{"type": frameSend})
	if f := tc.expect(frameError, nil); f.str("code") != codeNoHello {
		t.Fatalf("error = %v", f)
	}
	// Still open: a hello now succeeds on the same socket.
	tc.hello(m, "d1")
}

func TestBrokerHelloTimeoutCloses(t *testing.T) {
	_, url := startTestBrokerWith(t, BrokerOptions{HelloTimeout: 50 * time.Millisecond})
	tc := dialTestClient(t, url)
	if f := tc.expect(frameError, nil); f.str("code") != codeHelloTimeout {
		t.Fatalf("error = %v", f)
	}
	if code, _ := tc.expectClose(); code != closePolicy {
		t.Fatalf("close = %d, want 1008", code)
	}
}

func TestBrokerUnknownTypeAndInvalidFrames(t *testing.T) {
	b, url := startTestBroker(t)
	m := newTestMesh(t, b, url, "team", "alice")
	a := connectMember(t, url, m)
	cases := []struct {
		name string
		req  map[string]any
		code string
	}{
		{"unknown type", map[string]any{"type": "teleport"}, codeUnknownMessageType},
		{"status value", map[string]any{"type": frameSetStatus, "status": "asleep"}, codeInvalid},
		{"visible missing", map[string]any{"type": frameSetVisible}, codeInvalid},
		{"visible wrong type", map[string]any{"type": frameSetVisible, "visible": "yes"}, codeInvalid},
		{"summary missing", map[string]any{"type": frameSetSummary}, codeInvalid},
		{"state value missing", map[string]any{"type": frameSetState, "key": "k"}, codeInvalid},
		{"group without name", map[string]any{"type": frameJoinGroup}, codeInvalid},
		{"recall without query", map[string]any{"type": frameRecall}, codeInvalid},
		{"kick with two modes", map[string]any{"type": frameKick, "all": true, "target": "x"}, codeInvalid},
		{"ban without target", map[string]any{"type": frameBan}, codeInvalid},
		{"client_ack without ids", map[string]any{"type": frameClientAck}, codeInvalid},
		{"second hello", map[string]any{"type": frameHello}, codeInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := a.roundTrip(tc.req)
			if f.str("type") != frameError || f.str("code") != tc.code || f.str("message") == "" {
				t.Fatalf("reply = %v, want error %s", f, tc.code)
			}
		})
	}
	t.Run("invalid send is an ack with the code", func(t *testing.T) {
		a.sendJSON(map[string]any{"type": frameSend, "id": "s1", "targetSpec": "*", "priority": "urgent", "nonce": "n", "ciphertext": "c"})
		f := a.expect(frameAck, nil)
		if f.str("id") != "s1" || f["queued"] != false || !strings.HasPrefix(f.str("error"), "invalid: ") {
			t.Fatalf("ack = %v", f)
		}
	})
	t.Run("not json", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		defer cancel()
		a.ws.Write(ctx, websocket.MessageText, []byte("{nope"))
		if f := a.expect(frameError, nil); f.str("code") != codeInvalid {
			t.Fatalf("reply = %v", f)
		}
	})
}

func TestBrokerRevokedCloses4002(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	a := connectMember(t, url, owner)
	bc := connectMember(t, url, bob)
	ban := a.roundTrip(map[string]any{"type": frameBan, "target": "bob"})
	if ban.str("type") != frameBanAck || ban.str("banned") != "bob" {
		t.Fatalf("ban reply = %v", ban)
	}
	if code, reason := bc.expectClose(); code != closeBanned || reason != "banned" {
		t.Fatalf("banned socket closed %d %q", code, reason)
	}
	// 30 s back: a different timestamp than connectMember's, or it is a replay.
	refusedWith(t, url, signedHello(t, bob, "d2", "", time.Now().Add(-30*time.Second)), codeRevoked, closeBanned)
	refusedWith(t, url, signedSessionHello(t, bob, mustNewKeypair(), "s", "x", time.Now()), codeRevoked, closeBanned)

	bans := a.roundTrip(map[string]any{"type": frameListBans})
	if list := bans["bans"].([]any); len(list) != 1 || list[0].(map[string]any)["pubkey"] != bob.Pubkey {
		t.Fatalf("list_bans = %v", bans)
	}
	un := a.roundTrip(map[string]any{"type": frameUnban, "target": bob.Pubkey})
	if un.str("type") != frameUnbanAck || un.str("unbanned") != "bob" {
		t.Fatalf("unban reply = %v", un)
	}
	connectMember(t, url, bob)
}

func TestBrokerCapacityAndHandshakeRate(t *testing.T) {
	t.Run("capacity counts live connections only", func(t *testing.T) {
		b, url := startTestBrokerWith(t, BrokerOptions{MaxConnectionsPerMesh: 2, Grace: time.Millisecond})
		m := newTestMesh(t, b, url, "team", "alice")
		c1 := connectMember(t, url, m)
		connectSession(t, url, m, mustNewKeypair(), "s1")
		refusedWith(t, url, signedSessionHello(t, m, mustNewKeypair(), "s3", "x", time.Now()), codeCapacity, closePolicy)
		// A kicked or closed connection frees its slot: no drift.
		c1.ws.Close(websocket.StatusNormalClosure, "bye")
		waitFor(t, "slot freed", func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			return b.rooms[m.MeshID].liveCount() == 1
		})
		connectSession(t, url, m, mustNewKeypair(), "s4")
	})
	t.Run("per-IP handshake rate", func(t *testing.T) {
		b, url := startTestBrokerWith(t, BrokerOptions{HandshakeBurst: 2, HandshakePerMinute: 1})
		m := newTestMesh(t, b, url, "team", "alice")
		connectSession(t, url, m, mustNewKeypair(), "s1")
		connectSession(t, url, m, mustNewKeypair(), "s2")
		refusedWith(t, url, signedSessionHello(t, m, mustNewKeypair(), "s3", "x", time.Now()), codeRateLimit, closePolicy)
	})
}
