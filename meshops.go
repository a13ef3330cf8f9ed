// The daemon's operations behind the IPC routes: session registration and
// the broker-backed reads and writes (peers, state, memory, skills,
// profile).
//
// Policy:
//   - Reads without a mesh cover the caller's session mesh, else every
//     joined mesh; writes need one mesh (explicit, the session's, or the
//     only one) and otherwise fail with mesh_required.
//   - A link that is not open is an error (503 broker_unavailable), never
//     a fake success; writes are confirmed by the broker when it can.
//   - When several meshes are read, a mesh that fails is reported under
//     "errors" next to the others' results.
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// registerRequest is the body of POST /v1/sessions/register.
type registerRequest struct {
	Token       string           `json:"token"`
	SessionID   string           `json:"session_id"`
	Mesh        string           `json:"mesh"`
	DisplayName string           `json:"display_name"`
	Pid         int              `json:"pid"`
	Cwd         string           `json:"cwd"`
	Role        string           `json:"role"`
	Groups      []any            `json:"groups"`
	Presence    *presenceRequest `json:"presence"`
}

// presenceRequest is a registration's presence block (the shape clients
// send as PresenceRegistration); a missing attestation is an error.
type presenceRequest struct {
	SessionPubkey     string                   `json:"session_pubkey"`
	SessionSecretKey  string                   `json:"session_secret_key"`
	ParentAttestation *AttestationRegistration `json:"parent_attestation"`
}

func badRequest(code, format string, a ...any) *apiError {
	return newAPIError(http.StatusBadRequest, code, fmt.Sprintf(format, a...))
}

// registerSession validates a registration, stores the session keypair if
// the sessions dir has none for this session yet, and registers it.
func (d *Daemon) registerSession(b registerRequest) (any, error) {
	b.Token = strings.ToLower(b.Token)
	if !isSessionToken(b.Token) {
		return nil, badRequest("invalid_token", "token must be 64 hex characters")
	}
	if b.SessionID == "" || b.Mesh == "" || b.DisplayName == "" || b.Pid <= 0 {
		return nil, badRequest("missing_field", "session_id, mesh, display_name and pid are all required")
	}
	if !safePathName(b.SessionID) {
		return nil, badRequest("invalid_session_id", "session_id may hold only letters, digits, '.', '_' and '-'")
	}
	if !safePathName(b.Mesh) {
		return nil, badRequest("invalid_mesh", "mesh is not a valid slug")
	}
	e, ok := d.mesh(b.Mesh)
	if !ok {
		return nil, d.errMeshNotAttached(b.Mesh)
	}
	s := &Session{
		Token: b.Token, SessionID: b.SessionID, Mesh: b.Mesh, DisplayName: b.DisplayName, Pid: b.Pid,
		Cwd: b.Cwd, Role: b.Role,
	}
	for _, g := range b.Groups {
		if gs, ok := g.(string); ok && gs != "" {
			s.Groups = append(s.Groups, gs)
		}
	}
	if b.Presence != nil {
		p, err := validatePresence(b.Presence, e)
		if err != nil {
			return nil, err
		}
		stored, _, err := storeSessionKeypair(d.paths.SessionKeyFile(b.Mesh, b.SessionID), b.Mesh, b.SessionID, p.keypair)
		if err != nil {
			return nil, fmt.Errorf("store session key: %w", err)
		}
		if stored.PublicHex() != p.SessionPubkey {
			return nil, newAPIError(http.StatusConflict, "session_key_conflict",
				"this session id already has a different keypair in the sessions dir")
		}
		s.Presence = p
	}
	d.sessions.Register(s)
	return map[string]any{
		"ok": true, "registered_at": s.RegisteredAt.UnixMilli(), "presence_accepted": s.Presence != nil,
		"token_prefix": s.TokenPrefix(),
	}, nil
}

