// Tests of hello and session_hello: every refusal with its code and close,
// the check order, replays, timeouts, capacity and the handshake rate.
package main

import (
	"context"
	"net/http"
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

func TestBrokerHelloRejections(t *testing.T) { forEachStore(t, testBrokerHelloRejections) }

func testBrokerHelloRejections(t *testing.T) {
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
	forEachStore(t, testBrokerSessionHelloRejections)
}

func testBrokerSessionHelloRejections(t *testing.T) {
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
	forEachStore(t, testBrokerHandshakeReplayRefused)
}

func testBrokerHandshakeReplayRefused(t *testing.T) {
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
	forEachStore(t, testBrokerNoHelloKeepsSocketOpen)
}

func testBrokerNoHelloKeepsSocketOpen(t *testing.T) {
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

func TestBrokerHelloTimeoutCloses(t *testing.T) { forEachStore(t, testBrokerHelloTimeoutCloses) }

func testBrokerHelloTimeoutCloses(t *testing.T) {
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
	forEachStore(t, testBrokerUnknownTypeAndInvalidFrames)
}

func testBrokerUnknownTypeAndInvalidFrames(t *testing.T) {
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
	t.Run("invalid send is an ack with the code, and an error", func(t *testing.T) {
		a.sendJSON(map[string]any{"type": frameSend, "id": "s1", "targetSpec": "*", "priority": "urgent", "nonce": "n", "ciphertext": "c", "_reqId": "q1"})
		f := a.expect(frameAck, nil)
		if f.str("id") != "s1" || f["queued"] != false || !strings.HasPrefix(f.str("error"), "invalid: ") || f.str("_reqId") != "q1" {
			t.Fatalf("ack = %v", f)
		}
		if e := a.expect(frameError, nil); e.str("code") != codeInvalid || e.str("id") != "s1" || e.str("_reqId") != "q1" || e.str("message") == "" {
			t.Fatalf("error = %v", e)
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

func TestBrokerRevokedCloses4002(t *testing.T) { forEachStore(t, testBrokerRevokedCloses4002) }

func testBrokerRevokedCloses4002(t *testing.T) {
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
	forEachStore(t, testBrokerCapacityAndHandshakeRate)
}

func testBrokerCapacityAndHandshakeRate(t *testing.T) {
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
	t.Run("kick and ban free their slots", func(t *testing.T) {
		b, url := startTestBrokerWith(t, BrokerOptions{MaxConnectionsPerMesh: 3})
		m := newTestMesh(t, b, url, "team", "alice")
		bob := addTestMember(t, b, m, "bob", roleMember)
		admin := connectMember(t, url, m)
		bobSess := mustNewKeypair()
		connectSession(t, url, bob, bobSess, "bob-1")
		connectMember(t, url, bob)
		refusedWith(t, url, signedSessionHello(t, m, mustNewKeypair(), "extra", "x", time.Now()), codeCapacity, closePolicy)
		admin.roundTrip(map[string]any{"type": frameKick, "target": bobSess.PublicHex()})
		connectSession(t, url, m, mustNewKeypair(), "after kick")
		admin.roundTrip(map[string]any{"type": frameBan, "target": "bob"})
		connectSession(t, url, m, mustNewKeypair(), "after ban")
		refusedWith(t, url, signedSessionHello(t, m, mustNewKeypair(), "extra", "x", time.Now()), codeCapacity, closePolicy)
	})
	// A connection that comes back while the broker still counts its old
	// socket (a half-open TCP connection, a daemon restarted at once) is
	// admitted at capacity: it replaces itself, it does not add one.
	t.Run("a reconnect replacing itself is admitted at capacity", func(t *testing.T) {
		b, url := startTestBrokerWith(t, BrokerOptions{MaxConnectionsPerMesh: 2})
		m := newTestMesh(t, b, url, "team", "alice")
		d1 := dialTestClient(t, url)
		d1.hello(m, "daemon-1")
		sess := mustNewKeypair()
		s1 := connectSession(t, url, m, sess, "s1")
		refusedWith(t, url, signedSessionHello(t, m, mustNewKeypair(), "other", "x", time.Now()), codeCapacity, closePolicy)

		s2 := connectSession(t, url, m, sess, "s1")
		if code, reason := s1.expectClose(); code != closeNormal || reason != "session_replaced" {
			t.Fatalf("old session socket closed %d %q", code, reason)
		}
		d2 := dialTestClient(t, url)
		d2.hello(m, "daemon-1")
		if code, reason := d1.expectClose(); code != closeNormal || reason != "session_replaced" {
			t.Fatalf("old member socket closed %d %q", code, reason)
		}
		s2.roundTrip(map[string]any{"type": frameListPeers})
		d2.roundTrip(map[string]any{"type": frameListPeers})
		refusedWith(t, url, signedSessionHello(t, m, mustNewKeypair(), "other", "x", time.Now()), codeCapacity, closePolicy)
	})
	t.Run("per-IP handshake rate", func(t *testing.T) {
		b, url := startTestBrokerWith(t, BrokerOptions{HandshakeBurst: 2, HandshakePerMinute: 1})
		m := newTestMesh(t, b, url, "team", "alice")
		connectSession(t, url, m, mustNewKeypair(), "s1")
		connectSession(t, url, m, mustNewKeypair(), "s2")
		refusedWith(t, url, signedSessionHello(t, m, mustNewKeypair(), "s3", "x", time.Now()), codeRateLimit, closePolicy)
	})
}

// A refused handshake changes nothing: no presence, no peer_joined, no
// session key learnt (a DM to it stays unknown_target), a ban stays.
func TestBrokerRefusedHandshakesChangeNothing(t *testing.T) {
	forEachStore(t, testBrokerRefusedHandshakesChangeNothing)
}

func testBrokerRefusedHandshakesChangeNothing(t *testing.T) {
	b, url, owner, bob, observer := newAliceBobMesh(t, BrokerOptions{})
	eve := addTestMember(t, b, owner, "eve", roleMember)
	if ban := observer.roundTrip(map[string]any{"type": frameBan, "target": "eve"}); ban.str("type") != frameBanAck {
		t.Fatalf("ban = %v", ban)
	}
	bobKp, _ := bob.Keypair()
	now := time.Now()

	var sessionKeys []string
	sessionHelloWith := func(m Mesh, mutate func(h *SessionHelloFrame, s Keypair)) SessionHelloFrame {
		s := mustNewKeypair()
		sessionKeys = append(sessionKeys, s.PublicHex())
		h := signedSessionHello(t, m, s, "s-"+s.PublicHex()[:6], "intruder", now)
		if mutate != nil {
			mutate(&h, s)
		}
		return h
	}
	replayed := signedHello(t, bob, "daemon-bob", "", now)
	first := dialTestClient(t, url)
	first.sendJSON(replayed)
	first.expect(frameHelloAck, nil)
	first.ws.Close(websocket.StatusNormalClosure, "done")
	observer.expect(framePush, func(f frame) bool { return f.str("event") == eventPeerJoined })
	waitFor(t, "bob's first socket gone", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.rooms[owner.MeshID].liveCount() == 1
	})
	before := peersOf(observer) // bob's first presence is in its grace window

	for _, c := range []struct {
		name  string
		hello any
		code  string
		close websocket.StatusCode
	}{
		{"hello with a bad signature", func() HelloFrame {
			h := signedHello(t, bob, "d-bad", "", now)
			h.Signature = bobKp.sign("something else")
			return h
		}(), codeBadSignature, closePolicy},
		{"replayed hello", replayed, codeReplayed, closePolicy},
		{"revoked member", signedHello(t, eve, "d-eve", "", now), codeRevoked, closeBanned},
		{"revoked member's session", sessionHelloWith(eve, nil), codeRevoked, closeBanned},
		{"expired attestation", sessionHelloWith(bob, func(h *SessionHelloFrame, s Keypair) {
			a := signAttestation(bobKp, s.PublicHex(), now.Add(-time.Minute).UnixMilli())
			h.ParentAttestation = &a
		}), codeExpired, closePolicy},
		{"over-long attestation", sessionHelloWith(bob, func(h *SessionHelloFrame, s Keypair) {
			a := signAttestation(bobKp, s.PublicHex(), now.Add(25*time.Hour).UnixMilli())
			h.ParentAttestation = &a
		}), codeTTLTooLong, closePolicy},
		{"attestation by a stranger", sessionHelloWith(bob, func(h *SessionHelloFrame, s Keypair) {
			a := signAttestation(mustNewKeypair(), s.PublicHex(), now.Add(time.Hour).UnixMilli())
			a.ParentMemberPubkey = bob.Pubkey
			h.ParentAttestation = &a
		}), codeBadSignature, closePolicy},
		{"session signature by another key", sessionHelloWith(bob, func(h *SessionHelloFrame, s Keypair) {
			h.Signature = mustNewKeypair().sign(sessionHelloSignedString(h.MeshID, h.ParentMemberPubkey, h.SessionPubkey, h.Timestamp))
		}), codeBadSignature, closePolicy},
	} {
		t.Run(c.name, func(t *testing.T) { refusedWith(t, url, c.hello, c.code, c.close) })
	}

	if after := peersOf(observer); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Fatalf("peers after refused handshakes = %v, before = %v", after, before)
	}
	for _, k := range sessionKeys {
		if ack := observer.sendText(k, "hello?", ""); !strings.HasPrefix(ack.str("error"), codeUnknownTarget+": ") {
			t.Fatalf("a DM to a refused session key %s… = %v, want unknown_target", k[:8], ack)
		}
	}
	if bans := observer.roundTrip(map[string]any{"type": frameListBans}); len(bans["bans"].([]any)) != 1 {
		t.Fatalf("bans = %v", bans)
	}
	// No presence event came from any of them: the next one is a marker's.
	connectSession(t, url, bob, mustNewKeypair(), "marker")
	if ev := observer.expect(framePush, func(f frame) bool { return f.str("subtype") == subtypeSystem }); ev["eventData"].(map[string]any)["name"] != "marker" {
		t.Fatalf("first system event after the refusals = %v", ev)
	}
}

// A member hello's sessionPubkey is not signed for: nothing proves the
// client holds it. One that names a key the mesh already routes to — a
// member key, a session key, another member's connection — is refused, so
// that no member can take another's DMs (and acknowledge them away).
func TestBrokerHelloCannotClaimAnotherKey(t *testing.T) {
	forEachStore(t, testBrokerHelloCannotClaimAnotherKey)
}

func testBrokerHelloCannotClaimAnotherKey(t *testing.T) {
	b, url, owner, bob, alice := newAliceBobMesh(t, BrokerOptions{})
	eve := addTestMember(t, b, owner, "eve", roleMember)
	bobSess := mustNewKeypair()
	s := connectSession(t, url, bob, bobSess, "bob-1")
	s.ws.Close(websocket.StatusNormalClosure, "away") // in grace, then offline: its DMs queue

	for name, key := range map[string]string{"bob's session key": bobSess.PublicHex(), "bob's member key": bob.Pubkey,
		"alice's member key": owner.Pubkey} {
		t.Run(name, func(t *testing.T) {
			refusedWith(t, url, signedHello(t, eve, "cli-eve-"+key[:6], key, time.Now()), codeBadSessionPubkey, closePolicy)
		})
	}
	// The DM queued for bob's session still reaches it, and only it.
	alice.sendText(bobSess.PublicHex(), "for bob only", "c-bob")
	s2 := connectSession(t, url, bob, bobSess, "bob-1")
	s2.ackPush(s2.expectPush("for bob only"))

	// A fresh ephemeral key is fine, and so is the same member coming back
	// on its own cold-path key.
	eph := mustNewKeypair().PublicHex()
	c := dialTestClient(t, url)
	c.sendJSON(signedHello(t, eve, "cli-eve", eph, time.Now()))
	c.expect(frameHelloAck, nil)
	c.ws.Close(websocket.StatusNormalClosure, "done")
	c2 := dialTestClient(t, url)
	c2.sendJSON(signedHello(t, eve, "cli-eve", eph, time.Now().Add(time.Millisecond)))
	c2.expect(frameHelloAck, nil)
}

// Which check comes first: a
// handshake with two faults is refused with the earlier check's code,
// because that is what a claudemesh client is written against.
func TestBrokerHandshakeCheckOrder(t *testing.T) { forEachStore(t, testBrokerHandshakeCheckOrder) }

func testBrokerHandshakeCheckOrder(t *testing.T) {
	b, url := startTestBroker(t)
	m := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, m, "bob", roleMember)
	fullB, fullURL := startTestBrokerWith(t, BrokerOptions{MaxConnectionsPerMesh: 1})
	fm := newTestMesh(t, fullB, fullURL, "team", "alice")
	connectMember(t, fullURL, fm)
	stranger := mustNewKeypair()
	now := time.Now()
	bobKp, _ := bob.Keypair()

	hello := func(m Mesh, mutate func(h *HelloFrame)) HelloFrame {
		h := signedHello(t, m, "d-"+newUUID()[:6], "", now)
		mutate(&h)
		return h
	}
	session := func(m Mesh, mutate func(h *SessionHelloFrame, s Keypair)) SessionHelloFrame {
		s := mustNewKeypair()
		h := signedSessionHello(t, m, s, "s-"+newUUID()[:6], "x", now)
		mutate(&h, s)
		return h
	}
	badSig := func(h *HelloFrame) { h.Signature = stranger.sign("x") }
	skewed := func(h *HelloFrame) { h.Timestamp = now.Add(-2 * time.Minute).UnixMilli() }
	attest := func(h *SessionHelloFrame, s Keypair, kp Keypair, expires time.Time) {
		a := signAttestation(kp, s.PublicHex(), expires.UnixMilli())
		a.ParentMemberPubkey = h.ParentMemberPubkey
		h.ParentAttestation = &a
	}
	cases := []struct {
		name  string
		url   string
		hello any
		code  string
	}{
		{"bad session key before capacity", fullURL, hello(fm, func(h *HelloFrame) { h.SessionPubkey = "X"; badSig(h) }), codeBadSessionPubkey},
		{"capacity before signature", fullURL, hello(fm, badSig), codeCapacity},
		{"skew before malformed", url, hello(m, func(h *HelloFrame) { skewed(h); h.Signature = "00" }), codeTimestampSkew},
		{"malformed before bad signature", url, hello(m, func(h *HelloFrame) { h.Signature = "zz" + h.Signature[2:] }), codeMalformed},
		{"bad signature before membership", url, hello(m, func(h *HelloFrame) { h.Pubkey = stranger.PublicHex() }), codeBadSignature},
		{"session: bad session key before bad parent key", fullURL, session(fm, func(h *SessionHelloFrame, _ Keypair) {
			h.SessionPubkey, h.ParentMemberPubkey = "X", "Y"
		}), codeBadSessionPubkey},
		{"session: bad parent key before mismatch", fullURL, session(fm, func(h *SessionHelloFrame, _ Keypair) {
			h.ParentMemberPubkey = "Y"
			h.ParentAttestation = nil
		}), codeBadParentPubkey},
		{"session: mismatch before capacity", fullURL, session(fm, func(h *SessionHelloFrame, _ Keypair) { h.ParentAttestation = nil }), codeAttestationMismatch},
		{"session: capacity before the attestation", fullURL, session(fm, func(h *SessionHelloFrame, s Keypair) {
			attest(h, s, bobKp, now.Add(-time.Hour))
		}), codeCapacity},
		{"session: expired before its signature", url, session(bob, func(h *SessionHelloFrame, s Keypair) {
			attest(h, s, stranger, now.Add(-time.Hour))
		}), codeExpired},
		{"session: attestation before the session signature", url, session(bob, func(h *SessionHelloFrame, s Keypair) {
			attest(h, s, stranger, now.Add(time.Hour))
			h.Timestamp = now.Add(-2 * time.Minute).UnixMilli()
		}), codeBadSignature},
		{"session: session signature before membership", url, session(bob, func(h *SessionHelloFrame, s Keypair) {
			h.ParentMemberPubkey = stranger.PublicHex()
			attest(h, s, stranger, now.Add(time.Hour))
			h.Timestamp = now.Add(-2 * time.Minute).UnixMilli()
		}), codeTimestampSkew},
		{"session: membership before parentMemberId", url, session(bob, func(h *SessionHelloFrame, s Keypair) {
			h.ParentMemberPubkey = stranger.PublicHex()
			attest(h, s, stranger, now.Add(time.Hour))
			h.Signature = s.sign(sessionHelloSignedString(h.MeshID, h.ParentMemberPubkey, h.SessionPubkey, h.Timestamp))
			h.ParentMemberID = "someone"
		}), codeUnauthorized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { refusedWith(t, c.url, c.hello, c.code, closePolicy) })
	}
}

// Under pressure (half the per-address cap already waiting for a
// handshake) a new socket gets the shorter hello deadline; the sockets that
// came before keep theirs.
func TestHelloDeadlineShorterUnderPressure(t *testing.T) {
	forEachStore(t, testHelloDeadlineShorterUnderPressure)
}

func testHelloDeadlineShorterUnderPressure(t *testing.T) {
	_, url := startTestBrokerWith(t, BrokerOptions{MaxPendingPerIP: 4, HelloTimeout: time.Minute, HelloTimeoutUnderPressure: 100 * time.Millisecond})
	idle := []*testClient{dialTestClient(t, url), dialTestClient(t, url)}
	pressed := dialTestClient(t, url)
	if f := pressed.expect(frameError, nil); f.str("code") != codeHelloTimeout || f.str("message") != "no hello within 100ms" {
		t.Fatalf("under pressure: %v, want hello_timeout after 100ms", f)
	}
	pressed.expectClose()
	for _, tc := range idle {
		select {
		case <-tc.done:
			t.Fatalf("a socket within the normal deadline was closed: %v", tc.err)
		default:
		}
	}
}

// An address may hold MaxPendingPerIP sockets before their handshake; one
// more is refused with 429, and a handshake frees its place. (The pressure
// deadline is as long as the normal one here, so that no socket times out
// while the test counts.)
func TestPendingSocketsCappedPerAddress(t *testing.T) {
	forEachStore(t, testPendingSocketsCappedPerAddress)
}

func testPendingSocketsCappedPerAddress(t *testing.T) {
	b, url := startTestBrokerWith(t, BrokerOptions{MaxPendingPerIP: 4, HelloTimeout: time.Minute, HelloTimeoutUnderPressure: time.Minute})
	owner := newTestMesh(t, b, url, "team", "alice")
	var open []*testClient
	for range 4 {
		open = append(open, dialTestClient(t, url))
	}
	waitFor(t, "four sockets pending", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.pendingByIP["127.0.0.1"] == 4
	})
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fifth pending socket: %v (%v), want 429", err, resp)
	}
	// A handshake frees its place.
	open[0].hello(owner, "daemon-1")
	waitFor(t, "the authenticated socket released", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.pendingByIP["127.0.0.1"] == 3
	})
	open = append(open, dialTestClient(t, url))
	for _, tc := range open[1:] {
		select {
		case <-tc.done:
			t.Fatalf("a pending socket within its deadline was closed: %v", tc.err)
		default:
		}
	}
}
