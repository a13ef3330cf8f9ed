// Routing and delivery, at least once and idempotent.
//
// Policy: a send is one durable append (the message) plus one delivery
// record per recipient key resolved at send time, in one transaction
// (shared with other sends and acks by the group commit, broker_batch.go),
// and is acked only once that transaction has committed. Online
// recipients then get the push at once from memory; each pushed delivery is
// leased for Lease and becomes delivered on the recipient's client_ack. An
// expired lease is re-pushed by the sweep; a closed socket's leases are
// released at once, and its next connection drains everything still pending
// from the store. DMs to keys the mesh knows are queued while their owner is
// offline (MessageTTL); keys the mesh never saw are refused. A send whose
// (mesh, sender member, client_message_id) exists returns the original id.
// Broadcasts, groups and topics are resolved against durable membership in
// the same transaction (broker_fanout.go).
package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// brokerFrame is how the broker takes one client frame type: a fresh value
// to decode it into, and the handler it goes to once decoded and valid.
// Every handler answers with the request's _reqId.
type brokerFrame struct {
	decode func() clientFrame
	handle func(b *Broker, c *brokerConn, f clientFrame, reqID string)
}

// frameRow makes a table row from a typed handler: the frame decodes into a
// fresh *F and reaches handle as that type.
func frameRow[F any, PF interface {
	*F
	clientFrame
}](handle func(b *Broker, c *brokerConn, f PF, reqID string)) brokerFrame {
	return brokerFrame{
		decode: func() clientFrame { return PF(new(F)) },
		handle: func(b *Broker, c *brokerConn, f clientFrame, reqID string) { handle(b, c, f.(PF), reqID) },
	}
}

// brokerFrames is every client frame type the broker knows: adding a frame
// is a row here and its handler. The handshakes decode here too, so that a
// repeated one is validated like any frame before it is refused.
var brokerFrames = map[string]brokerFrame{
	frameHello:        frameRow(repeatedHandshake[*HelloFrame]),
	frameSessionHello: frameRow(repeatedHandshake[*SessionHelloFrame]),

	frameSend:      frameRow((*Broker).handleSend),
	frameClientAck: frameRow((*Broker).handleClientAck),
	frameReceipt:   frameRow((*Broker).handleReceipt),

	frameListPeers:   frameRow((*Broker).handleListPeers),
	frameListMembers: frameRow((*Broker).handleListMembers),
	frameSetStatus:   frameRow((*Broker).handleSetStatus),
	frameSetSummary:  frameRow((*Broker).handleSetSummary),
	frameSetVisible:  frameRow((*Broker).handleSetVisible),
	frameSetProfile:  frameRow((*Broker).handleSetProfile),
	frameSetStats:    frameRow((*Broker).handleSetStats),
	frameJoinGroup:   frameRow((*Broker).handleJoinGroup),
	frameLeaveGroup:  frameRow((*Broker).handleLeaveGroup),

	frameSetState:  frameRow((*Broker).handleSetState),
	frameGetState:  frameRow((*Broker).handleGetState),
	frameListState: frameRow((*Broker).handleListState),

	frameRemember: frameRow((*Broker).handleRemember),
	frameRecall:   frameRow((*Broker).handleRecall),
	frameForget:   frameRow((*Broker).handleForget),

	frameShareSkill:  frameRow((*Broker).handleShareSkill),
	frameGetSkill:    frameRow((*Broker).handleGetSkill),
	frameListSkills:  frameRow((*Broker).handleListSkills),
	frameRemoveSkill: frameRow((*Broker).handleRemoveSkill),

	frameKick:       frameRow((*Broker).handleKick),
	frameDisconnect: frameRow((*Broker).handleKick),
	frameBan:        frameRow((*Broker).handleBan),
	frameUnban:      frameRow((*Broker).handleUnban),
	frameListBans:   frameRow((*Broker).handleListBans),
}

