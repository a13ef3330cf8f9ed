package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// invite --short, join <code> --broker, invite list and invite revoke, as
// people run them.
func TestCLIShortInvitesListAndRevoke(t *testing.T) {
	forEachStore(t, testCLIShortInvitesListAndRevoke)
}

func testCLIShortInvitesListAndRevoke(t *testing.T) {
	b, url := startTestBroker(t)
	alice, bob, carol := newMachine(t), newMachine(t), newMachine(t)
	if code, _, errs := alice.run("mesh", "create", "team", "--broker", url, "--name", "alice"); code != 0 {
		t.Fatal(errs)
	}
	code, out, errs := alice.run("invite", "--short", "--role", "admin")
	m := regexp.MustCompile(`code: ([0-9A-Z]{5}-[0-9A-Z]{5})\njoin with: claudemesh join ([0-9A-Z-]+) --broker (\S+)\n`).FindStringSubmatch(out)
	if code != 0 || m == nil || m[1] != m[2] || m[3] != url {
		t.Fatalf("invite --short = %d\n%s%s", code, out, errs)
	}
	// Typed the way people type it: lower case, no dash.
	typed := strings.ToLower(strings.ReplaceAll(m[1], "-", ""))
	if code, _, errs := bob.run("join", typed); code != exitUsage || !strings.Contains(errs, "--broker") {
		t.Fatalf("join <code> without --broker = %d %s", code, errs)
	}
	if code, out, errs := bob.run("join", typed, "--broker", url, "--name", "bob"); code != 0 || !strings.Contains(out, "joined team as bob (admin)") {
		t.Fatalf("join <code> = %d\n%s%s", code, out, errs)
	}
	am, _ := alice.config().MeshBySlug("team")
	bm, ok := bob.config().MeshBySlug("team")
	if !ok || bm.MeshID != am.MeshID || bm.RootKey != am.RootKey || bm.InviteVersion != 2 || bm.BrokerURL != url || bm.Role != roleAdmin {
		t.Fatalf("bob's mesh = %+v", bm)
	}
	connectMember(t, url, *bm) // the enrolled key is a member
	if code, _, errs := carol.run("join", m[1], "--broker", url); code != exitFailure || !strings.Contains(errs, "cannot be used") {
		t.Fatalf("a used-up code = %d %s", code, errs)
	}

	// A link, revoked by id: joining with it is refused as revoked.
	var link struct{ URL, ID string }
	_, out, _ = alice.run("invite", "--json", "--uses", "3")
	if err := json.Unmarshal([]byte(out), &link); err != nil || len(link.ID) != 12 {
		t.Fatalf("invite --json = %s", out)
	}
	code, out, errs = alice.run("invite", "list")
	if code != 0 || !strings.Contains(out, "invites on team (2, newest first)") || !regexp.MustCompile(link.ID+`\s+link\s+member\s+active\s+used 0/3`).MatchString(out) ||
		!regexp.MustCompile(`code\s+admin\s+exhausted\s+used 1/1`).MatchString(out) {
		t.Fatalf("invite list = %d\n%s%s", code, out, errs)
	}
	if code, out, errs := alice.run("invite", "revoke", link.ID); code != 0 || !strings.Contains(out, "revoked invite "+link.ID+" on team") {
		t.Fatalf("invite revoke <id> = %d %s%s", code, out, errs)
	}
	if code, out, _ := alice.run("invite", "revoke", link.URL); code != 0 || !strings.Contains(out, "was revoked already") {
		t.Fatalf("invite revoke <link> of a revoked invite = %d %s", code, out)
	}
	if code, _, errs := carol.run("join", link.URL); code == 0 || !strings.Contains(errs, "invite_revoked") {
		t.Fatalf("join with a revoked link = %d %s", code, errs)
	}
	// A code, revoked by the code as typed.
	_, out, _ = alice.run("invite", "--short", "--json")
	var short struct{ Code, ID string }
	_ = json.Unmarshal([]byte(out), &short)
	if code, out, errs := alice.run("invite", "revoke", strings.ToLower(short.Code)); code != 0 || !strings.Contains(out, "revoked invite "+short.ID) {
		t.Fatalf("invite revoke <code> = %d %s%s", code, out, errs)
	}
	if code, _, errs := carol.run("join", short.Code, "--broker", url); code != exitFailure || !strings.Contains(errs, "revoked") {
		t.Fatalf("join with a revoked code = %d %s", code, errs)
	}
	if code, _, errs := alice.run("invite", "revoke", "000000000000"); code != exitNotFound || !strings.Contains(errs, "invite list") {
		t.Fatalf("revoke of nothing = %d %s", code, errs)
	}
	// A member who is not an admin may not list or revoke.
	bob2 := newMachine(t)
	_, out, _ = alice.run("invite", "--json")
	_ = json.Unmarshal([]byte(out), &link)
	bob2.run("join", link.URL)
	if code, _, _ := bob2.run("invite", "list"); code != exitPermission {
		t.Fatalf("invite list by a member = %d", code)
	}
	// The admin who joined by code may.
	if code, _, errs := bob.run("invite", "list"); code != 0 {
		t.Fatalf("invite list by an admin = %d %s", code, errs)
	}
	_ = b
}
