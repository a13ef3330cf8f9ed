// Fan-out of broadcasts, groups and topics against durable membership.
//
// Policy: the recipients of a multicast are decided once, inside the
// transaction that stores the message, from what the store knows — every
// member of the mesh, and the last presence of each member link and session
// key (whether it is present, live or in its grace window, and the groups
// it declared) — never from whoever happens to be connected at that instant.
// Each intended member gets its copy on its present sessions (each once) or,
// with none present, on its member link (the daemon stands in); the choice
// is written as the message's delivery rows, so a redelivery after any
// restart goes exactly where the first attempt went. A member offline now
// gets its copy when its link reconnects, within the message's TTL.
//
//   - Broadcast (`*`, `@all`) and topic (`#t`; this broker keeps no topic
//     membership): every member that is not banned.
//   - Group (`@g`, which also reaches `g/sub`): every member one of whose
//     keys declared the group while present or within groupMemory, or, for a
//     member whose link never connected, whose default groups name it.
//   - The sender's own key and its member's link never get a copy; the
//     sender's sibling sessions do.
//   - Hidden presences are not recipients.
package main

import "time"

// presenceOf is p as the store keeps it. Caller holds b.mu.
func (p *peer) presenceOf(present bool, now time.Time) storedPresence {
	return storedPresence{MeshID: p.meshID, Key: p.key, MemberID: p.memberID, Role: p.role,
		Groups: append([]GroupRef{}, p.groups...), Visible: p.visible, Present: present, SeenAt: now}
}

// durable reports whether p's presence is kept in the store: every presence
// but a CLI's one-shot link, which never receives a multicast.
func (p *peer) durable() bool { return !p.oneShot() }

// recordPresence queues p's presence for the store, in order with every
// other presence change and send. Caller holds b.mu; the returned channel
// is closed once the write has committed.
func (b *Broker) recordPresence(p *peer, present bool) <-chan struct{} {
	if !p.durable() || b.closed {
		done := make(chan struct{})
		close(done)
		return done
	}
	return b.writes.savePresence(p.presenceOf(present, time.Now()))
}

// recordAbsence marks a removed presence's key absent, unless another
// presence still routes to that key. Caller holds b.mu.
func (b *Broker) recordAbsence(p *peer) {
	if !p.durable() {
		return
	}
	for _, o := range b.room(p.meshID).byKey[p.key] {
		if o != p {
			return
		}
	}
	b.recordPresence(p, false)
}

// endStalePresences runs one grace window after the broker starts: keys
// that were present when it last stopped and have not come back since are
// no longer present, so multicasts go to their members' links.
func (b *Broker) endStalePresences(startedAt time.Time) {
	ctx, cancel := b.storeCtx()
	defer cancel()
	if n, err := b.store.EndPresences(ctx, startedAt, time.Now()); err != nil {
		b.log.Warn("end stale presences", "err", err)
	} else if n > 0 {
		b.log.Info("stale presences ended", "count", n)
	}
}

// mutateMembership applies change to the socket's presence, stores the
// result before confirming (a multicast sent after the confirmation is
// resolved with it), and confirms when the request carried a _reqId.
func (b *Broker) mutateMembership(c *brokerConn, reqID string, change func(p *peer)) {
	b.mu.Lock()
	var saved <-chan struct{}
	if p := c.peer; p != nil {
		change(p)
		saved = b.recordPresence(p, true)
	}
	b.mu.Unlock()
	if saved != nil {
		<-saved
	}
	if reqID != "" {
		c.send(genericAck(reqID))
	}
}
