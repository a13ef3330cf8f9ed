// Tests of the broker's frames after the handshake: presence, state, memory,
// skills, and the reply shapes a claudemesh daemon expects.
package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBrokerStateMemorySkills(t *testing.T) { forEachStore(t, testBrokerStateMemorySkills) }

func testBrokerStateMemorySkills(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	a := connectMember(t, url, owner)
	bc := connectMember(t, url, bob)

	// Shared state: silent without _reqId, state_result with one, state_change to others.
	a.sendJSON(map[string]any{"type": frameSetState, "key": "build", "value": "green"})
	ch := bc.expect(frameStateChange, nil)
	if ch.str("key") != "build" || ch["value"] != "green" || ch.str("updatedBy") != "alice" {
		t.Fatalf("state_change = %v", ch)
	}
	if r := bc.roundTrip(map[string]any{"type": frameGetState, "key": "build"}); r["value"] != "green" || r.str("updatedAt") == "" {
		t.Fatalf("get_state = %v", r)
	}
	if r := bc.roundTrip(map[string]any{"type": frameGetState, "key": "missing"}); r["value"] != nil || r.str("updatedBy") != "" {
		t.Fatalf("get_state of a missing key = %v", r)
	}
	a.roundTrip(map[string]any{"type": frameSetState, "key": "alpha", "value": map[string]any{"n": 1}})
	if r := bc.roundTrip(map[string]any{"type": frameListState}); len(r["entries"].([]any)) != 2 ||
		r["entries"].([]any)[0].(map[string]any)["key"] != "alpha" {
		t.Fatalf("list_state = %v", r)
	}

	// Memory: recall ranks the best match first; forget removes it.
	ids := map[string]string{}
	for _, content := range []string{
		"the deploy script lives in ops/deploy.sh",
		"deploy deploy deploy: always run the deploy checklist before a deploy",
		"lunch is at noon",
	} {
		r := a.roundTrip(map[string]any{"type": frameRemember, "content": content, "tags": []string{"notes"}})
		if r.str("type") != frameMemoryStored || len(r.str("id")) != 32 {
			t.Fatalf("remember = %v", r)
		}
		ids[content] = r.str("id")
	}
	r := bc.roundTrip(map[string]any{"type": frameRecall, "query": "deploy checklist"})
	mems := r["memories"].([]any)
	if len(mems) != 2 || !strings.Contains(mems[0].(map[string]any)["content"].(string), "checklist") {
		t.Fatalf("recall = %v", r)
	}
	if m := mems[0].(map[string]any); m["rememberedBy"] != "alice" || m["tags"].([]any)[0] != "notes" {
		t.Fatalf("memory row = %v", m)
	}
	if r := bc.roundTrip(map[string]any{"type": frameRecall, "query": `"; DROP TABLE memories; --`}); r.str("type") != frameMemoryResults {
		t.Fatalf("hostile recall = %v", r)
	}
	id := ids["lunch is at noon"]
	if r := a.roundTrip(map[string]any{"type": frameForget, "memoryId": id}); r.str("type") != frameAck || r.str("id") != id || r.str("messageId") != id {
		t.Fatalf("forget = %v", r)
	}
	if r := a.roundTrip(map[string]any{"type": frameRecall, "query": "lunch"}); len(r["memories"].([]any)) != 0 {
		t.Fatalf("recall after forget = %v", r)
	}

	// Skills.
	if r := a.roundTrip(map[string]any{"type": frameShareSkill, "name": "review", "description": "code review",
		"instructions": "read the diff", "tags": []string{"qa"}, "manifest": map[string]any{"v": 1}}); r.str("action") != "shared" {
		t.Fatalf("share_skill = %v", r)
	}
	if r := bc.roundTrip(map[string]any{"type": frameGetSkill, "name": "review"}); r["skill"].(map[string]any)["instructions"] != "read the diff" {
		t.Fatalf("get_skill = %v", r)
	}
	if r := bc.roundTrip(map[string]any{"type": frameListSkills, "query": "QA"}); len(r["skills"].([]any)) != 1 {
		t.Fatalf("list_skills by tag = %v", r)
	}
	if r := bc.roundTrip(map[string]any{"type": frameGetSkill, "name": "nope"}); r["skill"] != nil {
		t.Fatalf("get_skill of a missing skill = %v", r)
	}
	if r := bc.roundTrip(map[string]any{"type": frameRemoveSkill, "name": "review"}); r.str("action") != "removed" {
		t.Fatalf("remove_skill = %v", r)
	}
	if r := bc.roundTrip(map[string]any{"type": frameRemoveSkill, "name": "review"}); r.str("action") != "not_found" {
		t.Fatalf("second remove_skill = %v", r)
	}
}

