// Handshakes: `hello` (a member connection: a daemon's member link or a
// cold-path CLI) and `session_hello` (a session vouched for by its member).
// The checks, their order, the error codes and the close codes are
// claudemesh's; on top of them a handshake seen before (same key, timestamp
// and signature) is refused as `replayed`, a client IP over its handshake
// rate gets `rate_limit`, and a member hello whose (unsigned) sessionPubkey
// names a key the mesh already routes to gets `bad_session_pubkey`.
package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/coder/websocket"
)

// handshakeError is a refused handshake: an error frame, then a close.
type handshakeError struct {
	code    string
	message string
	close   websocket.StatusCode
}

func refusal(code, format string, a ...any) *handshakeError {
	return &handshakeError{code: code, message: fmt.Sprintf(format, a...), close: closePolicy}
}

// refuse sends the error frame and closes: 4002 "banned" for a revoked
// member, else 1008 with the code as the reason.
func (b *Broker) refuse(c *brokerConn, e handshakeError) {
	b.metrics.handshakeFailure(e.code)
	c.send(ErrorFrame{Type: frameError, Code: e.code, Message: e.message})
	reason := e.code
	if e.close == closeBanned {
		reason = "banned"
	}
	c.closeWith(e.close, reason)
}

// handleUnauthenticated handles a frame on a socket that has not completed a
// handshake; it reports whether the socket is now authenticated.
func (b *Broker) handleUnauthenticated(c *brokerConn, data []byte) bool {
	head, err := decodeHead(data)
	if err != nil {
		c.replyError(codeInvalid, err.Error(), head.ReqID)
		return false
	}
	var herr *handshakeError
	now := time.Now()
	switch head.Type {
	case frameHello:
		var f HelloFrame
		if err := json.Unmarshal(data, &f); err != nil {
			herr = refusal(codeMalformed, "hello rejected: %v", jsonFieldError(err))
		} else if herr = b.admitHandshake(c.ip, now); herr == nil {
			herr = b.memberHello(c, &f, now)
		}
	case frameSessionHello:
		var f SessionHelloFrame
		if err := json.Unmarshal(data, &f); err != nil {
			herr = refusal(codeMalformed, "session_hello rejected: %v", jsonFieldError(err))
		} else if herr = b.admitHandshake(c.ip, now); herr == nil {
			herr = b.sessionHello(c, &f, now)
		}
	default:
		c.replyError(codeNoHello, "must send hello first", head.ReqID)
		return false
	}
	if herr != nil {
		b.refuse(c, *herr)
		return false
	}
	return true
}

// Signature and time checks shared by both handshakes.

// signedHandshake is what a handshake signs, and with which key.
type signedHandshake struct {
	prefix    string // starts its refusals: "hello rejected:"
	signer    string // hex public key
	message   string // the signed string
	signature string
	timestamp int64 // ms
}

// authenticate is what both handshakes check last, in this order: the
// signature (with the clock-skew rule), the replay guard, and the member
// the handshake speaks for.
func (b *Broker) authenticate(s signedHandshake, meshID, memberPubkey string, now time.Time) (storedMember, storedMesh, *handshakeError) {
	if herr := b.checkSigned(s, now); herr != nil {
		return storedMember{}, storedMesh{}, herr
	}
	b.mu.Lock()
	herr := b.checkReplay(s.signer, s.timestamp, s.signature, now)
	b.mu.Unlock()
	if herr != nil {
		return storedMember{}, storedMesh{}, herr
	}
	return b.lookupMember(meshID, memberPubkey)
}

