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
	"unicode"
	"unicode/utf8"
)

func badRequest(code, format string, a ...any) *apiError {
	return newAPIError(http.StatusBadRequest, code, fmt.Sprintf(format, a...))
}

// registerSession validates a registration, stores the session keypair if
// the sessions dir has none for this session yet, and registers it.
func (d *Daemon) registerSession(b RegisterRequest) (RegisterReply, error) {
	b.Token = strings.ToLower(b.Token)
	if !isSessionToken(b.Token) {
		return RegisterReply{}, badRequest("invalid_token", "token must be 64 hex characters")
	}
	if b.SessionID == "" || b.Mesh == "" || b.DisplayName == "" || b.Pid <= 0 {
		return RegisterReply{}, badRequest("missing_field", "session_id, mesh, display_name and pid are all required")
	}
	if !safePathName(b.SessionID) {
		return RegisterReply{}, badRequest("invalid_session_id", "session_id may hold only letters, digits, '.', '_' and '-'")
	}
	if !safePathName(b.Mesh) {
		return RegisterReply{}, badRequest("invalid_mesh", "mesh is not a valid slug")
	}
	e, ok := d.mesh(b.Mesh)
	if !ok {
		return RegisterReply{}, d.errMeshNotAttached(b.Mesh)
	}
	s := &Session{
		Token: b.Token, SessionID: b.SessionID, Mesh: b.Mesh, DisplayName: b.DisplayName, Pid: b.Pid,
		Cwd: b.Cwd, Role: b.Role, Groups: b.Groups,
	}
	if b.Presence != nil {
		p, err := validatePresence(b.Presence, e)
		if err != nil {
			return RegisterReply{}, err
		}
		stored, _, err := storeSessionKeypair(d.paths.SessionKeyFile(b.Mesh, b.SessionID), b.Mesh, b.SessionID, p.keypair)
		if err != nil {
			return RegisterReply{}, fmt.Errorf("store session key: %w", err)
		}
		if stored.PublicHex() != p.SessionPubkey {
			return RegisterReply{}, newAPIError(http.StatusConflict, "session_key_conflict",
				"this session id already has a different keypair in the sessions dir")
		}
		s.Presence = p
	}
	d.sessions.Register(s)
	return RegisterReply{OK: true, RegisteredAt: s.RegisteredAt.UnixMilli(), PresenceAccepted: s.Presence != nil,
		TokenPrefix: s.TokenPrefix()}, nil
}

// validatePresence checks a presence block: well-formed keys, a secret
// that matches its public key, and an attestation by this mesh's member
// key that is in force.
func validatePresence(p *PresenceRegistration, e *meshEntry) (*SessionPresence, error) {
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
	awaitFirstConnect(ctx, e.Link)
	return e.Link.Request(ctx, frame, replyTypes...)
}

// awaitFirstConnect waits, briefly, for a link whose first connect is under
// way: a daemon a CLI call has just autospawned is asked before its links
// are up. A moment's wait answers that call; a link that fails still fails
// it.
func awaitFirstConnect(ctx context.Context, l *Link) {
	if l.State() != LinkConnecting {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, firstConnectGrace)
	defer cancel()
	_ = l.WaitOpen(wctx)
}

// listPeers asks mesh e's broker for its peer list, marks the sessions this
// daemon let go as not connected, and learns the names in it for pushes that
// come without one.
func (d *Daemon) listPeers(ctx context.Context, e *meshEntry) ([]PeerRow, error) {
	raw, err := d.rpc(ctx, e, ListPeersFrame{Type: frameListPeers}, framePeersList)
	if err != nil {
		return nil, err
	}
	var f PeersListFrame
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("bad peers_list: %w", err)
	}
	d.markDeparted(f.Peers, time.Now())
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

// replyItems takes the list under field out of a broker's reply frame.
func replyItems(raw json.RawMessage, field string) ([]json.RawMessage, error) {
	var f map[string]json.RawMessage
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, err
	}
	if list, ok := f[field]; ok {
		if err := json.Unmarshal(list, &items); err != nil {
			return nil, err
		}
	}
	return items, nil
}

// listAcross asks every mesh for a list — frame, answered by a reply frame
// that holds the items under field — and returns all the items, each with
// its mesh, and the meshes that failed.
func listAcross[T any](ctx context.Context, d *Daemon, meshes []*meshEntry, frame any, reply, field string) ([]MeshRow[T], map[string]string, error) {
	return fanOut(meshes, func(e *meshEntry) ([]MeshRow[T], error) {
		raw, err := d.rpc(ctx, e, frame, reply)
		if err != nil {
			return nil, err
		}
		items, err := replyItems(raw, field)
		if err != nil {
			return nil, fmt.Errorf("bad %s: %w", reply, err)
		}
		return meshRows[T](items, e.Mesh.Slug)
	})
}

