// Tests of the broker end to end over real sockets (handshakes, a DM's whole
// round trip, _reqId echo) and fuzzing of every frame it reads.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestBrokerHelloAndSessionHello(t *testing.T) { forEachStore(t, testBrokerHelloAndSessionHello) }

func testBrokerHelloAndSessionHello(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)

	a := dialTestClient(t, url)
	ack := a.hello(owner, "daemon-1")
	if len(ack.str("presenceId")) != 32 || ack.str("memberDisplayName") != "alice" {
		t.Fatalf("hello_ack = %v", ack)
	}
	if prof, ok := ack["memberProfile"].(map[string]any); !ok || prof["messageMode"] != "push" {
		t.Fatalf("hello_ack memberProfile = %v", ack["memberProfile"])
	}

	sess := mustNewKeypair()
	s := dialTestClient(t, url)
	sack := s.sessionHello(bob, sess, "sess-1", "bob-session")
	if sack.str("presenceId") == "" || sack.str("memberDisplayName") != "bob" {
		t.Fatalf("session hello_ack = %v", sack)
	}
	// The member connection hears about the new session.
	ev := a.expect(framePush, func(f frame) bool { return f.str("event") == eventPeerJoined })
	if ev.str("subtype") != subtypeSystem || ev["eventData"].(map[string]any)["pubkey"] != sess.PublicHex() {
		t.Fatalf("peer_joined = %v", ev)
	}

	list := a.roundTrip(map[string]any{"type": frameListPeers})
	if list.str("type") != framePeersList {
		t.Fatalf("list_peers reply = %v", list)
	}
	roles := map[string]string{}
	for _, p := range list["peers"].([]any) {
		row := p.(map[string]any)
		roles[row["displayName"].(string)] = row["peerRole"].(string)
		if row["pubkey"] == sess.PublicHex() && row["memberPubkey"] != bob.Pubkey {
			t.Errorf("session row memberPubkey = %v, want %s", row["memberPubkey"], bob.Pubkey)
		}
	}
	if roles["alice"] != peerRoleControlPlane || roles["bob-session"] != peerRoleSession {
		t.Fatalf("peer roles = %v", roles)
	}
}

func TestBrokerDMSendAckPushClientAck(t *testing.T) {
	forEachStore(t, testBrokerDMSendAckPushClientAck)
}

func testBrokerDMSendAckPushClientAck(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	a := connectMember(t, url, owner)
	bobSess := mustNewKeypair()
	s := connectSession(t, url, bob, bobSess, "bob-1")

	alice, _ := owner.Keypair()
	nonce, ct, err := sealDM([]byte("hello bob"), bobSess.PublicHex(), alice)
	if err != nil {
		t.Fatal(err)
	}
	cmid := newUUID()
	a.sendJSON(SendFrame{Type: frameSend, ID: cmid, ClientMessageID: cmid, RequestFingerprint: "ab12", TargetSpec: bobSess.PublicHex(),
		Priority: priorityNow, Nonce: nonce, Ciphertext: ct, ReplyToID: "r-1"})
	ack := a.expect(frameAck, nil)
	if ack.str("id") != cmid || ack["queued"] != true || len(ack.str("messageId")) != 32 || ack["error"] != nil {
		t.Fatalf("ack = %v", ack)
	}
	push := s.expect(framePush, func(f frame) bool { return f.str("subtype") == "" })
	want := map[string]string{"messageId": ack.str("messageId"), "meshId": owner.MeshID, "senderPubkey": owner.Pubkey,
		"senderMemberPubkey": owner.Pubkey, "senderName": "alice", "priority": priorityNow, "nonce": nonce,
		"ciphertext": ct, "client_message_id": cmid, "request_fingerprint": "ab12", "replyToId": "r-1"}
	for k, v := range want {
		if push.str(k) != v {
			t.Errorf("push[%s] = %q, want %q", k, push.str(k), v)
		}
	}
	if _, err := time.Parse(time.RFC3339, push.str("createdAt")); err != nil {
		t.Errorf("push createdAt = %q", push.str("createdAt"))
	}
	got, err := openDM(push.str("nonce"), push.str("ciphertext"), push.str("senderPubkey"), bobSess)
	if err != nil || string(got) != "hello bob" {
		t.Fatalf("openDM = %q, %v", got, err)
	}
	s.ackPush(push)
	waitFor(t, "delivery recorded", func() bool { return b.metrics.delivered.Load() == 1 })
	n, err := b.store.CountPendingDeliveries(t.Context(), time.Now())
	if err != nil || n != 0 {
		t.Fatalf("pending deliveries = %d, %v; want 0", n, err)
	}
}