// checkSigned verifies a handshake's signature with the skew rule:
// timestamp_skew, malformed or bad_signature.
func (b *Broker) checkSigned(s signedHandshake, now time.Time) *handshakeError {
	if d := now.UnixMilli() - s.timestamp; b.skewed(d) {
		return refusal(codeTimestampSkew, "%s timestamp is %d ms from broker time (max %d)", s.prefix, d, b.opts.MaxSkew.Milliseconds())
	}
	if !isHexOfLen(s.signer, 64) || !isHexOfLen(s.signature, 128) {
		return refusal(codeMalformed, "%s pubkey must be 64 hex and signature 128 hex", s.prefix)
	}
	if !verifySignature(s.signer, s.message, s.signature) {
		return refusal(codeBadSignature, "%s signature does not verify", s.prefix)
	}
	return nil
}

// skewed reports whether a signed timestamp is further than MaxSkew from
// the broker's clock (offsetMs is broker time minus the timestamp).
func (b *Broker) skewed(offsetMs int64) bool {
	skew := b.opts.MaxSkew.Milliseconds()
	return offsetMs > skew || offsetMs < -skew
}

// admitHandshake applies the per-IP rate of handshakes (and joins).
func (b *Broker) admitHandshake(ip string, now time.Time) *handshakeError {
	b.mu.Lock()
	ok := takeToken(b.ipBuckets, ip, b.opts.HandshakeBurst, b.opts.HandshakePerMinute, now)
	b.mu.Unlock()
	if !ok {
		return refusal(codeRateLimit, "too many handshakes from %s: max %d/min (burst %d)", ip, b.opts.HandshakePerMinute, b.opts.HandshakeBurst)
	}
	return nil
}

// checkReplay refuses a handshake whose (key, timestamp, signature) was seen
// within the skew window, and remembers it otherwise. Caller holds b.mu.
func (b *Broker) checkReplay(pubkey string, timestampMs int64, sig string, now time.Time) *handshakeError {
	k := pubkey + "|" + fmt.Sprint(timestampMs) + "|" + sig
	if _, seen := b.seenHellos[k]; seen {
		return refusal(codeReplayed, "this handshake was already used; sign a fresh one")
	}
	b.seenHellos[k] = now
	return nil
}

// capacityCheck refuses when the mesh has MaxConnectionsPerMesh live
// connections, not counting those the handshake would replace: a reconnect
// whose old socket the broker still counts (a half-open TCP connection, a
// process restarted at once) takes its own place rather than a new one.
// Nothing is replaced until the handshake has passed every check. It costs
// the member's own presences, not the mesh's. Caller holds b.mu.
func (b *Broker) capacityCheck(meshID string, rep replacement) *handshakeError {
	r := b.rooms[meshID]
	if r == nil {
		return nil
	}
	n := r.live
	for _, p := range rep.candidates(r) {
		if p.conn != nil && rep.match(p) {
			n--
		}
	}
	if n >= b.opts.MaxConnectionsPerMesh {
		return refusal(codeCapacity, "mesh is at its limit of %d connections", b.opts.MaxConnectionsPerMesh)
	}
	return nil
}

// replacement is which presences a handshake takes the place of: among
// those of memberPubkey's member and those routed by sessionKey, the ones
// match selects.
type replacement struct {
	memberPubkey, sessionKey string
	match                    func(*peer) bool
}

// candidates lists the presences match is asked about, each once.
func (rep replacement) candidates(r *meshRoom) []*peer {
	out := append([]*peer(nil), r.byMember[rep.memberPubkey]...)
	if rep.sessionKey != "" {
		for _, p := range r.byKey[rep.sessionKey] {
			if p.memberPubkey != rep.memberPubkey {
				out = append(out, p)
			}
		}
	}
	return out
}

// sameSession selects the presences replaceSession would replace: this
// member's, under this sessionId.
func sameSession(memberPubkey, sessionID string) func(*peer) bool {
	return func(p *peer) bool {
		return sessionID != "" && p.memberPubkey == memberPubkey && p.sessionID == sessionID
	}
}

