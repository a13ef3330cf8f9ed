// The broker wire protocol: one UTF-8 JSON object per WebSocket text frame,
// told apart by "type". Names, casing and shapes are claudemesh's so either
// implementation's daemon can use either implementation's broker. Most
// fields are camelCase; the idempotency fields of send/push are snake_case.
//
// One Go type per frame. Requests may carry "_reqId", which every reply
// echoes; `send` correlates through its own "id" instead.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Frame type names.
const (
	// Client → broker.
	frameHello        = "hello"
	frameSessionHello = "session_hello"
	frameSend         = "send"
	frameClientAck    = "client_ack"
	frameListPeers    = "list_peers"
	frameSetStatus    = "set_status"
	frameSetSummary   = "set_summary"
	frameSetVisible   = "set_visible"
	frameSetProfile   = "set_profile"
	frameSetStats     = "set_stats"
	frameJoinGroup    = "join_group"
	frameLeaveGroup   = "leave_group"
	frameSetState     = "set_state"
	frameGetState     = "get_state"
	frameListState    = "list_state"
	frameRemember     = "remember"
	frameRecall       = "recall"
	frameForget       = "forget"
	frameShareSkill   = "share_skill"
	frameGetSkill     = "get_skill"
	frameListSkills   = "list_skills"
	frameRemoveSkill  = "remove_skill"
	frameKick         = "kick"
	frameDisconnect   = "disconnect"
	frameBan          = "ban"
	frameUnban        = "unban"
	frameListBans     = "list_bans"
	frameListMembers  = "list_members" // our addition (featureListMembers)
	frameReceipt      = "receipt"      // our addition (featureReceipts), both ways

	// Broker → client.
	frameHelloAck       = "hello_ack"
	frameAck            = "ack"
	framePush           = "push"
	framePeersList      = "peers_list"
	frameStateChange    = "state_change"
	frameStateResult    = "state_result"
	frameStateList      = "state_list"
	frameMemoryStored   = "memory_stored"
	frameMemoryResults  = "memory_results"
	frameSkillAck       = "skill_ack"
	frameSkillData      = "skill_data"
	frameSkillList      = "skill_list"
	frameKickAck        = "kick_ack"
	frameDisconnectAck  = "disconnect_ack"
	frameBanAck         = "ban_ack"
	frameUnbanAck       = "unban_ack"
	frameListBansResult = "list_bans_result"
	frameMembersList    = "members_list"
	frameSystemBatch    = "system_batch" // our addition (capabilitySystemBatches)
	frameError          = "error"
)

// Member roles, as members, invites and hello_ack carry them.
const (
	roleOwner  = "owner"
	roleAdmin  = "admin"
	roleMember = "member"
)

// Error codes in `error` frames.
const (
	// Handshake (close 1008 unless noted).
	codeBadSessionPubkey       = "bad_session_pubkey"
	codeBadParentPubkey        = "bad_parent_pubkey"
	codeAttestationMismatch    = "attestation_mismatch"
	codeExpired                = "expired"
	codeTTLTooLong             = "ttl_too_long"
	codeParentMemberIDMismatch = "parent_member_id_mismatch"
	codeCapacity               = "capacity"
	codeTimestampSkew          = "timestamp_skew"
	codeMalformed              = "malformed"
	codeBadSignature           = "bad_signature"
	codeUnauthorized           = "unauthorized"
	codeRevoked                = "revoked" // closes 4002 "banned"
	codeReplayed               = "replayed"
	codeNoHello                = "no_hello" // socket stays open

	// After the handshake.
	codeInvalid            = "invalid"
	codeUnknownMessageType = "unknown_message_type"
	codeForbidden          = "forbidden"
	codeNotFound           = "not_found"
	codeRateLimit          = "rate_limit"
	codePayloadTooLarge    = "payload_too_large"
	codeUnknownTarget      = "unknown_target"
	codeInternal           = "internal" // the broker's store failed

	// Our addition: a socket that never completes a handshake.
	codeHelloTimeout = "hello_timeout"
)

// WebSocket close codes the broker uses. A frame over the size limit is
// closed 1009 by the WebSocket library itself.
const (
	closeNormal = 1000 // "session_replaced", "disconnected", "disconnected_stale"
	closePolicy = 1008 // handshake refused; the reason is the error code
	closeKicked = 4001 // "kicked", "kicked_stale"
	closeBanned = 4002 // "banned"
)

// closeReasonLeave is the reason of a client's normal (1000) close when it
// leaves on purpose (a session deregistered, a daemon stopping): the broker
// ends that presence at once, where a dropped socket keeps it for the grace
// window. Our addition; a broker that does not know it applies the grace.
const closeReasonLeave = "leave"

// Peer roles on the broker.
const (
	peerRoleControlPlane = "control-plane" // a member (daemon) connection
	peerRoleSession      = "session"       // a launched session's connection
)

// Link channels, reported in hello and peers_list.
const (
	channelDaemon  = "claudemesh-daemon"
	channelSession = "claudemesh-session"
	channelCLI     = "claude-code"
)

