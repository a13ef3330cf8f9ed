package main

import (
	"encoding/json"
	"testing"
	"time"
)

func TestBrokerHelloAndSessionHello(t *testing.T) {
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

func TestBrokerReplyEchoesReqID(t *testing.T) {
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