// lookupMember finds the member for a handshake: revoked (4002), unknown
// (unauthorized), or the member and its mesh.
func (b *Broker) lookupMember(meshID, pubkey string) (storedMember, storedMesh, *handshakeError) {
	ctx, cancel := b.storeCtx()
	defer cancel()
	mesh, err := b.store.MeshByID(ctx, meshID)
	if errors.Is(err, errNotFound) {
		return storedMember{}, storedMesh{}, refusal(codeUnauthorized, "not a member of this mesh")
	}
	if err != nil {
		return storedMember{}, storedMesh{}, errStoreUnavailable()
	}
	m, err := b.store.MemberByPubkey(ctx, meshID, pubkey)
	if errors.Is(err, errNotFound) {
		return m, mesh, refusal(codeUnauthorized, "not a member of this mesh")
	}
	if err != nil {
		return m, mesh, errStoreUnavailable()
	}
	if m.RevokedAt != nil {
		return m, mesh, &handshakeError{code: codeRevoked, message: "this member was banned from the mesh; ask an admin to unban it", close: closeBanned}
	}
	return m, mesh, nil
}

// claimedKeyFree refuses a member hello whose sessionPubkey — a key nothing
// proves the client holds, since the hello's signature does not cover it —
// is one the mesh already routes to: a member key, a session key that has
// said session_hello, or another member's connection key. Otherwise one
// member could receive another's DMs and acknowledge them away. A member
// coming back on its own cold-path key is fine.
func (b *Broker) claimedKeyFree(meshID, memberPubkey, key string) *handshakeError {
	taken := refusal(codeBadSessionPubkey, "sessionPubkey is already a member or session key of this mesh; use a fresh key")
	b.mu.Lock()
	if r := b.rooms[meshID]; r != nil {
		if len(r.byMember[key]) > 0 {
			b.mu.Unlock()
			return taken
		}
		for _, p := range r.byKey[key] {
			if p.memberPubkey != memberPubkey {
				b.mu.Unlock()
				return taken
			}
		}
	}
	b.mu.Unlock()
	ctx, cancel := b.storeCtx()
	defer cancel()
	_, err := b.store.KeyOwner(ctx, meshID, key)
	switch {
	case err == nil:
		return taken
	case !errors.Is(err, errNotFound):
		return errStoreUnavailable()
	}
	return nil
}

// errStoreUnavailable refuses a handshake the store could not check.
func errStoreUnavailable() *handshakeError {
	return refusal(codeInternal, "broker store unavailable")
}