// Message priorities and presence statuses.
const (
	priorityNow  = "now"
	priorityNext = "next"
	priorityLow  = "low"

	statusIdle    = "idle"
	statusWorking = "working"
	statusDND     = "dnd"
)

// System push events.
const (
	eventPeerJoined   = "peer_joined"
	eventPeerReturned = "peer_returned"
	eventPeerLeft     = "peer_left"
	eventPeerVisible  = "peer_visible"
	eventPeerHidden   = "peer_hidden"
	subtypeSystem     = "system"
	// subtypeReceipt marks a stored receipt (featureReceipts): the broker
	// keeps it like a message but pushes it as a receipt frame.
	subtypeReceipt = "receipt"
)

// frameHead is what every frame has: its type and an optional request id.
type frameHead struct {
	Type  string `json:"type"`
	ReqID string `json:"_reqId,omitempty"`
}

// decodeHead reads a frame's type and request id without decoding the rest.
func decodeHead(data []byte) (frameHead, error) {
	var h frameHead
	if err := json.Unmarshal(data, &h); err != nil {
		return h, fmt.Errorf("frame is not a JSON object: %w", err)
	}
	if h.Type == "" {
		return h, errors.New("frame has no type")
	}
	return h, nil
}

// unansweringPrefixes are how a broker's frames that never answer a request
// begin when type is their first member, as both brokers write them.
var unansweringPrefixes = [][]byte{[]byte(`{"type":"` + framePush + `",`), []byte(`{"type":"` + frameSystemBatch + `",`)}

// decodeBrokerHead is decodeHead for what a broker sends: a push or a
// system batch is known by its first bytes, without scanning the rest (a
// batch of a few hundred events is most of what a client reads while a
// mesh reconnects). Its consumer decodes it whole anyway.
func decodeBrokerHead(data []byte) (frameHead, error) {
	for _, p := range unansweringPrefixes {
		if bytes.HasPrefix(data, p) {
			return frameHead{Type: string(p[len(`{"type":"`) : len(p)-2])}, nil
		}
	}
	return decodeHead(data)
}

// Handshakes.

// HelloFrame authenticates a member connection (a daemon's member link or a
// cold-path CLI connection). Signed: meshId|memberId|pubkey|timestamp.
type HelloFrame struct {
	Type            string     `json:"type"`
	MeshID          string     `json:"meshId"`
	MemberID        string     `json:"memberId"`
	Pubkey          string     `json:"pubkey"`
	SessionPubkey   string     `json:"sessionPubkey,omitempty"`
	DisplayName     string     `json:"displayName,omitempty"`
	SessionID       string     `json:"sessionId"`
	Pid             int        `json:"pid"`
	Cwd             string     `json:"cwd"`
	Hostname        string     `json:"hostname,omitempty"`
	PeerType        string     `json:"peerType,omitempty"`
	Channel         string     `json:"channel,omitempty"`
	Model           string     `json:"model,omitempty"`
	Groups          []GroupRef `json:"groups,omitempty"`
	ProtocolVersion int        `json:"protocolVersion,omitempty"`
	Capabilities    []string   `json:"capabilities,omitempty"`
	Timestamp       int64      `json:"timestamp"`
	Signature       string     `json:"signature"`
}

// SessionHelloFrame authenticates a session connection vouched for by its
// parent member. Signed by the session key:
// claudemesh-session-hello|meshId|parentMemberPubkey|sessionPubkey|timestamp.
type SessionHelloFrame struct {
	Type               string       `json:"type"`
	MeshID             string       `json:"meshId"`
	ParentMemberID     string       `json:"parentMemberId,omitempty"`
	ParentMemberPubkey string       `json:"parentMemberPubkey"`
	SessionPubkey      string       `json:"sessionPubkey"`
	ParentAttestation  *Attestation `json:"parentAttestation"`
	DisplayName        string       `json:"displayName,omitempty"`
	SessionID          string       `json:"sessionId"`
	Pid                int          `json:"pid"`
	Cwd                string       `json:"cwd"`
	Hostname           string       `json:"hostname,omitempty"`
	PeerType           string       `json:"peerType,omitempty"`
	Channel            string       `json:"channel,omitempty"`
	Groups             []GroupRef   `json:"groups,omitempty"`
	Role               string       `json:"role,omitempty"`
	Model              string       `json:"model,omitempty"`
	// Capabilities is our addition, as the member hello has it (unsigned).
	Capabilities []string `json:"capabilities,omitempty"`
	Timestamp    int64    `json:"timestamp"`
	Signature    string   `json:"signature"`
}

// MemberProfile is the member's stored profile, returned in hello_ack.
type MemberProfile struct {
	RoleTag     *string    `json:"roleTag"`
	Groups      []GroupRef `json:"groups"`
	MessageMode string     `json:"messageMode,omitempty"`
}

