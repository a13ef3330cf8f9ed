package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The hash is exactly the documented line, over the canonical payload.
func TestAuditHashDefinition(t *testing.T) {
	at := "2026-01-02T03:04:05.678Z"
	line := "genesis|m1|ban|abc|" + `{"a":2,"b":{"c":[3,{"d":4,"e":5}]}}` + "|" + at
	sum := sha256.Sum256([]byte(line))
	want := hex.EncodeToString(sum[:])
	got, err := auditHash(auditGenesis, "m1", "ban", strPtr("abc"), json.RawMessage(`{"b":{"c":[3,{"e":5,"d":4}]},"a":2}`), at)
	if err != nil || got != want {
		t.Fatalf("auditHash = %s, %v; want sha256(%q) = %s", got, err, line, want)
	}
	sum = sha256.Sum256([]byte("genesis|m1|kick|null|{}|" + at))
	if got, _ := auditHash(auditGenesis, "m1", "kick", nil, json.RawMessage(`{}`), at); got != hex.EncodeToString(sum[:]) {
		t.Fatalf("a null actor must hash as \"null\": got %s", got)
	}
}

// Key order never changes a hash, at any depth; array order and values do.
func TestAuditHashKeyOrder(t *testing.T) {
	at := isoTime(time.UnixMilli(1760000000123))
	hash := func(payload string) string {
		t.Helper()
		h, err := auditHash("prev", "mesh", "grant_changed", strPtr("k"), json.RawMessage(payload), at)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	base := hash(`{"peer":"p","caps":["dm","read"],"meta":{"z":1,"a":{"y":true,"x":null}}}`)
	for _, same := range []string{
		`{"caps":["dm","read"],"meta":{"a":{"x":null,"y":true},"z":1},"peer":"p"}`,
		`{ "meta" : { "z" : 1 , "a" : { "y" : true , "x" : null } } , "peer" : "p" , "caps" : [ "dm" , "read" ] }`,
	} {
		if h := hash(same); h != base {
			t.Errorf("reordered payload %s hashes to %s, want %s", same, h, base)
		}
	}
	for _, other := range []string{
		`{"peer":"p","caps":["read","dm"],"meta":{"z":1,"a":{"y":true,"x":null}}}`,  // array order
		`{"peer":"p","caps":["dm","read"],"meta":{"z":1,"a":{"y":false,"x":null}}}`, // a nested value
		`{"peer":"p","caps":["dm","read"],"meta":{"z":1,"a":{"y":true}}}`,           // a nested key gone
	} {
		if h := hash(other); h == base {
			t.Errorf("changed payload %s hashes like the original", other)
		}
	}
}

// testChain is a chain of four entries as a store would write them.
func testChain(t *testing.T) []AuditEntry {
	t.Helper()
	var chain []AuditEntry
	start := time.UnixMilli(1760000000000)
	events := []auditEvent{
		{MeshID: "m", Type: auditMeshCreated, Actor: "owner", Payload: map[string]any{"slug": "team"}},
		{MeshID: "m", Type: auditMemberJoined, Actor: "bob", Payload: map[string]any{"displayName": "bob", "role": "member"}},
		{MeshID: "m", Type: auditBan, Actor: "owner", Payload: map[string]any{"pubkey": "bob", "nested": map[string]any{"b": 1, "a": 2}}},
		{MeshID: "m", Type: auditKick, Payload: nil},
	}
	for i, e := range events {
		e.CreatedAt = start.Add(time.Duration(i) * time.Second)
		var prev *AuditEntry
		if len(chain) > 0 {
			prev = &chain[len(chain)-1]
		}
		entry, err := chainEntry(prev, e)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, entry)
	}
	return chain
}

// A changed payload, actor or time breaks verification at that entry, and
// so do a removed, reordered or foreign entry; re-encoding a payload with
// its keys in another order does not.
func TestVerifyAuditChain(t *testing.T) {
	if b := verifyAuditChain("m", testChain(t)); b != nil {
		t.Fatalf("an untouched chain: %v", b)
	}
	if b := verifyAuditChain("m", nil); b != nil {
		t.Fatalf("an empty chain: %v", b)
	}
	cases := []struct {
		name   string
		change func(c []AuditEntry) []AuditEntry
		wantID int64 // the entry named; 0 for none
	}{
		{"payload reordered", func(c []AuditEntry) []AuditEntry {
			c[2].Payload = json.RawMessage(`{"nested":{"a":2,"b":1},"pubkey":"bob"}`)
			return c
		}, 0},
		{"payload changed", func(c []AuditEntry) []AuditEntry {
			c[1].Payload = json.RawMessage(strings.Replace(string(c[1].Payload), `"member"`, `"admin"`, 1))
			return c
		}, 2},
		{"nested payload changed", func(c []AuditEntry) []AuditEntry {
			c[2].Payload = json.RawMessage(`{"nested":{"a":2,"b":3},"pubkey":"bob"}`)
			return c
		}, 3},
		{"actor changed", func(c []AuditEntry) []AuditEntry { c[2].Actor = strPtr("mallory"); return c }, 3},
		{"actor removed", func(c []AuditEntry) []AuditEntry { c[0].Actor = nil; return c }, 1},
		{"time changed", func(c []AuditEntry) []AuditEntry { c[1].CreatedAt = "2025-10-09T08:53:21.001Z"; return c }, 2},
		{"event type changed", func(c []AuditEntry) []AuditEntry { c[3].EventType = auditDisconnect; return c }, 4},
		{"entry removed", func(c []AuditEntry) []AuditEntry { return append(c[:1:1], c[2:]...) }, 3},
		{"entries swapped", func(c []AuditEntry) []AuditEntry { c[1], c[2] = c[2], c[1]; return c }, 3},
		{"chain rewritten from a forged entry on", func(c []AuditEntry) []AuditEntry {
			c[1].Actor = strPtr("mallory")
			c[1].Hash, _ = auditHash(c[1].PrevHash, c[1].MeshID, c[1].EventType, c[1].Actor, c[1].Payload, c[1].CreatedAt)
			return c // #3 still links to the old hash of #2
		}, 3},
		{"first entry not from genesis", func(c []AuditEntry) []AuditEntry { c[0].PrevHash = strings.Repeat("0", 64); return c }, 1},
		{"another mesh's entry", func(c []AuditEntry) []AuditEntry { c[3].MeshID = "other"; return c }, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := verifyAuditChain("m", tc.change(testChain(t)))
			switch {
			case tc.wantID == 0 && b != nil:
				t.Fatalf("verify = %v, want it to hold", b)
			case tc.wantID != 0 && (b == nil || b.Entry.ID != tc.wantID):
				t.Fatalf("verify = %v, want it broken at entry #%d", b, tc.wantID)
			}
		})
	}
}

// libsodium's side (Node, plain JavaScript JSON) computes the same hashes.
func TestAuditHashCrossCheck(t *testing.T) {
	chain := testChain(t)
	var ops []map[string]any
	for _, e := range chain {
		var payload any
		_ = json.Unmarshal(e.Payload, &payload)
		var actor any
		if e.Actor != nil {
			actor = *e.Actor
		}
		ops = append(ops, map[string]any{"op": "audit_hash", "prevHash": e.PrevHash, "meshId": e.MeshID, "eventType": e.EventType,
			"actor": actor, "payload": payload, "createdAt": e.CreatedAt})
	}
	for i, r := range sodiumOracle(t, ops) {
		if r["hash"] != chain[i].Hash {
			t.Errorf("entry #%d: JavaScript hash %v, ours %s", chain[i].ID, r["hash"], chain[i].Hash)
		}
	}
}
