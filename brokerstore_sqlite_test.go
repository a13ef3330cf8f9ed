// Tests of the broker store, on every store: messages, deliveries, dedupe and purge.
package main

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestBrokerStoreMessages(t *testing.T) { forEachStore(t, testBrokerStoreMessages) }

func testBrokerStoreMessages(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	now := time.Now()
	mesh := storedMesh{ID: newID(), Slug: "team", Name: "team", OwnerPubkey: "o", RootKey: "r", CreatedAt: now}
	owner := storedMember{ID: newID(), MeshID: mesh.ID, Pubkey: "o", DisplayName: "alice", Role: roleAdmin, CreatedAt: now}
	if err := s.CreateMesh(ctx, mesh, owner); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateMesh(ctx, mesh, owner); !errors.Is(err, errExists) {
		t.Fatalf("second CreateMesh = %v, want errExists", err)
	}
	msg := func(cmid string, expires time.Time) storedMessage {
		return storedMessage{ID: newID(), MeshID: mesh.ID, SenderMemberID: owner.ID, SenderPubkey: "o", SenderMemberPubkey: "o",
			SenderName: "alice", TargetSpec: "*", Priority: priorityNext, Nonce: "n", Ciphertext: "c", CreatedAt: now,
			ExpiresAt: expires, ClientMessageID: cmid}
	}
	first := msg("c1", now.Add(time.Hour))
	id, dup, err := appendOne(ctx, s, first, []string{"k1", "k2", "k1"})
	if err != nil || dup || id != first.ID {
		t.Fatalf("AppendMessage = %s, %v, %v", id, dup, err)
	}
	again := msg("c1", now.Add(time.Hour))
	if id, dup, err := appendOne(ctx, s, again, []string{"k3"}); err != nil || !dup || id != first.ID {
		t.Fatalf("duplicate AppendMessage = %s, %v, %v; want the original id", id, dup, err)
	}
	if _, _, err := appendOne(ctx, s, msg("", now.Add(-time.Second)), []string{"k1"}); err != nil {
		t.Fatal(err)
	}
	pending, err := s.PendingFor(ctx, mesh.ID, "k1", 0, now, 10)
	if err != nil || len(pending) != 1 || pending[0].ID != first.ID || pending[0].ClientMessageID != "c1" {
		t.Fatalf("PendingFor(k1) = %+v, %v (the expired one must not show)", pending, err)
	}
	if p, _ := s.PendingFor(ctx, mesh.ID, "k3", 0, now, 10); len(p) != 0 {
		t.Fatalf("the duplicate created deliveries: %+v", p)
	}
	if n, err := markOne(ctx, s, mesh.ID, "k1", "", "c1", now); err != nil || n != 1 {
		t.Fatalf("MarkDelivered by client id = %d, %v", n, err)
	}
	if n, _ := markOne(ctx, s, mesh.ID, "k2", first.ID, "", now); n != 1 {
		t.Fatalf("MarkDelivered by broker id = %d", n)
	}
	if n, _ := s.CountPendingDeliveries(ctx, now); n != 0 {
		t.Fatalf("pending = %d", n)
	}
	if n, err := s.PurgeExpired(ctx, now); err != nil || n != 1 {
		t.Fatalf("PurgeExpired = %d, %v", n, err)
	}
	if m, err := s.KeyOwner(ctx, mesh.ID, "o"); err != nil || m.ID != owner.ID || m.RevokedAt != nil {
		t.Fatalf("KeyOwner(owner key) = %+v, %v: the owner key must be known", m, err)
	}
	if err := s.RememberSessionKey(ctx, mesh.ID, "s1", owner.ID, now); err != nil {
		t.Fatal(err)
	}
	if m, err := s.KeyOwner(ctx, mesh.ID, "s1"); err != nil || m.ID != owner.ID {
		t.Fatalf("KeyOwner(s1) = %+v, %v: a remembered session key must be known, as its member's", m, err)
	}
	if _, err := s.KeyOwner(ctx, mesh.ID, "s2"); !errors.Is(err, errNotFound) {
		t.Fatalf("KeyOwner(s2) = %v: an unseen key must be unknown", err)
	}
	if err := s.SetMemberRevoked(ctx, mesh.ID, owner.ID, &now); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.KeyOwner(ctx, mesh.ID, "s1"); m.RevokedAt == nil {
		t.Fatal("a banned member's session key must report revoked")
	}
}

// Each mesh has its own chain, appended in order whatever else is
// appended between; a mutation's audit events commit with it or not at all.
func TestBrokerStoreAudit(t *testing.T) { forEachStore(t, testBrokerStoreAudit) }

func testBrokerStoreAudit(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	now := time.Now()
	ev := func(mesh, typ string) auditEvent {
		return auditEvent{MeshID: mesh, Type: typ, Actor: "k", CreatedAt: now, Payload: map[string]any{"n": typ}}
	}
	if err := s.AppendAudit(ctx, ev("a", auditKick), ev("b", auditKick), ev("a", auditBan)); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(ctx, ev("a", auditUnban)); err != nil {
		t.Fatal(err)
	}
	a, err := s.AuditLog(ctx, "a", 0, 10)
	if err != nil || len(a) != 3 || a[2].EventType != auditUnban || verifyAuditChain("a", a) != nil {
		t.Fatalf("mesh a's log = %+v, %v (verify: %v)", a, err, verifyAuditChain("a", a))
	}
	if b, _ := s.AuditLog(ctx, "b", 0, 10); len(b) != 1 || b[0].PrevHash != auditGenesis || b[0].ID != 1 {
		t.Fatalf("mesh b's log = %+v", b)
	}
	if page, _ := s.AuditLog(ctx, "a", 1, 1); len(page) != 1 || page[0].ID != 2 {
		t.Fatalf("a page after #1 = %+v", page)
	}
	// A mutation that fails leaves no entry behind.
	if err := s.SetMemberRevoked(ctx, "a", "no-such-member", &now, ev("a", auditBan)); !errors.Is(err, errNotFound) {
		t.Fatalf("SetMemberRevoked of nobody = %v", err)
	}
	if a, _ := s.AuditLog(ctx, "a", 0, 10); len(a) != 3 {
		t.Fatalf("a failed ban left %d entries, want 3", len(a))
	}
}

// Invites stored before invite ids existed get one when the store opens.
func TestSQLiteBrokerStoreInviteIDsBackfilled(t *testing.T) {
	dir := t.TempDir()
	old, err := openSQLite(filepath.Join(dir, brokerDBFile), brokerMigrations[:3])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Exec(`INSERT INTO meshes (id, slug, name, owner_pubkey, root_key, created_at) VALUES ('m', 'm', 'm', 'o', 'r', 0)`); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Exec(`INSERT INTO invites (token, mesh_id, role, max_uses, expires_at, created_at) VALUES ('t1', 'm', 'member', 1, 0, 0), ('t2', 'm', 'member', 1, 0, 0)`); err != nil {
		t.Fatal(err)
	}
	old.Close()
	s, err := openSQLiteBrokerStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var n int
	if err := s.r.QueryRow(`SELECT count(DISTINCT id) FROM invites WHERE length(id) = 12`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("invites with an id = %d, %v; want 2", n, err)
	}
}
