// Tests of multicast fan-out against durable membership: the resolution
// rule as a truth table, and brokers restarted, links in grace and members
// offline at send time.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestResolveMulticast(t *testing.T) {
	now := time.Now()
	old := now.Add(-groupMemory - time.Hour)
	banned := now
	members := []storedMember{
		{ID: "A", Pubkey: "a-link"},
		{ID: "B", Pubkey: "b-link"},
		{ID: "C", Pubkey: "c-link", DefaultGroups: []GroupRef{{Name: "ops"}}},
		{ID: "X", Pubkey: "x-link", RevokedAt: &banned},
	}
	dev := []GroupRef{{Name: "dev/api"}}
	session := func(member, key string, present bool, seen time.Time, groups ...GroupRef) storedPresence {
		return storedPresence{Key: key, MemberID: member, Role: peerRoleSession, Present: present, Visible: true, SeenAt: seen, Groups: groups}
	}
	link := func(member, key string, present bool, seen time.Time, groups ...GroupRef) storedPresence {
		return storedPresence{Key: key, MemberID: member, Role: peerRoleControlPlane, Present: present, Visible: true, SeenAt: seen, Groups: groups}
	}
	hidden := session("B", "b-hidden", true, now)
	hidden.Visible = false
	cases := []struct {
		name      string
		target    multicastTarget
		presences []storedPresence
		want      []string
	}{
		{"broadcast reaches every unbanned member's link when nobody is present",
			multicastTarget{Kind: targetBroadcast, SenderKey: "a-link", SenderMemberID: "A"}, nil,
			[]string{"b-link", "c-link"}},
		{"present sessions take their member's copy, each once; the sender's sibling gets one",
			multicastTarget{Kind: targetBroadcast, SenderKey: "a-1", SenderMemberID: "A"},
			[]storedPresence{session("A", "a-1", true, now), session("A", "a-2", true, now), link("A", "a-link", true, now),
				session("B", "b-1", true, now), session("B", "b-2", false, now), link("B", "b-link", true, now)},
			[]string{"a-2", "b-1", "c-link"}},
		{"a session in its grace window is present: the link does not stand in",
			multicastTarget{Kind: targetBroadcast, SenderKey: "a-link", SenderMemberID: "A"},
			[]storedPresence{session("B", "b-1", true, old), link("B", "b-link", true, now)},
			[]string{"b-1", "c-link"}},
		{"the sender's own link never gets a copy",
			multicastTarget{Kind: targetTopic, Ref: "news", SenderKey: "a-1", SenderMemberID: "A"},
			[]storedPresence{session("A", "a-1", true, now), link("A", "a-link", true, now)},
			[]string{"b-link", "c-link"}},
		{"hidden sessions are not recipients; their link stands in",
			multicastTarget{Kind: targetBroadcast, SenderKey: "a-link", SenderMemberID: "A"},
			[]storedPresence{hidden},
			[]string{"b-link", "c-link"}},
		{"group: a member whose session declared it recently, though gone, gets it on its link",
			multicastTarget{Kind: targetGroup, Ref: "dev", SenderKey: "a-link", SenderMemberID: "A"},
			[]storedPresence{session("B", "b-1", false, now.Add(-time.Hour), dev...), link("B", "b-link", false, now)},
			[]string{"b-link"}},
		{"group: a declaration older than the message lifetime no longer counts",
			multicastTarget{Kind: targetGroup, Ref: "dev", SenderKey: "a-link", SenderMemberID: "A"},
			[]storedPresence{session("B", "b-1", false, old, dev...), link("B", "b-link", false, now)},
			nil},
		{"group: only present sessions in the group, never the member's others",
			multicastTarget{Kind: targetGroup, Ref: "dev", SenderKey: "a-link", SenderMemberID: "A"},
			[]storedPresence{session("B", "b-1", true, now, dev...), session("B", "b-2", true, now), link("B", "b-link", true, now, dev...)},
			[]string{"b-1"}},
		{"group: a link in the group stands in for sessions outside it",
			multicastTarget{Kind: targetGroup, Ref: "dev", SenderKey: "a-link", SenderMemberID: "A"},
			[]storedPresence{session("B", "b-2", true, now), link("B", "b-link", true, now, dev...)},
			[]string{"b-link"}},
		{"group: a member whose link never connected counts by its default groups",
			multicastTarget{Kind: targetGroup, Ref: "ops", SenderKey: "a-link", SenderMemberID: "A"}, nil,
			[]string{"c-link"}},
		{"group: a link's declared groups replace the default ones",
			multicastTarget{Kind: targetGroup, Ref: "ops", SenderKey: "a-link", SenderMemberID: "A"},
			[]storedPresence{link("C", "c-link", false, now, dev...)},
			nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.target.Now = now
			got := resolveMulticast(tc.target, members, tc.presences)
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("recipients = %v, want %v", got, tc.want)
			}
		})
	}
}