// HelloAckFrame accepts a handshake. Pushes may arrive before it.
type HelloAckFrame struct {
	Type              string         `json:"type"`
	PresenceID        string         `json:"presenceId"`
	MemberDisplayName string         `json:"memberDisplayName"`
	MemberProfile     *MemberProfile `json:"memberProfile,omitempty"`
	Restored          bool           `json:"restored,omitempty"`
	LastSummary       string         `json:"lastSummary,omitempty"`
	LastSeenAt        string         `json:"lastSeenAt,omitempty"`
	RestoredGroups    []GroupRef     `json:"restoredGroups,omitempty"`
	// Features names what this broker does beyond claudemesh's protocol, so
	// a client asks only for what it will get (a broker that ignores an
	// unknown frame would leave the request unanswered). Our addition.
	Features []string `json:"features,omitempty"`
}

// featureListMembers, in a hello_ack's features: the broker answers
// list_members with members_list.
const featureListMembers = "list_members"

// featureReceipts, in a hello_ack's features: the broker takes receipt
// frames and routes them to the sender of the message they are about.
const featureReceipts = "receipts"

// brokerFeatures is what this build's broker says it does.
func brokerFeatures() []string { return []string{featureListMembers, featureReceipts} }

// capabilityReceipts, in a handshake's capabilities, says the connection
// takes receipt frames: the broker pushes receipts to no other, so a
// daemon that does not know them never holds their leases.
const capabilityReceipts = "receipts"

// capabilitySystemBatches, in a handshake's capabilities, says the
// connection takes a mesh's presence events gathered into system_batch
// frames instead of one push each: when N peers join a mesh of N, each
// connection gets a frame per batch window rather than one per join.
const capabilitySystemBatches = "system_batches"

// capabilityNoPresence, in a handshake's capabilities, says the connection
// wants no presence events at all: a session link, whose daemon hears them
// once on its member link.
const capabilityNoPresence = "no_presence_events"

// hasFeature reports whether a hello_ack's features name f.
func hasFeature(features []string, f string) bool { return slices.Contains(features, f) }

// ErrorFrame reports a refused handshake or a bad frame.
type ErrorFrame struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
	ID      string `json:"id,omitempty"`
	ReqID   string `json:"_reqId,omitempty"`
}

// Messages.

// SendFrame asks the broker to route one message. targetSpec is a 64-hex
// key, `@group`, `@all`, `*` or `#topic`.
type SendFrame struct {
	Type               string   `json:"type"`
	ID                 string   `json:"id,omitempty"`
	ClientMessageID    string   `json:"client_message_id,omitempty"`
	RequestFingerprint string   `json:"request_fingerprint,omitempty"`
	TargetSpec         string   `json:"targetSpec"`
	Priority           string   `json:"priority"`
	Nonce              string   `json:"nonce"`
	Ciphertext         string   `json:"ciphertext"`
	ReplyToID          string   `json:"replyToId,omitempty"`
	Mentions           []string `json:"mentions,omitempty"`
	BodyVersion        int      `json:"bodyVersion,omitempty"`
	Subtype            string   `json:"subtype,omitempty"`
}

// AckFrame answers a send (id = send.id). Rejections have queued=false, an
// empty messageId and an error string that starts with its error code.
// set_visible, set_profile and forget reuse the shape as a generic reply.
type AckFrame struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	MessageID string `json:"messageId"`
	Queued    bool   `json:"queued"`
	Error     string `json:"error,omitempty"`
	// Recipients is, for a stored multicast, how many delivery keys it
	// resolved to: how many ladders of receipts its sender can expect. Our
	// addition.
	Recipients *int   `json:"recipients,omitempty"`
	ReqID      string `json:"_reqId,omitempty"`
}

// PushFrame delivers a message (or, with subtype "system", a presence event).
// Every push carries the full field set; topic, replyToId and subtype only
// when set.
type PushFrame struct {
	Type               string          `json:"type"`
	MessageID          string          `json:"messageId"`
	MeshID             string          `json:"meshId"`
	SenderPubkey       string          `json:"senderPubkey"` // session key when sent on a session link, "system" for events
	SenderMemberPubkey string          `json:"senderMemberPubkey,omitempty"`
	SenderMemberID     string          `json:"senderMemberId,omitempty"`
	SenderName         string          `json:"senderName,omitempty"`
	Priority           string          `json:"priority"`
	Nonce              string          `json:"nonce"`
	Ciphertext         string          `json:"ciphertext"`
	CreatedAt          string          `json:"createdAt"`
	ClientMessageID    string          `json:"client_message_id,omitempty"`
	RequestFingerprint string          `json:"request_fingerprint,omitempty"`
	TargetSpec         string          `json:"targetSpec,omitempty"`
	Topic              string          `json:"topic,omitempty"`
	ReplyToID          string          `json:"replyToId,omitempty"`
	Subtype            string          `json:"subtype,omitempty"`
	Event              string          `json:"event,omitempty"`
	EventData          json.RawMessage `json:"eventData,omitempty"`
}

