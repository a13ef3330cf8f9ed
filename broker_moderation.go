// Kick, disconnect, ban, unban and list_bans (claudemesh 1.34.15).
//
// Policy: only the mesh owner or an admin may moderate. `kick` closes 4001
// but skips control-plane connections — a daemon would just reconnect — and
// lists them in the additive `skipped_control_plane` ack field; `disconnect`
// closes 1000 and skips nothing. Targets match a display name, a member key
// or a session key, or a hex prefix of at least minTargetPrefix characters of
// either. `ban` revokes the member and closes every connection of it with
// 4002; its later handshakes get `revoked`. Every removal announces
// peer_left.
package main

import (
	"cmp"
	"context"
	"sort"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// minTargetPrefix is the shortest key prefix a moderation target may be, so
// that a short word cannot sweep up unrelated keys.
const minTargetPrefix = 8

// canModerate: the mesh owner or an admin. Caller holds b.mu.
func (p *peer) canModerate() bool { return p.isOwner || p.memberRole == roleAdmin }

// moderator is a copy of the socket's presence when it may moderate; a
// presence that may not is told so (forbidden) and nil returned.
func (b *Broker) moderator(c *brokerConn, verb, reqID string) *peer {
	me := b.self(c)
	if me == nil {
		return nil
	}
	if !me.canModerate() {
		c.replyError(codeForbidden, "only the mesh owner or an admin can "+verb, reqID)
		return nil
	}
	return me
}

// keyMatches reports whether target names key exactly or by a long enough
// lowercase hex prefix.
func keyMatches(key, target string) bool {
	if key == "" {
		return false
	}
	if key == target {
		return true
	}
	return len(target) >= minTargetPrefix && isLowerHex(target) && strings.HasPrefix(key, target)
}

func (b *Broker) handleKick(c *brokerConn, f *KickFrame, reqID string) {
	kick := f.Type == frameKick
	self := b.self(c)
	if self == nil {
		return
	}
	if !self.canModerate() {
		verb := "kick"
		if !kick {
			verb = "disconnect"
		}
		c.replyError(codeForbidden, "only the mesh owner or an admin can "+verb, reqID)
		return
	}
	remote := b.remotePresences(self.meshID)
	b.mu.Lock()
	me := c.peer
	if me == nil {
		b.mu.Unlock()
		return
	}
	now := time.Now()
	selects := func(name, memberPubkey, sessionPubkey string, lastActive time.Time) bool {
		switch {
		case f.All:
			return true
		case f.Stale != nil:
			return now.Sub(lastActive) > time.Duration(*f.Stale)*time.Millisecond
		default:
			return name == f.Target || keyMatches(memberPubkey, f.Target) || keyMatches(sessionPubkey, f.Target)
		}
	}
	var selected []kickCandidate
	for _, p := range b.room(me.meshID).peers {
		// Never the caller's own connection: it waits for the ack.
		if p != me && selects(p.displayName, p.memberPubkey, p.sessionPubkey, p.lastActivity()) {
			selected = append(selected, kickCandidate{connectedAt: p.connectedAt, label: cmp.Or(p.displayName, p.presenceID), role: p.role,
				name: p.displayName, memberPubkey: p.memberPubkey, key: p.key, local: p})
		}
	}
	for _, lp := range remote {
		if selects(lp.DisplayName, lp.MemberPubkey, lp.SessionPubkey, lp.LastActiveAt) {
			selected = append(selected, kickCandidate{connectedAt: lp.ConnectedAt, label: cmp.Or(lp.DisplayName, lp.PresenceID),
				role: lp.Role, name: lp.DisplayName, memberPubkey: lp.MemberPubkey, key: lp.Key,
				replica: lp.ReplicaID, presenceID: lp.PresenceID})
		}
	}
	sort.SliceStable(selected, func(i, j int) bool { return selected[i].connectedAt.Before(selected[j].connectedAt) })
	code, reason := websocket.StatusCode(closeKicked), "kicked"
	if !kick {
		code, reason = closeNormal, "disconnected"
	}
	if f.Stale != nil {
		reason += "_stale"
	}
	ack := KickAckFrame{Type: frameKickAck, Kicked: []string{}, Affected: []string{}, ReqID: reqID}
	if !kick {
		ack.Type = frameDisconnectAck
	}
	var targets []map[string]any
	elsewhere := map[string][]string{} // replica → presence ids
	for _, p := range selected {
		// kick leaves control-plane (daemon) connections alone (claudemesh 1.34.15).
		if kick && p.role == peerRoleControlPlane {
			ack.SkippedControlPlane = append(ack.SkippedControlPlane, p.label)
			continue
		}
		if p.local != nil {
			b.removePeer(p.local, code, reason, true)
		} else {
			elsewhere[p.replica] = append(elsewhere[p.replica], p.presenceID)
		}
		ack.Kicked = append(ack.Kicked, p.label)
		targets = append(targets, map[string]any{"name": p.name, "memberPubkey": p.memberPubkey, "key": p.key, "peerRole": p.role})
	}
	for replica, ids := range elsewhere {
		b.publishLater(replicaEvent{Kind: replicaEventRemove, To: replica, Presences: ids, Code: int(code), Reason: reason})
	}
	ack.Affected = append([]string{}, ack.Kicked...)
	actor, meshID := me.memberPubkey, me.meshID
	b.mu.Unlock()
	if len(targets) > 0 {
		event := auditEvent{MeshID: meshID, Type: auditKick, Actor: actor, CreatedAt: now, Payload: map[string]any{
			"targets": targets, "all": f.All, "staleMs": f.Stale}}
		if !kick {
			event.Type = auditDisconnect
		}
		ctx, cancel := b.storeCtx()
		if err := b.store.AppendAudit(ctx, event); err != nil {
			b.log.Error("audit", "event", event.Type, "err", err)
		}
		cancel()
	}
	c.send(ack)
}

// kickCandidate is one presence a kick or disconnect selected: held here
// (local) or by another replica.
type kickCandidate struct {
	connectedAt             time.Time
	label, role             string
	name, memberPubkey, key string
	local                   *peer
	replica, presenceID     string
}

// lastActivity is when p was last heard from: its socket's last frame or
// pong, or when it went offline. Caller holds b.mu.
func (p *peer) lastActivity() time.Time {
	if p.conn != nil {
		return time.UnixMilli(p.conn.lastRead.Load())
	}
	return p.lastSeen
}

// resolveMember finds the one member a ban or unban names: by exact member
// key, by a session key it owns (present or remembered), by display name or
// by key prefix. revoked selects banned or unbanned members. When there is
// not exactly one, code and problem are the error to answer with.
func (b *Broker) resolveMember(meshID, target string, revoked bool) (m storedMember, code, problem string) {
	what := "member"
	if revoked {
		what = "banned member"
	}
	ctx, cancel := b.storeCtx()
	defer cancel()
	members, err := b.store.Members(ctx, meshID)
	if err != nil {
		return storedMember{}, codeInternal, "store unavailable"
	}
	// A session key names its member.
	b.mu.Lock()
	sessionOwner := ""
	for _, p := range b.room(meshID).peers {
		if keyMatches(p.sessionPubkey, target) {
			sessionOwner = p.memberPubkey
			break
		}
	}
	b.mu.Unlock()
	if sessionOwner == "" {
		for _, lp := range b.remotePresences(meshID) {
			if keyMatches(lp.SessionPubkey, target) {
				sessionOwner = lp.MemberPubkey
				break
			}
		}
	}
	var matches []storedMember
	for _, m := range members {
		if (m.RevokedAt != nil) != revoked {
			continue
		}
		if m.Pubkey == target || m.Pubkey == sessionOwner {
			return m, "", ""
		}
		if m.DisplayName == target || keyMatches(m.Pubkey, target) {
			matches = append(matches, m)
		}
	}
	switch len(matches) {
	case 0:
		return storedMember{}, codeNotFound, "no " + what + " matches " + target
	case 1:
		return matches[0], "", ""
	}
	return storedMember{}, codeInvalid, "several " + what + "s match " + target + "; use a longer key prefix"
}

func (b *Broker) handleBan(c *brokerConn, f *BanFrame, reqID string) {
	me := b.moderator(c, "ban", reqID)
	if me == nil {
		return
	}
	m, code, problem := b.resolveMember(me.meshID, f.Target, false)
	if code != "" {
		c.replyError(code, problem, reqID)
		return
	}
	if m.ID == me.memberID {
		c.replyError(codeInvalid, "cannot ban yourself", reqID)
		return
	}
	ctx, cancel := b.storeCtx()
	mesh, err := b.store.MeshByID(ctx, me.meshID)
	if err == nil && m.Pubkey == mesh.OwnerPubkey {
		cancel()
		c.replyError(codeForbidden, "the mesh owner cannot be banned", reqID)
		return
	}
	now := time.Now()
	err = b.store.SetMemberRevoked(ctx, me.meshID, m.ID, &now, memberAudit(me, auditBan, m, now))
	cancel()
	if err != nil {
		c.internalError(reqID, err)
		return
	}
	b.mu.Lock()
	for _, p := range b.room(me.meshID).peers {
		if p.memberID == m.ID {
			b.removePeer(p, closeBanned, "banned", true)
		}
	}
	b.publishLater(replicaEvent{Kind: replicaEventBan, Mesh: me.meshID, Member: m.ID})
	b.mu.Unlock()
	c.send(BanAckFrame{Type: frameBanAck, Banned: m.DisplayName, ReqID: reqID})
}

func (b *Broker) handleUnban(c *brokerConn, f *BanFrame, reqID string) {
	me := b.moderator(c, "unban", reqID)
	if me == nil {
		return
	}
	m, code, problem := b.resolveMember(me.meshID, f.Target, true)
	if code != "" {
		c.replyError(code, problem, reqID)
		return
	}
	ctx, cancel := b.storeCtx()
	err := b.store.SetMemberRevoked(ctx, me.meshID, m.ID, nil, memberAudit(me, auditUnban, m, time.Now()))
	cancel()
	if err != nil {
		c.internalError(reqID, err)
		return
	}
	c.send(UnbanAckFrame{Type: frameUnbanAck, Unbanned: m.DisplayName, ReqID: reqID})
}

// memberAudit records a moderator's action on one member.
func memberAudit(by *peer, eventType string, m storedMember, at time.Time) auditEvent {
	return auditEvent{MeshID: m.MeshID, Type: eventType, Actor: by.memberPubkey, CreatedAt: at, Payload: map[string]any{
		"memberId": m.ID, "pubkey": m.Pubkey, "displayName": m.DisplayName}}
}

func (b *Broker) handleListBans(c *brokerConn, _ *ListBansFrame, reqID string) {
	me := b.moderator(c, "list bans", reqID)
	if me == nil {
		return
	}
	members, ok := storeCall(b, c, reqID, func(ctx context.Context, me *peer) ([]storedMember, error) {
		return b.store.Members(ctx, me.meshID)
	})
	if !ok {
		return
	}
	bans := []BanEntry{}
	for _, m := range members {
		if m.RevokedAt != nil {
			bans = append(bans, BanEntry{Name: m.DisplayName, Pubkey: m.Pubkey, RevokedAt: isoTime(*m.RevokedAt)})
		}
	}
	c.send(ListBansResultFrame{Type: frameListBansResult, Bans: bans, ReqID: reqID})
}
