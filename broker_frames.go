// Frames after the handshake other than send, client_ack and moderation:
// presence (list_peers, status, summary, visibility, profile, stats, groups),
// the member list (list_members, our addition), shared state, memory and
// skills.
//
// Policy for frames claudemesh answers with nothing (set_status,
// set_summary, set_stats, join_group, leave_group, set_state): without a
// _reqId they stay silent, as there; with one they are confirmed — a generic
// ack, or state_result for set_state — so a client can know a write landed.
package main

import (
	"context"
	"errors"
	"time"
)

// Presence.

func (b *Broker) handleSetSummary(c *brokerConn, f *SetSummaryFrame, reqID string) {
	b.mutatePeer(c, reqID, false, func(p *peer) { p.summary = f.Summary })
}

func (b *Broker) handleSetStats(c *brokerConn, f *SetStatsFrame, reqID string) {
	b.mutatePeer(c, reqID, false, func(p *peer) { p.stats = f.Stats })
}

// handleSetProfile changes only the profile fields the frame carries.
func (b *Broker) handleSetProfile(c *brokerConn, f *SetProfileFrame, reqID string) {
	b.mutatePeer(c, reqID, true, func(p *peer) {
		if f.Avatar != nil {
			p.profile.Avatar = *f.Avatar
		}
		if f.Title != nil {
			p.profile.Title = *f.Title
		}
		if f.Bio != nil {
			p.profile.Bio = *f.Bio
		}
		if f.Capabilities != nil {
			p.profile.Capabilities = *f.Capabilities
		}
		if f.Role != nil {
			p.profile.Role = *f.Role
		}
		if f.Surfacing != nil {
			p.profile.Surfacing = *f.Surfacing
		}
	})
}

// handleJoinGroup adds the group, or changes the role held in it.
func (b *Broker) handleJoinGroup(c *brokerConn, f *GroupFrame, reqID string) {
	b.mutateMembership(c, reqID, func(p *peer) {
		for i := range p.groups {
			if p.groups[i].Name == f.Name {
				p.groups[i].Role = f.Role
				return
			}
		}
		p.groups = append(p.groups, GroupRef{Name: f.Name, Role: f.Role})
	})
}

func (b *Broker) handleLeaveGroup(c *brokerConn, f *GroupFrame, reqID string) {
	b.mutateMembership(c, reqID, func(p *peer) {
		kept := p.groups[:0]
		for _, x := range p.groups {
			if x.Name != f.Name {
				kept = append(kept, x)
			}
		}
		p.groups = kept
	})
}

// genericAck is claudemesh's reuse of the ack shape as a plain confirmation.
func genericAck(reqID string) AckFrame {
	return AckFrame{Type: frameAck, ID: reqID, MessageID: "", Queued: false, ReqID: reqID}
}

// mutatePeer applies change to the socket's presence and confirms: always
// when alwaysAck (claudemesh replies to set_profile and set_visible), else
// only when the request carried a _reqId.
func (b *Broker) mutatePeer(c *brokerConn, reqID string, alwaysAck bool, change func(p *peer)) {
	b.mu.Lock()
	if c.peer != nil {
		change(c.peer)
	}
	b.mu.Unlock()
	if alwaysAck || reqID != "" {
		c.send(genericAck(reqID))
	}
}

func (b *Broker) handleSetStatus(c *brokerConn, f *SetStatusFrame, reqID string) {
	b.mu.Lock()
	if p := c.peer; p != nil {
		was := p.status
		p.status = f.Status
		// Messages held while working or dnd go out once it is idle again.
		if f.Status == statusIdle && was != statusIdle {
			c.requestDrain()
		}
	}
	b.mu.Unlock()
	if reqID != "" {
		c.send(genericAck(reqID))
	}
}

func (b *Broker) handleSetVisible(c *brokerConn, f *SetVisibleFrame, reqID string) {
	b.mu.Lock()
	var saved <-chan struct{}
	if p := c.peer; p != nil && p.visible != *f.Visible {
		p.visible = *f.Visible
		event := eventPeerVisible
		if !p.visible {
			event = eventPeerHidden
		}
		b.systemPush(b.room(p.meshID), event, SystemEventData{Name: p.displayName, Pubkey: p.key}, func(o *peer) bool { return o == p }, "")
		saved = b.recordPresence(p, true)
	}
	b.mu.Unlock()
	if saved != nil {
		<-saved
	}
	c.send(genericAck(reqID))
}