// decodeClientFrame decodes and validates one client frame. The head is
// returned whenever the frame is a JSON object with a type, so that an error
// reply can echo its _reqId.
func decodeClientFrame(data []byte) (frameHead, clientFrame, error) {
	head, err := decodeHead(data)
	if err != nil {
		return head, nil, err
	}
	row, known := brokerFrames[head.Type]
	if !known {
		return head, nil, errUnknownFrameType
	}
	f := row.decode()
	if err := json.Unmarshal(data, f); err != nil {
		return head, nil, fmt.Errorf("%s: %w", head.Type, jsonFieldError(err))
	}
	if rk, ok := f.(requiredKeys); ok {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(data, &raw); err != nil {
			return head, nil, err
		}
		for _, k := range rk.requiredKeys() {
			if _, ok := raw[k]; !ok {
				return head, nil, fmt.Errorf("%s: %w", head.Type, errMissing(k))
			}
		}
	}
	if err := f.validate(); err != nil {
		return head, nil, fmt.Errorf("%s: %w", head.Type, err)
	}
	return head, f, nil
}

// handleFrame decodes, validates and dispatches one frame of an
// authenticated socket.
func (b *Broker) handleFrame(c *brokerConn, data []byte) {
	head, f, err := decodeClientFrame(data)
	switch {
	case errors.Is(err, errUnknownFrameType):
		c.replyError(codeUnknownMessageType, fmt.Sprintf("unknown message type %q", head.Type), head.ReqID)
		return
	case err != nil && head.Type == frameSend:
		// A send is answered by an ack its sender can match by id, and like
		// every invalid frame by an error.
		var s struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(data, &s)
		if place := c.replies.reserve(c.ctx.Done()); place != nil {
			c.answerSend(place, AckFrame{Type: frameAck, ID: s.ID, Error: codeInvalid + ": " + err.Error(), ReqID: head.ReqID})
		}
		c.send(ErrorFrame{Type: frameError, Code: codeInvalid, Message: err.Error(), ID: s.ID, ReqID: head.ReqID})
		return
	case err != nil:
		c.replyError(codeInvalid, err.Error(), head.ReqID)
		return
	}
	brokerFrames[head.Type].handle(b, c, f, head.ReqID)
	if b.replicas != nil && presenceFrames[head.Type] {
		b.mu.Lock()
		if p := c.peer; p != nil {
			b.liveChanged(p)
		}
		b.mu.Unlock()
	}
}

// presenceFrames change what peers_list shows of their sender: other
// replicas hear of the change.
var presenceFrames = map[string]bool{
	frameSetStatus: true, frameSetSummary: true, frameSetVisible: true, frameSetProfile: true, frameSetStats: true,
	frameJoinGroup: true, frameLeaveGroup: true,
}

// repeatedHandshake refuses a hello or session_hello on a socket that has
// already completed its handshake.
func repeatedHandshake[F clientFrame](_ *Broker, c *brokerConn, _ F, reqID string) {
	c.replyError(codeInvalid, "this connection has already completed its handshake", reqID)
}

// self returns a copy of the socket's presence, or nil when it has none.
func (b *Broker) self(c *brokerConn) *peer {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.peer == nil {
		return nil
	}
	cp := *c.peer
	return &cp
}