func TestBrokerSendFromSessionCarriesSessionKey(t *testing.T) {
	forEachStore(t, testBrokerSendFromSessionCarriesSessionKey)
}

func testBrokerSendFromSessionCarriesSessionKey(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	aliceSess := mustNewKeypair()
	as := connectSession(t, url, owner, aliceSess, "alice-1")
	bm := connectMember(t, url, bob)

	as.sendText(bob.Pubkey, "from a session", "")
	push := bm.expectPush("from a session")
	if push.str("senderPubkey") != aliceSess.PublicHex() || push.str("senderMemberPubkey") != owner.Pubkey {
		t.Fatalf("push sender = %s / %s", push.str("senderPubkey"), push.str("senderMemberPubkey"))
	}
}

// TestBrokerAckedDMsLeaveTheStore: DMs to a recipient that acks them all
// leave no message and no delivery in the store, while one sent to an
// offline key stays until it is delivered.
func TestBrokerAckedDMsLeaveTheStore(t *testing.T) {
	forEachStore(t, testBrokerAckedDMsLeaveTheStore)
}

func testBrokerAckedDMsLeaveTheStore(t *testing.T) {
	const n = 50
	b, url, _, bob, a := newAliceBobMesh(t, BrokerOptions{SendBurst: 2 * n, SendPerMinute: 2 * n})
	bl := connectMember(t, url, bob)
	rows := func() (messages, deliveries string) {
		return storeStrings(t, b, `SELECT CAST(count(*) AS TEXT) FROM messages`)[0],
			storeStrings(t, b, `SELECT CAST(count(*) AS TEXT) FROM deliveries`)[0]
	}
	for i := range n {
		if ack := a.sendText(bob.Pubkey, fmt.Sprintf("dm %02d", i), fmt.Sprintf("c-%02d", i)); ack["queued"] != true {
			t.Fatalf("send %d: %v", i, ack)
		}
	}
	offline := mustNewKeypair()
	connectSession(t, url, bob, offline, "bob-away").ws.CloseNow()
	a.sendText(offline.PublicHex(), "for later", "c-later")
	a.sendText(bob.Pubkey, "end", "c-end")
	if got := pushesUntil(bl, "end"); len(got) != n {
		t.Fatalf("bob got %d DMs, want %d", len(got), n)
	}
	waitFor(t, "the store to hold only the message still pending", func() bool {
		m, d := rows()
		return m == "1" && d == "1"
	})
}

func TestBrokerReplyEchoesReqID(t *testing.T) { forEachStore(t, testBrokerReplyEchoesReqID) }

func testBrokerReplyEchoesReqID(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	a := connectMember(t, url, owner)
	for _, req := range []map[string]any{
		{"type": frameListPeers},
		{"type": frameSetStatus, "status": statusWorking},
		{"type": frameSetSummary, "summary": "busy"},
		{"type": frameJoinGroup, "name": "ops"},
		{"type": frameLeaveGroup, "name": "ops"},
		{"type": frameSetVisible, "visible": true},
		{"type": frameSetProfile, "title": "dev"},
		{"type": frameSetState, "key": "k", "value": 1},
		{"type": frameGetState, "key": "k"},
		{"type": frameListState},
		{"type": frameRemember, "content": "x"},
		{"type": frameRecall, "query": "x"},
		{"type": frameListSkills},
		{"type": frameListBans},
		{"type": "no_such_frame"},
		{"type": frameSend},
	} {
		reply := a.roundTrip(req)
		if reply.str("type") == "" {
			t.Errorf("%v: reply without type: %v", req["type"], reply)
		}
	}
	raw, _ := json.Marshal(map[string]any{"type": frameSetState, "key": "k", "value": map[string]any{"a": 1}, "_reqId": "s1"})
	a.sendJSON(json.RawMessage(raw))
	r := a.expect(frameStateResult, func(f frame) bool { return f.str("_reqId") == "s1" })
	if r.str("key") != "k" || r.str("updatedBy") != "alice" {
		t.Fatalf("state_result = %v", r)
	}
}

