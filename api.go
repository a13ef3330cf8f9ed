// The daemon's IPC contract: for every route, its method and path, the Go
// type of its request and the Go type of its reply. The daemon's route table
// binds each handler to one of these endpoints and the client calls the same
// endpoint, so server and client are compiled against one pair of types: a
// renamed field fails to build instead of failing at run time.
//
// A request type says where each field travels: `path:"name"` fills a {name}
// segment of the pattern, `query:"name"` a query parameter, and the rest is
// the JSON body of the routes that have one. Errors have one shape on every
// route, {"error": code, "message": …, …} (ipc.go's ipcErrorStatus).
package main

import (
	"cmp"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
)

// ipcEndpoint is one IPC route with its request and reply types.
type ipcEndpoint[Req, Rep any] struct {
	method  string
	pattern string // segments; {name} is a path field of Req
	body    bool   // Req's JSON fields travel as the body
	maxBody int64  // the body cap; 0 = defaultMaxBody
}

// Headers naming the Claude Code session a caller without a session token
// runs under (Claude Code's session id, or its claude process).
const (
	headerClaudeSession = "X-ClaudeMesh-Claude-Session"
	headerClaudePid     = "X-ClaudeMesh-Claude-Pid"
)

// noRequest is the request of a route that takes nothing.
type noRequest struct{}

// The endpoints, in the order of the route table.
var (
	apiVersion       = ipcEndpoint[noRequest, VersionReply]{method: "GET", pattern: "/v1/version"}
	apiHealth        = ipcEndpoint[noRequest, HealthReply]{method: "GET", pattern: "/v1/health"}
	apiReload        = ipcEndpoint[noRequest, ReloadReply]{method: "POST", pattern: "/v1/reload"}
	apiRegister      = ipcEndpoint[RegisterRequest, RegisterReply]{method: "POST", pattern: "/v1/sessions/register", body: true, maxBody: 64 << 10}
	apiSessionMe     = ipcEndpoint[noRequest, SessionMeReply]{method: "GET", pattern: "/v1/sessions/me"}
	apiSessions      = ipcEndpoint[noRequest, SessionsReply]{method: "GET", pattern: "/v1/sessions"}
	apiDeregister    = ipcEndpoint[DeregisterRequest, DeregisterReply]{method: "DELETE", pattern: "/v1/sessions/{token}"}
	apiPeers         = ipcEndpoint[MeshQuery, PeersReply]{method: "GET", pattern: "/v1/peers"}
	apiMembers       = ipcEndpoint[MeshQuery, MembersReply]{method: "GET", pattern: "/v1/members"}
	apiState         = ipcEndpoint[StateQuery, StateReply]{method: "GET", pattern: "/v1/state"}
	apiStateSet      = ipcEndpoint[StateSetRequest, StateSetReply]{method: "POST", pattern: "/v1/state", body: true, maxBody: 256 << 10}
	apiRecall        = ipcEndpoint[RecallQuery, RecallReply]{method: "GET", pattern: "/v1/memory"}
	apiRemember      = ipcEndpoint[RememberRequest, RememberReply]{method: "POST", pattern: "/v1/memory", body: true, maxBody: 256 << 10}
	apiForget        = ipcEndpoint[ForgetRequest, ForgetReply]{method: "DELETE", pattern: "/v1/memory/{id}"}
	apiSkills        = ipcEndpoint[SkillsQuery, SkillsReply]{method: "GET", pattern: "/v1/skills"}
	apiShareSkill    = ipcEndpoint[ShareSkillRequest, SkillActionReply]{method: "POST", pattern: "/v1/skills", body: true, maxBody: 256 << 10}
	apiSkill         = ipcEndpoint[SkillRequest, SkillReply]{method: "GET", pattern: "/v1/skills/{name}"}
	apiRemoveSkill   = ipcEndpoint[SkillRequest, SkillActionReply]{method: "DELETE", pattern: "/v1/skills/{name}"}
	apiProfile       = ipcEndpoint[ProfileRequest, ProfileReply]{method: "POST", pattern: "/v1/profile", body: true, maxBody: 16 << 10}
	apiSend          = ipcEndpoint[SendRequest, SendReply]{method: "POST", pattern: "/v1/send", body: true, maxBody: maxSendBody}
	apiOutbox        = ipcEndpoint[OutboxQuery, OutboxReply]{method: "GET", pattern: "/v1/outbox"}
	apiOutboxRequeue = ipcEndpoint[RequeueRequest, RequeueReply]{method: "POST", pattern: "/v1/outbox/requeue", body: true, maxBody: 4 << 10}
	apiMessage       = ipcEndpoint[MessageQuery, MessageReply]{method: "GET", pattern: "/v1/messages/{id}"}
	apiMetrics       = ipcEndpoint[noRequest, MetricsReply]{method: "GET", pattern: "/v1/metrics"}
	apiInbox         = ipcEndpoint[InboxQuery, InboxReply]{method: "GET", pattern: "/v1/inbox"}
	apiInboxSeen     = ipcEndpoint[InboxSeenRequest, InboxSeenReply]{method: "POST", pattern: "/v1/inbox/seen", body: true, maxBody: 64 << 10}
	apiInboxFlush    = ipcEndpoint[InboxFlushQuery, InboxFlushReply]{method: "DELETE", pattern: "/v1/inbox"}
	apiInboxDelete   = ipcEndpoint[InboxDeleteRequest, InboxDeleteReply]{method: "DELETE", pattern: "/v1/inbox/{id}"}
	apiSurface       = ipcEndpoint[SurfaceRequest, SurfaceReply]{method: "POST", pattern: "/v1/inbox/surface", body: true, maxBody: 64 << 10}
	apiUnsurface     = ipcEndpoint[UnsurfaceRequest, UnsurfaceReply]{method: "POST", pattern: "/v1/inbox/unsurface", body: true, maxBody: 64 << 10}
	apiHistory       = ipcEndpoint[HistoryQuery, HistoryReply]{method: "GET", pattern: "/v1/history"}
	apiSearch        = ipcEndpoint[SearchQuery, HistoryReply]{method: "GET", pattern: "/v1/search"}
	apiUIOpen        = ipcEndpoint[noRequest, UIOpenReply]{method: "POST", pattern: "/v1/ui/open"}
	apiSessionMCP    = ipcEndpoint[MCPReport, MCPReportReply]{method: "POST", pattern: "/v1/sessions/me/mcp", body: true, maxBody: 4 << 10}
	apiWelcome       = ipcEndpoint[WelcomeClaimRequest, WelcomeClaimReply]{method: "POST", pattern: "/v1/sessions/me/welcome", body: true, maxBody: 1 << 10}
	apiHook          = ipcEndpoint[HookRequest, HookReply]{method: "POST", pattern: "/v1/hook", body: true, maxBody: 16 << 10}
	apiHookWait      = ipcEndpoint[HookWaitRequest, HookWaitReply]{method: "POST", pattern: "/v1/hook/wait", body: true, maxBody: 16 << 10}

	// The web UI's own routes: the page calls them under /ui/api (ui.go),
	// never over the socket.
	apiUIOverview = ipcEndpoint[noRequest, UIOverviewReply]{method: "GET", pattern: "/v1/ui/overview"}
	apiUISend     = ipcEndpoint[UISendRequest, SendReply]{method: "POST", pattern: "/v1/ui/send", body: true, maxBody: maxSendBody}
)