// firstAcross asks the meshes in turn for one item — frame, answered by a
// reply frame from which pick takes the item, or nil when that mesh has
// none — and returns the first found, with its mesh. Found nowhere, it
// returns nil, or the first failure: when some mesh could not be asked,
// "not found" would be a guess.
func firstAcross[T any](ctx context.Context, d *Daemon, meshes []*meshEntry, frame any, reply string,
	pick func(raw json.RawMessage) (json.RawMessage, error)) (*MeshRow[T], error) {
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
			r, err := newMeshRow[T](item, e.Mesh.Slug)
			return &r, err
		}
	}
	return nil, firstErr
}

// Peers.

func (d *Daemon) peers(ctx context.Context, meshes []*meshEntry) (PeersReply, error) {
	rows, failed, err := listAcross[PeerRow](ctx, d, meshes, ListPeersFrame{Type: frameListPeers}, framePeersList, "peers")
	now := time.Now()
	for _, r := range rows {
		var key string
		if json.Unmarshal(r.Fields["pubkey"], &key) == nil && d.departedSince(key, now) {
			r.Fields["connected"] = json.RawMessage("false")
		}
	}
	return PeersReply{Peers: rows, Errors: failed}, err
}

// State.

func (d *Daemon) getState(ctx context.Context, meshes []*meshEntry, key string) (StateReply, error) {
	m, err := firstAcross[StateEntry](ctx, d, meshes, GetStateFrame{Type: frameGetState, Key: key}, frameStateResult,
		func(raw json.RawMessage) (json.RawMessage, error) {
			var r StateResultFrame
			if err := json.Unmarshal(raw, &r); err != nil || stateMissing(r.StateEntry) {
				return nil, err
			}
			return json.Marshal(r.StateEntry)
		})
	switch {
	case err != nil:
		return StateReply{}, err
	case m == nil:
		return StateReply{}, newAPIError(http.StatusNotFound, "state_not_found", "no value for "+key).with("key", key)
	}
	return StateReply{State: m}, nil
}

// stateMissing is how brokers say a key is unset: value null, no author.
func stateMissing(s StateEntry) bool {
	v := bytes.TrimSpace(s.Value)
	return (len(v) == 0 || bytes.Equal(v, []byte("null"))) && s.UpdatedAt == ""
}

func (d *Daemon) listState(ctx context.Context, meshes []*meshEntry) (StateReply, error) {
	rows, failed, err := listAcross[StateEntry](ctx, d, meshes, ListStateFrame{Type: frameListState}, frameStateList, "entries")
	return StateReply{Entries: &rows, Errors: failed}, err
}