// validatePresence checks a presence block: well-formed keys, a secret
// that matches its public key, and an attestation by this mesh's member
// key that is in force.
func validatePresence(p *presenceRequest, e *meshEntry) (*SessionPresence, error) {
	pub, sec := strings.ToLower(p.SessionPubkey), strings.ToLower(p.SessionSecretKey)
	if !isHexKey(pub) {
		return nil, badRequest("invalid_presence", "presence.session_pubkey must be 64 hex characters")
	}
	if !isHexSecret(sec) {
		return nil, badRequest("invalid_presence", "presence.session_secret_key must be 128 hex characters")
	}
	kp, err := keypairFromHex(pub, sec)
	if err != nil {
		return nil, badRequest("invalid_presence", "presence: %v", err)
	}
	a := p.ParentAttestation
	if a == nil {
		return nil, badRequest("invalid_presence", "presence.parent_attestation is required")
	}
	att := Attestation{
		SessionPubkey: strings.ToLower(a.SessionPubkey), ParentMemberPubkey: strings.ToLower(a.ParentMemberPubkey),
		ExpiresAt: a.ExpiresAt, Signature: strings.ToLower(a.Signature),
	}
	switch {
	case att.SessionPubkey != pub:
		return nil, badRequest("invalid_presence", "the attestation is for another session key")
	case att.ParentMemberPubkey != e.Key.PublicHex():
		return nil, badRequest("invalid_presence", "the attestation is not by this mesh's member key")
	case att.ExpiresAt <= time.Now().UnixMilli():
		return nil, badRequest("invalid_presence", "the attestation has expired")
	case !verifySignature(att.ParentMemberPubkey, attestationSignedString(att.ParentMemberPubkey, att.SessionPubkey, att.ExpiresAt), att.Signature):
		return nil, badRequest("invalid_presence", "the attestation signature does not verify")
	}
	return &SessionPresence{SessionPubkey: pub, Attestation: att, keypair: kp}, nil
}

// Mesh selection.

// pickMesh chooses the one mesh a write goes to.
func (d *Daemon) pickMesh(explicit string, s *Session) (*meshEntry, error) {
	slug := explicit
	if slug == "" && s != nil {
		slug = s.Mesh
	}
	if slug != "" {
		e, ok := d.mesh(slug)
		if !ok {
			return nil, d.errMeshNotAttached(slug)
		}
		return e, nil
	}
	all := d.allMeshes()
	switch len(all) {
	case 1:
		return all[0], nil
	case 0:
		return nil, newAPIError(http.StatusServiceUnavailable, "no_mesh", "no mesh joined yet").with("attached", []string{})
	}
	return nil, newAPIError(http.StatusBadRequest, "mesh_required", fmt.Sprintf("daemon attached to %d meshes; pass a mesh", len(all))).
		with("attached", d.meshSlugs())
}

// errMeshNotAttached is the 404 for a mesh slug this daemon has not joined;
// it lists the meshes it has.
func (d *Daemon) errMeshNotAttached(slug string) *apiError {
	return newAPIError(http.StatusNotFound, "mesh_not_attached", "this daemon has not joined mesh "+slug).
		with("mesh", slug).with("attached", d.meshSlugs())
}

// meshesFor chooses the meshes a read covers.
func (d *Daemon) meshesFor(explicit string, s *Session) ([]*meshEntry, error) {
	if explicit != "" || s != nil {
		e, err := d.pickMesh(explicit, s)
		if err != nil {
			return nil, err
		}
		return []*meshEntry{e}, nil
	}
	return d.allMeshes(), nil
}

func (d *Daemon) allMeshes() []*meshEntry {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*meshEntry, 0, len(d.meshes))
	for _, e := range d.meshes {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Mesh.Slug < out[j].Mesh.Slug })
	return out
}

// errBanned is the refusal of anything on a mesh whose broker banned this
// machine's member: its link has stopped for good, so nothing can be sent
// or asked there, now or later.
func errBanned(slug string) *apiError {
	return newAPIError(http.StatusForbidden, "banned", "this machine's member is banned from mesh "+slug).with("mesh", slug)
}