// SystemBatchFrame is several system events of one mesh in one frame, in
// the order they happened. Each event means what the system push with the
// same event and eventData means; an event about the receiving connection
// itself (or, for a member's own join, its member) may be among them.
type SystemBatchFrame struct {
	Type   string        `json:"type"`
	MeshID string        `json:"meshId"`
	Events []SystemEvent `json:"events"`
}

// SystemEvent is one event of a system_batch frame.
type SystemEvent struct {
	Event     string          `json:"event"`
	EventData json.RawMessage `json:"eventData"`
	CreatedAt string          `json:"createdAt"`
}

// push is the event as the system push a connection without batches gets.
func (e SystemEvent) push(meshID string) PushFrame {
	return PushFrame{Type: framePush, MessageID: newUUID(), MeshID: meshID, SenderPubkey: "system", Priority: priorityLow,
		CreatedAt: e.CreatedAt, Subtype: subtypeSystem, Event: e.Event, EventData: e.EventData}
}

// SystemEventData is the eventData of a system push.
type SystemEventData struct {
	Name       string     `json:"name"`
	Pubkey     string     `json:"pubkey"` // session key, else member key
	Groups     []GroupRef `json:"groups,omitempty"`
	LastSeenAt string     `json:"lastSeenAt,omitempty"`
	Summary    string     `json:"summary,omitempty"`
}

// Receipts (featureReceipts): how far a message got at its recipient.

// Receipt states, in ladder order.
const (
	receiptDelivered = "delivered" // the recipient's daemon stored it
	receiptSurfaced  = "surfaced"  // a path showed it to the recipient's model
)

// ReceiptBody is what a receipt says about one message at one recipient
// key: the highest rung it reached there, and when. Times are ISO.
type ReceiptBody struct {
	MessageID       string `json:"messageId"`                   // the broker's id of the message
	ClientMessageID string `json:"client_message_id,omitempty"` // its sender's id
	State           string `json:"state"`                       // delivered | surfaced
	DeliveredAt     string `json:"deliveredAt"`
	SurfacedAt      string `json:"surfacedAt,omitempty"`
	Via             string `json:"via,omitempty"` // surfaced: channel, hooks or pull
	// Confirmed: the surfacing is proven (a hook or a pull showed the
	// text; a channel emit once the transcript or a reply shows it).
	Confirmed bool `json:"confirmed,omitempty"`
	// Shares is "delivered" when the recipient withholds surfaced
	// receipts: its sender's ladder stops at delivered.
	Shares string `json:"shares,omitempty"`
}

// ReceiptFrame is a receipt a recipient's daemon sends about a message it
// received. RecipientPubkey is the key the message was delivered to: the
// connection's own, or a session key of its member. To is the member key
// of the message's sender; the ack answers id.
type ReceiptFrame struct {
	Type            string `json:"type"`
	ID              string `json:"id"`
	To              string `json:"to"`
	RecipientPubkey string `json:"recipientPubkey"`
	ReceiptBody
	ReqID string `json:"_reqId,omitempty"`
}

// ReceiptNoticeFrame is a receipt as the broker pushes it to the sender;
// client_ack with brokerMessageId = receiptId takes it off the queue.
type ReceiptNoticeFrame struct {
	Type                  string `json:"type"`
	ReceiptID             string `json:"receiptId"`
	MeshID                string `json:"meshId"`
	RecipientPubkey       string `json:"recipientPubkey"`
	RecipientMemberPubkey string `json:"recipientMemberPubkey"`
	RecipientName         string `json:"recipientName,omitempty"`
	ReceiptBody
	CreatedAt string `json:"createdAt"`
}

// ClientAckFrame confirms a push was stored by the recipient.
type ClientAckFrame struct {
	Type            string `json:"type"`
	ClientMessageID string `json:"clientMessageId,omitempty"`
	BrokerMessageID string `json:"brokerMessageId,omitempty"`
}

// Presence.

// ListPeersFrame asks for the mesh's peers.
type ListPeersFrame struct {
	Type  string `json:"type"`
	ReqID string `json:"_reqId,omitempty"`
}

// ListMembersFrame asks for the mesh's members, online or not.
type ListMembersFrame struct {
	Type  string `json:"type"`
	ReqID string `json:"_reqId,omitempty"`
}

// MemberRow is one member of a mesh as members_list shows it.
type MemberRow struct {
	Pubkey      string `json:"pubkey"` // the member key
	DisplayName string `json:"displayName"`
	Role        string `json:"role"`   // admin | member
	Online      bool   `json:"online"` // some presence of it has a socket now (its hidden ones count only for itself)
	JoinedAt    string `json:"joinedAt,omitempty"`
}

// MembersListFrame answers list_members.
type MembersListFrame struct {
	Type    string      `json:"type"`
	Members []MemberRow `json:"members"`
	ReqID   string      `json:"_reqId,omitempty"`
}

