// Invites beyond registering a v1 token: v2 invites (a short code behind
// the owner's signed capability, claimed with an X25519 key that gets the
// mesh root key sealed to it), and listing and revoking a mesh's invites.
//
//	POST /cli/mesh/<slug>/invite/v2   register a v2 invite (owner-signed)
//	POST /cli/mesh/<slug>/invites     list invites (owner or admin)
//	POST /cli/mesh/<slug>/invite/revoke  revoke one by id, token or code (owner or admin)
//	POST /invites/<code>/claim        claim a v2 invite
//
// Policy for a claim: a malformed body is refused first (400 malformed),
// then a code the broker does not hold (404 not_found), then a capability
// that does not verify against the mesh's owner key (400 bad_signature),
// then, in this order, a revoked, expired or used-up invite (410 revoked,
// expired, exhausted). A claim enrolls the claimant's ed25519 key as a
// member (a key that is a member already uses no slot) and answers with
// the root key sealed to its X25519 key, so the root key never crosses the
// wire in the clear. Claims share the per-address rate of handshakes and
// joins, which is what keeps codes from being guessed.
package main

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// InviteV2CreateRequest registers a v2 invite; the member key that signs
// it must be the mesh owner's, and Capability its signature over
// v=2|<mesh_id>|<invite_id>|<expires_at>|<role>|<owner_pubkey>.
type InviteV2CreateRequest struct {
	MemberRequest
	Code       string `json:"code"`
	InviteID   string `json:"invite_id"`
	ExpiresAt  int64  `json:"expires_at"` // unix seconds
	Role       string `json:"role"`
	MaxUses    int    `json:"max_uses"`
	Capability string `json:"capability"`
}

// InviteV2CreateResponse answers a v2 registration.
type InviteV2CreateResponse struct {
	OK        bool   `json:"ok"`
	Code      string `json:"code"` // as people read it: K7M2X-Q9PRT
	ID        string `json:"id"`
	ExpiresAt string `json:"expires_at"`
	MaxUses   int    `json:"max_uses"`
	Role      string `json:"role"`
}

// InviteClaimRequest is the body of POST /invites/<code>/claim.
type InviteClaimRequest struct {
	RecipientX25519Pubkey string `json:"recipient_x25519_pubkey"` // base64url, 32 bytes
	// Our additions: the ed25519 key to enroll, and its name.
	PeerPubkey  string `json:"peer_pubkey"`
	DisplayName string `json:"display_name,omitempty"`
}

// InviteClaimResponse answers a claim with the root key sealed to the
// claimant and what it needs to check who signed the invite.
type InviteClaimResponse struct {
	SealedRootKey string `json:"sealed_root_key"` // crypto_box_seal, base64url
	MeshID        string `json:"mesh_id"`
	MemberID      string `json:"member_id"`
	OwnerPubkey   string `json:"owner_pubkey"`
	CanonicalV2   string `json:"canonical_v2"`
	// Ours.
	Capability    string `json:"capability"` // the owner's signature over canonical_v2
	MeshSlug      string `json:"mesh_slug"`
	Role          string `json:"role"`
	AlreadyMember bool   `json:"already_member,omitempty"`
}

// InviteListRequest asks for a mesh's invites.
type InviteListRequest struct {
	MemberRequest
}

// InviteRevokeRequest names the invite to revoke by id, v1 token or v2
// code.
type InviteRevokeRequest struct {
	MemberRequest
	Invite string `json:"invite"`
}

// InviteRow is one invite as lists show it: never its token or code.
type InviteRow struct {
	ID        string  `json:"id"`
	Version   int     `json:"version"`
	Role      string  `json:"role"`
	MaxUses   int     `json:"max_uses"`
	UsedCount int     `json:"used_count"`
	ExpiresAt string  `json:"expires_at"`
	RevokedAt *string `json:"revoked_at"`
	CreatedAt string  `json:"created_at"`
	State     string  `json:"state"` // active | revoked | expired | exhausted
}

// InviteListResponse lists a mesh's invites, newest first.
type InviteListResponse struct {
	OK      bool        `json:"ok"`
	Invites []InviteRow `json:"invites"`
}

// InviteRevokeResponse is the invite after the revocation.
type InviteRevokeResponse struct {
	OK             bool      `json:"ok"`
	Invite         InviteRow `json:"invite"`
	AlreadyRevoked bool      `json:"already_revoked,omitempty"`
}