// handleSend answers a send through the connection's ordered replies
// (broker_replies.go): a refusal at once, a stored message once its batch
// has committed, when it is also pushed to its online recipients. The
// reader goes on to the next frame without waiting for the commit.
func (b *Broker) handleSend(c *brokerConn, f *SendFrame, reqID string) {
	place := c.replies.reserve(c.ctx.Done())
	if place == nil {
		return
	}
	ack := AckFrame{Type: frameAck, ID: f.ID, ReqID: reqID}
	refuse := func(code, format string, a ...any) {
		ack.Error = code + ": " + fmt.Sprintf(format, a...)
		c.answerSend(place, ack)
	}
	me := b.self(c)
	if me == nil {
		c.replies.fill(place, nil) // the socket is going: nothing to answer
		return
	}
	if size := len(f.Ciphertext) + len(f.Nonce) + len(f.TargetSpec); size > b.opts.MaxMessageBytes {
		refuse(codePayloadTooLarge, "%d bytes > max %d", size, b.opts.MaxMessageBytes)
		return
	}
	kind, ref := classifyTarget(f.TargetSpec)
	if kind == targetInvalid {
		refuse(codeInvalid, "targetSpec %q must be a 64-hex key, @group, @all, * or #topic", f.TargetSpec)
		return
	}
	now := time.Now()
	b.mu.Lock()
	allowed := takeToken(b.sendBuckets, me.memberID, b.opts.SendBurst, b.opts.SendPerMinute, now)
	b.mu.Unlock()
	if !allowed {
		refuse(codeRateLimit, "max %d msg/min (burst %d)", b.opts.SendPerMinute, b.opts.SendBurst)
		return
	}

	op := appendOp{}
	switch kind {
	case targetDirect:
		to, err := b.directRecipient(me.meshID, ref)
		switch {
		case errors.Is(err, errNotFound):
			b.refundSend(me.memberID)
			refuse(codeUnknownTarget, "no member or session key %s in this mesh", ref)
			return
		case err != nil:
			b.refundSend(me.memberID)
			refuse(codeInternal, "store unavailable")
			return
		case to.revoked:
			b.refundSend(me.memberID)
			refuse(codeUnknownTarget, "%s belongs to a banned member", ref)
			return
		case to.memberID != me.memberID && !to.grants.allows(me.memberPubkey, me.key, capDM):
			// Refused for good: the sender's daemon gives the row up with
			// this reason rather than retrying it.
			b.refundSend(me.memberID)
			refuse(codeForbidden, "blocked by recipient grants (sender lacks dm capability; %s grants you: %s)",
				cmp.Or(to.name, shortKey(ref)), capsLabel(to.grants.capsFor(me.memberPubkey, me.key)))
			return
		}
		op.Recipients = []string{ref}
	default:
		op.Multicast = &multicastTarget{Kind: kind, Ref: ref, SenderKey: me.key, SenderMemberID: me.memberID,
			SenderMemberPubkey: me.memberPubkey, Now: now}
	}

	op.Msg = storedMessage{ID: newMessageID(now), MeshID: me.meshID, SenderMemberID: me.memberID, SenderPubkey: me.key,
		SenderMemberPubkey: me.memberPubkey, SenderName: me.displayName, TargetSpec: f.TargetSpec, Priority: f.Priority,
		Nonce: f.Nonce, Ciphertext: f.Ciphertext, CreatedAt: now, ExpiresAt: now.Add(b.opts.MessageTTL),
		ClientMessageID: f.ClientMessageID, RequestFingerprint: f.RequestFingerprint, ReplyToID: f.ReplyToID, Subtype: f.Subtype}
	if kind == targetTopic {
		op.Msg.Topic = ref
	}
	b.writes.appendAsync(op, func(r appendResult) {
		if r.Err != nil {
			b.refundSend(me.memberID)
			b.log.Error("append message", "err", r.Err)
			refuse(codeInternal, "store unavailable")
			return
		}
		ack.MessageID, ack.Queued = r.ID, true
		if op.Multicast != nil && !r.Dup {
			n := len(r.Recipients)
			ack.Recipients = &n
		}
		if r.Dup {
			b.refundSend(me.memberID)
			c.answerSend(place, ack)
			return
		}
		b.metrics.accepted.Add(1)
		c.answerSend(place, ack)
		m := op.Msg
		m.Seq = r.Seq
		b.fanOut(m, r.Recipients)
	})
}

func (b *Broker) refundSend(memberID string) {
	b.mu.Lock()
	if tb := b.sendBuckets[memberID]; tb != nil {
		tb.refund()
	}
	b.mu.Unlock()
}