// Profile is a peer's self-description.
type Profile struct {
	Avatar       string   `json:"avatar,omitempty"`
	Title        string   `json:"title,omitempty"`
	Bio          string   `json:"bio,omitempty"`
	Capabilities []string `json:"capabilities,omitempty"`
	Role         string   `json:"role,omitempty"`
	// Surfacing is our addition: how messages reach the session's model
	// (channel, hooks or pull), so that a sender can tell. Brokers that
	// do not know it drop it.
	Surfacing string `json:"surfacing,omitempty"`
}

// PeerRow is one connection in peers_list. Pubkey is the session key for a
// session connection, else the member key.
type PeerRow struct {
	Pubkey       string     `json:"pubkey"`
	MemberPubkey string     `json:"memberPubkey"`
	DisplayName  string     `json:"displayName"`
	Status       string     `json:"status"`
	Summary      *string    `json:"summary"`
	Groups       []GroupRef `json:"groups"`
	SessionID    string     `json:"sessionId"`
	ConnectedAt  string     `json:"connectedAt"`
	Cwd          string     `json:"cwd"`
	PeerRole     string     `json:"peerRole"`
	Hostname     string     `json:"hostname,omitempty"`
	PeerType     string     `json:"peerType,omitempty"`
	Channel      string     `json:"channel,omitempty"`
	Model        string     `json:"model,omitempty"`
	Visible      *bool      `json:"visible,omitempty"`
	Profile      *Profile   `json:"profile,omitempty"`
	Role         string     `json:"role,omitempty"` // lifted from profile.role
	// Connected is false while the presence waits out its reconnect grace
	// with no socket. Our addition: a broker that does not say leaves it nil.
	Connected *bool `json:"connected,omitempty"`
}

// PeersListFrame answers list_peers.
type PeersListFrame struct {
	Type  string    `json:"type"`
	Peers []PeerRow `json:"peers"`
	ReqID string    `json:"_reqId,omitempty"`
}

// SetStatusFrame sets this connection's status: idle, working or dnd.
type SetStatusFrame struct {
	Type   string `json:"type"`
	Status string `json:"status"`
	ReqID  string `json:"_reqId,omitempty"`
}

// SetSummaryFrame sets this connection's one-line summary.
type SetSummaryFrame struct {
	Type    string `json:"type"`
	Summary string `json:"summary"`
	ReqID   string `json:"_reqId,omitempty"`
}

// SetVisibleFrame hides or shows this connection to other members.
type SetVisibleFrame struct {
	Type    string `json:"type"`
	Visible *bool  `json:"visible"`
	ReqID   string `json:"_reqId,omitempty"`
}

// SetProfileFrame merges fields into this connection's profile.
type SetProfileFrame struct {
	Type         string    `json:"type"`
	Avatar       *string   `json:"avatar,omitempty"`
	Title        *string   `json:"title,omitempty"`
	Bio          *string   `json:"bio,omitempty"`
	Capabilities *[]string `json:"capabilities,omitempty"`
	Role         *string   `json:"role,omitempty"` // our addition: lifted to peers_list's top-level role
	Surfacing    *string   `json:"surfacing,omitempty"`
	ReqID        string    `json:"_reqId,omitempty"`
}

// SetStatsFrame reports a connection's counters; kept in memory and saved
// with the member's peer state.
type SetStatsFrame struct {
	Type  string          `json:"type"`
	Stats json.RawMessage `json:"stats"`
	ReqID string          `json:"_reqId,omitempty"`
}

// GroupFrame is join_group or leave_group.
type GroupFrame struct {
	Type  string `json:"type"`
	Name  string `json:"name"`
	Role  string `json:"role,omitempty"`
	ReqID string `json:"_reqId,omitempty"`
}

// Shared state.

// SetStateFrame upserts a mesh-wide key; others get state_change.
type SetStateFrame struct {
	Type  string          `json:"type"`
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
	ReqID string          `json:"_reqId,omitempty"`
}

// GetStateFrame reads one key.
type GetStateFrame struct {
	Type  string `json:"type"`
	Key   string `json:"key"`
	ReqID string `json:"_reqId,omitempty"`
}

// ListStateFrame reads every key.
type ListStateFrame struct {
	Type  string `json:"type"`
	ReqID string `json:"_reqId,omitempty"`
}

// StateEntry is one key of shared state. UpdatedBy is a display name.
type StateEntry struct {
	Key       string          `json:"key"`
	Value     json.RawMessage `json:"value"`
	UpdatedBy string          `json:"updatedBy"`
	UpdatedAt string          `json:"updatedAt"`
}

// StateChangeFrame tells other connections a key changed.
type StateChangeFrame struct {
	Type      string          `json:"type"`
	Key       string          `json:"key"`
	Value     json.RawMessage `json:"value"`
	UpdatedBy string          `json:"updatedBy"`
}

// StateResultFrame answers get_state; a missing key has value null and
// empty updatedBy/updatedAt.
type StateResultFrame struct {
	Type string `json:"type"`
	StateEntry
	ReqID string `json:"_reqId,omitempty"`
}

// StateListFrame answers list_state, ordered by key.
type StateListFrame struct {
	Type    string       `json:"type"`
	Entries []StateEntry `json:"entries"`
	ReqID   string       `json:"_reqId,omitempty"`
}