func TestBrokerPresenceFrames(t *testing.T) { forEachStore(t, testBrokerPresenceFrames) }

func testBrokerPresenceFrames(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	a := connectMember(t, url, owner)
	aSess := connectSession(t, url, owner, mustNewKeypair(), "alice-s")
	bc := connectMember(t, url, bob)

	aSess.roundTrip(map[string]any{"type": frameSetSummary, "summary": "fixing tests"})
	aSess.roundTrip(map[string]any{"type": frameJoinGroup, "name": "eng", "role": "lead"})
	aSess.roundTrip(map[string]any{"type": frameSetProfile, "title": "dev", "role": "reviewer"})
	rows := bc.roundTrip(map[string]any{"type": frameListPeers})["peers"].([]any)
	var row map[string]any
	for _, r := range rows {
		if r.(map[string]any)["displayName"] == "alice-s" {
			row = r.(map[string]any)
		}
	}
	if row == nil || row["summary"] != "fixing tests" || row["role"] != "reviewer" || row["channel"] != channelSession ||
		row["groups"].([]any)[0].(map[string]any)["role"] != "lead" || row["visible"] != true {
		t.Fatalf("peer row = %v", row)
	}

	// Hidden: listed only to its own member, with peer_hidden to the others.
	if r := aSess.roundTrip(map[string]any{"type": frameSetVisible, "visible": false}); r.str("type") != frameAck {
		t.Fatalf("set_visible reply = %v", r)
	}
	bc.expect(framePush, func(f frame) bool { return f.str("event") == eventPeerHidden })
	if names := strings.Join(peersOf(bc), ","); strings.Contains(names, "alice-s") {
		t.Fatalf("bob sees a hidden peer: %s", names)
	}
	if names := strings.Join(peersOf(a), ","); !strings.Contains(names, "alice-s") {
		t.Fatalf("alice's member does not see its own hidden session: %s", names)
	}
	aSess.roundTrip(map[string]any{"type": frameSetVisible, "visible": true})
	bc.expect(framePush, func(f frame) bool { return f.str("event") == eventPeerVisible })
}

// list_members (our addition, named in hello_ack's features) lists every
// member that is not banned, online or not; a hidden presence makes its
// member online only to itself.
func TestBrokerListMembers(t *testing.T) { forEachStore(t, testBrokerListMembers) }

func testBrokerListMembers(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	carol := addTestMember(t, b, owner, "carol", roleMember)
	banned := addTestMember(t, b, owner, "mallory", roleMember)
	m, _ := b.store.MemberByPubkey(context.Background(), owner.MeshID, banned.Pubkey)
	now := time.Now()
	b.store.SetMemberRevoked(context.Background(), owner.MeshID, m.ID, &now)

	a := dialTestClient(t, url)
	if ack := a.hello(owner, "daemon-alice"); !slices.Contains(ack["features"].([]any), any(featureListMembers)) {
		t.Fatalf("hello_ack features = %v", ack["features"])
	}
	bs := connectSession(t, url, bob, mustNewKeypair(), "bob-s")
	bs.roundTrip(map[string]any{"type": frameSetVisible, "visible": false})
	online := func(tc *testClient) map[string]any {
		t.Helper()
		reply := tc.roundTrip(map[string]any{"type": frameListMembers})
		if reply.str("type") != frameMembersList {
			t.Fatalf("list_members reply = %v", reply)
		}
		out := map[string]any{}
		for _, r := range reply["members"].([]any) {
			row := r.(map[string]any)
			out[row["displayName"].(string)] = row["online"]
			if row["pubkey"] == "" || row["role"] == "" || row["joinedAt"] == "" {
				t.Fatalf("member row = %v", row)
			}
		}
		return out
	}
	if got := online(a); len(got) != 3 || got["alice"] != true || got["bob"] != false || got["carol"] != false {
		t.Fatalf("members as alice sees them = %v (bob is hidden, carol offline, mallory banned)", got)
	}
	if got := online(bs); got["bob"] != true {
		t.Fatalf("bob's own hidden session does not make him online to himself: %v", got)
	}
	carolCLI := dialTestClient(t, url) // `claudemesh status` and the like: a one-shot link
	carolCLI.sendJSON(signedHello(t, carol, "cli-1", mustNewKeypair().PublicHex(), time.Now()))
	carolCLI.expect(frameHelloAck, nil)
	if got := online(carolCLI); got["carol"] != false {
		t.Fatalf("a one-shot CLI link makes carol online: %v", got)
	}
}

