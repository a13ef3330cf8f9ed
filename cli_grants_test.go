package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestCLIGrantRevokeGrants(t *testing.T) {
	b, url := startTestBroker(t)
	alice := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, alice, "bob", roleMember)
	m := newMachine(t)
	if err := saveConfig(filepath.Join(m.vars["CLAUDEMESH_CONFIG_DIR"], "config.json"), &Config{Version: 1, Meshes: []Mesh{bob}}); err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		args   []string
		code   int
		stdout string // a line the output holds
		stderr string
	}{
		{[]string{"grants"}, 0, "no grants on team: every peer has the defaults (read, dm, broadcast, state-read)", ""},
		{[]string{"grant", "alice", "memory,skills"}, 0, "may now on team: read, dm, broadcast, state-read, memory, skills", ""},
		{[]string{"revoke", "alice", "dm", "broadcast"}, 0, "may now on team: read, state-read, memory, skills", ""},
		{[]string{"revoke", "alice"}, 0, "is blocked on team", ""},
		{[]string{"grants"}, 0, "alice  member   " + shortKey(alice.Pubkey) + "  none", ""},
		{[]string{"grant", "alice", "--reset"}, 0, "has the defaults again on team: read, dm, broadcast, state-read", ""},
		{[]string{"grant", "zed", "dm"}, exitNotFound, "", "no member or session matches zed"},
		{[]string{"grant", "bob", "dm"}, exitFailure, "", "grants are for other members"},
		{[]string{"grant", "alice"}, exitUsage, "", "needs at least one capability"},
		{[]string{"grant", "alice", "write"}, exitUsage, "", `unknown capability "write"`},
		{[]string{"revoke"}, exitUsage, "", "usage: claudemesh revoke"},
	}
	for _, st := range steps {
		code, out, errs := m.run(st.args...)
		if code != st.code || !strings.Contains(out, st.stdout) || !strings.Contains(errs, st.stderr) {
			t.Fatalf("%v = %d\nstdout: %s\nstderr: %s\nwant %d, stdout with %q, stderr with %q", st.args, code, out, errs, st.code, st.stdout, st.stderr)
		}
	}

	m.run("revoke", "alice", "dm")
	code, out, _ := m.run("grants", "--json")
	var doc struct {
		Mesh     string       `json:"mesh"`
		Grants   []GrantEntry `json:"grants"`
		Defaults []string     `json:"defaults"`
	}
	if err := json.Unmarshal([]byte(out), &doc); code != 0 || err != nil || doc.Mesh != "team" || len(doc.Grants) != 1 ||
		doc.Grants[0].Key != alice.Pubkey || strings.Join(doc.Grants[0].Caps, ",") != "read,broadcast,state-read" {
		t.Fatalf("grants --json = %d %s (%v)", code, out, err)
	}
}
