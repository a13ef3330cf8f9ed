// The broker's HTTP surface, all on the WebSocket's port: the upgrade on
// exactly /ws, /health, /metrics, and the account-less mesh routes:
// POST /cli/mesh/create, POST /cli/mesh/<slug>/invite, POST /join, the
// member-signed POST /cli/mesh/<slug>/grants and /audit, and the invite
// routes of broker_invites.go.
//
// Policy: mesh creation is open to loopback clients (a request that came
// through a proxy — it carries X-Forwarded-For — is not loopback), and to
// others only with the broker's create token as a bearer token. Every
// mutation is signed by an ed25519 key; bodies are capped.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func (b *Broker) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		// Exactly /ws: no query string either, as claudemesh.
		if r.URL.RawQuery != "" {
			http.NotFound(w, r)
			return
		}
		b.serveWS(w, r)
	})
	mux.HandleFunc("GET /health", b.handleHealth)
	mux.HandleFunc("GET /metrics", b.handleMetrics)
	mux.HandleFunc("POST /join", b.handleJoin)
	mux.HandleFunc("POST /cli/mesh/create", b.handleMeshCreate)
	mux.HandleFunc("POST /cli/mesh/{slug}/invite", b.handleInviteCreate)
	mux.HandleFunc("POST /cli/mesh/{slug}/grants", b.handleGrants)
	mux.HandleFunc("POST /cli/mesh/{slug}/audit", b.handleAudit)
	mux.HandleFunc("POST /cli/mesh/{slug}/role", b.handleRole)
	mux.HandleFunc("POST /cli/mesh/{slug}/invite/v2", b.handleInviteV2Create)
	mux.HandleFunc("POST /cli/mesh/{slug}/invites", b.handleInviteList)
	mux.HandleFunc("POST /cli/mesh/{slug}/invite/revoke", b.handleInviteRevoke)
	mux.HandleFunc("POST /invites/{code}/claim", b.handleInviteClaim)
	return mux
}

// writeJSON answers with a JSON body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// writeHTTPError answers {ok:false, error:<code>, message}.
// writeLookupError answers a failed lookup of whom a request names: not
// found is 404, a store failure 500, anything else (several match, the
// caller itself) 400.
func writeLookupError(w http.ResponseWriter, code, problem string) {
	status := http.StatusBadRequest
	switch code {
	case codeNotFound:
		status = http.StatusNotFound
	case codeInternal:
		status = http.StatusInternalServerError
	}
	writeHTTPError(w, status, code, problem)
}

func writeHTTPError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, map[string]any{"ok": false, "error": code, "message": message})
}

// writeStoreUnavailable answers a request the store failed to serve.
func writeStoreUnavailable(w http.ResponseWriter) {
	writeHTTPError(w, http.StatusInternalServerError, codeInternal, "store unavailable")
}

// decodeBody reads a JSON body of at most limit bytes into v; it answers the
// request itself and returns false on failure.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(limit)))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeHTTPError(w, http.StatusRequestEntityTooLarge, codePayloadTooLarge, fmt.Sprintf("body over %d bytes", limit))
		return false
	}
	if err != nil {
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, "could not read body")
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, "body is not the expected JSON: "+jsonFieldError(err).Error())
		return false
	}
	return true
}

// memberCall is a member-signed request that passed its checks: the mesh
// its path names and the member whose key signed it.
type memberCall struct {
	mesh   storedMesh
	member storedMember
}

// canModerate: the mesh owner or an admin.
func (mc memberCall) canModerate() bool {
	return mc.member.Pubkey == mc.mesh.OwnerPubkey || mc.member.Role == roleAdmin
}

// memberRequest reads a member-signed request for the mesh named by the
// path's slug (or id) into v: the signature (over this path), the timestamp's
// skew, replays, and that the key is a member of that mesh who is not
// banned. It answers the request itself and returns false on failure.
// moderatorRequest is memberRequest for a route only the mesh owner or an
// admin may use; what names the action in the refusal ("list invites").
func (b *Broker) moderatorRequest(w http.ResponseWriter, r *http.Request, v any, what string) (memberCall, bool) {
	call, ok := b.memberRequest(w, r, v)
	if ok && !call.canModerate() {
		writeHTTPError(w, http.StatusForbidden, codeForbidden, "only the mesh owner or an admin can "+what)
		return call, false
	}
	return call, ok
}