// rpc runs one request on a mesh's member link under the RPC timeout.
func (d *Daemon) rpc(ctx context.Context, e *meshEntry, frame any, replyTypes ...string) (json.RawMessage, error) {
	if e.Link.State() == LinkBanned {
		return nil, errBanned(e.Mesh.Slug)
	}
	ctx, cancel := context.WithTimeout(ctx, d.opts.RPCTimeout)
	defer cancel()
	if e.Link.State() == LinkConnecting {
		// The link's first connect is under way: a daemon a CLI call has
		// just autospawned is asked before its links are up. A moment's
		// wait answers that call; a link that fails still fails it.
		wctx, wcancel := context.WithTimeout(ctx, firstConnectGrace)
		_ = e.Link.WaitOpen(wctx)
		wcancel()
	}
	return e.Link.Request(ctx, frame, replyTypes...)
}

// listPeers asks mesh e's broker for its peer list, and learns the names in
// it for pushes that come without one.
func (d *Daemon) listPeers(ctx context.Context, e *meshEntry) ([]PeerRow, error) {
	raw, err := d.rpc(ctx, e, ListPeersFrame{Type: frameListPeers}, framePeersList)
	if err != nil {
		return nil, err
	}
	var f PeersListFrame
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("bad peers_list: %w", err)
	}
	d.senders.learnPeers(e.Mesh.Slug, f.Peers)
	return f.Peers, nil
}

// firstConnectGrace bounds how long a request waits for a link's first
// connect.
const firstConnectGrace = 2 * time.Second

// fanOut runs fn for every mesh concurrently. With one mesh its error is
// the result; with several, failures are reported per mesh.
func fanOut[T any](meshes []*meshEntry, fn func(e *meshEntry) ([]T, error)) ([]T, map[string]string, error) {
	results := make([][]T, len(meshes))
	errs := make([]error, len(meshes))
	var wg sync.WaitGroup
	for i, e := range meshes {
		wg.Add(1)
		go func() { defer wg.Done(); results[i], errs[i] = fn(e) }()
	}
	wg.Wait()
	if len(meshes) == 1 && errs[0] != nil {
		return nil, nil, errs[0]
	}
	out := []T{}
	failed := map[string]string{}
	for i, e := range meshes {
		if errs[i] != nil {
			failed[e.Mesh.Slug] = errs[i].Error()
			continue
		}
		out = append(out, results[i]...)
	}
	return out, failed, nil
}

// withMesh decodes a JSON object and adds "mesh" to it, keeping every field
// the broker sent (including ones newer than us).
func withMesh(raw json.RawMessage, slug string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	if m == nil {
		m = map[string]json.RawMessage{}
	}
	m["mesh"], _ = json.Marshal(slug)
	return m, nil
}