func (b *Broker) handleListPeers(c *brokerConn, _ *ListPeersFrame, reqID string) {
	b.mu.Lock()
	me := c.peer
	if me == nil {
		b.mu.Unlock()
		return
	}
	meshID, self := me.meshID, *me
	var ps []listedPeer
	for _, p := range b.room(me.meshID).peers {
		// Hidden connections are listed only to their own member.
		if !p.visible && p.memberID != me.memberID {
			continue
		}
		ps = append(ps, listedPeer{connectedAt: p.connectedAt, presenceID: p.presenceID, row: p.row()})
	}
	b.mu.Unlock()
	ps = append(ps, remoteRows(b.remotePresences(meshID), &self)...)
	sortListed(ps)
	rows := make([]PeerRow, 0, len(ps))
	for _, p := range ps {
		rows = append(rows, p.row)
	}
	c.send(PeersListFrame{Type: framePeersList, Peers: rows, ReqID: reqID})
}

// handleListMembers answers with every member of the mesh that is not
// banned, and whether each is online: one of its presences has a socket
// (a hidden presence counts only when its own member asks, and a one-shot
// CLI link, there for one request, not at all).
func (b *Broker) handleListMembers(c *brokerConn, _ *ListMembersFrame, reqID string) {
	members, ok := storeCall(b, c, reqID, func(ctx context.Context, me *peer) ([]storedMember, error) {
		return b.store.Members(ctx, me.meshID)
	})
	if !ok {
		return
	}
	b.mu.Lock()
	me := c.peer
	if me == nil {
		b.mu.Unlock()
		return
	}
	online := map[string]bool{}
	for _, p := range b.room(me.meshID).peers {
		if p.conn != nil && !p.oneShot() && (p.visible || p.memberID == me.memberID) {
			online[p.memberID] = true
		}
	}
	meshID, myMember := me.meshID, me.memberID
	b.mu.Unlock()
	for _, lp := range b.remotePresences(meshID) {
		if lp.Connected && !lp.OneShot && (lp.Visible || lp.MemberID == myMember) {
			online[lp.MemberID] = true
		}
	}
	rows := make([]MemberRow, 0, len(members))
	for _, m := range members {
		if m.RevokedAt == nil {
			rows = append(rows, MemberRow{Pubkey: m.Pubkey, DisplayName: m.DisplayName, Role: m.Role, Online: online[m.ID],
				JoinedAt: isoTime(m.CreatedAt)})
		}
	}
	c.send(MembersListFrame{Type: frameMembersList, Members: rows, ReqID: reqID})
}

// row is p as peers_list shows it. Caller holds b.mu.
func (p *peer) row() PeerRow {
	visible, connected := p.visible, p.conn != nil
	r := PeerRow{Pubkey: p.key, MemberPubkey: p.memberPubkey, DisplayName: p.displayName, Status: p.status,
		Groups: append([]GroupRef{}, p.groups...), SessionID: p.sessionID, ConnectedAt: isoTime(p.connectedAt),
		Cwd: p.cwd, PeerRole: p.role, Hostname: p.hostname, PeerType: p.peerType, Channel: p.channel, Model: p.model,
		Visible: &visible, Connected: &connected}
	if p.summary != "" {
		s := p.summary
		r.Summary = &s
	}
	pr := p.profile
	if pr.Avatar != "" || pr.Title != "" || pr.Bio != "" || len(pr.Capabilities) > 0 || pr.Role != "" || pr.Surfacing != "" {
		r.Profile = &pr
		r.Role = pr.Role
	}
	return r
}

// Shared state.

func (b *Broker) handleSetState(c *brokerConn, f *SetStateFrame, reqID string) {
	var meshID string
	e, ok := storeCall(b, c, reqID, func(ctx context.Context, me *peer) (StateEntry, error) {
		meshID = me.meshID
		e := StateEntry{Key: f.Key, Value: f.Value, UpdatedBy: me.displayName, UpdatedAt: isoTime(time.Now())}
		return e, b.store.SetState(ctx, me.meshID, e)
	})
	if !ok {
		return
	}
	data := mustJSON(StateChangeFrame{Type: frameStateChange, Key: e.Key, Value: e.Value, UpdatedBy: e.UpdatedBy})
	b.mu.Lock()
	for _, o := range b.room(meshID).peers {
		if o.conn != nil && o.conn != c {
			o.conn.offer(data)
		}
	}
	b.publishLater(replicaEvent{Kind: replicaEventState, Mesh: meshID, Key: e.Key})
	b.mu.Unlock()
	if reqID != "" {
		c.send(StateResultFrame{Type: frameStateResult, StateEntry: e, ReqID: reqID})
	}
}

func (b *Broker) handleGetState(c *brokerConn, f *GetStateFrame, reqID string) {
	key := f.Key
	e, ok := storeCall(b, c, reqID, func(ctx context.Context, me *peer) (StateEntry, error) {
		e, err := b.store.GetState(ctx, me.meshID, key)
		if errors.Is(err, errNotFound) {
			return StateEntry{Key: key, Value: []byte("null")}, nil
		}
		return e, err
	})
	if ok {
		c.send(StateResultFrame{Type: frameStateResult, StateEntry: e, ReqID: reqID})
	}
}

