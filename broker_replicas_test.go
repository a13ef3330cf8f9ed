// Tests of brokers as replicas of one PostgreSQL store: members on
// different replicas exchange DMs, broadcasts and groups exactly once, see
// each other in peers_list and members_list, and are kicked and banned
// across replicas; a replica that stops cleanly leaves nothing behind, and
// one that dies is reaped after its heartbeat expires.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// startTestReplicas starts n brokers sharing one new PostgreSQL store, with
// fast heartbeats, and returns them with their URLs.
func startTestReplicas(t *testing.T, n int, opts BrokerOptions) ([]*Broker, []string) {
	t.Helper()
	opts.StoreURL = testPostgresSchemaURL(t)
	opts.HeartbeatInterval = 100 * time.Millisecond
	opts.ReplicaExpiry = time.Second
	var bs []*Broker
	var urls []string
	for i := range n {
		o := opts
		o.ReplicaID = "r" + string(rune('a'+i))
		b, url := startTestBrokerWith(t, o)
		bs, urls = append(bs, b), append(urls, url)
	}
	return bs, urls
}

// pushesUntil collects the bodies of tc's non-system pushes, acking each,
// until one whose body is marker.
func pushesUntil(tc *testClient, marker string) []string {
	tc.t.Helper()
	var got []string
	for {
		f := tc.expect(framePush, func(f frame) bool { return f.str("subtype") != subtypeSystem })
		tc.ackPush(f)
		if pushText(f) == marker {
			return got
		}
		got = append(got, pushText(f))
	}
}

func TestReplicasRouteExactlyOnce(t *testing.T) {
	bs, urls := startTestReplicas(t, 2, BrokerOptions{})
	a, urlA, urlB := bs[0], urls[0], urls[1]
	alice := newTestMesh(t, a, urlA, "team", "alice")
	bob := addTestMember(t, a, alice, "bob", roleMember)
	carol := addTestMember(t, a, alice, "carol", roleMember)
	aliceLink := connectMember(t, urlA, alice)
	bobLink := connectMember(t, urlB, bob)
	carolSess, carolKey := connectSessionIn(t, urlB, carol, "carol-1", GroupRef{Name: "eng"})
	carolLink := connectMember(t, urlA, carol)

	// peers_list on A shows what B holds, once B has written it.
	waitFor(t, "peers_list on replica A to show bob and carol's session from replica B", func() bool {
		list := aliceLink.roundTrip(map[string]any{"type": frameListPeers})
		var keys []string
		for _, p := range list["peers"].([]any) {
			keys = append(keys, p.(map[string]any)["pubkey"].(string))
		}
		return slices.Contains(keys, bob.Pubkey) && slices.Contains(keys, carolKey)
	})
	members := aliceLink.roundTrip(map[string]any{"type": frameListMembers})
	for _, m := range members["members"].([]any) {
		row := m.(map[string]any)
		if row["displayName"] == "bob" && row["online"] != true {
			t.Fatalf("members_list on A says bob (on B) is offline: %v", row)
		}
	}

	// A DM, a broadcast and a group, each sent on A, each pushed by B once.
	aliceLink.sendText(bob.Pubkey, "dm to bob", "c-dm")
	aliceLink.sendText("*", "to everyone", "c-all")
	aliceLink.sendText("@eng", "to eng", "c-eng")
	// The same send again (a retry through the other replica) dedupes.
	dial := connectMember(t, urlB, alice)
	if ack := dial.sendText(bob.Pubkey, "dm to bob", "c-dm"); ack["queued"] != true {
		t.Fatalf("retried send on B: %v", ack)
	}
	aliceLink.sendText(bob.Pubkey, "end", "")
	aliceLink.sendText(carolKey, "end", "")
	aliceLink.sendText(carol.Pubkey, "end", "")
	if got := pushesUntil(bobLink, "end"); !slices.Equal(got, []string{"dm to bob", "to everyone"}) {
		t.Errorf("bob on B got %q, want the DM and the broadcast once each", got)
	}
	if got := pushesUntil(carolSess, "end"); !slices.Equal(got, []string{"to everyone", "to eng"}) {
		t.Errorf("carol's session on B got %q, want the broadcast and the group once each", got)
	}
	// carol's link on A stood back for her session on B.
	if got := pushesUntil(carolLink, "end"); len(got) != 0 {
		t.Errorf("carol's link on A got %q, want nothing: her session on B takes her copies", got)
	}

	// And the other way: sent on B, pushed by A.
	bobLink.sendText(alice.Pubkey, "dm to alice", "")
	bobLink.sendText(alice.Pubkey, "end", "")
	if got := pushesUntil(aliceLink, "end"); !slices.Equal(got, []string{"dm to alice"}) {
		t.Errorf("alice on A got %q", got)
	}

	// /health names the store and the replica; /metrics counts B's pushes
	// of A's sends.
	base, _ := brokerHTTPBase(urlB)
	health := httpGetText(t, base+"/health")
	if !strings.Contains(health, `"store":"postgres"`) || !strings.Contains(health, `"replica":"rb"`) || !strings.Contains(health, `"replicas":2`) {
		t.Errorf("replica B's /health = %s", health)
	}
	metrics := httpGetText(t, base+"/metrics")
	if !strings.Contains(metrics, `claudemesh_broker_replica_pushes_total{replica="rb"} `) ||
		strings.Contains(metrics, `claudemesh_broker_replica_pushes_total{replica="rb"} 0`) {
		t.Errorf("replica B's /metrics counts no cross-replica push:\n%s", metrics)
	}
}

