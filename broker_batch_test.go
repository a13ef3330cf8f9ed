// Tests of the broker's group commit: WriteBatch's one transaction and the
// committer's batching, ordering and shutdown.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// batchTestStore is a store with one mesh whose owner sends.
func batchTestStore(t *testing.T) (brokerStore, func(cmid string) storedMessage) {
	t.Helper()
	s := openTestStore(t)
	now := time.Now()
	mesh := storedMesh{ID: newID(), Slug: "team", Name: "team", OwnerPubkey: "o", RootKey: "r", CreatedAt: now}
	owner := storedMember{ID: newID(), MeshID: mesh.ID, Pubkey: "o", DisplayName: "alice", Role: roleAdmin, CreatedAt: now}
	if err := s.CreateMesh(context.Background(), mesh, owner); err != nil {
		t.Fatal(err)
	}
	return s, func(cmid string) storedMessage {
		return storedMessage{ID: newID(), MeshID: mesh.ID, SenderMemberID: owner.ID, SenderPubkey: "o", SenderMemberPubkey: "o",
			SenderName: "alice", TargetSpec: "k1", Priority: priorityNext, Nonce: "n", Ciphertext: "c", CreatedAt: now,
			ExpiresAt: now.Add(time.Hour), ClientMessageID: cmid}
	}
}

// TestWriteBatch: in one transaction, a duplicate client id inside the
// batch dedupes to the first (with its store order) and marks apply.
func TestWriteBatch(t *testing.T) { forEachStore(t, testWriteBatch) }

func testWriteBatch(t *testing.T) {
	s, msg := batchTestStore(t)
	ctx := context.Background()
	old := msg("old")
	if _, _, err := appendOne(ctx, s, old, []string{"k1"}); err != nil {
		t.Fatal(err)
	}
	a, b := msg("a"), msg("a")
	results, marked, err := s.WriteBatch(ctx,
		[]appendOp{{Msg: a, Recipients: []string{"k1"}}, {Msg: b, Recipients: []string{"k2"}}},
		[]deliveryMark{{MeshID: old.MeshID, Key: "k1", MessageID: old.ID, At: time.Now()}})
	if err != nil {
		t.Fatal(err)
	}
	if results[0].Err != nil || results[0].Dup || results[0].ID != a.ID || results[0].Seq == 0 {
		t.Errorf("first append = %+v, want stored", results[0])
	}
	if results[1].Err != nil || !results[1].Dup || results[1].ID != a.ID || results[1].Seq != results[0].Seq {
		t.Errorf("same client id in the batch = %+v, want a duplicate of %s", results[1], a.ID)
	}
	if marked != 1 {
		t.Errorf("marked = %d, want 1", marked)
	}
	for key, want := range map[string]int{"k1": 1, "k2": 0} {
		p, err := s.PendingFor(ctx, old.MeshID, key, 0, time.Now(), 10)
		if err != nil || len(p) != want {
			t.Errorf("PendingFor(%s) = %d messages, %v; want %d", key, len(p), err, want)
		}
	}
}

// TestGroupCommitterFailsAlone: an append the store refuses (a clashing
// broker id) fails alone, whether the store fails it alone or fails its
// whole transaction (the committer then tries each append on its own).
func TestGroupCommitterFailsAlone(t *testing.T) { forEachStore(t, testGroupCommitterFailsAlone) }

func testGroupCommitterFailsAlone(t *testing.T) {
	s, msg := batchTestStore(t)
	ctx := context.Background()
	first := msg("first")
	if _, _, err := appendOne(ctx, s, first, []string{"k1"}); err != nil {
		t.Fatal(err)
	}
	g := newGroupCommitter(s, slog.New(slog.NewTextHandler(io.Discard, nil)), func(int) {})
	defer g.close()
	good, clash := msg("good"), msg("clash")
	clash.ID = first.ID
	results := g.write(ctx, []appendOp{{Msg: good, Recipients: []string{"k2"}}, {Msg: clash, Recipients: []string{"k3"}}},
		[]deliveryMark{{MeshID: first.MeshID, Key: "k1", MessageID: first.ID, At: time.Now()}})
	if results[0].Err != nil || results[0].ID != good.ID {
		t.Errorf("good append = %+v, want stored", results[0])
	}
	if results[1].Err == nil {
		t.Errorf("clashing append = %+v, want an error", results[1])
	}
	for key, want := range map[string]int{"k1": 0, "k2": 1, "k3": 0} {
		if p, err := s.PendingFor(ctx, first.MeshID, key, 0, time.Now(), 10); err != nil || len(p) != want {
			t.Errorf("PendingFor(%s) = %d messages, %v; want %d", key, len(p), err, want)
		}
	}
}

// TestGroupCommitter: concurrent appends each get their own answer, and
// marks queued before close are durable after it.
func TestGroupCommitter(t *testing.T) { forEachStore(t, testGroupCommitter) }

func testGroupCommitter(t *testing.T) {
	s, msg := batchTestStore(t)
	marked := make(chan int, 100)
	g := newGroupCommitter(s, slog.New(slog.NewTextHandler(io.Discard, nil)), func(n int) { marked <- n })
	const n = 50
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := msg(fmt.Sprintf("c%d", i))
			id, dup, err := g.appendMessage(m, []string{"k1"})
			if err != nil || dup || id != m.ID {
				t.Errorf("append %d = %s, %v, %v; want %s stored", i, id, dup, err, m.ID)
			}
			ids[i] = id
		}()
	}
	wg.Wait()
	meshID := msg("").MeshID
	if p, _ := s.PendingFor(context.Background(), meshID, "k1", 0, time.Now(), 1000); len(p) != n {
		t.Fatalf("pending after %d acked appends = %d", n, len(p))
	}
	for _, id := range ids {
		g.markDelivered(deliveryMark{MeshID: meshID, Key: "k1", MessageID: id, At: time.Now()})
	}
	g.close()
	if p, _ := s.CountPendingDeliveries(context.Background(), time.Now()); p != 0 {
		t.Fatalf("%d deliveries still pending after close", p)
	}
	total := 0
	for len(marked) > 0 {
		total += <-marked
	}
	if total != n {
		t.Fatalf("marked callback counted %d, want %d", total, n)
	}
}