// fuzzBroker is a broker for the frame fuzzers: limits lifted so that every
// input reaches the code it aims at, and a plain member (no moderation
// rights) to send frames as.
func fuzzBroker(f *testing.F) (url string, member Mesh) {
	b, url := startTestBrokerWith(f, BrokerOptions{SendBurst: 1 << 20, SendPerMinute: 1 << 30,
		HandshakeBurst: 1 << 20, HandshakePerMinute: 1 << 30})
	owner := newTestMesh(f, b, url, "team", "alice")
	return url, addTestMember(f, b, owner, "fuzz", roleMember)
}

// silentWhenValid are the frames that, valid and without a _reqId, get no
// reply (as in claudemesh); client_ack never gets one.
var silentWhenValid = map[string]bool{frameClientAck: true, frameSetStatus: true, frameSetSummary: true,
	frameSetStats: true, frameJoinGroup: true, frameLeaveGroup: true, frameSetState: true}

// brokerFrameSeeds are frames of every type, well formed and not.
var brokerFrameSeeds = []string{
	`{"type":"send","id":"1","targetSpec":"*","priority":"now","nonce":"bg==","ciphertext":"aGk="}`,
	`{"type":"send","id":"2","targetSpec":"@ops","priority":"later","nonce":"n","ciphertext":"c","_reqId":"r"}`,
	`{"type":"send","targetSpec":"` + strings.Repeat("a", 64) + `","priority":"next","nonce":"n","ciphertext":"c"}`,
	`{"type":"send","targetSpec":5}`,
	`{"type":"client_ack","brokerMessageId":"x"}`,
	`{"type":"client_ack","_reqId":"r"}`,
	`{"type":"list_peers","_reqId":"r"}`,
	`{"type":"set_status","status":"dnd"}`,
	`{"type":"set_status","status":"asleep","_reqId":"r"}`,
	`{"type":"set_summary","summary":null}`,
	`{"type":"set_visible","visible":"no"}`,
	`{"type":"set_profile","capabilities":["x"],"role":7}`,
	`{"type":"set_stats","stats":[1]}`,
	`{"type":"join_group","name":"a/b","role":"lead"}`,
	`{"type":"leave_group"}`,
	`{"type":"set_state","key":"k","value":{"a":[1,2]}}`,
	`{"type":"get_state","key":""}`,
	`{"type":"list_state"}`,
	`{"type":"remember","content":"x","tags":"y"}`,
	`{"type":"recall","query":"x OR y*"}`,
	`{"type":"forget","memoryId":"nope"}`,
	`{"type":"share_skill","name":"s","instructions":"i","manifest":[1]}`,
	`{"type":"get_skill","name":"s"}`,
	`{"type":"list_skills","query":"%"}`,
	`{"type":"remove_skill","name":"s"}`,
	`{"type":"kick","all":true}`,
	`{"type":"disconnect","target":"alice"}`,
	`{"type":"ban","target":"alice"}`,
	`{"type":"unban"}`,
	`{"type":"list_bans"}`,
	`{"type":"hello"}`,
	`{"type":"session_hello","parentAttestation":{"expiresAt":1}}`,
	`{"type":"warp","_reqId":"r"}`,
	`{"type":"list_peers","_reqId":7}`,
	`{"type":""}`,
	`{"x":1}`,
	`[1,2]`,
	`"send"`,
	`null`,
	`{nope`,
	"\xff\xfe",
	``,
}

