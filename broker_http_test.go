// Tests of the broker's HTTP routes: mesh creation (loopback or token),
// invites and /join, /health and /metrics.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// postJSON posts to the broker's HTTP base and decodes the answer.
func postJSON(t *testing.T, base, path string, body any, headers map[string]string) (int, map[string]any) {
	t.Helper()
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(data))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func signedCreate(kp Keypair, slug string, at time.Time) MeshCreateRequest {
	ts := at.UnixMilli()
	return MeshCreateRequest{Slug: slug, Name: slug, Pubkey: kp.PublicHex(), DisplayName: "owner", Timestamp: ts,
		Signature: kp.sign(meshCreateSignedString(slug, kp.PublicHex(), ts))}
}

func TestBrokerMeshCreateLoopbackAndToken(t *testing.T) {
	forEachStore(t, testBrokerMeshCreateLoopbackAndToken)
}

func testBrokerMeshCreateLoopbackAndToken(t *testing.T) {
	b, url := startTestBrokerWith(t, BrokerOptions{CreateToken: "s3cret"})
	base, _ := brokerHTTPBase(url)
	kp := mustNewKeypair()

	// Over the real loopback socket: open without a token.
	status, out := postJSON(t, base, "/cli/mesh/create", signedCreate(kp, "team", time.Now()), nil)
	if status != 200 || out["ok"] != true || len(out["id"].(string)) != 32 || out["root_key"] == "" {
		t.Fatalf("loopback create = %d %v", status, out)
	}
	status, out = postJSON(t, base, "/cli/mesh/create", signedCreate(kp, "team", time.Now()), nil)
	if status != http.StatusConflict || out["error"] != "mesh_exists" {
		t.Fatalf("second create = %d %v", status, out)
	}
	// The owner is admin and its key owns the mesh.
	mesh, err := b.store.MeshBySlug(context.Background(), "team")
	if err != nil || mesh.OwnerPubkey != kp.PublicHex() {
		t.Fatalf("mesh = %+v, %v", mesh, err)
	}
	if m, err := b.store.MemberByPubkey(context.Background(), mesh.ID, kp.PublicHex()); err != nil || m.Role != roleAdmin {
		t.Fatalf("owner member = %+v, %v", m, err)
	}

	// Non-loopback and proxied requests, through the handler.
	h := b.Handler()
	cases := []struct {
		name    string
		remote  string
		headers map[string]string
		broker  string // create token configured on the broker
		status  int
	}{
		{"remote without token", "192.0.2.7:5000", nil, "s3cret", http.StatusForbidden},
		{"remote with wrong token", "192.0.2.7:5000", map[string]string{"Authorization": "Bearer nope"}, "s3cret", http.StatusForbidden},
		{"remote with token", "192.0.2.7:5000", map[string]string{"Authorization": "Bearer s3cret"}, "s3cret", http.StatusOK},
		{"proxied loopback without token", "127.0.0.1:5000", map[string]string{"X-Forwarded-For": "192.0.2.7"}, "s3cret", http.StatusForbidden},
		{"loopback", "127.0.0.1:5000", nil, "s3cret", http.StatusOK},
		{"ipv6 loopback", "[::1]:5000", nil, "s3cret", http.StatusOK},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body, _ := json.Marshal(signedCreate(mustNewKeypair(), "m"+string(rune('a'+i))+"x", time.Now()))
			req := httptest.NewRequest(http.MethodPost, "/cli/mesh/create", bytes.NewReader(body))
			req.RemoteAddr = tc.remote
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("status = %d (%s), want %d", rec.Code, rec.Body, tc.status)
			}
		})
	}

	t.Run("bad requests", func(t *testing.T) {
		other := mustNewKeypair()
		for name, req := range map[string]MeshCreateRequest{
			"bad slug":      signedCreate(kp, "Bad Slug", time.Now()),
			"old timestamp": signedCreate(kp, "old", time.Now().Add(-2*time.Minute)),
			"wrong signer": func() MeshCreateRequest {
				r := signedCreate(kp, "forged", time.Now())
				r.Pubkey = other.PublicHex()
				return r
			}(),
		} {
			if status, out := postJSON(t, base, "/cli/mesh/create", req, nil); status/100 != 4 {
				t.Errorf("%s: %d %v", name, status, out)
			}
		}
	})
}