func inviteRow(inv storedInvite, now time.Time) InviteRow {
	r := InviteRow{ID: inv.ID, Version: max(inv.Version, 1), Role: inv.Role, MaxUses: inv.MaxUses, UsedCount: inv.UsedCount,
		ExpiresAt: isoTime(inv.ExpiresAt), CreatedAt: isoTime(inv.CreatedAt), State: inv.state(now)}
	if inv.RevokedAt != nil {
		t := isoTime(*inv.RevokedAt)
		r.RevokedAt = &t
	}
	return r
}

func (b *Broker) handleInviteV2Create(w http.ResponseWriter, r *http.Request) {
	var req InviteV2CreateRequest
	call, ok := b.memberRequest(w, r, &req)
	if !ok {
		return
	}
	bad := func(format string, a ...any) {
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, fmt.Sprintf(format, a...))
	}
	code, err := normalizeInviteCode(req.Code)
	switch {
	case call.member.Pubkey != call.mesh.OwnerPubkey:
		writeHTTPError(w, http.StatusForbidden, codeForbidden, "only the mesh owner key can register invites")
		return
	case err != nil:
		bad("code must be %d symbols of Crockford base32", inviteCodeLen)
		return
	case !validInviteID(req.InviteID):
		bad("invite_id must be 8-64 of letters, digits, '.', '_' and '-'")
		return
	case req.Role != roleAdmin && req.Role != roleMember:
		bad("role must be admin or member, not %q", req.Role)
		return
	case req.MaxUses < 1 || req.MaxUses > maxInviteUses:
		bad("max_uses must be 1..%d", maxInviteUses)
		return
	case req.ExpiresAt <= time.Now().Unix():
		writeHTTPError(w, http.StatusBadRequest, codeExpired, "the invite has already expired")
		return
	case !verifySignature(call.mesh.OwnerPubkey, inviteV2SignedString(call.mesh.ID, req.InviteID, req.ExpiresAt, req.Role, call.mesh.OwnerPubkey), req.Capability):
		writeHTTPError(w, http.StatusBadRequest, codeBadSignature, "the capability is not the owner's signature over v=2|mesh_id|invite_id|expires_at|role|owner_pubkey")
		return
	}
	inv := storedInvite{ID: req.InviteID, Version: 2, Token: code, Signature: req.Capability, MeshID: call.mesh.ID, Role: req.Role,
		MaxUses: req.MaxUses, ExpiresAt: time.Unix(req.ExpiresAt, 0), CreatedAt: time.Now()}
	if err := b.store.CreateInvite(r.Context(), inv, inviteCreatedAudit(inv, call.member.Pubkey, 2)); errors.Is(err, errExists) {
		writeHTTPError(w, http.StatusConflict, "invite_exists", "this code or invite id is taken; make another")
		return
	} else if err != nil {
		writeStoreUnavailable(w)
		return
	}
	writeJSON(w, http.StatusOK, InviteV2CreateResponse{OK: true, Code: displayInviteCode(code), ID: inv.ID,
		ExpiresAt: isoTime(inv.ExpiresAt), MaxUses: inv.MaxUses, Role: inv.Role})
}