func (b *Broker) memberRequest(w http.ResponseWriter, r *http.Request, v any) (memberCall, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxHTTPBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeHTTPError(w, http.StatusRequestEntityTooLarge, codePayloadTooLarge, fmt.Sprintf("body over %d bytes", maxHTTPBodyBytes))
		return memberCall{}, false
	case err != nil:
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, "could not read body")
		return memberCall{}, false
	}
	env, err := openMemberRequest(r.URL.Path, body)
	switch {
	case errors.Is(err, errMemberRequestSignature):
		writeHTTPError(w, http.StatusUnauthorized, codeBadSignature, "signature does not verify")
		return memberCall{}, false
	case err != nil:
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, err.Error())
		return memberCall{}, false
	}
	now := time.Now()
	if b.skewed(now.UnixMilli() - env.Timestamp) {
		writeHTTPError(w, http.StatusBadRequest, codeTimestampSkew, "timestamp is too far from broker time")
		return memberCall{}, false
	}
	b.mu.Lock()
	herr := b.checkReplay(env.Pubkey, env.Timestamp, env.Signature, now)
	b.mu.Unlock()
	if herr != nil {
		writeHTTPError(w, http.StatusConflict, herr.code, "this request was already made; sign a fresh one")
		return memberCall{}, false
	}
	// The path names the mesh by slug, or by id: a member that joined
	// under a name of its own knows the mesh's id for sure.
	slug := r.PathValue("slug")
	mesh, err := b.store.MeshBySlug(r.Context(), slug)
	if errors.Is(err, errNotFound) {
		mesh, err = b.store.MeshByID(r.Context(), slug)
	}
	if errors.Is(err, errNotFound) {
		writeHTTPError(w, http.StatusNotFound, "mesh_not_found", "no mesh "+slug+" on this broker")
		return memberCall{}, false
	}
	if err != nil {
		writeStoreUnavailable(w)
		return memberCall{}, false
	}
	member, err := b.store.MemberByPubkey(r.Context(), mesh.ID, env.Pubkey)
	switch {
	case errors.Is(err, errNotFound):
		writeHTTPError(w, http.StatusForbidden, codeForbidden, "this key is not a member of mesh "+slug)
		return memberCall{}, false
	case err != nil:
		writeStoreUnavailable(w)
		return memberCall{}, false
	case member.RevokedAt != nil:
		writeHTTPError(w, http.StatusForbidden, codeRevoked, "this member was banned from mesh "+slug)
		return memberCall{}, false
	}
	if err := json.Unmarshal(body, v); err != nil {
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, "body is not the expected JSON: "+jsonFieldError(err).Error())
		return memberCall{}, false
	}
	return memberCall{mesh: mesh, member: member}, true
}

// Health and metrics.

func (b *Broker) handleHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	out := map[string]any{"ok": true, "version": version, "db": "ok", "uptime_s": int64(time.Since(b.started).Seconds()),
		"connections": b.metrics.connections.Load()}
	if b.opts.PublicURL != "" {
		out["public_url"] = b.opts.PublicURL
	}
	out["store"], out["replica"] = b.storeKind(), b.opts.ReplicaID
	if b.replicas != nil {
		out["replicas"] = b.replicas.live.Load()
	}
	status := http.StatusOK
	n, err := b.store.CountMeshes(ctx)
	if err == nil {
		err = b.store.Ping(ctx)
	}
	if err != nil {
		out["ok"], out["db"] = false, "down: "+err.Error()
		status = http.StatusServiceUnavailable
	}
	out["meshes"] = n
	writeJSON(w, status, out)
}