// directRecipient is who a DM to key reaches: the member of a present
// connection with that key, else the member whose key or remembered session
// key it is (errNotFound when the mesh never saw it).
func (b *Broker) directRecipient(meshID, key string) (recipient, error) {
	b.mu.Lock()
	if r := b.rooms[meshID]; r != nil {
		var to *recipient
		if ps := r.byKey[key]; len(ps) > 0 { // the presence the key is: its name is the recipient's
			to = &recipient{memberID: ps[0].memberID, name: ps[0].displayName}
		} else if ps := r.byMember[key]; len(ps) > 0 { // a session of the member the key is
			to = &recipient{memberID: ps[0].memberID}
		}
		if to != nil {
			to.grants = b.grants[grantsKey(meshID, to.memberID)]
			b.mu.Unlock()
			return *to, nil
		}
	}
	b.mu.Unlock()
	ctx, cancel := b.storeCtx()
	defer cancel()
	m, err := b.store.KeyOwner(ctx, meshID, key)
	if err != nil {
		return recipient{}, err
	}
	to := recipient{memberID: m.ID, name: m.DisplayName, grants: m.Grants, revoked: m.RevokedAt != nil}
	b.mu.Lock()
	if g, ok := b.grants[grantsKey(meshID, m.ID)]; ok {
		to.grants = g // changed since the store was read
	}
	b.mu.Unlock()
	return to, nil
}

// recipient is the member a DM goes to, as routing needs it.
type recipient struct {
	memberID, name string
	grants         grantMap
	revoked        bool
}

// pushFrame is the push for a stored message: the same full field set
// whether it goes out at send time or from a drain.
func pushFrame(m storedMessage) []byte {
	if m.Subtype == subtypeReceipt {
		return receiptNotice(m)
	}
	data, _ := json.Marshal(PushFrame{Type: framePush, MessageID: m.ID, MeshID: m.MeshID, SenderPubkey: m.SenderPubkey,
		SenderMemberPubkey: m.SenderMemberPubkey, SenderMemberID: m.SenderMemberID, SenderName: m.SenderName,
		Priority: m.Priority, Nonce: m.Nonce, Ciphertext: m.Ciphertext, CreatedAt: isoTime(m.CreatedAt),
		ClientMessageID: m.ClientMessageID, RequestFingerprint: m.RequestFingerprint, TargetSpec: m.TargetSpec,
		Topic: m.Topic, ReplyToID: m.ReplyToID, Subtype: m.Subtype})
	return data
}

// fanOut pushes a just-stored message to its recipients that are online now.
func (b *Broker) fanOut(m storedMessage, recipients []string) {
	if queued := b.pushLocal(m, recipients); m.Subtype != subtypeReceipt {
		b.metrics.queued.Add(int64(queued))
	}
}

// pushLocal pushes a stored message to those of its recipient keys that
// this broker holds a connection of now, and counts the keys it holds
// none of.
func (b *Broker) pushLocal(m storedMessage, keys []string) (offline int) {
	data := pushFrame(m)
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.rooms[m.MeshID]
	if room == nil {
		return 0
	}
	for i, k := range keys {
		if !slices.Contains(keys[:i], k) && !b.offerToKey(room, k, m, data, now) {
			offline++
		}
	}
	return offline
}

// offerToKey offers m to the room's connections of key k; one whose queue
// is full drains it later. It reports whether any was online. Caller holds
// b.mu.
func (b *Broker) offerToKey(room *meshRoom, k string, m storedMessage, data []byte, now time.Time) bool {
	online := false
	for _, p := range room.byKey[k] {
		if p.conn == nil {
			continue
		}
		online = true
		if !b.offerPush(p, m, data, now, false) {
			p.needsDrain = true
			p.conn.requestDrain()
		}
	}
	return online
}

// held reports whether status gating holds a message of this priority: a
// working or dnd recipient gets only `now` until it is idle again.
func held(status, priority string) bool {
	return (status == statusWorking || status == statusDND) && priority != priorityNow
}

// pushDue reports whether m should be pushed to p now: it is not held by
// p's status, not leased to p already, and not just acked by p. Caller
// holds b.mu.
func (p *peer) pushDue(m storedMessage, now time.Time) bool {
	if m.Subtype == subtypeReceipt && !p.receipts {
		return false // it waits for a connection of the key that takes receipts
	}
	if held(p.status, m.Priority) {
		return false
	}
	if l := p.inflight[m.ID]; l != nil && now.Before(l.expires) {
		return false
	}
	_, acked := p.acked[m.ID]
	return !acked
}

