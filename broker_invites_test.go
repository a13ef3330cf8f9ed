package main

import (
	"context"
	"crypto/rand"
	"net/http"
	"testing"
	"time"

	"golang.org/x/crypto/nacl/box"
)

// registerV2 registers a v2 invite for m's mesh, signed by m's key, and
// returns its code (normal form) and id.
func registerV2(t *testing.T, m Mesh, role string, uses int, expires time.Time) (string, string) {
	t.Helper()
	kp, _ := m.Keypair()
	code, id := newInviteCode(), newInviteID()
	req := InviteV2CreateRequest{Code: displayInviteCode(code), InviteID: id, ExpiresAt: expires.Unix(), Role: role, MaxUses: uses,
		Capability: kp.sign(inviteV2SignedString(m.MeshID, id, expires.Unix(), role, kp.PublicHex()))}
	var resp InviteV2CreateResponse
	if err := memberPost(context.Background(), m, "invite/v2", &req, &resp); err != nil {
		t.Fatalf("register v2 invite: %v", err)
	}
	if resp.Code != displayInviteCode(code) || resp.ID != id {
		t.Fatalf("register answer = %+v", resp)
	}
	return code, id
}

// claimBody is a well-formed claim for a fresh member key.
func claimBody() map[string]any {
	xpub, _, _ := box.GenerateKey(rand.Reader)
	return map[string]any{"recipient_x25519_pubkey": b64url(xpub[:]), "peer_pubkey": mustNewKeypair().PublicHex(), "display_name": "carol"}
}

// A claim enrolls the key and seals the mesh root key to the claimant's
// X25519 key, as libsodium opens it; refusals come in the documented order
// with their codes and statuses.
func TestInviteV2Claim(t *testing.T) { forEachStore(t, testInviteV2Claim) }

func testInviteV2Claim(t *testing.T) {
	b, url := startTestBroker(t)
	alice := newTestMesh(t, b, url, "team", "alice")
	base, _ := brokerHTTPBase(url)
	claim := func(code string, body any) (int, map[string]any) {
		return postJSON(t, base, "/invites/"+code+"/claim", body, nil)
	}

	// libsodium makes the claimant's X25519 key and opens what the broker sealed.
	code, _ := registerV2(t, alice, roleAdmin, 2, time.Now().Add(time.Hour))
	theirs := sodiumOracle(t, []map[string]any{{"op": "box_keypair"}})[0]
	member := mustNewKeypair()
	status, out := claim(displayInviteCode(code), map[string]any{"recipient_x25519_pubkey": theirs["pub"], "peer_pubkey": member.PublicHex()})
	if status != http.StatusOK || out["mesh_id"] != alice.MeshID || out["owner_pubkey"] != alice.Pubkey || out["role"] != roleAdmin ||
		out["mesh_slug"] != "team" || out["member_id"] == "" {
		t.Fatalf("claim = %d %v", status, out)
	}
	opened := sodiumOracle(t, []map[string]any{{"op": "open_anon", "sealed": out["sealed_root_key"], "pub": theirs["pub"], "sec": theirs["sec"]}})[0]
	if opened["ok"] != true || opened["msg"] != alice.RootKey {
		t.Fatalf("libsodium opened the sealed root key to %v, want the mesh root key %s", opened, alice.RootKey)
	}
	if out["canonical_v2"] != inviteV2SignedString(alice.MeshID, capField(out["canonical_v2"].(string), 2), capExpiry(out["canonical_v2"].(string)), roleAdmin, alice.Pubkey) ||
		!verifySignature(alice.Pubkey, out["canonical_v2"].(string), out["capability"].(string)) {
		t.Fatalf("canonical_v2 %v / capability %v are not the owner's", out["canonical_v2"], out["capability"])
	}
	m, err := b.store.MemberByPubkey(context.Background(), alice.MeshID, member.PublicHex())
	if err != nil || m.Role != roleAdmin || m.ID != out["member_id"] {
		t.Fatalf("enrolled member = %+v, %v", m, err)
	}
	// The same key again uses no slot.
	if status, again := claim(code, map[string]any{"recipient_x25519_pubkey": theirs["pub"], "peer_pubkey": member.PublicHex()}); status != http.StatusOK ||
		again["already_member"] != true || again["member_id"] != out["member_id"] {
		t.Fatalf("second claim by the same key = %d %v", status, again)
	}

	// Invites in every refused state, each also in the states checked
	// after it, so the order shows. Two expire within two seconds (their
	// expiry is in the owner's signature: the store cannot be edited).
	soon := time.Unix(time.Now().Unix()+2, 0)
	revokedAndExpired, revokedID := registerV2(t, alice, roleMember, 1, soon)
	var rev InviteRevokeResponse
	if err := memberPost(context.Background(), alice, "invite/revoke", &InviteRevokeRequest{Invite: revokedID}, &rev); err != nil || rev.Invite.State != "revoked" {
		t.Fatalf("revoke = %+v, %v", rev, err)
	}
	expiredAndExhausted, _ := registerV2(t, alice, roleMember, 1, soon)
	if status, _ := claim(expiredAndExhausted, claimBody()); status != http.StatusOK {
		t.Fatal("first use refused")
	}
	exhausted, _ := registerV2(t, alice, roleMember, 1, time.Now().Add(time.Hour))
	claim(exhausted, claimBody())
	forged, _ := registerV2(t, alice, roleMember, 1, time.Now().Add(time.Hour))
	storeExec(t, b, `UPDATE invites SET role = 'admin' WHERE token = ?`, forged) // the capability says member
	for time.Now().Before(soon) {
		time.Sleep(20 * time.Millisecond)
	}
	v1Token := "eyJ2IjoxfQ" // a v1-looking token is never a code

	cases := []struct {
		name   string
		code   string
		body   any
		status int
		error  string
	}{
		{"body not JSON", code, "nope", http.StatusBadRequest, codeInvalid},
		{"no x25519 key", code, map[string]any{"peer_pubkey": member.PublicHex()}, http.StatusBadRequest, codeMalformed},
		{"short x25519 key", code, map[string]any{"recipient_x25519_pubkey": "AAAA", "peer_pubkey": member.PublicHex()}, http.StatusBadRequest, codeMalformed},
		{"no member key", code, map[string]any{"recipient_x25519_pubkey": claimBody()["recipient_x25519_pubkey"]}, http.StatusBadRequest, codeMalformed},
		{"malformed before not found", "ZZZZZZZZZZ", map[string]any{}, http.StatusBadRequest, codeMalformed},
		{"unknown code", "ZZZZZZZZZZ", claimBody(), http.StatusNotFound, codeNotFound},
		{"not a code", v1Token, claimBody(), http.StatusNotFound, codeNotFound},
		{"capability does not match", forged, claimBody(), http.StatusBadRequest, codeBadSignature},
		{"revoked before expired", revokedAndExpired, claimBody(), http.StatusGone, codeRevoked},
		{"expired before exhausted", expiredAndExhausted, claimBody(), http.StatusGone, codeExpired},
		{"exhausted", exhausted, claimBody(), http.StatusGone, "exhausted"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, out := claim(tc.code, tc.body)
			if status != tc.status || out["error"] != tc.error || out["ok"] != false {
				t.Fatalf("claim = %d %v, want %d %s", status, out, tc.status, tc.error)
			}
		})
	}
}

