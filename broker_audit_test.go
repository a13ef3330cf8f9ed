package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// Every membership and moderation event lands in the mesh's audit log, in
// order, as the verbs make them; owners and admins read it, others do not;
// a row changed in the broker's database is caught by --verify, which
// names that entry.
func TestAuditLogThroughTheVerbs(t *testing.T) { forEachStore(t, testAuditLogThroughTheVerbs) }

func testAuditLogThroughTheVerbs(t *testing.T) {
	b, url := startTestBroker(t)
	alice, bob := newMachine(t), newMachine(t)
	alice.must("mesh", "create", "team", "--broker", url, "--name", "alice")
	var inv struct{ URL string }
	_ = json.Unmarshal([]byte(alice.must("invite", "--json")), &inv)
	bob.must("join", inv.URL, "--name", "bob")
	bm, _ := bob.config().MeshBySlug("team")
	bob.must("revoke", "alice", "broadcast")
	connectSession(t, url, *bm, mustNewKeypair(), "bob-session")
	alice.must("kick", "bob-session")
	alice.must("ban", "bob")
	alice.must("unban", "bob")

	var doc struct {
		MeshID  string       `json:"meshId"`
		Total   int          `json:"total"`
		Entries []AuditEntry `json:"entries"`
	}
	if err := json.Unmarshal([]byte(alice.must("audit", "--json")), &doc); err != nil {
		t.Fatal(err)
	}
	am, _ := alice.config().MeshBySlug("team")
	var types []string
	for _, e := range doc.Entries {
		types = append(types, e.EventType)
	}
	want := []string{auditMeshCreated, auditInviteCreated, auditMemberJoined, auditInviteUsed, auditGrantChanged, auditKick, auditBan, auditUnban}
	if strings.Join(types, " ") != strings.Join(want, " ") || doc.Total != len(want) || doc.MeshID != am.MeshID {
		t.Fatalf("audit log = %v (total %d), want %v", types, doc.Total, want)
	}
	actors := map[string]string{auditMeshCreated: am.Pubkey, auditMemberJoined: bm.Pubkey, auditGrantChanged: bm.Pubkey, auditBan: am.Pubkey}
	for _, e := range doc.Entries {
		if a, ok := actors[e.EventType]; ok && (e.Actor == nil || *e.Actor != a) {
			t.Errorf("%s actor = %v, want %s", e.EventType, e.Actor, shortKey(a))
		}
	}
	var grant struct {
		Op, Peer string
		Caps     []string
	}
	if err := json.Unmarshal(doc.Entries[4].Payload, &grant); err != nil || grant.Op != grantOpRevoke || grant.Peer != am.Pubkey ||
		strings.Join(grant.Caps, ",") != "read,dm,state-read" {
		t.Errorf("grant_changed payload = %s", doc.Entries[4].Payload)
	}
	if out := alice.must("audit", "--verify"); !strings.Contains(out, "audit log of team verifies: 8 entries") {
		t.Fatalf("audit --verify = %s", out)
	}
	if out := alice.must("audit", "--limit", "2"); !strings.Contains(out, "the last 2 shown") || !strings.Contains(out, "#8") || strings.Contains(out, "#6 ") {
		t.Fatalf("audit --limit 2 = %s", out)
	}
	if code, _, errs := bob.run("audit"); code != exitPermission || !strings.Contains(errs, "only the mesh owner or an admin") {
		t.Fatalf("audit by a member = %d %s", code, errs)
	}

	// Someone with the broker's database edits the ban's payload.
	storeExec(t, b, `UPDATE audit_log SET payload = replace(payload, '"bob"', '"carol"') WHERE mesh_id = ? AND seq = 7`, am.MeshID)
	code, out, errs := alice.run("audit", "--verify")
	if code != exitFailure || !strings.Contains(errs, "entry #7 (ban,") || !strings.Contains(errs, "entries #1..#6 verify") {
		t.Fatalf("audit --verify after the edit = %d\n%s%s", code, out, errs)
	}
	code, out, _ = alice.run("audit", "--verify", "--json")
	var verdict struct {
		Verified bool `json:"verified"`
		BrokenAt struct {
			ID int64 `json:"id"`
		} `json:"brokenAt"`
	}
	if err := json.Unmarshal([]byte(out), &verdict); code != exitFailure || err != nil || verdict.Verified || verdict.BrokenAt.ID != 7 {
		t.Fatalf("audit --verify --json = %d %s", code, out)
	}
	// Deleting an entry is caught where the gap is.
	storeExec(t, b, `DELETE FROM audit_log WHERE mesh_id = ? AND seq = 3`, am.MeshID)
	if code, _, errs := alice.run("audit", "--verify"); code != exitFailure || !strings.Contains(errs, "entry #4 (invite_used,") {
		t.Fatalf("audit --verify after a deletion = %d %s", code, errs)
	}
}