// memberHello authenticates a member connection that passed the rate.
func (b *Broker) memberHello(c *brokerConn, f *HelloFrame, now time.Time) *handshakeError {
	if f.SessionPubkey != "" && !isHexKey(f.SessionPubkey) {
		return refusal(codeBadSessionPubkey, "sessionPubkey must be 64 lowercase hex")
	}
	if f.MeshID == "" {
		return refusal(codeMalformed, "hello rejected: missing meshId")
	}
	replaced := replacement{memberPubkey: f.Pubkey, match: sameSession(f.Pubkey, f.SessionID)}
	b.mu.Lock()
	herr := b.capacityCheck(f.MeshID, replaced)
	b.mu.Unlock()
	if herr != nil {
		return herr
	}
	member, mesh, herr := b.authenticate(signedHandshake{prefix: "hello rejected:", signer: f.Pubkey,
		message: helloSignedString(f.MeshID, f.MemberID, f.Pubkey, f.Timestamp), signature: f.Signature, timestamp: f.Timestamp},
		f.MeshID, f.Pubkey, now)
	if herr != nil {
		return herr
	}
	if f.SessionPubkey != "" {
		if herr := b.claimedKeyFree(f.MeshID, f.Pubkey, f.SessionPubkey); herr != nil {
			return herr
		}
	}
	ctx, cancel := b.storeCtx()
	saved, psErr := b.store.LoadPeerState(ctx, f.MeshID, member.ID)
	cancel()
	restored := psErr == nil

	key := cmp.Or(f.SessionPubkey, f.Pubkey)
	ack := HelloAckFrame{Type: frameHelloAck, MemberDisplayName: member.DisplayName, MemberProfile: memberProfileOf(member),
		Features: brokerFeatures()}
	// A reconnect within the grace window re-attaches silently.
	presence := func(room *meshRoom) (*peer, bool) {
		for _, o := range room.byMember[f.Pubkey] {
			if o.conn != nil {
				continue
			}
			if (f.SessionPubkey != "" && o.sessionPubkey == f.SessionPubkey) ||
				(f.SessionPubkey == "" && o.sessionPubkey == "" && o.sessionID == f.SessionID && o.role == peerRoleControlPlane) {
				if o.graceTimer != nil {
					o.graceTimer.Stop()
				}
				return o, true
			}
		}
		b.replaceSession(room, f.Pubkey, f.SessionID)
		p := &peer{presenceID: newID(), meshID: f.MeshID, memberID: member.ID, memberPubkey: f.Pubkey,
			sessionPubkey: f.SessionPubkey, key: key, role: peerRoleControlPlane, status: statusIdle,
			visible: true, connectedAt: now}
		switch {
		case len(f.Groups) > 0:
			p.groups = f.Groups
		case restored && len(saved.Groups) > 0:
			p.groups = saved.Groups
			ack.RestoredGroups = saved.Groups
		default:
			p.groups = member.DefaultGroups
		}
		if restored {
			p.visible = saved.Visible
			p.profile = saved.Profile
			p.summary = saved.Summary
			p.stats = saved.Stats
			ack.Restored = true
			ack.LastSummary = saved.Summary
			ack.LastSeenAt = isoTime(saved.LastSeenAt)
		}
		room.add(p)
		return p, false
	}
	announce := func(room *meshRoom, p *peer) {
		if p.oneShot() {
			return
		}
		event, data := eventPeerJoined, SystemEventData{Name: p.displayName, Pubkey: p.key, Groups: p.groups}
		if restored {
			event, data.LastSeenAt, data.Summary = eventPeerReturned, isoTime(saved.LastSeenAt), saved.Summary
		}
		b.systemPush(room, event, data, func(o *peer) bool { return o == p || o.memberID == p.memberID }, p.memberID)
	}
	return b.admit(c, admission{meshID: f.MeshID, replaced: replaced, presence: presence, announce: announce,
		member: member, mesh: mesh, ack: &ack, client: clientInfo{displayName: cmp.Or(f.DisplayName, member.DisplayName),
			sessionID: f.SessionID, pid: f.Pid, cwd: f.Cwd, hostname: f.Hostname, peerType: f.PeerType, channel: f.Channel, model: f.Model,
			capabilities: f.Capabilities}}, now)
}

