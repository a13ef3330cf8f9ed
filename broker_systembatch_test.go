package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Presence events reach each connection the way its handshake asked: one
// push per event (no capability, as the TypeScript daemon), one
// system_batch frame for events that came together (system_batches), or
// none (no_presence_events).
func TestBrokerSystemBatches(t *testing.T) { forEachStore(t, testBrokerSystemBatches) }

func testBrokerSystemBatches(t *testing.T) {
	b, url, alice, bob, each := newAliceBobMesh(t, BrokerOptions{})
	carol := addTestMember(t, b, alice, "carol", roleMember)
	helloWith := func(m Mesh, capability string) *testClient {
		tc := dialTestClient(t, url)
		h := signedHello(t, m, "daemon-"+m.MemberID[:6], "", time.Now())
		h.Capabilities = []string{capabilityReceipts, capability}
		tc.sendJSON(h)
		tc.expect(frameHelloAck, nil)
		return tc
	}
	batched := helloWith(bob, capabilitySystemBatches)
	none := helloWith(carol, capabilityNoPresence)

	// Carol's join reaches the others: a push, and an event in a batch.
	each.expect(framePush, func(f frame) bool {
		return f.str("event") == eventPeerJoined && strings.Contains(string(mustJSON(f)), carol.Pubkey)
	})
	batched.expect(frameSystemBatch, func(f frame) bool { return strings.Contains(string(mustJSON(f)), carol.Pubkey) })

	// Five events while the broker lock is held fall in one window.
	b.mu.Lock()
	room := b.rooms[alice.MeshID]
	for i := range 5 {
		b.systemPush(room, eventPeerLeft, SystemEventData{Name: fmt.Sprintf("burst-%d", i), Pubkey: strings.Repeat("ab", 32)}, nil, "")
	}
	b.mu.Unlock()

	var pushed []string
	for len(pushed) < 5 {
		f := each.expect(framePush, func(f frame) bool { return strings.HasPrefix(eventName(t, f["eventData"]), "burst-") })
		pushed = append(pushed, eventName(t, f["eventData"]))
	}
	if got := strings.Join(pushed, ","); got != "burst-0,burst-1,burst-2,burst-3,burst-4" {
		t.Errorf("one push per event: got %s", got)
	}

	f := batched.expect(frameSystemBatch, func(f frame) bool { return strings.Contains(string(mustJSON(f)), "burst-") })
	var batch SystemBatchFrame
	if err := json.Unmarshal(mustJSON(f), &batch); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ev := range batch.Events {
		if ev.Event != eventPeerLeft || ev.CreatedAt == "" {
			t.Errorf("batched event %+v: want peer_left with its time", ev)
		}
		names = append(names, eventName(t, ev.EventData))
	}
	if got := strings.Join(names, ","); got != "burst-0,burst-1,burst-2,burst-3,burst-4" || batch.MeshID != alice.MeshID {
		t.Errorf("one batch for the burst: mesh %s events %s", batch.MeshID, got)
	}

	// The connection that wants none gets the DM sent after the burst as
	// its first push: no event was queued before it.
	each.sendText(carol.Pubkey, "after the burst", "")
	for {
		f := none.await("the DM after the burst", func(f frame) bool {
			return f.str("type") == framePush || f.str("type") == frameSystemBatch
		})
		if f.str("type") == frameSystemBatch || f.str("subtype") == subtypeSystem {
			t.Fatalf("a connection without presence events got %v", f)
		}
		if pushText(f) == "after the burst" {
			break
		}
	}
}

// eventName is the name in a system event's data.
func eventName(t *testing.T, data any) string {
	t.Helper()
	var ev SystemEventData
	if err := json.Unmarshal(mustJSON(data), &ev); err != nil {
		t.Fatal(err)
	}
	return ev.Name
}

// A room's batch window grows with its size between the two bounds.
func TestSystemBatchWindow(t *testing.T) {
	for _, c := range []struct {
		live int
		want time.Duration
	}{
		{0, systemBatchMinWindow}, {2, systemBatchMinWindow}, {100, systemBatchMinWindow},
		{1000, 100 * time.Millisecond}, {5000, systemBatchMaxWindow}, {100000, systemBatchMaxWindow},
	} {
		if got := systemBatchWindow(c.live); got != c.want {
			t.Errorf("window for %d live = %v, want %v", c.live, got, c.want)
		}
	}
}

// A handshake's capabilities choose how presence events come.
func TestPresenceModeOf(t *testing.T) {
	for _, c := range []struct {
		caps []string
		want presenceMode
	}{
		{nil, presenceEach},
		{[]string{capabilityReceipts}, presenceEach},
		{[]string{capabilitySystemBatches}, presenceBatched},
		{[]string{capabilityNoPresence}, presenceNone},
		{[]string{capabilitySystemBatches, capabilityNoPresence}, presenceNone},
	} {
		if got := presenceModeOf(c.caps); got != c.want {
			t.Errorf("presenceModeOf(%v) = %v, want %v", c.caps, got, c.want)
		}
	}
}
