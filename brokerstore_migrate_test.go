// Tests of `broker migrate`: a SQLite broker with meshes, a pending
// message, state, memory, a skill and an audit log, moved to PostgreSQL and
// served from there.
package main

import (
	"context"
	"strings"
	"testing"
)

func TestBrokerMigrateSQLiteToPostgres(t *testing.T) {
	dir := t.TempDir()
	b, url := startTestBrokerWith(t, BrokerOptions{DataDir: dir})
	alice := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, alice, "bob", roleMember)
	a := connectMember(t, url, alice)
	bobSession := mustNewKeypair()
	connectSession(t, url, bob, bobSession, "bob-1").ws.CloseNow()
	a.sendText(bob.Pubkey, "waiting for bob", "c-1")
	a.roundTrip(map[string]any{"type": frameSetState, "key": "phase", "value": "review"})
	a.roundTrip(map[string]any{"type": frameRemember, "content": "the release train leaves on fridays", "tags": []string{"ops"}})
	a.roundTrip(map[string]any{"type": frameShareSkill, "name": "deploy", "description": "ship it", "instructions": "run make"})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	store := testPostgresSchemaURL(t)
	m := newMachine(t)
	if code, _, errs := m.run("broker", "migrate", "--from", dir); code != exitUsage || !strings.Contains(errs, "--to") {
		t.Fatalf("migrate without --to = %d %s", code, errs)
	}
	code, out, errs := m.run("broker", "migrate", "--from", dir, "--to", store, "--json")
	if code != 0 || !strings.Contains(out, `"messages": 1`) || !strings.Contains(out, `"members": 2`) {
		t.Fatalf("broker migrate = %d\n%s%s", code, out, errs)
	}
	// Twice is refused: the target is no longer empty.
	if code, _, errs := m.run("broker", "migrate", "--from", dir, "--to", store); code == 0 || !strings.Contains(errs, "already holds 1 meshes") {
		t.Fatalf("a second migrate = %d %s", code, errs)
	}

	pb, purl := startTestBrokerWith(t, BrokerOptions{StoreURL: store})
	bob.BrokerURL = purl
	bl := connectMember(t, purl, bob)
	bl.ackPush(bl.expectPush("waiting for bob"))
	alice.BrokerURL = purl
	pa := connectMember(t, purl, alice)
	if got := pa.roundTrip(map[string]any{"type": frameGetState, "key": "phase"}); !strings.Contains(frameJSON(got), `"review"`) {
		t.Fatalf("state after the migration: %v", got)
	}
	if got := pa.roundTrip(map[string]any{"type": frameRecall, "query": "release"}); !strings.Contains(frameJSON(got), "fridays") {
		t.Fatalf("recall after the migration: %v", got)
	}
	if got := pa.roundTrip(map[string]any{"type": frameGetSkill, "name": "deploy"}); !strings.Contains(frameJSON(got), "run make") {
		t.Fatalf("skill after the migration: %v", got)
	}
	// bob's session key is still known: a DM to it queues.
	if ack := pa.sendText(bobSession.PublicHex(), "to bob's session", ""); ack["queued"] != true {
		t.Fatalf("DM to a migrated session key: %v", ack)
	}
	// The audit chain came along whole, and goes on.
	entries, err := pb.store.AuditLog(context.Background(), alice.MeshID, 0, 100)
	if err != nil || len(entries) == 0 || verifyAuditChain(alice.MeshID, entries) != nil {
		t.Fatalf("audit log after the migration: %d entries, %v, verify %v", len(entries), err, verifyAuditChain(alice.MeshID, entries))
	}
	if _, err := pb.addMember(context.Background(), alice.MeshID, mustNewKeypair().PublicHex(), "carol", roleMember); err != nil {
		t.Fatal(err)
	}
	entries, _ = pb.store.AuditLog(context.Background(), alice.MeshID, 0, 100)
	if err := verifyAuditChain(alice.MeshID, entries); err != nil {
		t.Fatalf("the chain after a new entry on PostgreSQL: %v", err)
	}
}