// brokerMetrics are the counters /metrics exposes.
type brokerMetrics struct {
	connections atomic.Int64 // open sockets
	accepted    atomic.Int64 // sends stored (duplicates excluded)
	delivered   atomic.Int64 // deliveries acked by their recipient
	queued      atomic.Int64 // deliveries stored for a recipient that was offline

	receipts          atomic.Int64 // receipts stored (duplicates excluded)
	receiptsDuplicate atomic.Int64 // receipts already stored
	receiptsQueued    atomic.Int64 // receipts stored for a sender with no connection that takes them
	receiptsRefused   atomic.Int64 // receipts refused (a key not the sender's, a limit, the store)

	mu                sync.Mutex
	handshakeFailures map[string]int64 // by error code
}

func (m *brokerMetrics) init() { m.handshakeFailures = map[string]int64{} }

func (m *brokerMetrics) handshakeFailure(code string) {
	m.mu.Lock()
	m.handshakeFailures[code]++
	m.mu.Unlock()
}

func (b *Broker) handleMetrics(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var sb strings.Builder
	metric := func(name, kind, help string, v int64) {
		fmt.Fprintf(&sb, "# HELP %s %s\n# TYPE %s %s\n%s %d\n", name, help, name, kind, name, v)
	}
	metric("claudemesh_broker_connections", "gauge", "Open WebSocket connections.", b.metrics.connections.Load())
	if n, err := b.store.CountMeshes(ctx); err == nil {
		metric("claudemesh_broker_meshes", "gauge", "Meshes on this broker.", int64(n))
	}
	metric("claudemesh_broker_messages_accepted_total", "counter", "Sends stored (duplicates excluded).", b.metrics.accepted.Load())
	metric("claudemesh_broker_messages_delivered_total", "counter", "Deliveries acknowledged by their recipient.", b.metrics.delivered.Load())
	metric("claudemesh_broker_messages_queued_total", "counter", "Deliveries stored for a recipient that was offline.", b.metrics.queued.Load())
	metric("claudemesh_broker_receipts_total", "counter", "Receipts stored (duplicates excluded).", b.metrics.receipts.Load())
	metric("claudemesh_broker_receipts_duplicate_total", "counter", "Receipts that were already stored.", b.metrics.receiptsDuplicate.Load())
	metric("claudemesh_broker_receipts_queued_total", "counter", "Receipts stored for a sender with no connection that takes them.", b.metrics.receiptsQueued.Load())
	metric("claudemesh_broker_receipts_refused_total", "counter", "Receipts refused.", b.metrics.receiptsRefused.Load())
	if n, err := b.store.CountPendingDeliveries(ctx, time.Now()); err == nil {
		metric("claudemesh_broker_deliveries_pending", "gauge", "Deliveries not yet acknowledged.", int64(n))
	}
	if r := b.replicas; r != nil {
		label := fmt.Sprintf("{replica=%q}", b.opts.ReplicaID)
		labeled := func(name, kind, help string, v int64) {
			fmt.Fprintf(&sb, "# HELP %s %s\n# TYPE %s %s\n%s%s %d\n", name, help, name, kind, name, label, v)
		}
		labeled("claudemesh_broker_replicas", "gauge", "Replicas alive at this one's last heartbeat, itself included.", r.live.Load())
		labeled("claudemesh_broker_replica_pushes_total", "counter", "Deliveries this replica pushed for sends another replica took.", r.pushes.Load())
		labeled("claudemesh_broker_replica_events_published_total", "counter", "Control events this replica sent to the others.", r.published.Load())
		labeled("claudemesh_broker_replica_events_received_total", "counter", "Events this replica took from the others (pushes and control).", r.received.Load())
		labeled("claudemesh_broker_replicas_reaped_total", "counter", "Dead replicas this one removed after their heartbeat expired.", r.reaped.Load())
	}
	b.metrics.mu.Lock()
	codes := make([]string, 0, len(b.metrics.handshakeFailures))
	for code := range b.metrics.handshakeFailures {
		codes = append(codes, code)
	}
	sort.Strings(codes)
	sb.WriteString("# HELP claudemesh_broker_handshake_failures_total Refused handshakes by error code.\n# TYPE claudemesh_broker_handshake_failures_total counter\n")
	for _, code := range codes {
		fmt.Fprintf(&sb, "claudemesh_broker_handshake_failures_total{code=%q} %d\n", code, b.metrics.handshakeFailures[code])
	}
	b.metrics.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	io.WriteString(w, sb.String())
}

