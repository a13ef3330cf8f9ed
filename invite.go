// v1 invites, shared by the CLI (`invite`, `join`) and the broker (`/join`,
// invite registration): `ic://join/<base64url JSON>`, the JSON signed by the
// mesh owner key over the fields' values joined by '|', version first:
// 1|mesh_id|mesh_slug|broker_url|expires_at|mesh_root_key|role|owner_pubkey.
// The JSON keys and their order are claudemesh's, so its CLI can join our
// meshes and ours can join its.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// InvitePayload is the signed content of a v1 invite.
type InvitePayload struct {
	V           int    `json:"v"`
	MeshID      string `json:"mesh_id"`
	MeshSlug    string `json:"mesh_slug"`
	BrokerURL   string `json:"broker_url"`
	ExpiresAt   int64  `json:"expires_at"` // unix seconds
	MeshRootKey string `json:"mesh_root_key"`
	Role        string `json:"role"` // admin | member
	OwnerPubkey string `json:"owner_pubkey"`
	Signature   string `json:"signature"`
}

// maxInviteLen bounds what parseInvite reads: a real invite is well under
// 1 KiB.
const maxInviteLen = 8192

// signedString is what the owner signs.
func (p InvitePayload) signedString() string {
	return inviteSignedString(p.V, p.MeshID, p.MeshSlug, p.BrokerURL, p.ExpiresAt, p.MeshRootKey, p.Role, p.OwnerPubkey)
}

// buildInvite signs a v1 invite with the owner key and returns it with its
// token (the base64url JSON that follows ic://join/).
func buildInvite(owner Keypair, meshID, slug, brokerURL, rootKey, role string, expiresAt time.Time) (InvitePayload, string, error) {
	p := InvitePayload{V: 1, MeshID: meshID, MeshSlug: slug, BrokerURL: brokerURL, ExpiresAt: expiresAt.Unix(),
		MeshRootKey: rootKey, Role: role, OwnerPubkey: owner.PublicHex()}
	if err := p.checkShape(); err != nil {
		return p, "", err
	}
	p.Signature = owner.sign(p.signedString())
	data, err := json.Marshal(p)
	if err != nil {
		return p, "", err
	}
	return p, b64url(data), nil
}

// isInviteLink reports whether s is written as an invite link (not a bare
// token, which could be any word).
func isInviteLink(s string) bool {
	for _, prefix := range []string{"ic://join/", "claudemesh://join/"} {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return strings.HasPrefix(s, "https://") && strings.Contains(s, "/join/")
}

// inviteURL is the link form of a token.
func inviteURL(token string) string { return "ic://join/" + token }

// parseInvite accepts `ic://join/<token>`, `claudemesh://join/<token>`,
// `https://<host>[/<locale>]/join/<token>` or a bare token, and returns the
// payload (shape and signature checked, expiry not) and the token.
func parseInvite(s string) (InvitePayload, string, error) {
	s = strings.TrimSpace(s)
	if len(s) > maxInviteLen {
		return InvitePayload{}, "", errors.New("invite is too long")
	}
	token := s
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return InvitePayload{}, "", errors.New("invite is not a valid link")
		}
		// ic://join/<t> parses with host "join"; https links carry /join/<t>.
		path := strings.Trim(u.Host+u.Path, "/")
		i := strings.LastIndex(path, "join/")
		if i < 0 || (i > 0 && path[i-1] != '/') {
			return InvitePayload{}, "", errors.New("invite link has no /join/<token> part")
		}
		token = path[i+len("join/"):]
	}
	if token == "" || strings.ContainsAny(token, "/?#") {
		return InvitePayload{}, "", errors.New("invite token is empty or malformed")
	}
	raw, err := unb64url(token)
	if err != nil {
		return InvitePayload{}, "", errors.New("invite token is not base64url")
	}
	var p InvitePayload
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&p); err != nil {
		return InvitePayload{}, "", fmt.Errorf("invite payload is not valid JSON: %w", jsonFieldError(err))
	}
	if err := p.verify(); err != nil {
		return p, token, err
	}
	return p, token, nil
}

// errInviteBadSignature is a well-formed invite whose signature does not
// verify against its own owner key.
var errInviteBadSignature = errors.New("invite signature does not verify")

// checkShape checks every field but the signature.
func (p InvitePayload) checkShape() error {
	switch {
	case p.V != 1:
		return fmt.Errorf("unsupported invite version %d", p.V)
	case p.MeshID == "" || p.MeshSlug == "" || p.BrokerURL == "":
		return errors.New("invite lacks mesh_id, mesh_slug or broker_url")
	case strings.Contains(p.MeshID+p.MeshSlug+p.BrokerURL+p.MeshRootKey, "|"):
		return errors.New("invite fields may not contain '|'")
	case p.ExpiresAt <= 0:
		return errors.New("invite lacks expires_at")
	case p.Role != roleAdmin && p.Role != roleMember:
		return fmt.Errorf("invite role must be admin or member, not %q", p.Role)
	case !isHexKey(p.OwnerPubkey):
		return errors.New("invite owner_pubkey must be 64 lowercase hex")
	}
	if _, err := unb64url(p.MeshRootKey); err != nil || p.MeshRootKey == "" {
		return errors.New("invite mesh_root_key must be base64url")
	}
	if _, err := brokerHTTPBase(p.BrokerURL); err != nil {
		return fmt.Errorf("invite broker_url: %w", err)
	}
	return nil
}

// verify checks the shape and the owner's signature.
func (p InvitePayload) verify() error {
	if err := p.checkShape(); err != nil {
		return err
	}
	if !isHexOfLen(p.Signature, 128) || !verifySignature(p.OwnerPubkey, p.signedString(), p.Signature) {
		return errInviteBadSignature
	}
	return nil
}

// expired reports whether the invite has run out at now.
func (p InvitePayload) expired(now time.Time) bool { return now.Unix() >= p.ExpiresAt }

// brokerHTTPBase derives a broker's HTTP base URL from its WebSocket URL:
// ws→http, wss→https, the trailing /ws dropped.
func brokerHTTPBase(wsURL string) (string, error) {
	u, err := url.Parse(wsURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%q is not a broker URL (want ws://host:port/ws)", wsURL)
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	case "http", "https":
	default:
		return "", fmt.Errorf("%q is not a broker URL (want ws:// or wss://)", wsURL)
	}
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/ws")
	u.RawQuery, u.Fragment = "", ""
	return strings.TrimSuffix(u.String(), "/"), nil
}