// GET /v1/events has no reply type: it is a stream of Server-Sent Events
// whose data are MessageEvent, BrokerStatusEvent, OutboxEvent, SessionEvent,
// StateEvent, MemoryEvent, ProfileEvent, or a system event (the broker's eventData with
// mesh, event and ts added).

// Daemon and sessions.

// VersionReply is GET /v1/version.
type VersionReply struct {
	DaemonVersion string   `json:"daemon_version"`
	IPCAPI        string   `json:"ipc_api"`
	IPCFeatures   []string `json:"ipc_features"`
	SchemaVersion int      `json:"schema_version"`
}

// HealthReply is GET /v1/health.
type HealthReply struct {
	OK             bool                  `json:"ok"`
	Pid            int                   `json:"pid"`
	Version        string                `json:"version"`
	Brokers        map[string]string     `json:"brokers"` // mesh → its member link's state
	Sessions       int                   `json:"sessions"`
	Links          []LinkHealth          `json:"links"`
	Uptime         int                   `json:"uptime_s"`
	TCPPort        int                   `json:"tcp_port,omitempty"`
	EmbeddedBroker *EmbeddedBrokerHealth `json:"embedded_broker,omitempty"`
}

// LinkHealth is one broker link in /v1/health: a member link (with its
// broker's URL) or a session link (with its session).
type LinkHealth struct {
	Kind      string    `json:"kind"`
	Mesh      string    `json:"mesh"`
	State     LinkState `json:"state"`
	SessionID string    `json:"session_id,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	URL       string    `json:"url,omitempty"`
}

// EmbeddedBrokerHealth is the embedded broker in /v1/health.
type EmbeddedBrokerHealth struct {
	Listen string `json:"listen"`
	Data   string `json:"data"`
	State  string `json:"state"` // "serving" or "failed"
	URL    string `json:"url,omitempty"`
	Error  string `json:"error,omitempty"`
}

// ReloadReply is POST /v1/reload: the meshes the config added and removed,
// and the ones the daemon now has.
type ReloadReply struct {
	OK      bool     `json:"ok"`
	Added   []string `json:"added"`
	Removed []string `json:"removed"`
	Meshes  []string `json:"meshes"`
}

// RegisterRequest is the body of POST /v1/sessions/register.
type RegisterRequest struct {
	Token       string                `json:"token"`
	SessionID   string                `json:"session_id"`
	Mesh        string                `json:"mesh"`
	DisplayName string                `json:"display_name"`
	Pid         int                   `json:"pid"`
	Cwd         string                `json:"cwd,omitempty"`
	Role        string                `json:"role,omitempty"`
	Groups      textList              `json:"groups,omitempty"`
	Presence    *PresenceRegistration `json:"presence,omitempty"`
}

// PresenceRegistration hands the daemon a session's key and its member's
// attestation, so the daemon can open the session's own link. A missing
// attestation is refused.
type PresenceRegistration struct {
	SessionPubkey     string                   `json:"session_pubkey"`
	SessionSecretKey  string                   `json:"session_secret_key"`
	ParentAttestation *AttestationRegistration `json:"parent_attestation"`
}

// newPresenceRegistration builds the presence block for a session key.
func newPresenceRegistration(session Keypair, att Attestation) *PresenceRegistration {
	return &PresenceRegistration{
		SessionPubkey: session.PublicHex(), SessionSecretKey: session.SecretHex(),
		ParentAttestation: &AttestationRegistration{
			SessionPubkey: att.SessionPubkey, ParentMemberPubkey: att.ParentMemberPubkey,
			ExpiresAt: att.ExpiresAt, Signature: att.Signature,
		},
	}
}

// AttestationRegistration is an Attestation in the IPC's snake_case.
type AttestationRegistration struct {
	SessionPubkey      string `json:"session_pubkey"`
	ParentMemberPubkey string `json:"parent_member_pubkey"`
	ExpiresAt          int64  `json:"expires_at"`
	Signature          string `json:"signature"`
}

// RegisterReply is POST /v1/sessions/register's answer.
type RegisterReply struct {
	OK               bool   `json:"ok"`
	RegisteredAt     int64  `json:"registered_at"` // ms
	PresenceAccepted bool   `json:"presence_accepted"`
	TokenPrefix      string `json:"token_prefix"`
}

// SessionMeReply is GET /v1/sessions/me: the caller's session.
type SessionMeReply struct {
	Session sessionView `json:"session"`
}

// SessionsReply is GET /v1/sessions.
type SessionsReply struct {
	Sessions []sessionView `json:"sessions"`
}

// sessionView is a session as IPC shows it: camelCase like claudemesh's,
// and never a secret.
type sessionView struct {
	SessionID    string        `json:"sessionId"`
	Mesh         string        `json:"mesh"`
	DisplayName  string        `json:"displayName"`
	Pid          int           `json:"pid"`
	Cwd          string        `json:"cwd,omitempty"`
	Role         string        `json:"role,omitempty"`
	Groups       []string      `json:"groups,omitempty"`
	Presence     *presenceView `json:"presence,omitempty"`
	StartTime    string        `json:"startTime,omitempty"`
	RegisteredAt int64         `json:"registeredAt"`
	TokenPrefix  string        `json:"token_prefix"`
	Link         LinkState     `json:"link,omitempty"`
	MemberPubkey string        `json:"memberPubkey,omitempty"`
	Origin       string        `json:"origin,omitempty"` // "hooks": a plain claude session its hooks registered
	// How messages reach the session's model (channel, hooks or pull), its
	// status as the broker has it, when its hooks last ran and whether they
	// welcomed it, and what its MCP server reported.
	Surfacing    string   `json:"surfacing,omitempty"`
	Status       string   `json:"status,omitempty"`
	HookSeenAt   string   `json:"hookSeenAt,omitempty"`
	HookWelcomed bool     `json:"hookWelcomed,omitempty"`
	MCP          *mcpView `json:"mcp,omitempty"`
}

// mcpView is an MCPReport as sessionView shows it.
type mcpView struct {
	ProtocolVersion string `json:"protocolVersion"`
	ClientName      string `json:"clientName,omitempty"`
	ClientVersion   string `json:"clientVersion,omitempty"`
	Channel         bool   `json:"channel"`
	ReportedAt      string `json:"reportedAt,omitempty"`
}

// MCPReport is the body of POST /v1/sessions/me/mcp: what a session's MCP
// server negotiated with Claude Code, and whether Claude Code was started
// to load it as a channel. The daemon tells the session's surfacing path
// from it.
type MCPReport struct {
	ProtocolVersion string `json:"protocol_version"`
	ClientName      string `json:"client_name,omitempty"`
	ClientVersion   string `json:"client_version,omitempty"`
	Channel         bool   `json:"channel"`
	ReportedAt      string `json:"reported_at,omitempty"` // set by the daemon
}

// MCPReportReply is the session's surfacing path as the report leaves it.
type MCPReportReply struct {
	Surfacing string `json:"surfacing"`
}

type presenceView struct {
	SessionPubkey     string      `json:"sessionPubkey"`
	ParentAttestation Attestation `json:"parentAttestation"`
}

// DeregisterRequest is DELETE /v1/sessions/{token}.
type DeregisterRequest struct {
	Token string `path:"token"`
}

// DeregisterReply is DELETE /v1/sessions/{token}'s answer.
type DeregisterReply struct {
	OK          bool   `json:"ok"`
	TokenPrefix string `json:"token_prefix"`
}

// Broker-backed reads and writes.

// MeshQuery scopes a read to one mesh ("" = the caller's session mesh,
// else every joined mesh).
type MeshQuery struct {
	Mesh string `query:"mesh"`
}

// PeersReply is GET /v1/peers; Errors names the meshes that could not be
// asked when several were.
type PeersReply struct {
	Peers  []MeshRow[PeerRow] `json:"peers"`
	Errors map[string]string  `json:"errors,omitempty"`
}

// MembersReply is GET /v1/members: every member of the meshes asked, online
// or not. Partial names the meshes whose broker cannot list members: their
// rows are the members online now. Errors names the meshes that could not be
// asked when several were.
type MembersReply struct {
	Members []MeshRow[MemberRow] `json:"members"`
	Partial []string             `json:"partial"`
	Errors  map[string]string    `json:"errors,omitempty"`
}

// StateQuery is GET /v1/state: one key when Key is given (an empty one is
// refused), else every key.
type StateQuery struct {
	Key  *string `query:"key"`
	Mesh string  `query:"mesh"`
}

// StateReply is GET /v1/state: State for one key, Entries for every key.
type StateReply struct {
	State   *MeshRow[StateEntry]   `json:"state,omitempty"`
	Entries *[]MeshRow[StateEntry] `json:"entries,omitempty"`
	Errors  map[string]string      `json:"errors,omitempty"`
}

// StateSetRequest is the body of POST /v1/state.
type StateSetRequest struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
	Mesh  string          `json:"mesh"`
}

// StateSetReply is POST /v1/state's answer once the broker confirmed it.
type StateSetReply struct {
	OK   bool   `json:"ok"`
	Key  string `json:"key"`
	Mesh string `json:"mesh"`
}

// RecallQuery is GET /v1/memory.
type RecallQuery struct {
	Q    string `query:"q"`
	Mesh string `query:"mesh"`
}

// RecallReply is GET /v1/memory's answer, best matches first.
type RecallReply struct {
	Matches []MeshRow[Memory] `json:"matches"`
	Errors  map[string]string `json:"errors,omitempty"`
}

// RememberRequest is the body of POST /v1/memory.
type RememberRequest struct {
	Content string   `json:"content"`
	Tags    []string `json:"tags"`
	Mesh    string   `json:"mesh"`
}

// RememberReply is POST /v1/memory's answer.
type RememberReply struct {
	ID   string `json:"id"`
	Mesh string `json:"mesh"`
}

// ForgetRequest is DELETE /v1/memory/{id}.
type ForgetRequest struct {
	ID   string `path:"id"`
	Mesh string `query:"mesh"`
}

// ForgetReply is DELETE /v1/memory/{id}'s answer.
type ForgetReply struct {
	OK   bool   `json:"ok"`
	ID   string `json:"id"`
	Mesh string `json:"mesh"`
}

// SkillsQuery is GET /v1/skills.
type SkillsQuery struct {
	Query string `query:"query"`
	Mesh  string `query:"mesh"`
}

// SkillsReply is GET /v1/skills (skills without their instructions).
type SkillsReply struct {
	Skills []MeshRow[Skill]  `json:"skills"`
	Errors map[string]string `json:"errors,omitempty"`
}

// SkillRequest is GET and DELETE /v1/skills/{name}.
type SkillRequest struct {
	Name string `path:"name"`
	Mesh string `query:"mesh"`
}

// SkillReply is GET /v1/skills/{name}: the skill with its instructions.
type SkillReply struct {
	Skill MeshRow[Skill] `json:"skill"`
}

// ShareSkillRequest is the body of POST /v1/skills.
type ShareSkillRequest struct {
	Name         string          `json:"name"`
	Description  string          `json:"description"`
	Instructions string          `json:"instructions"`
	Tags         []string        `json:"tags"`
	Manifest     json.RawMessage `json:"manifest,omitempty"`
	Mesh         string          `json:"mesh"`
}

// SkillActionReply answers sharing or removing a skill: what the broker
// did ("shared", "removed").
type SkillActionReply struct {
	OK     bool   `json:"ok"`
	Name   string `json:"name"`
	Action string `json:"action"`
	Mesh   string `json:"mesh"`
}

// ProfileRequest is POST /v1/profile: only the fields given change.
// Unknown keys are refused so that a typo does not look like success. The
// body's mesh wins over the query's.
type ProfileRequest struct {
	Summary      *string   `json:"summary,omitempty"`
	Status       *string   `json:"status,omitempty"`
	Visible      *bool     `json:"visible,omitempty"`
	Avatar       *string   `json:"avatar,omitempty"`
	Title        *string   `json:"title,omitempty"`
	Bio          *string   `json:"bio,omitempty"`
	Capabilities *[]string `json:"capabilities,omitempty"`
	// DisplayName renames the calling session (a session only); a plain
	// session keeps the name across --resume.
	DisplayName *string `json:"display_name,omitempty"`
	// Receipts is what senders are told of their messages here: delivered
	// only, or surfaced too (the default). Kept by the daemon, for the
	// calling session or else the member.
	Receipts  *string `json:"receipts,omitempty"`
	Mesh      string  `json:"mesh"`
	QueryMesh string  `json:"-" query:"mesh"`
}

func (p *ProfileRequest) strictJSON() {}

// ProfileReply is POST /v1/profile's answer: which fields were applied, on
// which meshes, over which kind of link.
type ProfileReply struct {
	OK      bool     `json:"ok"`
	Applied []string `json:"applied"`
	Meshes  []string `json:"meshes"`
	Via     string   `json:"via"`
}

// MeshRow is one row a broker listed, with the mesh it came from. The
// daemon passes on every field the broker sent, including ones newer than
// this build: Fields holds them all and is what the row encodes as (plus
// "mesh"). Row is the same row decoded as this build knows it; it is filled
// when a row is decoded, or may be the only thing set when a row is built
// from a value.
type MeshRow[T any] struct {
	Mesh   string
	Row    T
	Fields map[string]json.RawMessage
}

// newMeshRow wraps a broker's row, keeping every field it has.
func newMeshRow[T any](raw json.RawMessage, mesh string) (MeshRow[T], error) {
	r := MeshRow[T]{Mesh: mesh}
	if err := json.Unmarshal(raw, &r.Fields); err != nil {
		return r, err
	}
	return r, nil
}

// meshRowOf wraps a row this build built itself.
func meshRowOf[T any](row T, mesh string) MeshRow[T] { return MeshRow[T]{Mesh: mesh, Row: row} }

// meshRows wraps a broker's list.
func meshRows[T any](items []json.RawMessage, mesh string) ([]MeshRow[T], error) {
	out := make([]MeshRow[T], 0, len(items))
	for _, it := range items {
		r, err := newMeshRow[T](it, mesh)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (r MeshRow[T]) MarshalJSON() ([]byte, error) {
	fields := r.Fields
	if fields == nil {
		raw, err := json.Marshal(r.Row)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(raw, &fields); err != nil {
			return nil, err
		}
	}
	out := make(map[string]json.RawMessage, len(fields)+1)
	for k, v := range fields {
		out[k] = v
	}
	out["mesh"], _ = json.Marshal(r.Mesh)
	return json.Marshal(out)
}

func (r *MeshRow[T]) UnmarshalJSON(data []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return err
	}
	var row T
	if fields != nil {
		if err := json.Unmarshal(data, &row); err != nil {
			return err
		}
	}
	var mesh string
	if m, ok := fields["mesh"]; ok {
		_ = json.Unmarshal(m, &mesh)
		delete(fields, "mesh")
	}
	*r = MeshRow[T]{Mesh: mesh, Row: row, Fields: fields}
	return nil
}

// object is the row as a generic JSON object, mesh included.
func (r MeshRow[T]) object() (map[string]any, error) {
	data, err := r.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var out map[string]any
	return out, json.Unmarshal(data, &out)
}

// Messages.

// SendRequest is the body of POST /v1/send. The Idempotency-Key header
// stands in for ClientMessageID when that is empty. WaitMs is our addition:
// wait up to that long for the broker's answer before replying.
type SendRequest struct {
	To              string          `json:"to"`
	Message         string          `json:"message"`
	Priority        string          `json:"priority,omitempty"` // default next
	Meta            json.RawMessage `json:"meta,omitempty"`
	ReplyToID       string          `json:"reply_to_id,omitempty"`
	ClientMessageID string          `json:"client_message_id,omitempty"`
	Mesh            string          `json:"mesh,omitempty"`
	WaitMs          int             `json:"wait_ms,omitempty"`
	// Presence is our addition too: with wait_ms, a DM's answer says
	// whether its recipient is online (and its name), so that the CLI needs
	// no peer list of its own for that.
	Presence bool `json:"presence,omitempty"`
}

// SendReply is POST /v1/send's answer (202 while the row waits, 200 once it
// is done or dead). BrokerMessageID and Duplicate are there for a done row,
// LastError for a dead one or one that failed an attempt.
type SendReply struct {
	ClientMessageID string             `json:"client_message_id"`
	ID              string             `json:"id"`
	Mesh            string             `json:"mesh"`
	Target          string             `json:"target"`
	Status          string             `json:"status"` // queued | inflight | done | dead
	BrokerMessageID *string            `json:"broker_message_id,omitempty"`
	Duplicate       *bool              `json:"duplicate,omitempty"`
	LastError       *string            `json:"last_error,omitempty"`
	Recipient       *recipientPresence `json:"recipient,omitempty"` // with presence: a DM's recipient, when the daemon could tell

	httpStatus int
}

func (r SendReply) status() int { return r.httpStatus }

// recipientPresence is whether a DM's recipient is connected to the mesh
// now, and the name it goes by there.
type recipientPresence struct {
	Online      bool   `json:"online"`
	DisplayName string `json:"display_name,omitempty"`
	// Surfacing is how messages reach the recipient's model, as it
	// publishes it (channel, hooks or pull; "" when it does not say).
	Surfacing string `json:"surfacing,omitempty"`
}

// OutboxQuery is GET /v1/outbox: rows newest first, of one status ("failed"
// means dead) or all.
type OutboxQuery struct {
	Status string `query:"status"`
	Limit  *int   `query:"limit"` // 1..500, default 50
}

// OutboxReply is GET /v1/outbox's answer.
type OutboxReply struct {
	Items []outboxView `json:"items"`
}

// outboxView is a row as GET /v1/outbox shows it; routing columns stay in.
type outboxView struct {
	ID              string  `json:"id"`
	ClientMessageID string  `json:"client_message_id"`
	Status          string  `json:"status"`
	Attempts        int     `json:"attempts"`
	EnqueuedAt      string  `json:"enqueued_at"`
	NextAttemptAt   string  `json:"next_attempt_at"`
	DeliveredAt     *string `json:"delivered_at"`
	BrokerMessageID *string `json:"broker_message_id"`
	LastError       *string `json:"last_error"`
	AbortedAt       *string `json:"aborted_at"`
	AbortedBy       *string `json:"aborted_by"`
	SupersededBy    *string `json:"superseded_by"`
	PayloadBytes    int     `json:"payload_bytes"`
	Mesh            string  `json:"mesh,omitempty"`
	Target          string  `json:"target,omitempty"`
	Priority        string  `json:"priority,omitempty"`
	SenderSession   string  `json:"sender_session_pubkey,omitempty"`
	// Ladder is how far the message got (ladder.go); GET /v1/outbox and
	// GET /v1/messages/{id} fill it in.
	Ladder *messageLadder `json:"ladder,omitempty"`
}

// messageLadder is how far one sent message got: its rung (for a
// multicast, the lowest its recipients reached), whether its broker relays
// receipts, and one ladder per recipient key that reported (a DM's target
// is listed before it has).
type messageLadder struct {
	Rung     string `json:"rung"`               // queued, sent, delivered, surfaced, replied; dead, expired, aborted
	Receipts string `json:"receipts,omitempty"` // on, or off (the broker does not relay receipts: the ladder stops at sent)
	Reason   string `json:"reason,omitempty"`   // dead or expired: why
	QueuedAt string `json:"queued_at"`
	SentAt   string `json:"sent_at,omitempty"`
	Expected *int   `json:"expected,omitempty"` // a multicast's recipient keys, as the broker counted them
	Summary  string `json:"summary,omitempty"`  // a multicast's ladders in a few words ("3/4 surfaced")
	// Recipients, highest rung first.
	Recipients []recipientRung `json:"recipients"`
}

// recipientRung is one recipient key's ladder. Times are when this daemon
// learned of each rung; the _ms fields count from the send.
type recipientRung struct {
	Pubkey       string `json:"pubkey"`
	MemberPubkey string `json:"member_pubkey,omitempty"`
	Name         string `json:"name,omitempty"`
	Rung         string `json:"rung"`
	DeliveredAt  string `json:"delivered_at,omitempty"`
	SurfacedAt   string `json:"surfaced_at,omitempty"`
	Via          string `json:"via,omitempty"` // surfaced: channel, hooks or pull
	// Confirmed: the surfacing is proven (a hook or a pull showed the
	// text; a channel emit, once its transcript or a reply showed it).
	Confirmed   bool   `json:"confirmed,omitempty"`
	RepliedAt   string `json:"replied_at,omitempty"`
	ReplyID     string `json:"reply_id,omitempty"`
	Shares      string `json:"shares,omitempty"` // delivered: the recipient tells no more
	DeliveredMs *int64 `json:"delivered_ms,omitempty"`
	SurfacedMs  *int64 `json:"surfaced_ms,omitempty"`
	RepliedMs   *int64 `json:"replied_ms,omitempty"`
}

// MessageQuery is GET /v1/messages/{id}: a sent message by its row id,
// client id or broker id (or a prefix of 6 characters or more). With
// WaitMs, the answer waits until the ladder can climb no further, or that
// long.
type MessageQuery struct {
	ID     string `path:"id"`
	WaitMs int    `query:"wait_ms"`
	// Until ends the wait as soon as every recipient reached this rung
	// (delivered, surfaced): a caller that knows the recipient is shown
	// messages only when it asks waits for no more than delivered.
	Until string `query:"until"`
}

// MessageReply is GET /v1/messages/{id}'s answer: the outbox row with its
// ladder.
type MessageReply struct {
	Message outboxView `json:"message"`
}

// MetricsReply is GET /v1/metrics: the daemon's histograms of how long
// messages it sent took to reach each rung.
type MetricsReply struct {
	SendToDelivered histogramView `json:"send_to_delivered"`
	SendToSurfaced  histogramView `json:"send_to_surfaced"`
}

// histogramView is one latency histogram: Counts[i] observations fell at or
// under BoundsMs[i] and over the bound before it; the last count is over
// every bound.
type histogramView struct {
	BoundsMs []float64 `json:"bounds_ms"`
	Counts   []int64   `json:"counts"`
	Count    int64     `json:"count"`
	SumMs    float64   `json:"sum_ms"`
}

// RequeueRequest is the body of POST /v1/outbox/requeue.
type RequeueRequest struct {
	ID                 string `json:"id"`
	NewClientMessageID string `json:"new_client_message_id"` // "" = a fresh one
	AbortedBy          string `json:"aborted_by,omitempty"`  // "" = operator
}

// RequeueReply is POST /v1/outbox/requeue's answer.
type RequeueReply struct {
	AbortedRowID       string `json:"aborted_row_id"`
	NewRowID           string `json:"new_row_id"`
	NewClientMessageID string `json:"new_client_message_id"`
}

// InboxQuery is GET /v1/inbox. Rows listed are marked seen unless MarkSeen
// is false.
type InboxQuery struct {
	Mesh       string `query:"mesh"`
	Since      string `query:"since"` // ISO time
	Topic      string `query:"topic"`
	From       string `query:"from"`
	UnreadOnly bool   `query:"unread_only"`
	Limit      *int   `query:"limit"` // 1..1000, default 100
	MarkSeen   *bool  `query:"mark_seen"`
}

// InboxReply is GET /v1/inbox's answer, newest first.
type InboxReply struct {
	Items      []inboxItem `json:"items"`
	MarkedSeen int64       `json:"marked_seen"`
}

// inboxItem is a row as GET /v1/inbox shows it. Body is null when the
// message could not be decrypted.
type inboxItem struct {
	ID                 string     `json:"id"`
	ClientMessageID    string     `json:"client_message_id"`
	BrokerMessageID    nullString `json:"broker_message_id"`
	Mesh               string     `json:"mesh"`
	Topic              nullString `json:"topic"`
	SenderPubkey       string     `json:"sender_pubkey"`
	SenderMemberPubkey nullString `json:"sender_member_pubkey"`
	SenderName         string     `json:"sender_name"`
	Body               *string    `json:"body"`
	DecryptFailed      bool       `json:"decrypt_failed"`
	ReceivedAt         string     `json:"received_at"`
	ReplyToID          nullString `json:"reply_to_id"`
	Priority           string     `json:"priority"`
	SeenAt             nullString `json:"seen_at"`
	RecipientPubkey    nullString `json:"recipient_pubkey"`
	RecipientKind      nullString `json:"recipient_kind"`
	surfacedFields
}

// surfacedFields say whether and how a row was shown to a session's model:
// when, by which path (channel, hooks or pull), in which session, and
// whether that is confirmed (a channel emit is not until there is evidence:
// transcript or reply; a hook or a pull is at once, evidence "shown").
type surfacedFields struct {
	SurfacedAt          nullString `json:"surfaced_at"`
	SurfacedVia         nullString `json:"surfaced_via"`
	SurfacedConfirmed   bool       `json:"surfaced_confirmed"`
	SurfacedConfirmedAt nullString `json:"surfaced_confirmed_at"`
	SurfacedEvidence    nullString `json:"surfaced_evidence"`
	SurfacedSession     nullString `json:"surfaced_session"`
}

// SurfaceRequest is the body of POST /v1/inbox/surface: a path claims rows
// before it shows them to the model (IDs, or the oldest claimable rows of
// the caller's session up to Limit). Via is channel (recorded unconfirmed)
// or pull.
type SurfaceRequest struct {
	Via   string   `json:"via"`
	IDs   textList `json:"ids,omitempty"`
	Limit *int     `json:"limit,omitempty"`
}

// SurfaceReply is the rows the claim took, oldest first: only those may be
// shown.
type SurfaceReply struct {
	Items []inboxItem `json:"items"`
}

// UnsurfaceRequest is the body of POST /v1/inbox/unsurface: channel claims
// whose emit failed, given back.
type UnsurfaceRequest struct {
	IDs textList `json:"ids"`
}

// UnsurfaceReply is POST /v1/inbox/unsurface's answer.
type UnsurfaceReply struct {
	Released int64 `json:"released"`
}

// Claude Code hooks.

// The events of POST /v1/hook: Claude Code's SessionStart, UserPromptSubmit,
// PostToolUse and Stop, and wake (a message arrived for a session at rest).
const (
	hookSessionStart     = "session-start"
	hookUserPromptSubmit = "user-prompt-submit"
	hookPostToolUse      = "post-tool-use"
	hookStop             = "stop"
	hookWake             = "wake"
)

// HookRequest is the body of POST /v1/hook: one hook of a Claude Code
// session. The session is the caller's (its token), else the one Claude
// Code's session id names, which the daemon registers on the first hook
// it has not seen.
type HookRequest struct {
	Event           string `json:"event"`
	ClaudeSessionID string `json:"claude_session_id,omitempty"`
	ClaudePid       int    `json:"claude_pid,omitempty"`
	TranscriptPath  string `json:"transcript_path,omitempty"`
	Cwd             string `json:"cwd,omitempty"`
	Source          string `json:"source,omitempty"` // session-start: startup, resume, clear or compact
	StopHookActive  bool   `json:"stop_hook_active,omitempty"`
	// Mesh and DisplayName are what a new plain session registers with
	// (CLAUDEMESH_MESH, CLAUDEMESH_DISPLAY_NAME); "" takes the defaults.
	Mesh        string `json:"mesh,omitempty"`
	DisplayName string `json:"display_name,omitempty"`
	// Hold: the session's message mode keeps messages in the inbox
	// (inbox, off): the hook takes none.
	Hold bool `json:"hold,omitempty"`
}

// WelcomeClaimRequest is POST /v1/sessions/me/welcome: the session's MCP
// server takes the welcome before it emits it, or (Release) gives back one
// it could not emit. The session-start hook takes it in POST /v1/hook.
type WelcomeClaimRequest struct {
	Release bool `json:"release,omitempty"`
}

// WelcomeClaimReply: Claimed, the server emits the welcome; else Via is the
// path that welcomed the session's model (hooks).
type WelcomeClaimReply struct {
	Claimed bool   `json:"claimed"`
	Via     string `json:"via,omitempty"`
}

// UnsurfacedNotice is a message this session sent that has stayed unshown
// to its recipient's model past the threshold: the data of an `unsurfaced`
// event, and one of a hook's Unsurfaced. Text says it for the model.
type UnsurfacedNotice struct {
	ID        string        `json:"id"` // the outbox row
	MessageID string        `json:"message_id,omitempty"`
	Mesh      string        `json:"mesh"`
	Target    string        `json:"target"`
	ToName    string        `json:"to_name"`
	SentAt    string        `json:"sent_at"`
	Ladder    messageLadder `json:"ladder"`
	Text      string        `json:"text"`
	TS        string        `json:"ts,omitempty"`
}

func (e *UnsurfacedNotice) stamp(ts string) { e.TS = cmp.Or(e.TS, ts) }

// HookReply is POST /v1/hook's answer: who the session is, and what to
// show its model. Messages were claimed for the hooks path and must be
// shown; More is how many more wait for the next hook.
type HookReply struct {
	Session    HookSession  `json:"session"`
	Registered bool         `json:"registered"`
	Messages   []inboxItem  `json:"messages"`
	More       int          `json:"more"`
	Block      bool         `json:"block,omitempty"`   // stop: keep the session going with Messages
	Welcome    *HookWelcome `json:"welcome,omitempty"` // session-start
	// Unsurfaced: messages this session sent that stayed unshown past the
	// threshold; the hook tells the model of each once.
	Unsurfaced []UnsurfacedNotice `json:"unsurfaced,omitempty"`
}

// HookSession is the session a hook ran in, as its model is told.
type HookSession struct {
	SessionID     string `json:"session_id"`
	DisplayName   string `json:"display_name"`
	SessionPubkey string `json:"session_pubkey,omitempty"`
	Mesh          string `json:"mesh"`
	Role          string `json:"role,omitempty"`
	Origin        string `json:"origin,omitempty"`
}

// HookWelcome is what the session-start hook welcomes the model with: who
// is online, and the rows no path has shown it yet (newest first, up to 50:
// previews, not a showing).
type HookWelcome struct {
	Peers       []PeerRow   `json:"peers"`
	PeersError  string      `json:"peers_error,omitempty"`
	Unread      []inboxItem `json:"unread"`
	UnreadCount int         `json:"unread_count"`
}

// HookWaitRequest is the body of POST /v1/hook/wait: a session at rest
// waits for a message to wake it with. The newest wait of a session
// supersedes the one before.
type HookWaitRequest struct {
	ClaudeSessionID string `json:"claude_session_id,omitempty"`
	ClaudePid       int    `json:"claude_pid,omitempty"`
	TimeoutMs       int    `json:"timeout_ms,omitempty"` // capped at hookWaitMax
}

// HookWaitReply is how a wait ended: pending (something to show: wake the
// session), superseded (a newer wait, or the session is busy again), gone
// (no such session any more) or timeout.
type HookWaitReply struct {
	Outcome string `json:"outcome"`
}

// Wait outcomes.
const (
	waitPending    = "pending"
	waitSuperseded = "superseded"
	waitGone       = "gone"
	waitTimeout    = "timeout"
)

// InboxSeenRequest is the body of POST /v1/inbox/seen.
type InboxSeenRequest struct {
	IDs textList `json:"ids"`
}

// InboxSeenReply is POST /v1/inbox/seen's answer.
type InboxSeenReply struct {
	MarkedSeen int64 `json:"marked_seen"`
}

// InboxFlushQuery is DELETE /v1/inbox: outside a session one of its
// filters is required (All for every row on every mesh).
type InboxFlushQuery struct {
	Mesh   string `query:"mesh"`
	Before string `query:"before"` // ISO time
	All    bool   `query:"all"`
}

// InboxFlushReply is DELETE /v1/inbox's answer.
type InboxFlushReply struct {
	Removed int64 `json:"removed"`
}

// InboxDeleteRequest is DELETE /v1/inbox/{id}.
type InboxDeleteRequest struct {
	ID string `path:"id"`
}

// InboxDeleteReply is DELETE /v1/inbox/{id}'s answer.
type InboxDeleteReply struct {
	Removed int    `json:"removed"`
	ID      string `json:"id"`
}

// History: what this machine sent and received.

// HistoryQuery is GET /v1/history: messages oldest first, from Since on,
// in pages; After is the Next of the page before. Latest asks for the
// newest Limit messages instead (still oldest first, and no Next).
type HistoryQuery struct {
	Mesh   string `query:"mesh"`
	Since  string `query:"since"` // ISO time
	After  string `query:"after"`
	Latest bool   `query:"latest"`
	Limit  *int   `query:"limit"` // 1..1000, default 200
}

// SearchQuery is GET /v1/search: the messages whose text has every word of
// Q (a word matches as a prefix too), newest first.
type SearchQuery struct {
	Q     string `query:"q"`
	Mesh  string `query:"mesh"`
	From  string `query:"from"`  // a sender's name or a prefix of its key
	Since string `query:"since"` // ISO time
	Limit *int   `query:"limit"` // 1..500, default 50
}

// HistoryReply answers GET /v1/history and GET /v1/search.
type HistoryReply struct {
	Messages []historyMessage `json:"messages"`
	Next     string           `json:"next,omitempty"` // the After of the next page; "" after the last
}

// historyMessage is one message as history shows it: sent from this
// machine (direction "out": an outbox row, with the rows of this machine's
// sessions that received it as Deliveries) or received here ("in": an inbox
// row).
type historyMessage struct {
	Direction        string            `json:"direction"`
	ID               string            `json:"id"`  // the outbox or inbox row
	Ref              string            `json:"ref"` // what a reply quotes as reply_to_id: the broker's id, else the row id
	Mesh             string            `json:"mesh"`
	At               string            `json:"at"` // accepted into the outbox, or received
	FromName         string            `json:"from_name"`
	FromPubkey       string            `json:"from_pubkey"`
	FromMemberPubkey string            `json:"from_member_pubkey,omitempty"`
	To               string            `json:"to"` // a key, @group, * or #topic
	ToName           string            `json:"to_name,omitempty"`
	Topic            string            `json:"topic,omitempty"`
	Body             *string           `json:"body"` // null: it could not be decrypted
	ReplyToID        string            `json:"reply_to_id,omitempty"`
	Priority         string            `json:"priority"`
	ClientMessageID  string            `json:"client_message_id"`
	BrokerMessageID  string            `json:"broker_message_id,omitempty"`
	Outbox           *historyOutbox    `json:"outbox,omitempty"`
	Deliveries       []historyDelivery `json:"deliveries,omitempty"`
	SeenAt           string            `json:"seen_at,omitempty"`
	ReceivedBy       string            `json:"received_by,omitempty"` // in: which of this machine's sessions (or its member) it reached
	Surfaced         *surfacedFields   `json:"surfaced,omitempty"`    // in: how it was shown to a session's model, once it was
	// Snippet is, in search results, the matching part of the text with
	// each match between \x02 and \x03.
	Snippet string `json:"snippet,omitempty"`
}

// historyOutbox is a sent message's outbox state.
type historyOutbox struct {
	Status      string `json:"status"`
	Attempts    int    `json:"attempts"`
	LastError   string `json:"last_error,omitempty"`
	DeliveredAt string `json:"delivered_at,omitempty"` // the broker's ack
	// Ladder is how far the message got at its recipients.
	Ladder *messageLadder `json:"ladder,omitempty"`
}

// historyDelivery is a sent message as one of this machine's own sessions
// (or its member) received it.
type historyDelivery struct {
	InboxID  string          `json:"inbox_id"`
	To       string          `json:"to"`
	ToName   string          `json:"to_name"`
	At       string          `json:"at"`
	SeenAt   string          `json:"seen_at,omitempty"`
	Surfaced *surfacedFields `json:"surfaced,omitempty"`
}

// The web UI.

// UIOpenReply is POST /v1/ui/open's answer: the UI is open, and URL logs a
// browser in once (until ExpiresAt); Page is the UI's address without it.
type UIOpenReply struct {
	URL       string `json:"url"`
	Page      string `json:"page"`
	ExpiresAt string `json:"expires_at"`
	Started   bool   `json:"started"` // the UI was closed until now
}

// UIOverviewReply is the page's first read: this machine's member on each
// mesh and its sessions. CSRF is the token the page sends with every change.
type UIOverviewReply struct {
	CSRF        string          `json:"csrf"`
	DisplayName string          `json:"display_name"`
	Meshes      []uiMeshView    `json:"meshes"`
	Sessions    []uiSessionView `json:"sessions"`
}

// uiMeshView is a joined mesh as the page shows it.
type uiMeshView struct {
	Slug         string    `json:"slug"`
	Name         string    `json:"name,omitempty"`
	MemberPubkey string    `json:"member_pubkey"`
	Role         string    `json:"role,omitempty"`
	BrokerURL    string    `json:"broker_url"`
	Link         LinkState `json:"link"`
	LastError    string    `json:"last_error,omitempty"`
}

// uiSessionView is a session as the page shows it: no token, no secret.
type uiSessionView struct {
	SessionID     string    `json:"session_id"`
	Mesh          string    `json:"mesh"`
	DisplayName   string    `json:"display_name"`
	Role          string    `json:"role,omitempty"`
	Groups        []string  `json:"groups"`
	SessionPubkey string    `json:"session_pubkey,omitempty"`
	Cwd           string    `json:"cwd,omitempty"`
	Pid           int       `json:"pid"`
	Link          LinkState `json:"link,omitempty"`
	RegisteredAt  string    `json:"registered_at"`
}

// UISendRequest is the body of POST /v1/ui/send: a send as one of this
// machine's sessions, named by its id (As), or as the member (As empty).
type UISendRequest struct {
	As string `json:"as"`
	SendRequest
}

// Events of GET /v1/events.

// MessageEvent is the data of a `message` event: one new inbox row.
type MessageEvent struct {
	ID                 string     `json:"id"`
	Mesh               string     `json:"mesh"`
	ClientMessageID    string     `json:"client_message_id"`
	BrokerMessageID    nullString `json:"broker_message_id"`
	SenderPubkey       string     `json:"sender_pubkey"`
	SenderMemberPubkey nullString `json:"sender_member_pubkey"`
	SenderName         string     `json:"sender_name"`
	Topic              nullString `json:"topic"`
	ReplyToID          nullString `json:"reply_to_id"`
	Priority           string     `json:"priority"`
	Subtype            string     `json:"subtype,omitempty"`
	Body               *string    `json:"body"` // null: it could not be decrypted
	CreatedAt          nullString `json:"created_at"`
	RecipientPubkey    string     `json:"recipient_pubkey"`
	RecipientKind      string     `json:"recipient_kind"`
	Target             string     `json:"target,omitempty"` // what it was sent to: a key, @group, * or #topic
	TS                 string     `json:"ts"`
}

func (e *MessageEvent) stamp(ts string) { e.TS = cmp.Or(e.TS, ts) }

// SurfacedEvent is the data of a `surfaced` event: an inbox row was shown
// to a session's model, or a channel claim on it was confirmed.
type SurfacedEvent struct {
	ID              string     `json:"id"`
	Mesh            string     `json:"mesh"`
	ClientMessageID string     `json:"client_message_id"`
	BrokerMessageID nullString `json:"broker_message_id"`
	RecipientPubkey string     `json:"recipient_pubkey"`
	surfacedFields
	TS string `json:"ts"`
}

func (e *SurfacedEvent) stamp(ts string) { e.TS = cmp.Or(e.TS, ts) }

// ReceiptEvent is the data of a `receipt` event: a message this session
// (or, for the machine-wide stream, this machine) sent climbed its ladder.
type ReceiptEvent struct {
	ID              string        `json:"id"` // the outbox row
	ClientMessageID string        `json:"client_message_id"`
	BrokerMessageID string        `json:"broker_message_id"`
	Mesh            string        `json:"mesh"`
	Target          string        `json:"target"`
	Ladder          messageLadder `json:"ladder"`
	TS              string        `json:"ts"`
}

func (e *ReceiptEvent) stamp(ts string) { e.TS = cmp.Or(e.TS, ts) }

// BrokerStatusEvent is the data of a `broker_status` event: a link's new
// state. SessionID names the session of a session link, so that its MCP
// server can tell it was kicked.
type BrokerStatusEvent struct {
	Mesh      string `json:"mesh"`
	Status    string `json:"status"`
	Link      string `json:"link"`
	SessionID string `json:"session_id,omitempty"`
	TS        string `json:"ts"`
}

func (e *BrokerStatusEvent) stamp(ts string) { e.TS = cmp.Or(e.TS, ts) }

// OutboxEvent is the data of an `outbox` event: an outbox row as it is
// now, and its message as history shows it.
type OutboxEvent struct {
	Row     outboxView     `json:"row"`
	Message historyMessage `json:"message"`
	TS      string         `json:"ts"`
}

func (e *OutboxEvent) stamp(ts string) { e.TS = cmp.Or(e.TS, ts) }

// SessionEvent is the data of a `session` event.
type SessionEvent struct {
	SessionID   string `json:"session_id"`
	Mesh        string `json:"mesh"`
	DisplayName string `json:"display_name"`
	State       string `json:"state"` // registered | deregistered
	Reason      string `json:"reason,omitempty"`
	TS          string `json:"ts"`
}

func (e *SessionEvent) stamp(ts string) { e.TS = cmp.Or(e.TS, ts) }

// StateEvent is the data of a `state` event: a key's new value.
type StateEvent struct {
	Mesh      string          `json:"mesh"`
	Key       string          `json:"key"`
	Value     json.RawMessage `json:"value"`
	UpdatedBy string          `json:"updatedBy,omitempty"`
	TS        string          `json:"ts"`
}

func (e *StateEvent) stamp(ts string) { e.TS = cmp.Or(e.TS, ts) }

// MemoryEvent is the data of a `memory` event.
type MemoryEvent struct {
	Mesh    string `json:"mesh"`
	ID      string `json:"id"`
	Action  string `json:"action"` // remembered | forgotten
	Content string `json:"content,omitempty"`
	TS      string `json:"ts"`
}

func (e *MemoryEvent) stamp(ts string) { e.TS = cmp.Or(e.TS, ts) }

// ProfileEvent is the data of a `profile` event: this daemon changed these
// fields of a presence on mesh, over a session link or the member's.
type ProfileEvent struct {
	Mesh    string   `json:"mesh"`
	Applied []string `json:"applied"`
	Via     string   `json:"via"`
	TS      string   `json:"ts"`
}

func (e *ProfileEvent) stamp(ts string) { e.TS = cmp.Or(e.TS, ts) }

// Wire helpers.

// nullString is text that the wire writes as null when empty, and reads
// back from null as empty.
type nullString string

func (s nullString) MarshalJSON() ([]byte, error) {
	if s == "" {
		return []byte("null"), nil
	}
	return json.Marshal(string(s))
}

func (s *nullString) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		*s = ""
		return nil
	}
	var v string
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*s = nullString(v)
	return nil
}

// textList is a list of strings read leniently: anything in it that is not
// a non-empty string is dropped rather than failing the request.
type textList []string

func (l *textList) UnmarshalJSON(data []byte) error {
	var items []any
	if err := json.Unmarshal(data, &items); err != nil {
		return err
	}
	out := textList{}
	for _, v := range items {
		if s, ok := v.(string); ok && s != "" {
			out = append(out, s)
		}
	}
	if items == nil {
		out = nil
	}
	*l = out
	return nil
}

// The path and query fields of a request.

// requestTarget is the path (pattern filled from in's path fields) and
// query (from its query fields) of a call to ep. A string is sent when not
// empty, a bool when true, a pointer whenever it is set.
func requestTarget(pattern string, in any) string {
	path := pattern
	q := url.Values{}
	v := reflect.ValueOf(in)
	for i := range v.NumField() {
		f, fv := v.Type().Field(i), v.Field(i)
		if name, ok := f.Tag.Lookup("path"); ok {
			path = strings.Replace(path, "{"+name+"}", url.PathEscape(fv.String()), 1)
			continue
		}
		name, ok := f.Tag.Lookup("query")
		if !ok {
			continue
		}
		if fv.Kind() == reflect.Pointer {
			if fv.IsNil() {
				continue
			}
			fv = fv.Elem()
		} else if fv.IsZero() {
			continue
		}
		switch fv.Kind() {
		case reflect.String:
			q.Set(name, fv.String())
		case reflect.Bool:
			q.Set(name, strconv.FormatBool(fv.Bool()))
		case reflect.Int:
			q.Set(name, strconv.FormatInt(fv.Int(), 10))
		}
	}
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}

// decode reads a request to ep as the daemon does: path and query fields
// first, then the body of a route that has one.
func (ep ipcEndpoint[Req, Rep]) decode(req *ipcRequest) (Req, error) {
	var in Req
	if err := decodeTarget(req.params, req.URL.Query(), &in); err != nil {
		return in, err
	}
	if ep.body {
		if err := req.decodeBody(&in); err != nil {
			return in, err
		}
	}
	return in, nil
}

// decodeTarget fills out's path and query fields from a request. A bool
// is true only for "true"; a *bool, when present, is false only for
// "false"; an int or *int must be a number.
func decodeTarget(params map[string]string, q url.Values, out any) error {
	v := reflect.ValueOf(out).Elem()
	for i := range v.NumField() {
		f, fv := v.Type().Field(i), v.Field(i)
		if name, ok := f.Tag.Lookup("path"); ok {
			fv.SetString(params[name])
			continue
		}
		name, ok := f.Tag.Lookup("query")
		if !ok || (fv.Kind() == reflect.Pointer && !q.Has(name)) {
			continue
		}
		s := q.Get(name)
		switch p := fv.Addr().Interface().(type) {
		case *string:
			*p = s
		case **string:
			*p = &s
		case *bool:
			*p = s == "true"
		case **bool:
			b := s != "false"
			*p = &b
		case **int:
			n, err := strconv.Atoi(s)
			if err != nil {
				return newAPIError(http.StatusBadRequest, "invalid_"+name, name+" must be a number")
			}
			*p = &n
		case *int:
			if s == "" {
				continue
			}
			n, err := strconv.Atoi(s)
			if err != nil {
				return newAPIError(http.StatusBadRequest, "invalid_"+name, name+" must be a number")
			}
			*p = n
		}
	}
	return nil
}

// ptr is a pointer to a copy of v, for optional request fields.
func ptr[T any](v T) *T { return &v }

// positive is a pointer to n when it is above zero: an optional count
// where 0 means "the default".
func positive(n int) *int {
	if n > 0 {
		return &n
	}
	return nil
}

// deref is *p, or the zero value for nil.
func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
