// The broker's durable storage, behind a small interface so that SQLite (the
// default, brokerstore_sqlite.go) can later be joined by Postgres. The broker
// keeps presence, leases and rate buckets in memory; everything that must
// survive a restart — meshes, members, invites, known session keys, messages
// and their per-recipient delivery records, state, memory, skills and saved
// peer state — lives here.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// errExists is what stores return when a unique row is already there.
var errExists = errors.New("already exists")

// brokerStore is the broker's durable storage.
type brokerStore interface {
	Ping(ctx context.Context) error
	Close() error

	// Meshes and members. A mutation's audit events (audit.go) are
	// appended to the audit log in the mutation's own transaction: the
	// change and its record are stored together or not at all.
	CreateMesh(ctx context.Context, mesh storedMesh, owner storedMember, audit ...auditEvent) error
	MeshByID(ctx context.Context, id string) (storedMesh, error)
	MeshBySlug(ctx context.Context, slug string) (storedMesh, error)
	CountMeshes(ctx context.Context) (int, error)
	// MemberByPubkey returns the member with this key, revoked or not.
	MemberByPubkey(ctx context.Context, meshID, pubkey string) (storedMember, error)
	Members(ctx context.Context, meshID string) ([]storedMember, error)
	SetMemberRevoked(ctx context.Context, meshID, memberID string, revokedAt *time.Time, audit ...auditEvent) error
	// SetGrants replaces a member's grants (grants.go).
	SetGrants(ctx context.Context, meshID, memberID string, grants grantMap, audit ...auditEvent) error
	// SetMemberRole makes a member an admin or a plain member.
	SetMemberRole(ctx context.Context, meshID, memberID, role string, audit ...auditEvent) error

	// Invites.
	CreateInvite(ctx context.Context, inv storedInvite, audit ...auditEvent) error
	// RedeemInvite enrolls pubkey through the invite with this token, all in
	// one transaction with the audit events joinAudit makes for it; see
	// joinError for the refusals.
	RedeemInvite(ctx context.Context, req redeemRequest) (redeemResult, error)
	// InviteByToken finds the invite a joiner presents: a v1 token or a v2
	// code (errNotFound when none).
	InviteByToken(ctx context.Context, token string) (storedInvite, error)
	// ListInvites lists a mesh's invites, newest first.
	ListInvites(ctx context.Context, meshID string) ([]storedInvite, error)
	// RevokeInvite revokes the mesh's invite whose id or token is ref, with
	// the audit event revokeAudit makes; changed is false (and nothing is
	// written) when it was revoked already.
	RevokeInvite(ctx context.Context, meshID, ref, actor string, at time.Time) (inv storedInvite, changed bool, err error)

	// The audit log. AppendAudit appends events of their own (a kick); each
	// entry links to its mesh's last, so a store serializes the appends to
	// one mesh's log. AuditLog lists a mesh's entries after afterID, oldest
	// first.
	AppendAudit(ctx context.Context, events ...auditEvent) error
	AuditLog(ctx context.Context, meshID string, afterID int64, limit int) ([]AuditEntry, error)

	// Session keys that have said session_hello, so DMs to them queue while
	// they are offline.
	RememberSessionKey(ctx context.Context, meshID, sessionPubkey, memberID string, now time.Time) error
	// KeyOwner returns the member whose key, or one of whose remembered
	// session keys, key is (revoked or not); errNotFound when the mesh
	// never saw it.
	KeyOwner(ctx context.Context, meshID, key string) (storedMember, error)

	// Messages and deliveries.
	// PendingFor lists undelivered, unexpired messages for a recipient key,
	// oldest first, after the message with sequence number afterSeq.
	PendingFor(ctx context.Context, meshID, key string, afterSeq int64, now time.Time, limit int) ([]storedMessage, error)
	// WriteBatch applies many appends and delivery marks in one
	// transaction: the broker's group commit (broker_batch.go). An append
	// stores its message with one delivery record per distinct recipient
	// key, or — when (mesh, sender member, client_message_id) names a
	// message still stored — nothing, and reports the original (id and
	// store order) as a duplicate; a message with no recipient need not be
	// stored. A mark retires one key's delivery, by store order (Seq) when
	// the broker knows it, else by broker message id, else by the sender's
	// client_message_id. A store deletes a delivery when it is marked, and
	// a message with its last delivery, so its size follows what is
	// pending, not what was ever sent. The SQLite store's dedupe holds
	// while the message is stored; the PostgreSQL store's until the
	// message's expiry. Nothing in the batch is durable
	// until it returns without error. A store may fail the whole batch for
	// one bad append — the group commit then retries the appends one by
	// one — or report that append's error alone in its result.
	//
	// An append with a Multicast target resolves its recipients inside that
	// transaction, from the mesh's members and stored presences
	// (resolveMulticast), and reports them in its result.
	WriteBatch(ctx context.Context, appends []appendOp, marks []deliveryMark) ([]appendResult, int, error)

	// Presences: the last known presence of every member link and session
	// key, what multicasts are resolved against.
	SavePresences(ctx context.Context, ps []storedPresence) error
	// EndPresences marks absent every key still present that was last seen
	// before startedAt: those that did not come back after a restart.
	EndPresences(ctx context.Context, startedAt, now time.Time) (int, error)
	// PurgeExpired deletes expired messages (with their deliveries still
	// pending), and
	// presences absent for longer than groupMemory; it counts the messages.
	PurgeExpired(ctx context.Context, now time.Time) (int, error)
	CountPendingDeliveries(ctx context.Context, now time.Time) (int, error)

	// Shared state.
	SetState(ctx context.Context, meshID string, e StateEntry) error
	GetState(ctx context.Context, meshID, key string) (StateEntry, error)
	ListState(ctx context.Context, meshID string) ([]StateEntry, error)

	// Memory.
	Remember(ctx context.Context, meshID string, m Memory) error
	Recall(ctx context.Context, meshID, query string, limit int) ([]Memory, error)
	Forget(ctx context.Context, meshID, id string, now time.Time) (bool, error)

	// Skills.
	PutSkill(ctx context.Context, meshID string, s Skill) error
	GetSkill(ctx context.Context, meshID, name string) (Skill, error)
	ListSkills(ctx context.Context, meshID, query string) ([]Skill, error)
	RemoveSkill(ctx context.Context, meshID, name string) (bool, error)

	// Peer state saved per (mesh, member) when a member connection ends.
	SavePeerState(ctx context.Context, ps storedPeerState) error
	LoadPeerState(ctx context.Context, meshID, memberID string) (storedPeerState, error)
}

