// The broker's audit log: one hash chain per mesh of its membership and
// moderation events. Shared by the broker's store, which appends, and the
// CLI, which verifies what the broker hands it.
//
// Policy: each entry's hash is the hex SHA-256 of
//
//	<prevHash>|<meshId>|<eventType>|<actor or "null">|<canonical JSON of the payload>|<createdAt>
//
// with createdAt as ISO-8601 UTC with milliseconds and the first entry's
// prevHash "genesis". The payload's canonical JSON has its keys sorted at
// every depth and no whitespace, so the order a payload was written in
// never changes its hash; any change to an entry's content, or to the order
// or number of entries, breaks the chain from there on.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// auditGenesis is the prevHash of a mesh's first entry.
const auditGenesis = "genesis"

// Audit event types.
const (
	auditMeshCreated   = "mesh_created"
	auditMemberJoined  = "member_joined"
	auditInviteCreated = "invite_created"
	auditInviteUsed    = "invite_used"
	auditInviteRevoked = "invite_revoked"
	auditKick          = "kick"
	auditDisconnect    = "disconnect"
	auditBan           = "ban"
	auditUnban         = "unban"
	auditGrantChanged  = "grant_changed"
	auditRoleChanged   = "role_changed"
)

// AuditEntry is one entry of a mesh's audit log, as the broker keeps it
// and hands it out.
type AuditEntry struct {
	ID        int64           `json:"id"` // 1, 2, … within the mesh
	MeshID    string          `json:"meshId"`
	EventType string          `json:"eventType"`
	Actor     *string         `json:"actor"` // the member key that did it; null for none
	Payload   json.RawMessage `json:"payload"`
	CreatedAt string          `json:"createdAt"` // ISO-8601 UTC with milliseconds
	PrevHash  string          `json:"prevHash"`
	Hash      string          `json:"hash"`
}

// auditEvent is an event to append: the chain fields are the store's.
type auditEvent struct {
	MeshID    string
	Type      string
	Actor     string // "" for none
	Payload   any    // anything encoding/json takes; nil is {}
	CreatedAt time.Time
}

// auditHash is an entry's hash from its content and its predecessor's hash.
func auditHash(prevHash, meshID, eventType string, actor *string, payload json.RawMessage, createdAt string) (string, error) {
	canon, err := canonicalJSON(payload)
	if err != nil {
		return "", fmt.Errorf("audit payload: %w", err)
	}
	a := "null"
	if actor != nil {
		a = *actor
	}
	sum := sha256.Sum256([]byte(strings.Join([]string{prevHash, meshID, eventType, a, canon, createdAt}, "|")))
	return hex.EncodeToString(sum[:]), nil
}

// chainEntry makes the entry that follows prev (nil for the first) for e:
// its number, its payload in canonical JSON, its time to the millisecond
// and its hash.
func chainEntry(prev *AuditEntry, e auditEvent) (AuditEntry, error) {
	payload := e.Payload
	if payload == nil {
		payload = map[string]any{}
	}
	raw, err := json.Marshal(payload)
	if err != nil {
		return AuditEntry{}, fmt.Errorf("audit payload: %w", err)
	}
	canon, err := canonicalJSON(json.RawMessage(raw))
	if err != nil {
		return AuditEntry{}, fmt.Errorf("audit payload: %w", err)
	}
	out := AuditEntry{ID: 1, MeshID: e.MeshID, EventType: e.Type, Payload: json.RawMessage(canon),
		CreatedAt: isoTime(e.CreatedAt), PrevHash: auditGenesis}
	if e.Actor != "" {
		a := e.Actor
		out.Actor = &a
	}
	if prev != nil {
		out.ID, out.PrevHash = prev.ID+1, prev.Hash
	}
	out.Hash, err = auditHash(out.PrevHash, out.MeshID, out.EventType, out.Actor, out.Payload, out.CreatedAt)
	return out, err
}

// auditBreak is where a chain fails verification.
type auditBreak struct {
	Index  int // position in the list given to verifyAuditChain
	Entry  AuditEntry
	Reason string
}

func (b *auditBreak) Error() string {
	return fmt.Sprintf("entry #%d (%s, %s): %s", b.Entry.ID, b.Entry.EventType, b.Entry.CreatedAt, b.Reason)
}

// verifyAuditChain recomputes a mesh's whole chain, oldest first, and
// returns the first entry that does not hold, or nil.
func verifyAuditChain(meshID string, entries []AuditEntry) *auditBreak {
	prevHash, prevID := auditGenesis, int64(0)
	for i, e := range entries {
		fail := func(reason string) *auditBreak { return &auditBreak{Index: i, Entry: e, Reason: reason} }
		switch {
		case e.MeshID != meshID:
			return fail("it belongs to mesh " + e.MeshID)
		case e.ID != prevID+1:
			return fail(fmt.Sprintf("it follows entry #%d: entries are missing or out of order", prevID))
		case e.PrevHash != prevHash:
			return fail("its prevHash is not the previous entry's hash")
		}
		want, err := auditHash(e.PrevHash, e.MeshID, e.EventType, e.Actor, e.Payload, e.CreatedAt)
		if err != nil {
			return fail(err.Error())
		}
		if want != e.Hash {
			return fail("its hash does not match its content: it was changed after it was written")
		}
		prevHash, prevID = e.Hash, e.ID
	}
	return nil
}