func TestBrokerColdPathHelloRoutesOnEphemeralKey(t *testing.T) {
	forEachStore(t, testBrokerColdPathHelloRoutesOnEphemeralKey)
}

func testBrokerColdPathHelloRoutesOnEphemeralKey(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	bm := connectMember(t, url, bob)
	eph := mustNewKeypair()
	cold := dialTestClient(t, url)
	cold.sendJSON(signedHello(t, owner, "cli-1", eph.PublicHex(), time.Now()))
	cold.expect(frameHelloAck, nil)

	var row map[string]any
	for _, r := range bm.roundTrip(map[string]any{"type": frameListPeers})["peers"].([]any) {
		if r.(map[string]any)["pubkey"] == eph.PublicHex() {
			row = r.(map[string]any)
		}
	}
	if row == nil || row["peerRole"] != peerRoleControlPlane || row["memberPubkey"] != owner.Pubkey || row["channel"] != channelCLI {
		t.Fatalf("cold-path row = %v", row)
	}
	bm.sendText(eph.PublicHex(), "to the cli", "")
	cold.expectPush("to the cli")
	cold.sendText(bob.Pubkey, "from the cli", "")
	if p := bm.expectPush("from the cli"); p.str("senderPubkey") != eph.PublicHex() || p.str("senderMemberPubkey") != owner.Pubkey {
		t.Fatalf("push from the cold path = %v", p)
	}
}

func TestBrokerSessionReplacedBySameKey(t *testing.T) {
	forEachStore(t, testBrokerSessionReplacedBySameKey)
}

func testBrokerSessionReplacedBySameKey(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	sess := mustNewKeypair()
	first := connectSession(t, url, owner, sess, "a1")
	connectSession(t, url, owner, sess, "a1")
	if code, reason := first.expectClose(); code != closeNormal || reason != "session_replaced" {
		t.Fatalf("replaced socket closed %d %q", code, reason)
	}
	b.mu.Lock()
	n := len(b.rooms[owner.MeshID].peers)
	b.mu.Unlock()
	if n != 1 {
		t.Fatalf("presences = %d, want 1 per session key", n)
	}
}

func TestBrokerPeerReturnedRestoresState(t *testing.T) {
	forEachStore(t, testBrokerPeerReturnedRestoresState)
}

func testBrokerPeerReturnedRestoresState(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	a := connectMember(t, url, owner)
	b1 := dialTestClient(t, url)
	b1.hello(bob, "daemon-bob")
	a.expect(framePush, func(f frame) bool { return f.str("event") == eventPeerJoined })
	b1.roundTrip(map[string]any{"type": frameSetSummary, "summary": "on call"})
	b1.roundTrip(map[string]any{"type": frameJoinGroup, "name": "ops"})
	b1.ws.Close(1000, "bye")
	var p *peer
	waitFor(t, "bob offline", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, o := range b.rooms[owner.MeshID].peers {
			if o.displayName == "bob" && o.conn == nil {
				p = o
			}
		}
		return p != nil
	})
	b.expireGrace(p)
	a.expect(framePush, func(f frame) bool { return f.str("event") == eventPeerLeft })
	// The saved peer state is written as the socket closes; wait for it.
	waitFor(t, "peer state saved", func() bool {
		ps, err := b.store.LoadPeerState(t.Context(), owner.MeshID, bob.MemberID)
		return err == nil && ps.Summary == "on call"
	})
	b2 := dialTestClient(t, url)
	ack := b2.hello(bob, "daemon-bob-2")
	if ack["restored"] != true || ack.str("lastSummary") != "on call" || ack["restoredGroups"] == nil {
		t.Fatalf("hello_ack = %v", ack)
	}
	ev := a.expect(framePush, func(f frame) bool { return f.str("subtype") == subtypeSystem && f.str("event") != eventPeerLeft })
	if ev.str("event") != eventPeerReturned || ev["eventData"].(map[string]any)["summary"] != "on call" {
		t.Fatalf("event = %v", ev)
	}
}