// No frame makes the broker panic, close the socket or stay silent when it
// should answer: a frame that does not validate gets an error (or, for a
// send, an ack with the error), a request with a _reqId gets a reply that
// echoes it, and the connection still answers afterwards. One connection
// serves every input, so a frame that broke it would fail the next probe.
func FuzzBrokerFrame(f *testing.F) {
	for _, s := range brokerFrameSeeds {
		f.Add([]byte(s))
	}
	url, member := fuzzBroker(f)
	tc := dialTestClient(f, url)
	tc.hello(member, "fuzz")
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > defaultMaxMessageBytes {
			t.Skip("over the frame limit: a close, tested elsewhere")
		}
		tc.t, tc.backlog = t, nil
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		defer cancel()
		if err := tc.ws.Write(ctx, websocket.MessageText, data); err != nil {
			t.Fatal(err)
		}
		probe := "probe-" + newUUID()
		tc.sendJSON(map[string]any{"type": frameListPeers, "_reqId": probe})
		tc.await("the probe's peers_list", func(f frame) bool { return f.str("_reqId") == probe })
		var replies []frame
		for _, f := range tc.backlog {
			if typ := f.str("type"); typ != framePush && typ != frameStateChange {
				replies = append(replies, f)
			}
		}
		for _, r := range replies {
			if r.str("type") == frameError && (r.str("code") == "" || r.str("message") == "") {
				t.Fatalf("error without code or message: %v", r)
			}
		}
		head, _, err := decodeClientFrame(data)
		switch {
		case err != nil && len(replies) == 0:
			t.Fatalf("invalid frame %q (%v) got no reply", data, err)
		case err != nil && errors.Is(err, errUnknownFrameType) && replies[0].str("code") != codeUnknownMessageType:
			t.Fatalf("unknown type %q answered %v", head.Type, replies[0])
		case err != nil && replies[0].str("type") != frameError && replies[0].str("type") != frameAck:
			t.Fatalf("invalid frame %q answered %v", data, replies[0])
		case err == nil && head.ReqID != "" && head.Type != frameClientAck:
			if len(replies) == 0 || replies[0].str("_reqId") != head.ReqID {
				t.Fatalf("request %q got %v, want a reply echoing its _reqId", data, replies)
			}
		case err == nil && !silentWhenValid[head.Type] && len(replies) == 0:
			t.Fatalf("valid %s frame %q got no reply", head.Type, data)
		}
	})
}

// Before a handshake, every frame gets an answer: no_hello, invalid, a
// handshake refusal or (impossible without the keys) hello_ack.
func FuzzBrokerHandshake(f *testing.F) {
	for _, s := range append(brokerFrameSeeds,
		`{"type":"hello","meshId":"m","memberId":"x","pubkey":"`+strings.Repeat("ab", 32)+`","timestamp":1,"signature":"`+strings.Repeat("cd", 64)+`"}`,
		`{"type":"hello","meshId":"m","timestamp":"soon"}`,
		`{"type":"session_hello","meshId":"m","sessionPubkey":"`+strings.Repeat("ab", 32)+`","parentMemberPubkey":"`+strings.Repeat("cd", 32)+
			`","parentAttestation":{"sessionPubkey":"`+strings.Repeat("ab", 32)+`","parentMemberPubkey":"`+strings.Repeat("cd", 32)+`","expiresAt":9e300,"signature":"00"}}`,
	) {
		f.Add([]byte(s))
	}
	url, _ := fuzzBroker(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > defaultMaxMessageBytes {
			t.Skip("over the frame limit: a close, tested elsewhere")
		}
		tc := dialTestClient(t, url)
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		defer cancel()
		if err := tc.ws.Write(ctx, websocket.MessageText, data); err != nil {
			t.Fatal(err)
		}
		r := tc.await("an answer", func(frame) bool { return true })
		switch r.str("type") {
		case frameError:
			if r.str("code") == "" || r.str("message") == "" {
				t.Fatalf("error without code or message: %v", r)
			}
		default:
			t.Fatalf("%q before a handshake answered %v", data, r)
		}
	})
}