// storedMesh is one mesh. OwnerPubkey signs its invites.
type storedMesh struct {
	ID          string
	Slug        string
	Name        string
	OwnerPubkey string
	RootKey     string // base64url, 32 bytes; carried by invites
	CreatedAt   time.Time
}

// storedMember is one member identity of a mesh.
type storedMember struct {
	ID            string
	MeshID        string
	Pubkey        string
	DisplayName   string
	Role          string // admin | member
	RoleTag       string
	DefaultGroups []GroupRef
	MessageMode   string
	CreatedAt     time.Time
	RevokedAt     *time.Time
	Grants        grantMap // what it lets others do to it; nil means the defaults for everyone
}

// storedInvite is one registered invite: a v1 token, or a v2 code with
// the owner's capability.
type storedInvite struct {
	ID        string // short, for listing and revoking; a v2 invite's invite_id
	Version   int    // 1 or 2
	Token     string // what the joiner presents: the v1 token, or the v2 code
	Signature string // v2: the owner's signature over the capability
	MeshID    string
	Role      string
	MaxUses   int
	UsedCount int
	ExpiresAt time.Time
	RevokedAt *time.Time
	CreatedAt time.Time
}

// redeemRequest is a join through an invite whose signature and owner the
// broker has already checked. The member's role is the registered invite's.
type redeemRequest struct {
	Version     int // the invite version the joiner used (0 means 1)
	Token       string
	MeshID      string // from the verified invite payload
	Pubkey      string
	DisplayName string
	Now         time.Time
	NewMemberID string
}