// Only the owner key registers v2 invites, and only with its own
// capability over this mesh.
func TestInviteV2Registration(t *testing.T) { forEachStore(t, testInviteV2Registration) }

func testInviteV2Registration(t *testing.T) {
	b, url := startTestBroker(t)
	alice := newTestMesh(t, b, url, "team", "alice")
	other := newTestMesh(t, b, url, "other", "olga")
	bob := addTestMember(t, b, alice, "bob", roleAdmin)
	kp, _ := alice.Keypair()
	at := time.Now().Add(time.Hour).Unix()
	good := func() InviteV2CreateRequest {
		id := newInviteID()
		return InviteV2CreateRequest{Code: newInviteCode(), InviteID: id, ExpiresAt: at, Role: roleMember, MaxUses: 1,
			Capability: kp.sign(inviteV2SignedString(alice.MeshID, id, at, roleMember, kp.PublicHex()))}
	}
	cases := []struct {
		name   string
		as     Mesh
		change func(r *InviteV2CreateRequest)
		status int
		code   string
	}{
		{"an admin who is not the owner", bob, func(r *InviteV2CreateRequest) {}, http.StatusForbidden, codeForbidden},
		{"capability for another mesh", alice, func(r *InviteV2CreateRequest) {
			r.Capability = kp.sign(inviteV2SignedString(other.MeshID, r.InviteID, at, roleMember, kp.PublicHex()))
		}, http.StatusBadRequest, codeBadSignature},
		{"capability for another role", alice, func(r *InviteV2CreateRequest) { r.Role = roleAdmin }, http.StatusBadRequest, codeBadSignature},
		{"already expired", alice, func(r *InviteV2CreateRequest) { r.ExpiresAt = time.Now().Unix() - 1 }, http.StatusBadRequest, codeExpired},
		{"not a code", alice, func(r *InviteV2CreateRequest) { r.Code = "short" }, http.StatusBadRequest, codeInvalid},
		{"an id with a bar", alice, func(r *InviteV2CreateRequest) { r.InviteID = "abc|defgh" }, http.StatusBadRequest, codeInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := good()
			tc.change(&req)
			var resp InviteV2CreateResponse
			err := memberPost(context.Background(), tc.as, "invite/v2", &req, &resp)
			be, ok := err.(*brokerError)
			if !ok || be.Status != tc.status || be.Code != tc.code {
				t.Fatalf("register = %v, want %d %s", err, tc.status, tc.code)
			}
		})
	}
	// A code already taken is refused, so the CLI makes another.
	req := good()
	var resp InviteV2CreateResponse
	if err := memberPost(context.Background(), alice, "invite/v2", &req, &resp); err != nil {
		t.Fatal(err)
	}
	again := good()
	again.Code = req.Code
	if err := memberPost(context.Background(), alice, "invite/v2", &again, &resp); err == nil || err.(*brokerError).Code != "invite_exists" {
		t.Fatalf("a taken code = %v, want invite_exists", err)
	}
}