func (b *Broker) handleListState(c *brokerConn, _ *ListStateFrame, reqID string) {
	entries, ok := storeCall(b, c, reqID, func(ctx context.Context, me *peer) ([]StateEntry, error) {
		return b.store.ListState(ctx, me.meshID)
	})
	if ok {
		c.send(StateListFrame{Type: frameStateList, Entries: entries, ReqID: reqID})
	}
}

// Memory.

// recallLimit is how many memories recall returns, best first.
const recallLimit = 20

func (b *Broker) handleRemember(c *brokerConn, f *RememberFrame, reqID string) {
	id := newID()
	_, ok := storeCall(b, c, reqID, func(ctx context.Context, me *peer) (struct{}, error) {
		m := Memory{ID: id, Content: f.Content, Tags: f.Tags, RememberedBy: me.displayName, RememberedAt: isoTime(time.Now())}
		return struct{}{}, b.store.Remember(ctx, me.meshID, m)
	})
	if ok {
		c.send(MemoryStoredFrame{Type: frameMemoryStored, ID: id, ReqID: reqID})
	}
}

func (b *Broker) handleRecall(c *brokerConn, f *RecallFrame, reqID string) {
	mems, ok := storeCall(b, c, reqID, func(ctx context.Context, me *peer) ([]Memory, error) {
		return b.store.Recall(ctx, me.meshID, f.Query, recallLimit)
	})
	if ok {
		c.send(MemoryResultsFrame{Type: frameMemoryResults, Memories: mems, ReqID: reqID})
	}
}

func (b *Broker) handleForget(c *brokerConn, f *ForgetFrame, reqID string) {
	found, ok := storeCall(b, c, reqID, func(ctx context.Context, me *peer) (bool, error) {
		return b.store.Forget(ctx, me.meshID, f.MemoryID, time.Now())
	})
	if !ok {
		return
	}
	if !found {
		c.replyError(codeNotFound, "no memory "+f.MemoryID, reqID)
		return
	}
	c.send(AckFrame{Type: frameAck, ID: f.MemoryID, MessageID: f.MemoryID, Queued: false, ReqID: reqID})
}

// Skills.

func (b *Broker) handleShareSkill(c *brokerConn, f *ShareSkillFrame, reqID string) {
	_, ok := storeCall(b, c, reqID, func(ctx context.Context, me *peer) (struct{}, error) {
		sk := Skill{Name: f.Name, Description: f.Description, Instructions: f.Instructions, Tags: f.Tags,
			Author: me.displayName, Manifest: f.Manifest, CreatedAt: isoTime(time.Now())}
		return struct{}{}, b.store.PutSkill(ctx, me.meshID, sk)
	})
	if ok {
		c.send(SkillAckFrame{Type: frameSkillAck, Name: f.Name, Action: "shared", ReqID: reqID})
	}
}

func (b *Broker) handleGetSkill(c *brokerConn, f *SkillNameFrame, reqID string) {
	sk, ok := storeCall(b, c, reqID, func(ctx context.Context, me *peer) (*Skill, error) {
		sk, err := b.store.GetSkill(ctx, me.meshID, f.Name)
		if errors.Is(err, errNotFound) {
			return nil, nil // skill_data with a null skill
		}
		return &sk, err
	})
	if ok {
		c.send(SkillDataFrame{Type: frameSkillData, Skill: sk, ReqID: reqID})
	}
}

func (b *Broker) handleListSkills(c *brokerConn, f *ListSkillsFrame, reqID string) {
	skills, ok := storeCall(b, c, reqID, func(ctx context.Context, me *peer) ([]Skill, error) {
		return b.store.ListSkills(ctx, me.meshID, f.Query)
	})
	if !ok {
		return
	}
	// The list carries summaries; get_skill has the instructions.
	for i := range skills {
		skills[i].Instructions, skills[i].Manifest = "", nil
	}
	c.send(SkillListFrame{Type: frameSkillList, Skills: skills, ReqID: reqID})
}

func (b *Broker) handleRemoveSkill(c *brokerConn, f *SkillNameFrame, reqID string) {
	name := f.Name
	removed, ok := storeCall(b, c, reqID, func(ctx context.Context, me *peer) (bool, error) {
		return b.store.RemoveSkill(ctx, me.meshID, name)
	})
	if !ok {
		return
	}
	action := "removed"
	if !removed {
		action = "not_found"
	}
	c.send(SkillAckFrame{Type: frameSkillAck, Name: name, Action: action, ReqID: reqID})
}