// Mesh creation.

// MeshCreateRequest is the body of POST /cli/mesh/create, signed by the
// creator key over claudemesh-mesh-create|<slug>|<pubkey>|<timestamp>.
type MeshCreateRequest struct {
	Slug        string `json:"slug"`
	Name        string `json:"name"`
	Pubkey      string `json:"pubkey"`
	DisplayName string `json:"display_name"`
	Timestamp   int64  `json:"timestamp"`
	Signature   string `json:"signature"`
}

// MeshCreateResponse answers a mesh creation.
type MeshCreateResponse struct {
	OK        bool   `json:"ok"`
	ID        string `json:"id"`
	Slug      string `json:"slug"`
	Name      string `json:"name"`
	MemberID  string `json:"member_id"`
	RootKey   string `json:"root_key"`
	BrokerURL string `json:"broker_url,omitempty"`
}

// isLoopbackRequest: the peer address is loopback and no proxy forwarded it.
func isLoopbackRequest(r *http.Request) bool {
	if r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("Forwarded") != "" {
		return false
	}
	ip := net.ParseIP(remoteIP(r))
	return ip != nil && ip.IsLoopback()
}

func (b *Broker) handleMeshCreate(w http.ResponseWriter, r *http.Request) {
	if !isLoopbackRequest(r) {
		bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if b.opts.CreateToken == "" {
			writeHTTPError(w, http.StatusForbidden, codeForbidden, "this broker creates meshes only for loopback clients")
			return
		}
		if !ok || subtle.ConstantTimeCompare([]byte(bearer), []byte(b.opts.CreateToken)) != 1 {
			writeHTTPError(w, http.StatusForbidden, codeForbidden, "mesh creation needs the broker's create token")
			return
		}
	}
	var req MeshCreateRequest
	if !decodeBody(w, r, maxHTTPBodyBytes, &req) {
		return
	}
	if !validSlug(req.Slug) {
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, "slug must be 2-32 of a-z, 0-9 and '-', starting with a letter or digit")
		return
	}
	if !isHexKey(req.Pubkey) {
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, "pubkey must be 64 lowercase hex")
		return
	}
	if b.skewed(time.Now().UnixMilli() - req.Timestamp) {
		writeHTTPError(w, http.StatusBadRequest, codeTimestampSkew, "timestamp is too far from broker time")
		return
	}
	if !verifySignature(req.Pubkey, meshCreateSignedString(req.Slug, req.Pubkey, req.Timestamp), req.Signature) {
		writeHTTPError(w, http.StatusUnauthorized, codeBadSignature, "signature does not verify")
		return
	}
	name := cmp.Or(req.Name, req.Slug)
	display := cmp.Or(req.DisplayName, name+"-owner")
	mesh, member, err := b.createMesh(r.Context(), req.Slug, name, req.Pubkey, display)
	if errors.Is(err, errExists) {
		writeHTTPError(w, http.StatusConflict, "mesh_exists", "a mesh with slug "+req.Slug+" already exists on this broker")
		return
	}
	if err != nil {
		b.log.Error("create mesh", "err", err)
		writeStoreUnavailable(w)
		return
	}
	writeJSON(w, http.StatusOK, MeshCreateResponse{OK: true, ID: mesh.ID, Slug: mesh.Slug, Name: mesh.Name,
		MemberID: member.ID, RootKey: mesh.RootKey, BrokerURL: b.opts.PublicURL})
}

// createMesh makes a mesh whose owner key is ownerPubkey, with that key as
// its first member (admin).
func (b *Broker) createMesh(ctx context.Context, slug, name, ownerPubkey, displayName string) (storedMesh, storedMember, error) {
	root := make([]byte, 32)
	if _, err := rand.Read(root); err != nil {
		return storedMesh{}, storedMember{}, err
	}
	now := time.Now()
	mesh := storedMesh{ID: newID(), Slug: slug, Name: name, OwnerPubkey: ownerPubkey, RootKey: b64url(root), CreatedAt: now}
	member := storedMember{ID: newID(), MeshID: mesh.ID, Pubkey: ownerPubkey, DisplayName: displayName, Role: roleAdmin, CreatedAt: now}
	created := auditEvent{MeshID: mesh.ID, Type: auditMeshCreated, Actor: ownerPubkey, CreatedAt: now, Payload: map[string]any{
		"slug": slug, "name": name, "ownerPubkey": ownerPubkey, "memberId": member.ID, "displayName": displayName}}
	if err := b.store.CreateMesh(ctx, mesh, member, created); err != nil {
		return storedMesh{}, storedMember{}, err
	}
	return mesh, member, nil
}