// sessionHello authenticates a session connection that passed the rate.
func (b *Broker) sessionHello(c *brokerConn, f *SessionHelloFrame, now time.Time) *handshakeError {
	switch {
	case !isHexKey(f.SessionPubkey):
		return refusal(codeBadSessionPubkey, "sessionPubkey must be 64 lowercase hex")
	case !isHexKey(f.ParentMemberPubkey):
		return refusal(codeBadParentPubkey, "parentMemberPubkey must be 64 lowercase hex")
	case f.ParentAttestation == nil || f.ParentAttestation.SessionPubkey != f.SessionPubkey ||
		f.ParentAttestation.ParentMemberPubkey != f.ParentMemberPubkey:
		return refusal(codeAttestationMismatch, "parentAttestation must name the same session and parent keys")
	case f.MeshID == "":
		return refusal(codeMalformed, "session_hello rejected: missing meshId")
	}
	// Its own earlier connection (same session key) or, failing that, one
	// of its member's under the same sessionId is replaced.
	sameKey, sameID := func(p *peer) bool {
		return p.sessionPubkey == f.SessionPubkey && p.role == peerRoleSession
	}, sameSession(f.ParentMemberPubkey, f.SessionID)
	replaced := replacement{memberPubkey: f.ParentMemberPubkey, sessionKey: f.SessionPubkey,
		match: func(p *peer) bool { return sameKey(p) || sameID(p) }}
	b.mu.Lock()
	herr := b.capacityCheck(f.MeshID, replaced)
	b.mu.Unlock()
	if herr != nil {
		return herr
	}
	att := f.ParentAttestation
	switch {
	case att.ExpiresAt <= now.UnixMilli():
		return refusal(codeExpired, "attestation rejected: expired")
	case att.ExpiresAt > now.Add(maxAttestationTTL).UnixMilli():
		return refusal(codeTTLTooLong, "attestation rejected: expiresAt is more than 24 h away")
	case !isHexOfLen(att.Signature, 128) || att.ExpiresAt >= math.MaxInt64/2:
		return refusal(codeMalformed, "attestation rejected: signature must be 128 hex")
	case !verifySignature(f.ParentMemberPubkey, attestationSignedString(f.ParentMemberPubkey, f.SessionPubkey, att.ExpiresAt), att.Signature):
		return refusal(codeBadSignature, "attestation rejected: signature does not verify")
	}
	member, mesh, herr := b.authenticate(signedHandshake{prefix: "session_hello rejected:", signer: f.SessionPubkey,
		message: sessionHelloSignedString(f.MeshID, f.ParentMemberPubkey, f.SessionPubkey, f.Timestamp), signature: f.Signature,
		timestamp: f.Timestamp}, f.MeshID, f.ParentMemberPubkey, now)
	if herr != nil {
		return herr
	}
	if f.ParentMemberID != "" && f.ParentMemberID != member.ID {
		return refusal(codeParentMemberIDMismatch, "parentMemberId does not match the parent key's member")
	}
	// Known before the ack: from now on DMs to this key queue while it is away.
	ctx, cancel := b.storeCtx()
	err := b.store.RememberSessionKey(ctx, f.MeshID, f.SessionPubkey, member.ID, now)
	cancel()
	if err != nil {
		return errStoreUnavailable()
	}
	// One presence per session key: an existing one, online or in grace, is
	// taken over silently.
	presence := func(room *meshRoom) (*peer, bool) {
		var p *peer
		for _, o := range room.byKey[f.SessionPubkey] {
			if sameKey(o) {
				p = o
				break
			}
		}
		silent := p != nil
		if p != nil {
			if old := p.conn; old != nil && old != c {
				old.peer = nil
				room.setConn(p, nil)
				p.inflight = map[string]*lease{}
				old.closeWith(closeNormal, "session_replaced")
			}
			if p.graceTimer != nil {
				p.graceTimer.Stop()
			}
		} else {
			b.replaceSession(room, f.ParentMemberPubkey, f.SessionID)
			p = &peer{presenceID: newID(), meshID: f.MeshID, memberID: member.ID, memberPubkey: f.ParentMemberPubkey,
				sessionPubkey: f.SessionPubkey, key: f.SessionPubkey, role: peerRoleSession, status: statusIdle,
				visible: true, connectedAt: now, groups: member.DefaultGroups}
			if len(f.Groups) > 0 {
				p.groups = f.Groups
			}
			room.add(p)
		}
		if f.Role != "" {
			p.profile.Role = f.Role
		}
		return p, silent
	}
	announce := func(room *meshRoom, p *peer) {
		b.systemPush(room, eventPeerJoined, SystemEventData{Name: p.displayName, Pubkey: p.key, Groups: p.groups},
			func(o *peer) bool { return o == p }, "")
	}
	ack := HelloAckFrame{Type: frameHelloAck, MemberDisplayName: member.DisplayName, MemberProfile: memberProfileOf(member),
		Features: brokerFeatures()}
	return b.admit(c, admission{meshID: f.MeshID, replaced: replaced, presence: presence, announce: announce,
		member: member, mesh: mesh, ack: &ack, client: clientInfo{displayName: cmp.Or(f.DisplayName, member.DisplayName),
			sessionID: f.SessionID, pid: f.Pid, cwd: f.Cwd, hostname: f.Hostname, peerType: f.PeerType, channel: f.Channel, model: f.Model,
			capabilities: f.Capabilities}}, now)
}