// TestReplicasResendAfterAckDedupes: DMs sent on one replica and acked on
// the other leave no message and no delivery behind; a re-send of one of
// them through the recipient's replica is answered with the original id
// and pushes nothing.
func TestReplicasResendAfterAckDedupes(t *testing.T) {
	const n = 20
	bs, urls := startTestReplicas(t, 2, BrokerOptions{SendBurst: 2 * n, SendPerMinute: 2 * n})
	alice := newTestMesh(t, bs[0], urls[0], "team", "alice")
	bob := addTestMember(t, bs[0], alice, "bob", roleMember)
	aliceA := connectMember(t, urls[0], alice)
	bobB := connectMember(t, urls[1], bob)
	waitFor(t, "replica A to see bob on B", func() bool {
		return strings.Contains(frameJSON(aliceA.roundTrip(map[string]any{"type": frameListPeers})), bob.Pubkey)
	})
	ids := map[string]string{}
	for i := range n {
		cmid := fmt.Sprintf("c-%02d", i)
		ack := aliceA.sendText(bob.Pubkey, "dm "+cmid, cmid)
		if ack["queued"] != true {
			t.Fatalf("send %s: %v", cmid, ack)
		}
		ids[cmid] = ack.str("messageId")
	}
	aliceA.sendText(bob.Pubkey, "end", "c-end")
	if got := pushesUntil(bobB, "end"); len(got) != n {
		t.Fatalf("bob on B got %d DMs, want %d", len(got), n)
	}
	waitFor(t, "the acked DMs to leave the store", func() bool {
		return storeStrings(t, bs[0], `SELECT CAST(count(*) AS TEXT) FROM messages`)[0] == "0" &&
			storeStrings(t, bs[0], `SELECT CAST(count(*) AS TEXT) FROM deliveries`)[0] == "0"
	})
	aliceB := connectMember(t, urls[1], alice)
	ack := aliceB.sendText(bob.Pubkey, "dm c-07", "c-07")
	if ack["queued"] != true || ack.str("messageId") != ids["c-07"] {
		t.Fatalf("re-send after the ack = %v, want the original id %s", ack, ids["c-07"])
	}
	aliceB.sendText(bob.Pubkey, "end again", "")
	if got := pushesUntil(bobB, "end again"); len(got) != 0 {
		t.Fatalf("bob got %q again after the re-send", got)
	}
}

// httpGetText is the body of a GET.
func httpGetText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return string(data)
}

func TestReplicasKickAndBanAcross(t *testing.T) {
	bs, urls := startTestReplicas(t, 2, BrokerOptions{})
	a, urlA, urlB := bs[0], urls[0], urls[1]
	alice := newTestMesh(t, a, urlA, "team", "alice")
	bob := addTestMember(t, a, alice, "bob", roleMember)
	aliceLink := connectMember(t, urlA, alice)
	bobSess := connectSession(t, urlB, bob, mustNewKeypair(), "bob-1")
	bobLink := connectMember(t, urlB, bob)
	waitFor(t, "bob's presences on A's list", func() bool {
		return strings.Contains(frameJSON(aliceLink.roundTrip(map[string]any{"type": frameListPeers})), "bob-1")
	})

	ack := aliceLink.roundTrip(map[string]any{"type": frameKick, "target": "bob-1"})
	if !strings.Contains(frameJSON(ack), "bob-1") {
		t.Fatalf("kick ack = %v, want bob-1 kicked", ack)
	}
	if code, reason := bobSess.expectClose(); code != closeKicked || reason != "kicked" {
		t.Fatalf("bob's session on B closed %d %q, want %d kicked", code, reason, closeKicked)
	}

	if ack := aliceLink.roundTrip(map[string]any{"type": frameBan, "target": "bob"}); ack.str("type") != frameBanAck {
		t.Fatalf("ban = %v", ack)
	}
	if code, _ := bobLink.expectClose(); code != closeBanned {
		t.Fatalf("bob's link on B closed %d, want %d banned", code, closeBanned)
	}
	waitFor(t, "bob gone from A's list after his ban", func() bool {
		return !strings.Contains(frameJSON(aliceLink.roundTrip(map[string]any{"type": frameListPeers})), `"bob`)
	})
}