// Invites.

// InviteCreateRequest registers a v1 invite, signed by the mesh owner key
// over claudemesh-invite-create|<slug>|<token>|<max_uses>|<timestamp>.
type InviteCreateRequest struct {
	Token     string `json:"token"`
	MaxUses   int    `json:"max_uses"`
	Timestamp int64  `json:"timestamp"`
	Signature string `json:"signature"`
}

// InviteCreateResponse answers an invite registration.
type InviteCreateResponse struct {
	OK        bool   `json:"ok"`
	ID        string `json:"id"`
	URL       string `json:"url"`
	ExpiresAt string `json:"expires_at"`
	MaxUses   int    `json:"max_uses"`
	Role      string `json:"role"`
}

// maxInviteUses bounds one invite.
const maxInviteUses = 10000

func (b *Broker) handleInviteCreate(w http.ResponseWriter, r *http.Request) {
	slug := r.PathValue("slug")
	var req InviteCreateRequest
	if !decodeBody(w, r, maxHTTPBodyBytes, &req) {
		return
	}
	mesh, err := b.store.MeshBySlug(r.Context(), slug)
	if errors.Is(err, errNotFound) {
		writeHTTPError(w, http.StatusNotFound, "mesh_not_found", "no mesh "+slug+" on this broker")
		return
	}
	if err != nil {
		writeStoreUnavailable(w)
		return
	}
	if req.MaxUses < 1 || req.MaxUses > maxInviteUses {
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, fmt.Sprintf("max_uses must be 1..%d", maxInviteUses))
		return
	}
	if b.skewed(time.Now().UnixMilli() - req.Timestamp) {
		writeHTTPError(w, http.StatusBadRequest, codeTimestampSkew, "timestamp is too far from broker time")
		return
	}
	if !verifySignature(mesh.OwnerPubkey, inviteCreateSignedString(slug, req.Token, req.MaxUses, req.Timestamp), req.Signature) {
		writeHTTPError(w, http.StatusForbidden, codeForbidden, "only the mesh owner key can register invites")
		return
	}
	p, token, err := parseInvite(req.Token)
	switch {
	case errors.Is(err, errInviteBadSignature):
		writeHTTPError(w, http.StatusBadRequest, "invite_bad_signature", err.Error())
		return
	case err != nil:
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, err.Error())
		return
	case p.MeshID != mesh.ID || p.MeshSlug != mesh.Slug:
		writeHTTPError(w, http.StatusBadRequest, "invite_mesh_mismatch", "the invite names another mesh")
		return
	case p.OwnerPubkey != mesh.OwnerPubkey:
		writeHTTPError(w, http.StatusBadRequest, "invite_owner_mismatch", "the invite is not signed by this mesh's owner key")
		return
	case p.MeshRootKey != mesh.RootKey:
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, "the invite carries the wrong mesh root key")
		return
	case p.expired(time.Now()):
		writeHTTPError(w, http.StatusBadRequest, "invite_expired", "the invite has already expired")
		return
	}
	inv := storedInvite{ID: newInviteID(), Token: token, MeshID: mesh.ID, Role: p.Role, MaxUses: req.MaxUses,
		ExpiresAt: time.Unix(p.ExpiresAt, 0), CreatedAt: time.Now()}
	if err := b.store.CreateInvite(r.Context(), inv, inviteCreatedAudit(inv, mesh.OwnerPubkey, 1)); errors.Is(err, errExists) {
		writeHTTPError(w, http.StatusConflict, "invite_exists", "this invite is already registered")
		return
	} else if err != nil {
		writeStoreUnavailable(w)
		return
	}
	writeJSON(w, http.StatusOK, InviteCreateResponse{OK: true, ID: inv.ID, URL: inviteURL(token),
		ExpiresAt: isoTime(inv.ExpiresAt), MaxUses: inv.MaxUses, Role: inv.Role})
}