func (b *Broker) handleInviteClaim(w http.ResponseWriter, r *http.Request) {
	if herr := b.admitHandshake(remoteIP(r), time.Now()); herr != nil {
		writeHTTPError(w, http.StatusTooManyRequests, codeRateLimit, herr.message)
		return
	}
	malformed := func(message string) { writeHTTPError(w, http.StatusBadRequest, codeMalformed, message) }
	var req InviteClaimRequest
	if !decodeBody(w, r, maxHTTPBodyBytes, &req) {
		return
	}
	_, err := x25519Key(req.RecipientX25519Pubkey)
	switch {
	case err != nil:
		malformed("recipient_x25519_pubkey: " + err.Error())
		return
	case !isHexKey(req.PeerPubkey):
		malformed("peer_pubkey must be the ed25519 member key to enroll, 64 lowercase hex")
		return
	case len(req.DisplayName) > maxNameLen:
		malformed("display_name is too long")
		return
	}
	notFound := func() {
		writeHTTPError(w, http.StatusNotFound, codeNotFound, "no invite with this code on this broker")
	}
	code, err := normalizeInviteCode(r.PathValue("code"))
	if err != nil {
		notFound()
		return
	}
	inv, err := b.store.InviteByToken(r.Context(), code)
	if errors.Is(err, errNotFound) || (err == nil && inv.Version != 2) {
		notFound()
		return
	}
	if err != nil {
		writeStoreUnavailable(w)
		return
	}
	mesh, err := b.store.MeshByID(r.Context(), inv.MeshID)
	if errors.Is(err, errNotFound) {
		notFound()
		return
	}
	if err != nil {
		writeStoreUnavailable(w)
		return
	}
	canonical := inviteV2SignedString(mesh.ID, inv.ID, inv.ExpiresAt.Unix(), inv.Role, mesh.OwnerPubkey)
	if !verifySignature(mesh.OwnerPubkey, canonical, inv.Signature) {
		writeHTTPError(w, http.StatusBadRequest, codeBadSignature, "the invite's capability is not signed by the mesh's owner key")
		return
	}
	display := cmp.Or(req.DisplayName, "member-"+req.PeerPubkey[:8])
	res, err := b.store.RedeemInvite(r.Context(), redeemRequest{Version: 2, Token: code, MeshID: mesh.ID, Pubkey: req.PeerPubkey,
		DisplayName: display, Now: time.Now(), NewMemberID: newID()})
	var je *joinError
	if errors.As(err, &je) {
		status, errCode := claimRefusal(je.Code)
		writeHTTPError(w, status, errCode, je.Message)
		return
	}
	if err != nil {
		writeStoreUnavailable(w)
		return
	}
	root, err := unb64url(mesh.RootKey)
	if err != nil {
		b.log.Error("mesh root key", "mesh", mesh.ID, "err", err)
		writeStoreUnavailable(w)
		return
	}
	sealed, err := sealAnonymous(root, req.RecipientX25519Pubkey)
	if err != nil {
		writeStoreUnavailable(w)
		return
	}
	writeJSON(w, http.StatusOK, InviteClaimResponse{SealedRootKey: sealed, MeshID: mesh.ID, MemberID: res.MemberID,
		OwnerPubkey: mesh.OwnerPubkey, CanonicalV2: canonical, Capability: inv.Signature, MeshSlug: mesh.Slug, Role: inv.Role,
		AlreadyMember: res.AlreadyMember})
}

// claimRefusal maps the store's join refusals to the claim's answers.
func claimRefusal(code string) (int, string) {
	switch code {
	case "invite_revoked":
		return http.StatusGone, codeRevoked
	case "invite_expired":
		return http.StatusGone, codeExpired
	case "invite_exhausted":
		return http.StatusGone, "exhausted"
	case "invite_not_found", "invite_mesh_mismatch":
		return http.StatusNotFound, codeNotFound
	case "member_revoked":
		return http.StatusForbidden, code
	}
	return http.StatusBadRequest, code
}

func (b *Broker) handleInviteList(w http.ResponseWriter, r *http.Request) {
	var req InviteListRequest
	call, ok := b.moderatorRequest(w, r, &req, "list invites")
	if !ok {
		return
	}
	invites, err := b.store.ListInvites(r.Context(), call.mesh.ID)
	if err != nil {
		writeStoreUnavailable(w)
		return
	}
	now := time.Now()
	rows := make([]InviteRow, 0, len(invites))
	for _, inv := range invites {
		rows = append(rows, inviteRow(inv, now))
	}
	writeJSON(w, http.StatusOK, InviteListResponse{OK: true, Invites: rows})
}

func (b *Broker) handleInviteRevoke(w http.ResponseWriter, r *http.Request) {
	var req InviteRevokeRequest
	call, ok := b.moderatorRequest(w, r, &req, "revoke invites")
	if !ok {
		return
	}
	if req.Invite == "" {
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, "invite must name an invite by id, token or code")
		return
	}
	now := time.Now()
	inv, changed, err := b.store.RevokeInvite(r.Context(), call.mesh.ID, req.Invite, call.member.Pubkey, now)
	if code, cerr := normalizeInviteCode(req.Invite); errors.Is(err, errNotFound) && cerr == nil {
		// A code as a person typed it: the store holds its normal form.
		inv, changed, err = b.store.RevokeInvite(r.Context(), call.mesh.ID, code, call.member.Pubkey, now)
	}
	if errors.Is(err, errNotFound) {
		writeHTTPError(w, http.StatusNotFound, codeNotFound, "no invite "+req.Invite+" on this mesh")
		return
	}
	if err != nil {
		writeStoreUnavailable(w)
		return
	}
	writeJSON(w, http.StatusOK, InviteRevokeResponse{OK: true, Invite: inviteRow(inv, now), AlreadyRevoked: !changed})
}