// setState writes a key and confirms it: by the broker's reply when it
// sends one, else by reading the key back.
func (d *Daemon) setState(ctx context.Context, e *meshEntry, key string, value json.RawMessage) (StateSetReply, error) {
	cctx, cancel := context.WithTimeout(ctx, max(d.opts.RPCTimeout/3, 100*time.Millisecond))
	_, err := e.Link.Request(cctx, SetStateFrame{Type: frameSetState, Key: key, Value: value}, frameStateResult, frameAck)
	cancel()
	if errors.Is(err, errBrokerTimeout) {
		// A broker that does not answer set_state: read the key back.
		raw, gerr := d.rpc(ctx, e, GetStateFrame{Type: frameGetState, Key: key}, frameStateResult)
		if gerr != nil {
			return StateSetReply{}, gerr
		}
		var r StateResultFrame
		if json.Unmarshal(raw, &r) != nil || !sameJSON(r.Value, value) {
			return StateSetReply{}, newAPIError(http.StatusGatewayTimeout, "state_unconfirmed", "the broker did not confirm the write")
		}
		err = nil
	}
	if err != nil {
		return StateSetReply{}, err
	}
	// The broker tells the other connections; the setter's own stream hears
	// it from here.
	d.bus.Publish(Event{Kind: eventState, Mesh: e.Mesh.Slug, Data: &StateEvent{Mesh: e.Mesh.Slug, Key: key, Value: value, UpdatedBy: d.memberName()}})
	return StateSetReply{OK: true, Key: key, Mesh: e.Mesh.Slug}, nil
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

func (d *Daemon) recall(ctx context.Context, meshes []*meshEntry, q string) (RecallReply, error) {
	rows, failed, err := listAcross[Memory](ctx, d, meshes, RecallFrame{Type: frameRecall, Query: q}, frameMemoryResults, "memories")
	return RecallReply{Matches: rows, Errors: failed}, err
}

func (d *Daemon) remember(ctx context.Context, e *meshEntry, content string, tags []string) (RememberReply, error) {
	raw, err := d.rpc(ctx, e, RememberFrame{Type: frameRemember, Content: content, Tags: tags}, frameMemoryStored)
	if err != nil {
		return RememberReply{}, err
	}
	var r MemoryStoredFrame
	if err := json.Unmarshal(raw, &r); err != nil || r.ID == "" {
		return RememberReply{}, newAPIError(http.StatusBadGateway, "broker_bad_reply", "memory_stored without an id")
	}
	d.bus.Publish(Event{Kind: eventMemory, Mesh: e.Mesh.Slug, Data: &MemoryEvent{Mesh: e.Mesh.Slug, ID: r.ID, Action: "remembered", Content: content}})
	return RememberReply{ID: r.ID, Mesh: e.Mesh.Slug}, nil
}

func (d *Daemon) forget(ctx context.Context, e *meshEntry, id string) (ForgetReply, error) {
	raw, err := d.rpc(ctx, e, ForgetFrame{Type: frameForget, MemoryID: id}, frameAck)
	if err != nil {
		return ForgetReply{}, err
	}
	var ack AckFrame
	_ = json.Unmarshal(raw, &ack)
	if ack.Error != "" {
		return ForgetReply{}, newAPIError(http.StatusBadGateway, "broker_error", ack.Error)
	}
	d.bus.Publish(Event{Kind: eventMemory, Mesh: e.Mesh.Slug, Data: &MemoryEvent{Mesh: e.Mesh.Slug, ID: id, Action: "forgotten"}})
	return ForgetReply{OK: true, ID: id, Mesh: e.Mesh.Slug}, nil
}

// Skills.

func (d *Daemon) listSkills(ctx context.Context, meshes []*meshEntry, query string) (SkillsReply, error) {
	rows, failed, err := listAcross[Skill](ctx, d, meshes, ListSkillsFrame{Type: frameListSkills, Query: query}, frameSkillList, "skills")
	return SkillsReply{Skills: rows, Errors: failed}, err
}

func (d *Daemon) getSkill(ctx context.Context, meshes []*meshEntry, name string) (SkillReply, error) {
	m, err := firstAcross[Skill](ctx, d, meshes, SkillNameFrame{Type: frameGetSkill, Name: name}, frameSkillData,
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
		return SkillReply{}, err
	case m == nil:
		return SkillReply{}, newAPIError(http.StatusNotFound, "skill_not_found", "no skill named "+name).with("name", name)
	}
	return SkillReply{Skill: *m}, nil
}

func (d *Daemon) shareSkill(ctx context.Context, e *meshEntry, f ShareSkillFrame) (SkillActionReply, error) {
	f.Type, f.ReqID = frameShareSkill, ""
	raw, err := d.rpc(ctx, e, f, frameSkillAck)
	if err != nil {
		return SkillActionReply{}, err
	}
	var ack SkillAckFrame
	_ = json.Unmarshal(raw, &ack)
	return SkillActionReply{OK: true, Name: f.Name, Action: ack.Action, Mesh: e.Mesh.Slug}, nil
}

func (d *Daemon) removeSkill(ctx context.Context, e *meshEntry, name string) (SkillActionReply, error) {
	raw, err := d.rpc(ctx, e, SkillNameFrame{Type: frameRemoveSkill, Name: name}, frameSkillAck)
	if err != nil {
		return SkillActionReply{}, err
	}
	var ack SkillAckFrame
	_ = json.Unmarshal(raw, &ack)
	if ack.Action == "not_found" {
		return SkillActionReply{}, newAPIError(http.StatusNotFound, "skill_not_found", "no skill named "+name).with("name", name)
	}
	return SkillActionReply{OK: true, Name: name, Action: ack.Action, Mesh: e.Mesh.Slug}, nil
}

// Profile.

func (p *ProfileRequest) validate() error {
	if p.Status != nil && !validStatus(*p.Status) {
		return badRequest("invalid_status", "status must be idle, working or dnd")
	}
	if len(p.applied()) == 0 {
		return badRequest("missing_field", "nothing to change: give summary, status, visible, avatar, title, bio, capabilities, display_name or receipts")
	}
	if p.Receipts != nil && *p.Receipts != sharesDelivered && *p.Receipts != sharesSurfaced {
		return badRequest("invalid_receipts", "receipts must be delivered (senders learn a message reached this machine) or surfaced (and that it was shown)")
	}
	if p.DisplayName != nil {
		if len(p.applied()) > 1 {
			return badRequest("display_name_alone", "display_name goes alone: renaming reconnects the session")
		}
		name := strings.TrimSpace(*p.DisplayName)
		if name == "" || utf8.RuneCountInString(name) > 64 || strings.ContainsFunc(name, unicode.IsControl) {
			return badRequest("invalid_display_name", "display_name must be 1 to 64 characters, none of them control characters")
		}
		p.DisplayName = &name
	}
	return nil
}

func (p *ProfileRequest) applied() []string {
	var out []string
	for _, f := range []struct {
		name string
		set  bool
	}{{"summary", p.Summary != nil}, {"status", p.Status != nil}, {"visible", p.Visible != nil},
		{"avatar", p.Avatar != nil}, {"title", p.Title != nil}, {"bio", p.Bio != nil}, {"capabilities", p.Capabilities != nil},
		{"display_name", p.DisplayName != nil}, {"receipts", p.Receipts != nil}} {
		if f.set {
			out = append(out, f.name)
		}
	}
	return out
}

// setProfile applies a profile change. A session caller changes its own
// presence (its session link); otherwise the member link of the chosen
// mesh, or of every mesh when none is chosen.
func (d *Daemon) setProfile(ctx context.Context, s *Session, p ProfileRequest) (ProfileReply, error) {
	if p.DisplayName != nil {
		return d.renameSession(s, *p.DisplayName)
	}
	var receiptMeshes []string
	if p.Receipts != nil {
		var err error
		if receiptMeshes, err = d.applyReceiptsProfile(ctx, s, p.Mesh, *p.Receipts); err != nil {
			return ProfileReply{}, err
		}
		rest := p
		rest.Receipts = nil
		if len(rest.applied()) == 0 {
			via := linkMember
			if s != nil && (p.Mesh == "" || p.Mesh == s.Mesh) && s.Presence != nil {
				via = linkSession
			}
			return ProfileReply{OK: true, Applied: p.applied(), Meshes: receiptMeshes, Via: via}, nil
		}
	}
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
			return ProfileReply{}, err
		}
		for _, e := range meshes {
			targets = append(targets, target{e.Mesh.Slug, e.Link})
		}
	}
	if len(targets) == 0 {
		return ProfileReply{}, newAPIError(http.StatusServiceUnavailable, "no_mesh", "no mesh joined yet")
	}
	for _, t := range targets {
		if t.link.State() != LinkOpen {
			return ProfileReply{}, fmt.Errorf("%w: mesh %s (%s)", errLinkNotOpen, t.mesh, t.link.State())
		}
	}
	var meshes []string
	for _, t := range targets {
		if err := applyProfile(ctx, t.link, p, d.opts.RPCTimeout); err != nil {
			return ProfileReply{}, fmt.Errorf("mesh %s: %w", t.mesh, err)
		}
		meshes = append(meshes, t.mesh)
		// The broker tells nobody of a status or summary change: the
		// stream says this machine made one.
		d.bus.Publish(Event{Kind: eventProfile, Mesh: t.mesh, Data: &ProfileEvent{Mesh: t.mesh, Applied: p.applied(), Via: via}})
	}
	if via == linkSession && p.Status != nil {
		// The session's own choice: it holds until a hook says otherwise,
		// and a dnd for good.
		d.states.update(s, func(st *sessionState) {
			st.manualStatus, st.hookStatus, st.sentStatus = *p.Status, "", *p.Status
		})
	}
	return ProfileReply{OK: true, Applied: p.applied(), Meshes: meshes, Via: via}, nil
}

// renameSession gives the calling session a new display name: kept in the
// sessions dir (a plain session's next registration, after --resume, takes
// it), and the session registered again under it, which reconnects its
// link with the new name.
func (d *Daemon) renameSession(s *Session, name string) (ProfileReply, error) {
	if s == nil {
		return ProfileReply{}, badRequest("no_session", "display_name renames a session: run it inside one (claudemesh launch, or a claude with claudemesh's hooks)")
	}
	if err := storeSessionName(d.paths.SessionNameFile(s.Mesh, s.SessionID), name); err != nil {
		return ProfileReply{}, fmt.Errorf("keeping the name: %w", err)
	}
	renamed := *s
	renamed.DisplayName = name
	d.sessions.Register(&renamed)
	return ProfileReply{OK: true, Applied: []string{"display_name"}, Meshes: []string{s.Mesh}, Via: linkSession}, nil
}

// applyProfile sends the frames of one profile change on one link. Status
// and summary have no reply on the wire; visible and the profile fields
// are confirmed by the broker's ack.
func applyProfile(ctx context.Context, l *Link, p ProfileRequest, timeout time.Duration) error {
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
