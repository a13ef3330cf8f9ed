package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// The owner makes a member an admin and a member again, as people run it:
// the member's live connection moderates from the answer on and stops
// again, its signed requests follow the stored role, the refusals say why,
// and each change is one role_changed entry in a log that verifies. The
// same log holds a disconnect and an invite's revocation.
func TestRolesThroughTheVerbs(t *testing.T) { forEachStore(t, testRolesThroughTheVerbs) }

func testRolesThroughTheVerbs(t *testing.T) {
	b, url := startTestBroker(t)
	alice, bob, carol := newMachine(t), newMachine(t), newMachine(t)
	alice.must("mesh", "create", "team", "--broker", url, "--name", "alice")
	var inv struct{ URL, ID string }
	_ = json.Unmarshal([]byte(alice.must("invite", "--json", "--uses", "2")), &inv)
	bob.must("join", inv.URL, "--name", "bob")
	carol.must("join", inv.URL, "--name", "carol")
	am, _ := alice.config().MeshBySlug("team")
	bm, _ := bob.config().MeshBySlug("team")
	bobLink := connectMember(t, url, *bm)
	mayModerate := func() bool {
		t.Helper()
		f := bobLink.roundTrip(map[string]any{"type": frameListBans})
		if f.str("type") != frameListBansResult && f.str("code") != codeForbidden {
			t.Fatalf("list_bans by bob = %v", f)
		}
		return f.str("type") == frameListBansResult
	}
	if mayModerate() {
		t.Fatal("a plain member's link moderates")
	}
	if code, _, _ := bob.run("invite", "list"); code != exitPermission {
		t.Fatalf("invite list by a plain member = %d", code)
	}

	if out := alice.must("role", "bob", "admin"); !strings.Contains(out, "bob ("+shortKey(bm.Pubkey)+") is now an admin on team (was member)") {
		t.Fatalf("role bob admin = %s", out)
	}
	if !mayModerate() {
		t.Fatal("bob's live link does not moderate once bob is an admin")
	}
	bob.must("invite", "list")
	if out := alice.must("role", bm.Pubkey[:12], "admin"); !strings.Contains(out, "is already an admin on team") {
		t.Fatalf("role <bob's prefix> admin again = %s", out)
	}
	var members []MemberRow
	_ = json.Unmarshal([]byte(alice.must("members", "--json")), &members)
	for _, m := range members {
		if m.DisplayName == "bob" && m.Role != roleAdmin {
			t.Fatalf("members shows bob as %q, want admin", m.Role)
		}
	}
	// A connection whose handshake read bob before the change takes the
	// new role too.
	stale, err := b.store.MemberByPubkey(context.Background(), am.MeshID, bm.Pubkey)
	if err != nil {
		t.Fatal(err)
	}
	stale.Role = roleMember
	b.mu.Lock()
	role := b.memberRoleOf(am.MeshID, stale)
	b.mu.Unlock()
	if role != roleAdmin {
		t.Fatalf("a handshake that read bob before the change gives him %q, want admin", role)
	}

	refused := []struct {
		name string
		as   *machine
		args []string
		code int
		says string
	}{
		{"an admin who is not the owner", bob, []string{"role", "carol", "admin"}, exitPermission, "only the mesh owner can change roles"},
		{"the owner's own member", alice, []string{"role", "alice", "member"}, exitFailure, "always an admin"},
		{"no such member", alice, []string{"role", "zed", "admin"}, exitNotFound, "claudemesh members"},
		{"not a role", alice, []string{"role", "carol", "owner"}, exitUsage, "admin or member"},
		{"no role", alice, []string{"role", "carol"}, exitUsage, "usage"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			if code, out, errs := tc.as.run(tc.args...); code != tc.code || !strings.Contains(errs, tc.says) {
				t.Fatalf("%v = %d\n%s%s; want %d saying %q", tc.args, code, out, errs, tc.code, tc.says)
			}
		})
	}

	alice.must("role", "bob", "member")
	if mayModerate() {
		t.Fatal("bob's live link still moderates once bob is a member again")
	}
	if code, _, _ := bob.run("invite", "list"); code != exitPermission {
		t.Fatalf("invite list by bob, a member again = %d", code)
	}
	connectSession(t, url, *bm, mustNewKeypair(), "bob-session")
	alice.must("peer", "disconnect", "bob-session")
	alice.must("invite", "revoke", inv.ID)

	var doc struct{ Entries []AuditEntry }
	if err := json.Unmarshal([]byte(alice.must("audit", "--json")), &doc); err != nil {
		t.Fatal(err)
	}
	var roles []string
	seen := map[string]bool{}
	for _, e := range doc.Entries {
		seen[e.EventType] = true
		if e.EventType != auditRoleChanged {
			continue
		}
		var p struct{ Pubkey, DisplayName, From, To string }
		if err := json.Unmarshal(e.Payload, &p); err != nil || p.Pubkey != bm.Pubkey || p.DisplayName != "bob" || e.Actor == nil || *e.Actor != am.Pubkey {
			t.Fatalf("role_changed entry = %+v (payload %s)", e, e.Payload)
		}
		roles = append(roles, p.From+"→"+p.To)
	}
	if strings.Join(roles, " ") != "member→admin admin→member" {
		t.Fatalf("role_changed entries = %v, want one per change and none for the change to the same role", roles)
	}
	for _, want := range []string{auditDisconnect, auditInviteRevoked} {
		if !seen[want] {
			t.Errorf("the audit log has no %s entry", want)
		}
	}
	if out := alice.must("audit", "--verify"); !strings.Contains(out, "verifies") {
		t.Fatalf("audit --verify = %s", out)
	}
}