// A broadcast sent after a broker restart, before the recipients have
// reconnected, reaches each of them once: the session that was connected
// before the restart on its own key, a member with no session on its link.
func TestBroadcastAcrossBrokerRestartBeforeReconnect(t *testing.T) {
	forEachStore(t, testBroadcastAcrossBrokerRestartBeforeReconnect)
}

func testBroadcastAcrossBrokerRestartBeforeReconnect(t *testing.T) {
	store := newTestStore(t)
	b, url := startTestBrokerWith(t, store)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	carol := addTestMember(t, b, owner, "carol", roleMember)
	sess := mustNewKeypair()
	connectMember(t, url, bob)
	connectSession(t, url, bob, sess, "bob-1")
	connectMember(t, url, carol)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b2, url2 := startTestBrokerWith(t, store)
	owner.BrokerURL, bob.BrokerURL, carol.BrokerURL = url2, url2, url2
	a := connectMember(t, url2, owner)
	ack := a.sendText("*", "while you were away", "")
	if ack["queued"] != true {
		t.Fatalf("ack = %v", ack)
	}
	want := []string{sess.PublicHex(), carol.Pubkey}
	slices.Sort(want)
	if got := deliveryKeys(t, b2, ack.str("messageId")); !slices.Equal(got, want) {
		t.Fatalf("deliveries for %v, want bob's session and carol's link %v", got, want)
	}
	connectMember(t, url2, bob)
	s := connectSession(t, url2, bob, sess, "bob-1")
	s.ackPush(s.expectPush("while you were away"))
	cm := connectMember(t, url2, carol)
	cm.ackPush(cm.expectPush("while you were away"))
	waitFor(t, "all delivered", func() bool {
		n, _ := b2.store.CountPendingDeliveries(context.Background(), time.Now())
		return n == 0
	})
}

// While a session is in its grace window its member link does not stand
// in; once the session is gone for good, the link does.
func TestStandInDecidedAtFanOut(t *testing.T) { forEachStore(t, testStandInDecidedAtFanOut) }

func testStandInDecidedAtFanOut(t *testing.T) {
	b, url := startTestBrokerWith(t, BrokerOptions{Grace: 300 * time.Millisecond})
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	a := connectMember(t, url, owner)
	bm := connectMember(t, url, bob)
	sess := mustNewKeypair()
	s := connectSession(t, url, bob, sess, "bob-1")
	s.ws.Close(websocket.StatusNormalClosure, "reconnecting")
	p := findPeer(b, owner.MeshID, func(p *peer) bool { return p.key == sess.PublicHex() })
	waitOffline(t, b, p)
	ack := a.sendText("*", "in grace", "")
	if got := deliveryKeys(t, b, ack.str("messageId")); !slices.Equal(got, []string{sess.PublicHex()}) {
		t.Fatalf("deliveries for %v, want only the session in grace", got)
	}
	s2 := connectSession(t, url, bob, sess, "bob-1")
	s2.ackPush(s2.expectPush("in grace"))

	s2.ws.Close(websocket.StatusNormalClosure, "done")
	waitFor(t, "the session's grace to end", func() bool {
		return findPeer(b, owner.MeshID, func(p *peer) bool { return p.key == sess.PublicHex() }) == nil
	})
	// The absence is written through the same queue as the send: in order.
	ack = a.sendText("*", "after the session ended", "")
	if got := deliveryKeys(t, b, ack.str("messageId")); !slices.Equal(got, []string{bob.Pubkey}) {
		t.Fatalf("deliveries for %v, want bob's link", got)
	}
	bm.ackPush(bm.expectPush("after the session ended"))
}