// offerPush pushes m to p's socket and leases it, if it is due. It returns
// false, pushing nothing, when p already holds MaxInflight leases: a
// recipient that never acks costs the broker at most that many leases, and
// at most that many re-pushes per Lease. With wait=false it never blocks
// and returns false when the socket's queue is full; with wait=true it only
// leases, and the caller sends. Caller holds b.mu.
func (b *Broker) offerPush(p *peer, m storedMessage, data []byte, now time.Time, wait bool) bool {
	if !p.pushDue(m, now) {
		return true
	}
	if len(p.inflight) >= b.opts.MaxInflight {
		return false
	}
	if !wait && !p.conn.offer(data) {
		return false
	}
	p.inflight[m.ID] = &lease{seq: m.Seq, clientMessageID: m.ClientMessageID, expires: now.Add(b.opts.Lease)}
	return true
}

// drainPass is where a drain of one socket's pending deliveries stands
// between pages: the store order its next page starts after, and the
// recipient's status when the pass began.
type drainPass struct {
	after  int64
	status string
}

// drainPage pushes one page of the socket's pending deliveries with a
// store order after pass.after, oldest first, advances pass, and reports
// whether there may be another page. It runs on the socket's writer and
// writes the pushes itself; a zero pass starts a fresh drain.
func (b *Broker) drainPage(c *brokerConn, pass *drainPass) (more bool) {
	b.mu.Lock()
	p := c.peer
	if p == nil {
		b.mu.Unlock()
		return false
	}
	if pass.after == 0 {
		p.needsDrain = false
		// A pass pushes what its start's status lets through: a status
		// that turns idle mid-pass asks for another pass, which pushes the
		// released messages oldest first, instead of this one pushing the
		// later of them before the earlier.
		pass.status = p.status
	}
	meshID, key := p.meshID, p.key
	b.mu.Unlock()

	ctx, cancel := b.storeCtx()
	msgs, err := b.store.PendingFor(ctx, meshID, key, pass.after, time.Now(), drainPage)
	cancel()
	if err != nil {
		b.log.Warn("drain", "err", err)
		b.mu.Lock()
		if c.peer == p {
			p.needsDrain = true // the sweep tries again
		}
		b.mu.Unlock()
		return false
	}
	for _, m := range msgs {
		pass.after = m.Seq
		data := pushFrame(m)
		b.mu.Lock()
		if c.peer != p {
			b.mu.Unlock()
			return false
		}
		now := time.Now()
		send := !held(pass.status, m.Priority) && p.pushDue(m, now)
		if send && !b.offerPush(p, m, data, now, true) {
			p.needsDrain = true // an ack or an expired lease makes room
			b.mu.Unlock()
			return false
		}
		b.mu.Unlock()
		if send && !c.write(data) {
			return false
		}
	}
	return len(msgs) == drainPage
}

// handleClientAck marks the acking key's delivery delivered: at once in
// memory, durably with the next group commit.
func (b *Broker) handleClientAck(c *brokerConn, f *ClientAckFrame, _ string) {
	b.mu.Lock()
	p := c.peer
	if p == nil {
		b.mu.Unlock()
		return
	}
	meshID, key := p.meshID, p.key
	id := f.BrokerMessageID
	if id == "" {
		for mid, l := range p.inflight {
			if l.clientMessageID == f.ClientMessageID {
				id = mid
				break
			}
		}
	}
	var seq int64
	if id != "" {
		if l := p.inflight[id]; l != nil {
			seq = l.seq
		}
		delete(p.inflight, id)
		p.acked[id] = time.Now()
	}
	if p.needsDrain && p.conn != nil {
		p.conn.requestDrain()
	}
	b.mu.Unlock()
	cmid := ""
	if id == "" {
		cmid = f.ClientMessageID
	}
	b.writes.markDelivered(deliveryMark{MeshID: meshID, Key: key, Seq: seq, MessageID: id, ClientMessageID: cmid, At: time.Now()})
}