func TestBrokerInviteAndJoinErrors(t *testing.T) { forEachStore(t, testBrokerInviteAndJoinErrors) }

func testBrokerInviteAndJoinErrors(t *testing.T) {
	b, url := startTestBroker(t)
	base, _ := brokerHTTPBase(url)
	owner := newTestMesh(t, b, url, "team", "alice")
	ownerKP, _ := owner.Keypair()
	otherMesh := newTestMesh(t, b, url, "other", "zed")
	otherKP, _ := otherMesh.Keypair()

	register := func(m Mesh, kp Keypair, token string, uses int) (int, map[string]any) {
		ts := time.Now().UnixMilli()
		return postJSON(t, base, "/cli/mesh/"+m.Slug+"/invite", InviteCreateRequest{Token: token, MaxUses: uses, Timestamp: ts,
			Signature: kp.sign(inviteCreateSignedString(m.Slug, token, uses, ts))}, nil)
	}
	invite := func(m Mesh, kp Keypair, role string, expires time.Time) string {
		_, token, err := buildInvite(kp, m.MeshID, m.Slug, url, m.RootKey, role, expires)
		if err != nil {
			t.Fatal(err)
		}
		return token
	}
	join := func(token string, pub string) (int, map[string]any) {
		return postJSON(t, base, "/join", JoinRequest{InviteToken: token, PeerPubkey: pub, DisplayName: "joiner"}, nil)
	}

	good := invite(owner, ownerKP, roleMember, time.Now().Add(time.Hour))
	if status, out := register(owner, ownerKP, good, 2); status != 200 || out["url"] != inviteURL(good) {
		t.Fatalf("register = %d %v", status, out)
	}
	t.Run("registration needs the owner key", func(t *testing.T) {
		bob := addTestMember(t, b, owner, "bob", roleAdmin)
		bobKP, _ := bob.Keypair()
		if status, _ := register(owner, bobKP, invite(owner, ownerKP, roleMember, time.Now().Add(time.Hour)), 1); status != http.StatusForbidden {
			t.Fatalf("admin registering = %d", status)
		}
	})

	joiner := mustNewKeypair().PublicHex()
	status, out := join(good, joiner)
	if status != 200 || out["ok"] != true || out["alreadyMember"] != nil {
		t.Fatalf("join = %d %v", status, out)
	}
	memberID := out["memberId"]
	// Re-joining with the same key is idempotent and uses no slot.
	for i := 0; i < 3; i++ {
		status, out = join(good, joiner)
		if status != 200 || out["memberId"] != memberID || out["alreadyMember"] != true {
			t.Fatalf("re-join = %d %v", status, out)
		}
	}
	if status, _ = join(good, mustNewKeypair().PublicHex()); status != 200 {
		t.Fatalf("second use = %d", status)
	}

	// Tamper helpers.
	tampered := func(mut func(p *InvitePayload), signer Keypair) string {
		raw, _ := unb64url(good)
		var p InvitePayload
		_ = json.Unmarshal(raw, &p)
		mut(&p)
		p.Signature = signer.sign(p.signedString())
		data, _ := json.Marshal(p)
		return b64url(data)
	}
	// Distinct expiries keep the tokens distinct: equal payloads sign equal.
	revoked := invite(owner, ownerKP, roleAdmin, time.Now().Add(2*time.Hour))
	register(owner, ownerKP, revoked, 1)
	storeExec(t, b, `UPDATE invites SET revoked_at = 1 WHERE token = ?`, revoked)
	expiring := invite(owner, ownerKP, roleMember, time.Now().Add(3*time.Hour))
	register(owner, ownerKP, expiring, 1)
	storeExec(t, b, `UPDATE invites SET expires_at = 1 WHERE token = ?`, expiring)
	otherGood := invite(otherMesh, otherKP, roleMember, time.Now().Add(time.Hour))
	register(otherMesh, otherKP, otherGood, 1)
	// An invite payload for mesh A whose token row belongs to mesh B.
	crossed := tampered(func(p *InvitePayload) { p.ExpiresAt += 4 * 3600 }, ownerKP)
	storeExec(t, b, `INSERT INTO invites (token, mesh_id, role, max_uses, expires_at, created_at) VALUES (?, ?, 'member', 5, ?, 0)`,
		crossed, otherMesh.MeshID, time.Now().Add(time.Hour).UnixMilli())

	vector := loadInviteVector(t)
	cases := []struct {
		name, token, code string
	}{
		{"bad signature", func() string {
			raw, _ := unb64url(good)
			var p InvitePayload
			_ = json.Unmarshal(raw, &p)
			p.Role = roleAdmin
			data, _ := json.Marshal(p)
			return b64url(data)
		}(), "invite_bad_signature"},
		{"mesh not found", tampered(func(p *InvitePayload) { p.MeshID = "nope" }, ownerKP), "mesh_not_found"},
		{"owner mismatch", tampered(func(p *InvitePayload) { p.OwnerPubkey = otherKP.PublicHex() }, otherKP), "invite_owner_mismatch"},
		{"not registered", tampered(func(p *InvitePayload) { p.ExpiresAt++ }, ownerKP), "invite_not_found"},
		{"mesh mismatch", crossed, "invite_mesh_mismatch"},
		{"revoked", revoked, "invite_revoked"},
		{"expired", expiring, "invite_expired"},
		{"exhausted", good, "invite_exhausted"},
		{"garbage", "not-an-invite", codeInvalid},
		// libsodium's invite verifies (its mesh is not on this broker); the
		// same payload signed over a literal "v|…" does not.
		{"libsodium vector", vector.InviteURL, "mesh_not_found"},
		{"vector signed over v|", vector.BadInviteURL, "invite_bad_signature"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, out := join(tc.token, mustNewKeypair().PublicHex())
			if status != http.StatusBadRequest || out["error"] != tc.code || out["ok"] != false {
				t.Fatalf("join = %d %v, want 400 %s", status, out, tc.code)
			}
		})
	}
	t.Run("body cap", func(t *testing.T) {
		status, _ := postJSON(t, base, "/join", map[string]string{"invite_token": strings.Repeat("a", defaultMaxMessageBytes+1)}, nil)
		if status != http.StatusRequestEntityTooLarge {
			t.Fatalf("oversize join = %d, want 413", status)
		}
	})
	t.Run("banned key cannot rejoin", func(t *testing.T) {
		m, _ := b.store.MemberByPubkey(context.Background(), owner.MeshID, joiner)
		now := time.Now()
		b.store.SetMemberRevoked(context.Background(), owner.MeshID, m.ID, &now)
		if status, out := join(otherGood, joiner); status != 200 {
			t.Fatalf("joining another mesh = %d %v", status, out)
		}
		fresh := invite(owner, ownerKP, roleMember, time.Now().Add(7*time.Hour))
		register(owner, ownerKP, fresh, 1)
		if status, out := join(fresh, joiner); status != http.StatusForbidden || out["error"] != "member_revoked" {
			t.Fatalf("banned rejoin = %d %v", status, out)
		}
	})
}

func TestBrokerHealthAndMetrics(t *testing.T) { forEachStore(t, testBrokerHealthAndMetrics) }

func testBrokerHealthAndMetrics(t *testing.T) {
	b, url := startTestBroker(t)
	base, _ := brokerHTTPBase(url)
	newTestMesh(t, b, url, "team", "alice")
	dialTestClient(t, url).sendJSON(HelloFrame{Type: frameHello, MeshID: "x", Timestamp: 1})
	resp, err := http.Get(base + "/health")
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if resp.StatusCode != 200 || h["ok"] != true || h["db"] != "ok" || h["meshes"].(float64) != 1 || h["version"] != version {
		t.Fatalf("health = %d %v", resp.StatusCode, h)
	}
	waitFor(t, "handshake failure counted", func() bool {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			return false
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(raw), `claudemesh_broker_handshake_failures_total{code="timestamp_skew"} 1`) &&
			strings.Contains(string(raw), "claudemesh_broker_meshes 1")
	})
	for path, want := range map[string]int{"/ws?x=1": 404, "/wsx": 404, "/nope": 404} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
	// A store that is down makes /health answer 503.
	breakStore(b)
	resp, err = http.Get(base + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("health with the store down = %d, want 503", resp.StatusCode)
	}
}