// The replies a claudemesh (TypeScript) daemon waits for, in the shapes its
// code reads, with its own _reqId
// styles: each request gets one reply of the named type echoing the
// _reqId, with the named fields present.
func TestBrokerReplyShapesForAClaudemeshDaemon(t *testing.T) {
	forEachStore(t, testBrokerReplyShapesForAClaudemeshDaemon)
}

func testBrokerReplyShapesForAClaudemeshDaemon(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	a := connectMember(t, url, owner)
	mem := a.roundTrip(map[string]any{"type": frameRemember, "content": "the build is green", "tags": []string{"ci"}})
	for _, c := range []struct {
		req    map[string]any
		typ    string
		fields []string
	}{
		{map[string]any{"type": frameListPeers, "_reqId": "pl-1"}, framePeersList, []string{"peers"}},
		{map[string]any{"type": frameListSkills, "_reqId": "sl-2"}, frameSkillList, []string{"skills"}},
		{map[string]any{"type": frameGetSkill, "name": "none", "_reqId": "sg-3"}, frameSkillData, []string{"skill"}},
		{map[string]any{"type": frameGetState, "key": "k", "_reqId": "gs-4"}, frameStateResult, []string{"key", "value", "updatedBy", "updatedAt"}},
		{map[string]any{"type": frameListState, "_reqId": "ls-5"}, frameStateList, []string{"entries"}},
		{map[string]any{"type": frameRemember, "content": "x", "_reqId": "mr-6"}, frameMemoryStored, []string{"id"}},
		{map[string]any{"type": frameRecall, "query": "build", "_reqId": "mc-7"}, frameMemoryResults, []string{"memories"}},
		{map[string]any{"type": frameSetVisible, "visible": true, "_reqId": "sv-8"}, frameAck, []string{"id", "messageId", "queued"}},
		{map[string]any{"type": frameSetProfile, "title": "dev", "_reqId": "sp-9"}, frameAck, []string{"id", "messageId", "queued"}},
		{map[string]any{"type": frameForget, "memoryId": mem.str("id"), "_reqId": "mf-10"}, frameAck, []string{"id", "messageId", "queued"}},
	} {
		reply := a.roundTrip(c.req)
		if reply.str("type") != c.typ {
			t.Errorf("%v: reply %v, want %s", c.req["type"], reply, c.typ)
			continue
		}
		for _, k := range c.fields {
			if _, ok := reply[k]; !ok {
				t.Errorf("%v: reply %v has no %q", c.req["type"], reply, k)
			}
		}
	}
	// The generic acks: id is the _reqId (the memory id for forget), queued false.
	if r := a.roundTrip(map[string]any{"type": frameSetVisible, "visible": true}); r.str("id") == "" || r["queued"] != false || r["messageId"] != "" {
		t.Fatalf("set_visible ack = %v", r)
	}
	if r := a.roundTrip(map[string]any{"type": frameRecall, "query": "green"}); len(r["memories"].([]any)) != 0 {
		t.Fatalf("recall after forget = %v", r)
	}
	// Without a _reqId, the writes claudemesh answers with nothing stay
	// silent (a list_peers marker is the next reply), and the ones it
	// answers are answered.
	for _, req := range []map[string]any{
		{"type": frameSetStatus, "status": statusWorking}, {"type": frameSetSummary, "summary": "s"},
		{"type": frameJoinGroup, "name": "g"}, {"type": frameLeaveGroup, "name": "g"}, {"type": frameSetState, "key": "k", "value": 1},
	} {
		a.sendJSON(req)
	}
	a.sendJSON(map[string]any{"type": frameSetProfile, "bio": "b"})
	a.sendJSON(map[string]any{"type": frameListPeers})
	if f := a.await("a reply", func(f frame) bool { return f.str("type") != framePush }); f.str("type") != frameAck {
		t.Fatalf("first reply = %v, want set_profile's ack", f)
	}
	if f := a.await("a reply", func(f frame) bool { return f.str("type") != framePush }); f.str("type") != framePeersList {
		t.Fatalf("second reply = %v, want peers_list", f)
	}
}