// newInviteID is a short id for an invite: what lists show and revocation
// names.
func newInviteID() string { return randomHex(6) }

// inviteCreatedAudit records a registered invite.
func inviteCreatedAudit(inv storedInvite, actor string, version int) auditEvent {
	return auditEvent{MeshID: inv.MeshID, Type: auditInviteCreated, Actor: actor, CreatedAt: inv.CreatedAt, Payload: map[string]any{
		"inviteId": inv.ID, "version": version, "role": inv.Role, "maxUses": inv.MaxUses, "expiresAt": isoTime(inv.ExpiresAt)}}
}

// Joining.

// JoinRequest is claudemesh's POST /join body.
type JoinRequest struct {
	InviteToken   string          `json:"invite_token"`
	InvitePayload json.RawMessage `json:"invite_payload,omitempty"` // informative; the token is authoritative
	PeerPubkey    string          `json:"peer_pubkey"`
	DisplayName   string          `json:"display_name"`
}

// JoinResponse answers a join.
type JoinResponse struct {
	OK            bool   `json:"ok"`
	MemberID      string `json:"memberId"`
	AlreadyMember bool   `json:"alreadyMember,omitempty"`
	MeshID        string `json:"meshId"`
	Role          string `json:"role"`
}

func (b *Broker) handleJoin(w http.ResponseWriter, r *http.Request) {
	if herr := b.admitHandshake(remoteIP(r), time.Now()); herr != nil {
		writeHTTPError(w, http.StatusTooManyRequests, codeRateLimit, herr.message)
		return
	}
	var req JoinRequest
	if !decodeBody(w, r, b.opts.MaxMessageBytes, &req) {
		return
	}
	if !isHexKey(req.PeerPubkey) {
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, "peer_pubkey must be 64 lowercase hex")
		return
	}
	if len(req.DisplayName) > maxNameLen {
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, "display_name is too long")
		return
	}
	fail := func(code, message string) { writeHTTPError(w, http.StatusBadRequest, code, message) }
	p, token, err := parseInvite(req.InviteToken)
	switch {
	case errors.Is(err, errInviteBadSignature):
		fail("invite_bad_signature", "the invite's signature does not verify")
		return
	case err != nil:
		fail(codeInvalid, err.Error())
		return
	}
	mesh, err := b.store.MeshByID(r.Context(), p.MeshID)
	switch {
	case errors.Is(err, errNotFound):
		fail("mesh_not_found", "no mesh "+p.MeshID+" on this broker")
		return
	case err != nil:
		writeStoreUnavailable(w)
		return
	case mesh.OwnerPubkey == "":
		fail("mesh_missing_owner_key", "the mesh has no owner key")
		return
	case mesh.OwnerPubkey != p.OwnerPubkey:
		fail("invite_owner_mismatch", "the invite is not signed by this mesh's owner key")
		return
	}
	display := cmp.Or(req.DisplayName, "member-"+req.PeerPubkey[:8])
	res, err := b.store.RedeemInvite(r.Context(), redeemRequest{Token: token, MeshID: mesh.ID, Pubkey: req.PeerPubkey,
		DisplayName: display, Now: time.Now(), NewMemberID: newID()})
	var je *joinError
	if errors.As(err, &je) {
		status := http.StatusBadRequest
		if je.Code == "member_revoked" {
			status = http.StatusForbidden
		}
		writeHTTPError(w, status, je.Code, je.Message)
		return
	}
	if err != nil {
		writeStoreUnavailable(w)
		return
	}
	writeJSON(w, http.StatusOK, JoinResponse{OK: true, MemberID: res.MemberID, AlreadyMember: res.AlreadyMember, MeshID: mesh.ID, Role: p.Role})
}

// mustJSON encodes a value the broker built itself.
func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return data
}