// checkRedeemable says why the invite read for req (inv, or the error of
// reading it) cannot be redeemed, or nil when it can: the same refusals,
// in the same order, on every store.
func checkRedeemable(inv storedInvite, readErr error, req redeemRequest) error {
	if errors.Is(readErr, errNotFound) || (readErr == nil && inv.Version != max(req.Version, 1)) {
		return &joinError{"invite_not_found", "this invite was never registered with the broker"}
	}
	if readErr != nil {
		return readErr
	}
	switch {
	case inv.MeshID != req.MeshID:
		return &joinError{"invite_mesh_mismatch", "the invite belongs to another mesh"}
	case inv.RevokedAt != nil:
		return &joinError{"invite_revoked", "the invite was revoked"}
	case !req.Now.Before(inv.ExpiresAt):
		return &joinError{"invite_expired", "the invite has expired"}
	}
	return nil
}

// rejoin is the answer to a join by a key already in the mesh: idempotent,
// using no slot, but a banned key cannot undo its ban by joining again.
func rejoin(existing storedMember) (redeemResult, error) {
	if existing.RevokedAt != nil {
		return redeemResult{}, &joinError{"member_revoked", "this key was banned from the mesh"}
	}
	return redeemResult{MemberID: existing.ID, AlreadyMember: true}, nil
}

// errInviteExhausted refuses a join when the invite's last use is taken.
var errInviteExhausted = &joinError{"invite_exhausted", "the invite has no uses left"}

// joinAudit is what a join through inv that enrolled m records: the new
// member, and the use of the invite (its uses after this one).
func joinAudit(inv storedInvite, m storedMember, uses int) []auditEvent {
	return []auditEvent{
		{MeshID: m.MeshID, Type: auditMemberJoined, Actor: m.Pubkey, CreatedAt: m.CreatedAt, Payload: map[string]any{
			"memberId": m.ID, "pubkey": m.Pubkey, "displayName": m.DisplayName, "role": m.Role, "inviteId": inv.ID}},
		{MeshID: m.MeshID, Type: auditInviteUsed, Actor: m.Pubkey, CreatedAt: m.CreatedAt, Payload: map[string]any{
			"inviteId": inv.ID, "memberId": m.ID, "uses": uses, "maxUses": inv.MaxUses}},
	}
}

// revokeAudit records an invite's revocation by actor.
func revokeAudit(inv storedInvite, actor string, at time.Time) auditEvent {
	return auditEvent{MeshID: inv.MeshID, Type: auditInviteRevoked, Actor: actor, CreatedAt: at, Payload: map[string]any{
		"inviteId": inv.ID, "version": inv.Version, "uses": inv.UsedCount, "maxUses": inv.MaxUses}}
}

// state is what an invite can do at now: active, revoked, expired or
// exhausted, checked in that order.
func (inv storedInvite) state(now time.Time) string {
	switch {
	case inv.RevokedAt != nil:
		return "revoked"
	case !now.Before(inv.ExpiresAt):
		return "expired"
	case inv.UsedCount >= inv.MaxUses:
		return "exhausted"
	}
	return "active"
}

// redeemResult is the member a join produced or found.
type redeemResult struct {
	MemberID      string
	AlreadyMember bool
}

// joinError is a refused join; Code is the error code claudemesh clients expect.
type joinError struct{ Code, Message string }

func (e *joinError) Error() string { return e.Code + ": " + e.Message }

// storedMessage is one accepted send, with what every push of it carries.
type storedMessage struct {
	Seq                int64 // store order; set once stored
	ID                 string
	MeshID             string
	SenderMemberID     string
	SenderPubkey       string
	SenderMemberPubkey string
	SenderName         string
	TargetSpec         string
	Priority           string
	Nonce              string
	Ciphertext         string
	CreatedAt          time.Time
	ExpiresAt          time.Time
	ClientMessageID    string
	RequestFingerprint string
	ReplyToID          string
	Subtype            string
	Topic              string
}