// Memory.

// RememberFrame stores a memory.
type RememberFrame struct {
	Type    string   `json:"type"`
	Content string   `json:"content"`
	Tags    []string `json:"tags,omitempty"`
	ReqID   string   `json:"_reqId,omitempty"`
}

// MemoryStoredFrame answers remember.
type MemoryStoredFrame struct {
	Type  string `json:"type"`
	ID    string `json:"id"`
	ReqID string `json:"_reqId,omitempty"`
}

// RecallFrame searches memories.
type RecallFrame struct {
	Type  string `json:"type"`
	Query string `json:"query"`
	ReqID string `json:"_reqId,omitempty"`
}

// Memory is one remembered note. RememberedBy is a display name.
type Memory struct {
	ID           string   `json:"id"`
	Content      string   `json:"content"`
	Tags         []string `json:"tags"`
	RememberedBy string   `json:"rememberedBy"`
	RememberedAt string   `json:"rememberedAt"`
}

// MemoryResultsFrame answers recall, best matches first (at most 20).
type MemoryResultsFrame struct {
	Type     string   `json:"type"`
	Memories []Memory `json:"memories"`
	ReqID    string   `json:"_reqId,omitempty"`
}

// ForgetFrame deletes a memory; the reply is a generic ack whose id and
// messageId are the memory id.
type ForgetFrame struct {
	Type     string `json:"type"`
	MemoryID string `json:"memoryId"`
	ReqID    string `json:"_reqId,omitempty"`
}

// Skills.

// Skill is a shared instruction set; Instructions and Manifest are only in
// skill_data.
type Skill struct {
	Name         string          `json:"name"`
	Description  string          `json:"description"`
	Instructions string          `json:"instructions,omitempty"`
	Tags         []string        `json:"tags"`
	Author       string          `json:"author"`
	Manifest     json.RawMessage `json:"manifest,omitempty"`
	CreatedAt    string          `json:"createdAt"`
}

// ShareSkillFrame upserts a skill by name.
type ShareSkillFrame struct {
	Type         string          `json:"type"`
	Name         string          `json:"name"`
	Description  string          `json:"description"`
	Instructions string          `json:"instructions"`
	Tags         []string        `json:"tags,omitempty"`
	Manifest     json.RawMessage `json:"manifest,omitempty"`
	ReqID        string          `json:"_reqId,omitempty"`
}

// SkillNameFrame is get_skill or remove_skill.
type SkillNameFrame struct {
	Type  string `json:"type"`
	Name  string `json:"name"`
	ReqID string `json:"_reqId,omitempty"`
}

// ListSkillsFrame lists skills, optionally matching a query.
type ListSkillsFrame struct {
	Type  string `json:"type"`
	Query string `json:"query,omitempty"`
	ReqID string `json:"_reqId,omitempty"`
}

// SkillAckFrame answers share_skill ("shared") and remove_skill
// ("removed" or "not_found").
type SkillAckFrame struct {
	Type   string `json:"type"`
	Name   string `json:"name"`
	Action string `json:"action"`
	ReqID  string `json:"_reqId,omitempty"`
}

// SkillDataFrame answers get_skill; Skill is nil when there is none.
type SkillDataFrame struct {
	Type  string `json:"type"`
	Skill *Skill `json:"skill"`
	ReqID string `json:"_reqId,omitempty"`
}

// SkillListFrame answers list_skills.
type SkillListFrame struct {
	Type   string  `json:"type"`
	Skills []Skill `json:"skills"`
	ReqID  string  `json:"_reqId,omitempty"`
}

// Moderation.

// KickFrame is kick or disconnect: by target (display name, member or
// session pubkey or prefix), by staleness (ms) or all.
type KickFrame struct {
	Type   string `json:"type"`
	Target string `json:"target,omitempty"`
	Stale  *int64 `json:"stale,omitempty"`
	All    bool   `json:"all,omitempty"`
	ReqID  string `json:"_reqId,omitempty"`
}

// KickAckFrame answers kick or disconnect. Kicked and Affected hold the same
// "name|presenceId" list; SkippedControlPlane only when non-empty (kick).
type KickAckFrame struct {
	Type                string   `json:"type"`
	Kicked              []string `json:"kicked"`
	Affected            []string `json:"affected"`
	SkippedControlPlane []string `json:"skipped_control_plane,omitempty"`
	ReqID               string   `json:"_reqId,omitempty"`
}

// BanFrame is ban or unban.
type BanFrame struct {
	Type   string `json:"type"`
	Target string `json:"target"`
	Reason string `json:"reason,omitempty"`
	ReqID  string `json:"_reqId,omitempty"`
}

// ListBansFrame asks for the revoked members (owner or admin only).
type ListBansFrame struct {
	Type  string `json:"type"`
	ReqID string `json:"_reqId,omitempty"`
}

// BanAckFrame answers ban.
type BanAckFrame struct {
	Type   string `json:"type"`
	Banned string `json:"banned"`
	ReqID  string `json:"_reqId,omitempty"`
}