func TestReplicaStopAndDeath(t *testing.T) {
	bs, urls := startTestReplicas(t, 3, BrokerOptions{Grace: 1500 * time.Millisecond})
	a, urlA := bs[0], urls[0]
	alice := newTestMesh(t, a, urlA, "team", "alice")
	bob := addTestMember(t, a, alice, "bob", roleMember)
	carol := addTestMember(t, a, alice, "carol", roleMember)
	aliceLink := connectMember(t, urlA, alice)
	connectSession(t, urls[1], bob, mustNewKeypair(), "bob-1")
	connectSession(t, urls[2], carol, mustNewKeypair(), "carol-1")
	listed := func(name string) bool {
		return strings.Contains(frameJSON(aliceLink.roundTrip(map[string]any{"type": frameListPeers})), `"`+name+`"`)
	}
	waitFor(t, "both sessions listed on A", func() bool { return listed("bob-1") && listed("carol-1") })

	// A clean stop removes its presences at once.
	if err := bs[1].Close(); err != nil {
		t.Fatal(err)
	}
	if listed("bob-1") {
		t.Fatal("bob-1 still listed on A after its replica stopped")
	}

	// A replica that stops heartbeating is reaped after the expiry: its
	// live presences go, and after the grace window its stored presences
	// end.
	waitFor(t, "A to count the stopped replica out", func() bool { return a.replicas.live.Load() == 2 })
	before := a.replicas.reaped.Load()
	c := bs[2]
	c.replicas.store.(*postgresBrokerStore).pool.Close() // cut off from the database, as a kill would
	start := time.Now()
	waitFor(t, "carol-1 gone from A's list", func() bool { return !listed("carol-1") })
	if waited := time.Since(start); waited > 3*c.opts.ReplicaExpiry {
		t.Fatalf("reaped after %v; the expiry is %v", waited, c.opts.ReplicaExpiry)
	}
	waitFor(t, "A to reap the dead replica", func() bool { return a.replicas.reaped.Load() == before+1 })
	// Once the grace window has passed too, a broadcast goes to carol's
	// link, not her dead session.
	carolLink := connectMember(t, urlA, carol)
	waitFor(t, "carol's session to end in the store", func() bool {
		return len(storeStrings(t, a, `SELECT key FROM presences WHERE member_id = ? AND role = ? AND present`, carol.MemberID, peerRoleSession)) == 0
	})
	aliceLink.sendText("*", "after the death", "")
	carolLink.ackPush(carolLink.expectPush("after the death"))
}

// frameJSON is a frame as JSON text, for containment checks.
func frameJSON(f frame) string { return string(mustJSON(f)) }

// The load tool spreads its peers over two replicas' URLs: every message
// arrives exactly once, and the report separates those that crossed.
func TestBenchAcrossReplicas(t *testing.T) {
	const unlimited = 1 << 30
	_, urls := startTestReplicas(t, 2, BrokerOptions{SendBurst: unlimited, SendPerMinute: unlimited,
		HandshakeBurst: unlimited, HandshakePerMinute: unlimited})
	r, err := runBenchLoad(context.Background(), benchOptions{BrokerURL: strings.Join(urls, ","), Peers: 4, Messages: 25, Rate: 400, Drain: testWait})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Delivered != 100 {
		t.Fatalf("report = %+v, want 100 delivered exactly once", r)
	}
	if r.CrossReplica == 0 || r.CrossReplica == 100 || r.CrossReplicaP50Ms <= 0 {
		t.Fatalf("across replicas: %d messages, p50 %.2f ms; want some, not all, with a latency", r.CrossReplica, r.CrossReplicaP50Ms)
	}
}

// A member's role and grants changed through one replica hold on the
// others at once: bob, made an admin through A, moderates on B; his grants,
// changed through B, decide what A routes to him.
func TestReplicasRoleAndGrantsAcross(t *testing.T) {
	bs, urls := startTestReplicas(t, 2, BrokerOptions{})
	a, urlA, urlB := bs[0], urls[0], urls[1]
	alice := newTestMesh(t, a, urlA, "team", "alice")
	bob := addTestMember(t, a, alice, "bob", roleMember)
	bobOnB := connectMember(t, urlB, bob)
	mayModerate := func() bool {
		f := bobOnB.roundTrip(map[string]any{"type": frameListBans})
		return f.str("type") == frameListBansResult
	}
	if mayModerate() {
		t.Fatal("a plain member moderates on B")
	}
	var role RoleResponse
	if err := memberPost(context.Background(), alice, "role", &RoleRequest{Member: "bob", Role: roleAdmin}, &role); err != nil || !role.Changed {
		t.Fatalf("role bob admin through A = %+v, %v", role, err)
	}
	waitFor(t, "bob's link on B to moderate", mayModerate)

	// A has read bob's grants at a handshake of his; he changes them
	// through B.
	aliceLink := connectMember(t, urlA, alice)
	connectMember(t, urlA, bob)
	if ack := aliceLink.sendText(bob.Pubkey, "before", ""); ack.str("error") != "" {
		t.Fatalf("DM to bob before his grants change = %v", ack)
	}
	bobViaB := bob
	bobViaB.BrokerURL = urlB
	setGrantsVia(t, bobViaB, grantMap{alice.Pubkey: {}})
	waitFor(t, "A to refuse alice's DM by bob's new grants", func() bool {
		ack := aliceLink.sendText(bob.Pubkey, "after", "")
		return strings.Contains(frameJSON(ack), "blocked by recipient grants")
	})
}