func addMeshAll(items []json.RawMessage, slug string) ([]map[string]json.RawMessage, error) {
	out := make([]map[string]json.RawMessage, 0, len(items))
	for _, it := range items {
		m, err := withMesh(it, slug)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// listAcross asks every mesh for a list — frame, answered by a reply
// frame that holds the items under field — and answers with all the items,
// each with its mesh, under key (and the meshes that failed under
// "errors").
func (d *Daemon) listAcross(ctx context.Context, meshes []*meshEntry, frame any, reply, field, key string) (any, error) {
	rows, failed, err := fanOut(meshes, func(e *meshEntry) ([]map[string]json.RawMessage, error) {
		raw, err := d.rpc(ctx, e, frame, reply)
		if err != nil {
			return nil, err
		}
		var f map[string]json.RawMessage
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &f); err != nil {
			return nil, fmt.Errorf("bad %s: %w", reply, err)
		}
		if list, ok := f[field]; ok {
			if err := json.Unmarshal(list, &items); err != nil {
				return nil, fmt.Errorf("bad %s: %w", reply, err)
			}
		}
		return addMeshAll(items, e.Mesh.Slug)
	})
	if err != nil {
		return nil, err
	}
	out := map[string]any{key: rows}
	if len(failed) > 0 {
		out["errors"] = failed
	}
	return out, nil
}

// firstAcross asks the meshes in turn for one item — frame, answered by a
// reply frame from which pick takes the item, or nil when that mesh has
// none — and returns the first found, with its mesh. Found nowhere, it
// returns nil, or the first failure: when some mesh could not be asked,
// "not found" would be a guess.
func (d *Daemon) firstAcross(ctx context.Context, meshes []*meshEntry, frame any, reply string,
	pick func(raw json.RawMessage) (json.RawMessage, error)) (map[string]json.RawMessage, error) {
	var firstErr error
	for _, e := range meshes {
		raw, err := d.rpc(ctx, e, frame, reply)
		if err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		item, err := pick(raw)
		if err != nil {
			return nil, fmt.Errorf("bad %s: %w", reply, err)
		}
		if item != nil {
			return withMesh(item, e.Mesh.Slug)
		}
	}
	return nil, firstErr
}

// Peers.

func (d *Daemon) peers(ctx context.Context, meshes []*meshEntry) (any, error) {
	return d.listAcross(ctx, meshes, ListPeersFrame{Type: frameListPeers}, framePeersList, "peers", "peers")
}

// State.

func (d *Daemon) getState(ctx context.Context, meshes []*meshEntry, key string) (any, error) {
	m, err := d.firstAcross(ctx, meshes, GetStateFrame{Type: frameGetState, Key: key}, frameStateResult,
		func(raw json.RawMessage) (json.RawMessage, error) {
			var r StateResultFrame
			if err := json.Unmarshal(raw, &r); err != nil || stateMissing(r.StateEntry) {
				return nil, err
			}
			return json.Marshal(r.StateEntry)
		})
	switch {
	case err != nil:
		return nil, err
	case m == nil:
		return nil, newAPIError(http.StatusNotFound, "state_not_found", "no value for "+key).with("key", key)
	}
	return map[string]any{"state": m}, nil
}

// stateMissing is how brokers say a key is unset: value null, no author.
func stateMissing(s StateEntry) bool {
	v := bytes.TrimSpace(s.Value)
	return (len(v) == 0 || bytes.Equal(v, []byte("null"))) && s.UpdatedAt == ""
}

func (d *Daemon) listState(ctx context.Context, meshes []*meshEntry) (any, error) {
	return d.listAcross(ctx, meshes, ListStateFrame{Type: frameListState}, frameStateList, "entries", "entries")
}

// setState writes a key and confirms it: by the broker's reply when it
// sends one, else by reading the key back.
func (d *Daemon) setState(ctx context.Context, e *meshEntry, key string, value json.RawMessage) (any, error) {
	cctx, cancel := context.WithTimeout(ctx, max(d.opts.RPCTimeout/3, 100*time.Millisecond))
	_, err := e.Link.Request(cctx, SetStateFrame{Type: frameSetState, Key: key, Value: value}, frameStateResult, frameAck)
	cancel()
	if errors.Is(err, errBrokerTimeout) {
		// A broker that does not answer set_state: read the key back.
		raw, gerr := d.rpc(ctx, e, GetStateFrame{Type: frameGetState, Key: key}, frameStateResult)
		if gerr != nil {
			return nil, gerr
		}
		var r StateResultFrame
		if json.Unmarshal(raw, &r) != nil || !sameJSON(r.Value, value) {
			return nil, newAPIError(http.StatusGatewayTimeout, "state_unconfirmed", "the broker did not confirm the write")
		}
		err = nil
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"ok": true, "key": key, "mesh": e.Mesh.Slug}, nil
}

func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ca, err1 := canonicalJSON(x)
	cb, err2 := canonicalJSON(y)
	return err1 == nil && err2 == nil && ca == cb
}

// Memory.