// appendOp is one message to store inside a WriteBatch.
type appendOp struct {
	Msg        storedMessage
	Recipients []string
	Multicast  *multicastTarget // when set, the recipients are resolved in the transaction
}

// appendResult is the outcome of one appendOp: the message's id (the
// original one for a duplicate) or why it failed.
type appendResult struct {
	ID         string
	Seq        int64 // its store order, which marks and drains use
	Dup        bool
	Recipients []string // the delivery keys written (a multicast's resolution)
	Err        error
}

// deliveryMark is one delivery to mark delivered inside a WriteBatch.
type deliveryMark struct {
	MeshID, Key                string
	Seq                        int64  // the message's store order, when known
	MessageID, ClientMessageID string // else by broker id, else by the sender's client id
	At                         time.Time
}

// storedPeerState is what a member's connection leaves behind for its next
// hello: groups, visibility, profile, last summary and counters.
type storedPeerState struct {
	MeshID     string
	MemberID   string
	Groups     []GroupRef
	Visible    bool
	Profile    Profile
	Summary    string
	Stats      json.RawMessage
	LastSeenAt time.Time
}

// Multicast resolution, shared by every store: it runs inside the
// transaction that stores the message (policy in broker_fanout.go).

// defaultMessageTTL is how long a message waits for its recipients.
const defaultMessageTTL = 7 * 24 * time.Hour

// groupMemory is how long a key that has gone away still counts as a
// member of the groups it declared: as long as a message waits for it.
const groupMemory = defaultMessageTTL

// storedPresence is the last known presence of one routing key: a member
// link (key = the member key) or a session key.
type storedPresence struct {
	MeshID   string
	Key      string
	MemberID string
	Role     string // peerRoleControlPlane | peerRoleSession
	Groups   []GroupRef
	Visible  bool
	Present  bool      // connected, or in its grace window
	SeenAt   time.Time // when it last connected, changed or left
}

// multicastTarget is a multicast send to resolve inside the store's
// transaction.
type multicastTarget struct {
	Kind               targetKind
	Ref                string // the group, for targetGroup
	SenderKey          string
	SenderMemberID     string
	SenderMemberPubkey string // with SenderKey, what recipients' grants are looked up by
	Now                time.Time
}

// resolveMulticast returns the delivery keys of a multicast: for each
// intended member whose grants let the sender broadcast to it, its present
// sessions that the target reaches, or its member key when there are none.
// members and presences are the mesh's. A member whose grants refuse the
// sender is skipped without a word: a multicast is not refused for it.
func resolveMulticast(t multicastTarget, members []storedMember, presences []storedPresence) []string {
	byMember := map[string][]storedPresence{}
	for _, p := range presences {
		byMember[p.MemberID] = append(byMember[p.MemberID], p)
	}
	since := t.Now.Add(-groupMemory)
	var keys []string
	for _, m := range members {
		if m.RevokedAt != nil {
			continue
		}
		if m.ID != t.SenderMemberID && !m.Grants.allows(t.SenderMemberPubkey, t.SenderKey, capBroadcast) {
			continue
		}
		rows := byMember[m.ID]
		intended := t.Kind != targetGroup
		linkSeen, linkHidden := false, false
		var sessions []string
		for _, r := range rows {
			reaches := t.Kind != targetGroup || inGroup(r.Groups, t.Ref)
			if reaches && (r.Present || !r.SeenAt.Before(since)) {
				intended = true
			}
			switch {
			case r.Role == peerRoleControlPlane:
				linkSeen = true
				linkHidden = r.Present && !r.Visible
			case r.Present && r.Visible && reaches && r.Key != t.SenderKey:
				sessions = append(sessions, r.Key)
			}
		}
		if !linkSeen && t.Kind == targetGroup && inGroup(m.DefaultGroups, t.Ref) {
			intended = true
		}
		switch {
		case !intended:
		case len(sessions) > 0:
			keys = append(keys, sessions...)
		case m.ID != t.SenderMemberID && !linkHidden:
			keys = append(keys, m.Pubkey)
		}
	}
	return keys
}
