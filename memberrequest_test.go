package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestMemberRequestSignature(t *testing.T) {
	kp := mustNewKeypair()
	const path = "/cli/mesh/team/grants"
	req := GrantsRequest{Op: grantOpGrant, Peer: "bob", Caps: []string{capDM, capMemory}}
	if err := signMemberRequest(kp, path, &req, time.UnixMilli(1760000000000)); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(req)
	env, err := openMemberRequest(path, body)
	if err != nil || env.Pubkey != kp.PublicHex() || env.Timestamp != 1760000000000 {
		t.Fatalf("openMemberRequest = %+v, %v", env, err)
	}
	// Key order and spacing do not matter: the canonical JSON is signed.
	var fields map[string]any
	_ = json.Unmarshal(body, &fields)
	reordered, _ := json.MarshalIndent(fields, "", "  ")
	if _, err := openMemberRequest(path, reordered); err != nil {
		t.Fatalf("a reordered body must verify: %v", err)
	}

	tamper := []struct {
		name string
		path string
		body string
	}{
		{"another route", "/cli/mesh/other/grants", string(body)},
		{"another peer", path, strings.Replace(string(body), `"bob"`, `"eve"`, 1)},
		{"another capability", path, strings.Replace(string(body), `"memory"`, `"skills"`, 1)},
		{"another time", path, strings.Replace(string(body), "1760000000000", "1760000000001", 1)},
		{"an added field", path, strings.Replace(string(body), "{", `{"extra":1,`, 1)},
	}
	for _, tc := range tamper {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := openMemberRequest(tc.path, []byte(tc.body)); !errors.Is(err, errMemberRequestSignature) {
				t.Fatalf("openMemberRequest = %v, want a bad signature", err)
			}
		})
	}
	for _, bad := range []string{`[]`, `{"pubkey":"x","timestamp":1,"signature":""}`, `{"pubkey":"` + kp.PublicHex() + `"}`} {
		if _, err := openMemberRequest(path, []byte(bad)); err == nil || errors.Is(err, errMemberRequestSignature) {
			t.Errorf("openMemberRequest(%s) = %v, want a malformed-body error", bad, err)
		}
	}
}