// UnbanAckFrame answers unban.
type UnbanAckFrame struct {
	Type     string `json:"type"`
	Unbanned string `json:"unbanned"`
	ReqID    string `json:"_reqId,omitempty"`
}

// BanEntry is one revoked member.
type BanEntry struct {
	Name      string `json:"name"`
	Pubkey    string `json:"pubkey"`
	RevokedAt string `json:"revokedAt"`
}

// ListBansResultFrame answers list_bans.
type ListBansResultFrame struct {
	Type  string     `json:"type"`
	Bans  []BanEntry `json:"bans"`
	ReqID string     `json:"_reqId,omitempty"`
}

// Frame validation. The broker never drops a malformed frame silently: every
// client frame is decoded strictly into its type and checked, and a problem
// becomes an `invalid` error (or, for an unknown type after the handshake,
// `unknown_message_type`).

// errUnknownFrameType is returned by decodeClientFrame for a type the broker
// does not know.
var errUnknownFrameType = errors.New("unknown message type")

// clientFrame is a decoded client → broker frame that can check its fields.
type clientFrame interface {
	validate() error
}

// requiredKeys is implemented by frames with fields whose zero value is
// legitimate, so that presence has to be checked on the raw object.
type requiredKeys interface {
	requiredKeys() []string
}

// jsonFieldError names the offending field of a type mismatch.
func jsonFieldError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("field %q must be %s, not %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
	}
	return err
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int64", "float64":
		return "a number"
	case "slice":
		return "an array"
	case "struct", "map", "ptr":
		return "an object"
	}
	return goKind
}

// Size bounds on free-text fields, so that one frame cannot make the broker
// store or fan out more than a message's worth of text.
const (
	maxIDLen      = 256
	maxNameLen    = 256
	maxSummaryLen = 4096
	maxTargetLen  = 512
)

// errMissing says a required field is absent or empty.
func errMissing(field string) error { return fmt.Errorf("missing field %q", field) }

// needString requires a field that is present and at most maxLen bytes.
func needString(field, v string, maxLen int) error {
	if v == "" {
		return errMissing(field)
	}
	return maxString(field, v, maxLen)
}

// maxString bounds an optional field to maxLen bytes.
func maxString(field, v string, maxLen int) error {
	if len(v) > maxLen {
		return fmt.Errorf("field %q is longer than %d bytes", field, maxLen)
	}
	return nil
}

// validPriority reports whether p is a message priority.
func validPriority(p string) bool {
	return p == priorityNow || p == priorityNext || p == priorityLow
}

// validStatus reports whether s is a presence status.
func validStatus(s string) bool {
	return s == statusIdle || s == statusWorking || s == statusDND
}

// Handshake frames are checked by the broker itself, which answers with the
// handshake's own error codes and close codes.
func (f *HelloFrame) validate() error        { return nil }
func (f *SessionHelloFrame) validate() error { return nil }

func (f *SendFrame) validate() error {
	if err := needString("targetSpec", f.TargetSpec, maxTargetLen); err != nil {
		return err
	}
	if !validPriority(f.Priority) {
		return fmt.Errorf("field \"priority\" must be now, next or low, not %q", f.Priority)
	}
	if f.Nonce == "" {
		return errMissing("nonce")
	}
	if f.Ciphertext == "" {
		return errMissing("ciphertext")
	}
	if f.Subtype == subtypeSystem || f.Subtype == subtypeReceipt {
		return fmt.Errorf("subtype %q is reserved for the broker", f.Subtype)
	}
	for field, v := range map[string]string{"id": f.ID, "client_message_id": f.ClientMessageID,
		"request_fingerprint": f.RequestFingerprint, "replyToId": f.ReplyToID, "subtype": f.Subtype} {
		if err := maxString(field, v, maxIDLen); err != nil {
			return err
		}
	}
	return nil
}

// validReceiptVia reports whether v names a surfacing path.
func validReceiptVia(v string) bool { return v == "channel" || v == "hooks" || v == "pull" }

func (f *ReceiptFrame) validate() error {
	for field, v := range map[string]string{"to": f.To, "recipientPubkey": f.RecipientPubkey} {
		if !isHexKey(v) {
			return fmt.Errorf("field %q must be a 64-hex key", field)
		}
	}
	if err := needString("id", f.ID, maxIDLen); err != nil {
		return err
	}
	if err := needString("messageId", f.MessageID, maxIDLen); err != nil {
		return err
	}
	if err := needString("deliveredAt", f.DeliveredAt, maxIDLen); err != nil {
		return err
	}
	switch f.State {
	case receiptDelivered:
	case receiptSurfaced:
		if !validReceiptVia(f.Via) {
			return fmt.Errorf("field \"via\" must be channel, hooks or pull, not %q", f.Via)
		}
		if err := needString("surfacedAt", f.SurfacedAt, maxIDLen); err != nil {
			return err
		}
	default:
		return fmt.Errorf("field \"state\" must be delivered or surfaced, not %q", f.State)
	}
	if f.Shares != "" && f.Shares != receiptDelivered && f.Shares != receiptSurfaced {
		return fmt.Errorf("field \"shares\" must be delivered or surfaced, not %q", f.Shares)
	}
	return maxString("client_message_id", f.ClientMessageID, maxIDLen)
}