func (d *Daemon) recall(ctx context.Context, meshes []*meshEntry, q string) (any, error) {
	return d.listAcross(ctx, meshes, RecallFrame{Type: frameRecall, Query: q}, frameMemoryResults, "memories", "matches")
}

func (d *Daemon) remember(ctx context.Context, e *meshEntry, content string, tags []string) (any, error) {
	raw, err := d.rpc(ctx, e, RememberFrame{Type: frameRemember, Content: content, Tags: tags}, frameMemoryStored)
	if err != nil {
		return nil, err
	}
	var r MemoryStoredFrame
	if err := json.Unmarshal(raw, &r); err != nil || r.ID == "" {
		return nil, newAPIError(http.StatusBadGateway, "broker_bad_reply", "memory_stored without an id")
	}
	return map[string]any{"id": r.ID, "mesh": e.Mesh.Slug}, nil
}

func (d *Daemon) forget(ctx context.Context, e *meshEntry, id string) (any, error) {
	raw, err := d.rpc(ctx, e, ForgetFrame{Type: frameForget, MemoryID: id}, frameAck)
	if err != nil {
		return nil, err
	}
	var ack AckFrame
	_ = json.Unmarshal(raw, &ack)
	if ack.Error != "" {
		return nil, newAPIError(http.StatusBadGateway, "broker_error", ack.Error)
	}
	return map[string]any{"ok": true, "id": id, "mesh": e.Mesh.Slug}, nil
}

// Skills.

func (d *Daemon) listSkills(ctx context.Context, meshes []*meshEntry, query string) (any, error) {
	return d.listAcross(ctx, meshes, ListSkillsFrame{Type: frameListSkills, Query: query}, frameSkillList, "skills", "skills")
}

func (d *Daemon) getSkill(ctx context.Context, meshes []*meshEntry, name string) (any, error) {
	m, err := d.firstAcross(ctx, meshes, SkillNameFrame{Type: frameGetSkill, Name: name}, frameSkillData,
		func(raw json.RawMessage) (json.RawMessage, error) {
			var f struct {
				Skill json.RawMessage `json:"skill"`
			}
			if err := json.Unmarshal(raw, &f); err != nil || len(f.Skill) == 0 || bytes.Equal(f.Skill, []byte("null")) {
				return nil, err
			}
			return f.Skill, nil
		})
	switch {
	case err != nil:
		return nil, err
	case m == nil:
		return nil, newAPIError(http.StatusNotFound, "skill_not_found", "no skill named "+name).with("name", name)
	}
	return map[string]any{"skill": m}, nil
}

func (d *Daemon) shareSkill(ctx context.Context, e *meshEntry, f ShareSkillFrame) (any, error) {
	f.Type, f.ReqID = frameShareSkill, ""
	raw, err := d.rpc(ctx, e, f, frameSkillAck)
	if err != nil {
		return nil, err
	}
	var ack SkillAckFrame
	_ = json.Unmarshal(raw, &ack)
	return map[string]any{"ok": true, "name": f.Name, "action": ack.Action, "mesh": e.Mesh.Slug}, nil
}

func (d *Daemon) removeSkill(ctx context.Context, e *meshEntry, name string) (any, error) {
	raw, err := d.rpc(ctx, e, SkillNameFrame{Type: frameRemoveSkill, Name: name}, frameSkillAck)
	if err != nil {
		return nil, err
	}
	var ack SkillAckFrame
	_ = json.Unmarshal(raw, &ack)
	if ack.Action == "not_found" {
		return nil, newAPIError(http.StatusNotFound, "skill_not_found", "no skill named "+name).with("name", name)
	}
	return map[string]any{"ok": true, "name": name, "action": ack.Action, "mesh": e.Mesh.Slug}, nil
}

// Profile.

// profileRequest is the body of POST /v1/profile. Unknown keys are refused
// so that a typo does not look like success.
type profileRequest struct {
	Summary      *string   `json:"summary"`
	Status       *string   `json:"status"`
	Visible      *bool     `json:"visible"`
	Avatar       *string   `json:"avatar"`
	Title        *string   `json:"title"`
	Bio          *string   `json:"bio"`
	Capabilities *[]string `json:"capabilities"`
	Mesh         string    `json:"mesh"`
}

