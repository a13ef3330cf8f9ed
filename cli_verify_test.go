package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// verify shows both sides the same number; peer list remembers the key
// behind each name and marks a name that comes back with another member's
// key until verify --trust accepts it.
func TestVerifyAndKeyChanges(t *testing.T) {
	f := newMsgFixture(t, nil)
	a := registerTestSession(t, f.d1, f.me, "alice")
	bert := registerTestSession(t, f.d2, f.bob, "bert")
	envA := f.h1.env("CLAUDEMESH_IPC_TOKEN", a.reg.Token)
	envB := f.h2.env("CLAUDEMESH_IPC_TOKEN", bert.reg.Token)
	number := func(env map[string]string, peer string, extra ...string) map[string]any {
		t.Helper()
		r := runCLI(t, env, append([]string{"verify", peer, "--json"}, extra...)...)
		var doc map[string]any
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &doc) != nil {
			t.Fatalf("verify %s = %d\n%s%s", peer, r.code, r.stdout, r.stderr)
		}
		return doc
	}
	fromAlice, fromBob := number(envA, "bob"), number(envB, "me")
	if fromAlice["safety_number"] != fromBob["safety_number"] || fromAlice["safety_number"] != safetyNumber(f.me.Pubkey, f.bob.Pubkey) ||
		fromAlice["peer_key"] != f.bob.Pubkey || fromAlice["key_changed"] != false {
		t.Fatalf("alice sees %v, bob sees %v", fromAlice, fromBob)
	}
	if doc := number(envA, "bert"); doc["peer_key"] != f.bob.Pubkey || doc["peer"] != "bert" {
		t.Fatalf("verify <session name> = %v, want bob's member key", doc)
	}
	if r := runCLI(t, envA, "verify", "nobody"); r.code != exitNotFound {
		t.Fatalf("verify nobody = %d %s", r.code, r.stderr)
	}
	if r := runCLI(t, envA, "verify", "me"); r.code != exitUsage || !strings.Contains(r.stderr, "own member") {
		t.Fatalf("verify of oneself = %d %s", r.code, r.stderr)
	}
	if r := runCLI(t, envA, "peer", "list"); r.code != 0 || strings.Contains(r.stdout, "changed") {
		t.Fatalf("peer list = %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// bert leaves; someone else's session comes as bert.
	if err := f.d2.client("").Do(context.Background(), "DELETE", "/v1/sessions/"+bert.reg.Token, nil, nil); err != nil {
		t.Fatal(err)
	}
	mallory := addTestMember(t, f.broker, f.me, "mallory", roleMember)
	impostor := mustNewKeypair()
	connectSession(t, f.url, mallory, impostor, "bert")
	waitFor(t, "only the impostor named bert", func() bool {
		return findPeer(f.broker, f.me.MeshID, func(p *peer) bool { return p.sessionPubkey == bert.pub() }) == nil
	})
	r := runCLI(t, envA, "peer", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "its member key changed since this machine first saw bert (was "+shortKey(f.bob.Pubkey)+")") {
		t.Fatalf("peer list after the change = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, envA, "peer", "list", "--json")
	var rows []map[string]any
	_ = json.Unmarshal([]byte(r.stdout), &rows)
	marked := 0
	for _, row := range rows {
		if row["keyChanged"] == true && row["displayName"] == "bert" && row["knownMemberPubkey"] == f.bob.Pubkey {
			marked++
		}
	}
	if marked != 1 {
		t.Fatalf("peer list --json marks %d rows, want bert's: %s", marked, r.stdout)
	}
	if doc := number(envA, "bert"); doc["key_changed"] != true || doc["known_key"] != f.bob.Pubkey || doc["peer_key"] != mallory.Pubkey {
		t.Fatalf("verify bert after the change = %v", doc)
	}
	if r := runCLI(t, envA, "verify", "bert"); !strings.Contains(r.stdout, "bert's key changed since this machine first saw the name") {
		t.Fatalf("verify bert = %s", r.stdout)
	}
	number(envA, "bert", "--trust")
	if r := runCLI(t, envA, "peer", "list"); r.code != 0 || strings.Contains(r.stdout, "changed") {
		t.Fatalf("peer list after --trust = %d\n%s", r.code, r.stdout)
	}
}