func (f *ClientAckFrame) validate() error {
	if f.ClientMessageID == "" && f.BrokerMessageID == "" {
		return errors.New(`needs "brokerMessageId" or "clientMessageId"`)
	}
	return nil
}

func (f *ListPeersFrame) validate() error { return nil }

func (f *ListMembersFrame) validate() error { return nil }

func (f *SetStatusFrame) validate() error {
	if !validStatus(f.Status) {
		return fmt.Errorf("field \"status\" must be idle, working or dnd, not %q", f.Status)
	}
	return nil
}

func (f *SetSummaryFrame) requiredKeys() []string { return []string{"summary"} }
func (f *SetSummaryFrame) validate() error {
	return maxString("summary", f.Summary, maxSummaryLen)
}

func (f *SetVisibleFrame) validate() error {
	if f.Visible == nil {
		return errMissing("visible")
	}
	return nil
}

func (f *SetProfileFrame) validate() error {
	for field, v := range map[string]*string{"avatar": f.Avatar, "title": f.Title, "bio": f.Bio, "role": f.Role} {
		if v != nil {
			if err := maxString(field, *v, maxSummaryLen); err != nil {
				return err
			}
		}
	}
	return nil
}

func (f *SetStatsFrame) validate() error {
	var obj map[string]any
	if len(f.Stats) == 0 || json.Unmarshal(f.Stats, &obj) != nil || obj == nil {
		return errors.New(`field "stats" must be an object`)
	}
	return nil
}

func (f *GroupFrame) validate() error {
	if err := needString("name", f.Name, maxNameLen); err != nil {
		return err
	}
	return maxString("role", f.Role, maxNameLen)
}

func (f *SetStateFrame) requiredKeys() []string { return []string{"key", "value"} }
func (f *SetStateFrame) validate() error        { return needString("key", f.Key, maxNameLen) }

func (f *GetStateFrame) validate() error  { return needString("key", f.Key, maxNameLen) }
func (f *ListStateFrame) validate() error { return nil }

func (f *RememberFrame) validate() error {
	if f.Content == "" {
		return errMissing("content")
	}
	return nil
}

func (f *RecallFrame) validate() error {
	if f.Query == "" {
		return errMissing("query")
	}
	return nil
}

func (f *ForgetFrame) validate() error { return needString("memoryId", f.MemoryID, maxIDLen) }

func (f *ShareSkillFrame) validate() error {
	if err := needString("name", f.Name, maxNameLen); err != nil {
		return err
	}
	if f.Instructions == "" {
		return errMissing("instructions")
	}
	if len(f.Manifest) > 0 && string(f.Manifest) != "null" {
		var obj map[string]any
		if json.Unmarshal(f.Manifest, &obj) != nil {
			return errors.New(`field "manifest" must be an object`)
		}
	}
	return nil
}

func (f *SkillNameFrame) validate() error  { return needString("name", f.Name, maxNameLen) }
func (f *ListSkillsFrame) validate() error { return maxString("query", f.Query, maxNameLen) }

func (f *KickFrame) validate() error {
	modes := 0
	if f.All {
		modes++
	}
	if f.Stale != nil {
		modes++
		if *f.Stale <= 0 {
			return errors.New(`field "stale" must be a positive number of milliseconds`)
		}
	}
	if f.Target != "" {
		modes++
	}
	if modes != 1 {
		return errors.New(`needs exactly one of "target", "stale" or "all"`)
	}
	return maxString("target", f.Target, maxNameLen)
}

func (f *BanFrame) validate() error {
	if err := needString("target", f.Target, maxNameLen); err != nil {
		return err
	}
	return maxString("reason", f.Reason, maxSummaryLen)
}

func (f *ListBansFrame) validate() error { return nil }

// targetKind classifies a targetSpec.
type targetKind int

const (
	targetInvalid targetKind = iota
	targetDirect
	targetBroadcast
	targetGroup
	targetTopic
)

func classifyTarget(spec string) (targetKind, string) {
	switch {
	case spec == "*" || spec == "@all":
		return targetBroadcast, ""
	case isHexKey(spec):
		return targetDirect, spec
	case strings.HasPrefix(spec, "@") && len(spec) > 1:
		return targetGroup, spec[1:]
	case strings.HasPrefix(spec, "#") && len(spec) > 1:
		return targetTopic, spec[1:]
	}
	return targetInvalid, ""
}

// inGroup reports whether groups reach target: the exact group, or a group
// below it (a peer in a/b/c is reached by @a/b and @a).
func inGroup(groups []GroupRef, target string) bool {
	for _, g := range groups {
		if g.Name == target || strings.HasPrefix(g.Name, target+"/") {
			return true
		}
	}
	return false
}