func (p *profileRequest) strictJSON() {}

func (p *profileRequest) validate() error {
	if p.Status != nil && !validStatus(*p.Status) {
		return badRequest("invalid_status", "status must be idle, working or dnd")
	}
	if len(p.applied()) == 0 {
		return badRequest("missing_field", "nothing to change: give summary, status, visible, avatar, title, bio or capabilities")
	}
	return nil
}

func (p *profileRequest) applied() []string {
	var out []string
	for _, f := range []struct {
		name string
		set  bool
	}{{"summary", p.Summary != nil}, {"status", p.Status != nil}, {"visible", p.Visible != nil},
		{"avatar", p.Avatar != nil}, {"title", p.Title != nil}, {"bio", p.Bio != nil}, {"capabilities", p.Capabilities != nil}} {
		if f.set {
			out = append(out, f.name)
		}
	}
	return out
}

// setProfile applies a profile change. A session caller changes its own
// presence (its session link); otherwise the member link of the chosen
// mesh, or of every mesh when none is chosen.
func (d *Daemon) setProfile(ctx context.Context, s *Session, p profileRequest) (any, error) {
	type target struct {
		mesh string
		link *Link
	}
	var targets []target
	via := linkMember
	if s != nil && (p.Mesh == "" || p.Mesh == s.Mesh) {
		d.mu.Lock()
		sl, ok := d.sessionLinks[s.Token]
		d.mu.Unlock()
		if ok {
			targets, via = []target{{s.Mesh, sl.Link}}, linkSession
		}
	}
	if targets == nil {
		meshes, err := d.meshesFor(p.Mesh, s)
		if err != nil {
			return nil, err
		}
		for _, e := range meshes {
			targets = append(targets, target{e.Mesh.Slug, e.Link})
		}
	}
	if len(targets) == 0 {
		return nil, newAPIError(http.StatusServiceUnavailable, "no_mesh", "no mesh joined yet")
	}
	for _, t := range targets {
		if t.link.State() != LinkOpen {
			return nil, fmt.Errorf("%w: mesh %s (%s)", errLinkNotOpen, t.mesh, t.link.State())
		}
	}
	var meshes []string
	for _, t := range targets {
		if err := applyProfile(ctx, t.link, p, d.opts.RPCTimeout); err != nil {
			return nil, fmt.Errorf("mesh %s: %w", t.mesh, err)
		}
		meshes = append(meshes, t.mesh)
	}
	return map[string]any{"ok": true, "applied": p.applied(), "meshes": meshes, "via": via}, nil
}

// applyProfile sends the frames of one profile change on one link. Status
// and summary have no reply on the wire; visible and the profile fields
// are confirmed by the broker's ack.
func applyProfile(ctx context.Context, l *Link, p profileRequest, timeout time.Duration) error {
	if p.Status != nil {
		if err := l.Write(ctx, SetStatusFrame{Type: frameSetStatus, Status: *p.Status}); err != nil {
			return err
		}
	}
	if p.Summary != nil {
		if err := l.Write(ctx, SetSummaryFrame{Type: frameSetSummary, Summary: *p.Summary}); err != nil {
			return err
		}
	}
	confirm := func(frame any) error {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		_, err := l.Request(cctx, frame, frameAck)
		return err
	}
	if p.Visible != nil {
		if err := confirm(SetVisibleFrame{Type: frameSetVisible, Visible: p.Visible}); err != nil {
			return err
		}
	}
	if p.Avatar != nil || p.Title != nil || p.Bio != nil || p.Capabilities != nil {
		if err := confirm(SetProfileFrame{Type: frameSetProfile, Avatar: p.Avatar, Title: p.Title, Bio: p.Bio, Capabilities: p.Capabilities}); err != nil {
			return err
		}
	}
	return nil
}