// deliveryKeys lists the keys a delivery of message id is still pending
// for, sorted.
func deliveryKeys(t *testing.T, b *Broker, id string) []string {
	t.Helper()
	q := `SELECT d.recipient_key FROM deliveries d JOIN messages m ON m.seq = d.msg_seq WHERE m.id = ? ORDER BY d.recipient_key`
	if _, ok := unwrapStore(b.store).(*postgresBrokerStore); ok {
		q = `SELECT recipient_key FROM deliveries WHERE message_id = ? ORDER BY recipient_key`
	}
	return storeStrings(t, b, q, id)
}

// A recipient that never acks: the broker leases it at most MaxInflight
// deliveries at a time and re-pushes at most that many per lease, however
// much is queued for it; once it acks, everything arrives.
func TestNeverAckingRecipientIsBounded(t *testing.T) {
	forEachStore(t, testNeverAckingRecipientIsBounded)
}

func testNeverAckingRecipientIsBounded(t *testing.T) {
	const lease, maxInflight, queued = 200 * time.Millisecond, 20, 150
	opts := msgBrokerOptions()
	opts.Lease, opts.SweepInterval, opts.MaxInflight = lease, 50*time.Millisecond, maxInflight
	b, url := startTestBrokerWith(t, opts)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	a := connectMember(t, url, owner)
	for i := range queued {
		if ack := a.sendText(bob.Pubkey, fmt.Sprint("m", i), ""); ack["queued"] != true {
			t.Fatalf("send %d: %v", i, ack)
		}
	}
	silent := connectMember(t, url, bob)
	p := findPeer(b, owner.MeshID, func(p *peer) bool { return p.key == bob.Pubkey && p.conn != nil })
	start := time.Now()
	pushes, most := 0, 0
	window := 5 * lease
	for time.Since(start) < window {
		select {
		case data := <-silent.frames:
			var f frame
			if json.Unmarshal(data, &f) == nil && f.str("type") == framePush && f.str("subtype") != subtypeSystem {
				pushes++
			}
		case <-time.After(10 * time.Millisecond):
		}
		b.mu.Lock()
		most = max(most, len(p.inflight))
		b.mu.Unlock()
	}
	if most > maxInflight {
		t.Fatalf("%d deliveries leased at once, want at most %d", most, maxInflight)
	}
	// One lease's worth at the start, then at most one re-push of each per
	// lease (the sweep's period adds up to one more round).
	if limit := maxInflight * (int(window/lease) + 2); pushes > limit || pushes < maxInflight {
		t.Fatalf("%d pushes in %v, want between %d and %d", pushes, window, maxInflight, limit)
	}
	silent.ws.Close(websocket.StatusNormalClosure, "now I will ack")
	waitOffline(t, b, p)
	acker := connectMember(t, url, bob)
	seen := map[string]bool{}
	for len(seen) < queued {
		f := acker.expect(framePush, func(f frame) bool { return f.str("subtype") != subtypeSystem })
		seen[pushText(f)] = true
		acker.ackPush(f)
	}
	waitFor(t, "all delivered", func() bool {
		n, _ := b.store.CountPendingDeliveries(context.Background(), time.Now())
		return n == 0
	})
}

// The hourly purge forgets keys gone for longer than a message waits, and
// keeps the present and the recent.
func TestPurgeForgetsLongGonePresences(t *testing.T) {
	s, err := openSQLiteBrokerStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	ctx := context.Background()
	err = s.SavePresences(ctx, []storedPresence{
		{MeshID: "m", Key: "long-gone", MemberID: "A", Role: peerRoleSession, SeenAt: now.Add(-groupMemory - time.Hour)},
		{MeshID: "m", Key: "recent", MemberID: "A", Role: peerRoleSession, SeenAt: now.Add(-time.Hour)},
		{MeshID: "m", Key: "present", MemberID: "A", Role: peerRoleSession, Present: true, SeenAt: now.Add(-groupMemory - time.Hour)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PurgeExpired(ctx, now); err != nil {
		t.Fatal(err)
	}
	rows, err := s.r.Query(`SELECT key FROM presences ORDER BY key`)
	keys, err := collect(rows, err, func(r rowScanner) (string, error) {
		var k string
		return k, r.Scan(&k)
	})
	if err != nil || !slices.Equal(keys, []string{"present", "recent"}) {
		t.Fatalf("presences after the purge = %v, %v; want present and recent", keys, err)
	}
}