// clientInfo is what a handshake says about the process behind it.
type clientInfo struct {
	displayName, sessionID, cwd, hostname, peerType, channel, model string
	pid                                                             int
	capabilities                                                    []string
}

// admission is a handshake that passed every check, ready to be admitted.
type admission struct {
	meshID   string
	replaced replacement // presences this connection takes the place of
	// presence finds the presence the connection re-attaches to (silent)
	// or makes a new one. Called with b.mu held.
	presence func(room *meshRoom) (p *peer, silent bool)
	// announce tells the mesh of a new presence. Called with b.mu held.
	announce func(room *meshRoom, p *peer)
	member   storedMember
	mesh     storedMesh
	client   clientInfo
	ack      *HelloAckFrame // PresenceID is filled in
}

// admit is both handshakes' last step: the capacity check again (the
// store calls ran unlocked), the presence, the client's details, the
// socket attached, the join announced unless silent, the presence stored,
// then hello_ack and a drain of everything pending for the key.
func (b *Broker) admit(c *brokerConn, a admission, now time.Time) *handshakeError {
	b.mu.Lock()
	if herr := b.capacityCheck(a.meshID, a.replaced); herr != nil {
		b.mu.Unlock()
		return herr
	}
	room := b.room(a.meshID)
	p, silent := a.presence(room)
	p.memberRole, p.isOwner = b.memberRoleOf(a.meshID, a.member), a.member.Pubkey == a.mesh.OwnerPubkey
	b.noteGrants(a.meshID, a.member)
	ci := a.client
	p.displayName, p.sessionID, p.pid, p.cwd = ci.displayName, ci.sessionID, ci.pid, ci.cwd
	p.hostname, p.peerType, p.channel, p.model = ci.hostname, ci.peerType, ci.channel, ci.model
	p.receipts = slices.Contains(ci.capabilities, capabilityReceipts)
	p.presenceEvents = presenceModeOf(ci.capabilities)
	b.attach(room, c, p, now)
	b.liveChanged(p)
	if !silent {
		a.announce(room, p)
	}
	saved := b.recordPresence(p, true)
	a.ack.PresenceID = p.presenceID
	ack := *a.ack
	b.mu.Unlock()
	<-saved // a multicast sent after hello_ack reaches this key
	c.send(ack)
	c.requestDrain()
	return nil
}

// replaceSession closes the live connections of this member that claim the
// same sessionId: a restarted process replaces its old presence (1000
// "session_replaced", no peer_left). Unlike claudemesh, only the same
// member's presences are matched, so two machines whose daemons happen to
// share a pid never evict each other. Caller holds b.mu.
func (b *Broker) replaceSession(room *meshRoom, memberPubkey, sessionID string) {
	if sessionID == "" {
		return
	}
	same := sameSession(memberPubkey, sessionID)
	for _, o := range append([]*peer(nil), room.byMember[memberPubkey]...) { // removePeer changes the index
		if same(o) {
			b.removePeer(o, closeNormal, "session_replaced", false)
		}
	}
}

// attach binds an authenticated socket to its presence. Caller holds b.mu.
func (b *Broker) attach(room *meshRoom, c *brokerConn, p *peer, now time.Time) {
	c.peer = p
	room.setConn(p, c)
	p.graceTimer = nil
	p.lastSeen = now
	p.inflight = map[string]*lease{}
	if p.acked == nil {
		p.acked = map[string]time.Time{}
	}
	p.groups = nonNil(p.groups)
}

// memberProfileOf is the member's stored profile for hello_ack.
func memberProfileOf(m storedMember) *MemberProfile {
	var tag *string
	if m.RoleTag != "" {
		t := m.RoleTag
		tag = &t
	}
	return &MemberProfile{RoleTag: tag, Groups: nonNil(m.DefaultGroups), MessageMode: cmp.Or(m.MessageMode, "push")}
}
