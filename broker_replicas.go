// A broker as one replica among several sharing a PostgreSQL store.
//
// Policy: connections and their leases stay in memory on the replica that
// holds them; what other replicas need — which presences exist where, the
// ids of messages to push, control messages — goes through the store
// (brokerstore_postgres_replicas.go). A send is stored once by the replica
// that took it, and its commit announces the message ids; every replica
// holding a recipient's connection reads that recipient's pending delivery
// from the store and pushes it, exactly as it pushes its own sends, so a
// recipient is pushed by its own replica whichever took the send. peers_list
// and members_list add the live presences of other replicas; kick,
// disconnect and ban reach them by control messages, and a change of a
// member's role or grants makes every replica read the member again;
// presence events and shared-state changes are announced on every replica. When the listening
// connection comes back after a drop (the database restarted), every local
// connection drains: pushes announced meanwhile are read from the store.
package main

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Replica timings (BrokerOptions override them).
const (
	defaultHeartbeatInterval = 2 * time.Second
	defaultReplicaExpiry     = 10 * time.Second
	liveFlushInterval        = 50 * time.Millisecond // presence changes reach other replicas within this
	replicaEventQueue        = 4096
)

// replicaLink is the broker's side of the replica protocol.
type replicaLink struct {
	b     *Broker
	store replicaStore

	// Guarded by b.mu: presences to write (by presence id) or to drop.
	dirty map[string]*peer
	gone  map[string]bool
	wake  chan struct{}

	events   chan replicaEvent // from other replicas
	outgoing chan replicaEvent // to them
	live     atomic.Int64      // replicas alive at the last heartbeat

	pushes    atomic.Int64 // deliveries pushed for sends another replica took
	published atomic.Int64 // events sent to other replicas
	received  atomic.Int64 // events taken from other replicas
	reaped    atomic.Int64 // dead replicas this one removed
}

// startReplicas makes the broker a replica when its store is shared:
// registered by a first heartbeat, then heartbeating, listening and
// writing its presences in the background.
func (b *Broker) startReplicas() error {
	rs, ok := b.store.(replicaStore)
	if !ok {
		return nil
	}
	r := &replicaLink{b: b, store: rs, dirty: map[string]*peer{}, gone: map[string]bool{},
		wake:   make(chan struct{}, 1),
		events: make(chan replicaEvent, replicaEventQueue), outgoing: make(chan replicaEvent, replicaEventQueue)}
	if err := r.heartbeat(); err != nil {
		return err
	}
	b.replicas = r
	b.wg.Add(5)
	go func() { defer b.wg.Done(); r.heartbeatLoop() }()
	go func() { defer b.wg.Done(); r.publishLoop() }()
	go func() { defer b.wg.Done(); r.flushLoop() }()
	go func() { defer b.wg.Done(); r.eventLoop() }()
	go func() {
		defer b.wg.Done()
		_ = rs.ListenReplicaEvents(b.ctx, r.enqueue, r.listening)
	}()
	return nil
}

// storeKind names the broker's store in /health: postgres or sqlite.
func (b *Broker) storeKind() string {
	if _, ok := b.store.(*postgresBrokerStore); ok {
		return "postgres"
	}
	return "sqlite"
}

// leave removes this replica from the store at a clean stop: its presences
// end at once for every other replica.
func (r *replicaLink) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := r.store.LeaveReplicas(ctx, time.Now()); err != nil {
		r.b.log.Warn("leave replicas", "err", err)
	}
}

func (r *replicaLink) heartbeatLoop() {
	t := time.NewTicker(r.b.opts.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := r.heartbeat(); err != nil {
				r.b.log.Warn("replica heartbeat", "err", err)
			}
		case <-r.b.ctx.Done():
			return
		}
	}
}

// heartbeat refreshes this replica, records its connections' activity and
// reaps dead replicas; found missing, it writes again all it holds.
func (r *replicaLink) heartbeat() error {
	b := r.b
	now := time.Now()
	activity := map[string]time.Time{}
	b.mu.Lock()
	for _, room := range b.rooms {
		for _, p := range room.peers {
			activity[p.presenceID] = p.lastActivity()
		}
	}
	b.mu.Unlock()
	ctx, cancel := b.storeCtx()
	defer cancel()
	res, err := r.store.Heartbeat(ctx, now, b.opts.ReplicaExpiry, b.opts.Grace, activity)
	if err != nil {
		return err
	}
	r.live.Store(int64(res.Live))
	for _, id := range res.Reaped {
		r.reaped.Add(1)
		b.log.Info("replica_reaped", "replica", id)
	}
	if res.Registered && b.replicas != nil {
		b.log.Info("replica_registered_again", "replica", r.store.ReplicaID())
		b.mu.Lock()
		for _, room := range b.rooms {
			for _, p := range room.peers {
				r.changed(p)
				if p.conn != nil {
					b.recordPresence(p, true)
				}
			}
		}
		b.mu.Unlock()
	}
	return nil
}

// changed queues p's live presence for the other replicas. Caller holds b.mu.
func (r *replicaLink) changed(p *peer) {
	if p.removed {
		return
	}
	r.dirty[p.presenceID] = p
	r.poke()
}

// removed queues the end of p's live presence. Caller holds b.mu.
func (r *replicaLink) removed(p *peer) {
	delete(r.dirty, p.presenceID)
	r.gone[p.presenceID] = true
	r.poke()
}

func (r *replicaLink) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// flushLoop writes queued presence changes, at most every liveFlushInterval:
// a burst of changes is one write.
func (r *replicaLink) flushLoop() {
	for {
		select {
		case <-r.wake:
		case <-r.b.ctx.Done():
			return
		}
		r.flush()
		select {
		case <-time.After(liveFlushInterval):
		case <-r.b.ctx.Done():
			return
		}
	}
}

func (r *replicaLink) flush() {
	b := r.b
	b.mu.Lock()
	var put []livePresence
	for _, p := range r.dirty {
		put = append(put, p.livePresence())
	}
	gone := make([]string, 0, len(r.gone))
	for id := range r.gone {
		gone = append(gone, id)
	}
	clear(r.dirty)
	clear(r.gone)
	b.mu.Unlock()
	ctx, cancel := b.storeCtx()
	defer cancel()
	if len(gone) > 0 {
		if err := r.store.DropLivePresences(ctx, gone); err != nil {
			b.log.Warn("drop live presences", "err", err)
		}
	}
	if len(put) > 0 {
		if err := r.store.PutLivePresences(ctx, put); err != nil {
			b.log.Warn("write live presences", "err", err)
			// Written again by the next change, or the next registration.
		}
	}
}

// livePresence is p as other replicas see it. Caller holds b.mu.
func (p *peer) livePresence() livePresence {
	return livePresence{PresenceID: p.presenceID, MeshID: p.meshID, Key: p.key, MemberID: p.memberID,
		MemberPubkey: p.memberPubkey, SessionPubkey: p.sessionPubkey, DisplayName: p.displayName, Role: p.role,
		Visible: p.visible, OneShot: p.oneShot(), Connected: p.conn != nil, ConnectedAt: p.connectedAt,
		LastActiveAt: p.lastActivity(), Row: p.row()}
}

// remotePresences lists the presences other replicas hold in a mesh; none
// on a store without replicas, or when the store fails (the answer is then
// this replica's alone).
func (b *Broker) remotePresences(meshID string) []livePresence {
	if b.replicas == nil {
		return nil
	}
	ctx, cancel := b.storeCtx()
	defer cancel()
	ps, err := b.replicas.store.RemoteLivePresences(ctx, meshID, time.Now(), b.opts.ReplicaExpiry)
	if err != nil {
		b.log.Warn("remote presences", "err", err)
		return nil
	}
	return ps
}

// publish sends an event to the other replicas.
func (b *Broker) publish(e replicaEvent) {
	if b.replicas == nil {
		return
	}
	ctx, cancel := b.storeCtx()
	defer cancel()
	if err := b.replicas.store.PublishReplicaEvent(ctx, e); err != nil {
		b.log.Warn("publish replica event", "kind", e.Kind, "err", err)
		return
	}
	b.replicas.published.Add(1)
}

// publishLater queues an event for the publisher without holding up the
// caller, who may hold b.mu; events keep their order. Safe under b.mu.
func (b *Broker) publishLater(e replicaEvent) {
	if b.replicas == nil {
		return
	}
	select {
	case b.replicas.outgoing <- e:
	default:
		b.log.Warn("replica event queue full; event dropped", "kind", e.Kind)
	}
}

func (r *replicaLink) publishLoop() {
	for {
		select {
		case e := <-r.outgoing:
			r.b.publish(e)
		case <-r.b.ctx.Done():
			return
		}
	}
}

// enqueue takes an event from the listener; the event loop handles it, so
// that the listener never waits on the store.
func (r *replicaLink) enqueue(e replicaEvent) {
	r.received.Add(1)
	select {
	case r.events <- e:
	default:
		// Overflow: drain everything instead of pushing each id.
		r.b.log.Warn("replica events overflow; draining every connection")
		r.listening()
	}
}

// listening runs when the listener (re)connects: what was announced while
// it was away is still pending in the store, so every connection drains.
func (r *replicaLink) listening() {
	b := r.b
	b.mu.Lock()
	for _, room := range b.rooms {
		for _, p := range room.peers {
			if p.conn != nil {
				p.conn.requestDrain()
			}
		}
	}
	b.mu.Unlock()
}

func (r *replicaLink) eventLoop() {
	for {
		select {
		case e := <-r.events:
			r.handle(e)
		case <-r.b.ctx.Done():
			return
		}
	}
}

// handle applies one other replica's event to this replica's connections.
func (r *replicaLink) handle(e replicaEvent) {
	b := r.b
	switch e.Kind {
	case replicaEventPush:
		b.pushFromReplica(e.Mesh, e.IDs)
	case replicaEventRemove:
		b.mu.Lock()
		for _, room := range b.rooms {
			for _, p := range room.peers {
				if slices.Contains(e.Presences, p.presenceID) {
					b.removePeer(p, websocket.StatusCode(e.Code), e.Reason, true)
				}
			}
		}
		b.mu.Unlock()
	case replicaEventBan:
		b.mu.Lock()
		if room := b.rooms[e.Mesh]; room != nil {
			for _, p := range room.peers {
				if p.memberID == e.Member {
					b.removePeer(p, closeBanned, "banned", true)
				}
			}
		}
		b.mu.Unlock()
	case replicaEventSystem:
		var data SystemEventData
		if json.Unmarshal(e.Data, &data) != nil {
			return
		}
		b.mu.Lock()
		if room := b.rooms[e.Mesh]; room != nil {
			b.systemPushHere(room, e.Event, data, func(o *peer) bool { return e.SkipMember != "" && o.memberID == e.SkipMember })
		}
		b.mu.Unlock()
	case replicaEventMember:
		b.refreshMember(e.Mesh, e.Member)
	case replicaEventState:
		ctx, cancel := b.storeCtx()
		entry, err := b.store.GetState(ctx, e.Mesh, e.Key)
		cancel()
		if err != nil {
			return
		}
		data := mustJSON(StateChangeFrame{Type: frameStateChange, Key: entry.Key, Value: entry.Value, UpdatedBy: entry.UpdatedBy})
		b.mu.Lock()
		if room := b.rooms[e.Mesh]; room != nil {
			for _, o := range room.peers {
				if o.conn != nil {
					o.conn.offer(data)
				}
			}
		}
		b.mu.Unlock()
	}
}

// refreshMember reads a member another replica changed and applies its
// role and grants here as a change made here would: the caches routing and
// moderation read, and the role of the member's live connections.
func (b *Broker) refreshMember(meshID, memberID string) {
	ctx, cancel := b.storeCtx()
	members, err := b.store.Members(ctx, meshID)
	cancel()
	if err != nil {
		b.log.Warn("member changed on another replica", "err", err)
		return
	}
	i := slices.IndexFunc(members, func(m storedMember) bool { return m.ID == memberID })
	if i < 0 {
		return
	}
	m := members[i]
	k := grantsKey(meshID, m.ID)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.grants[k] = m.Grants
	b.roles[k] = m.Role
	if room := b.rooms[meshID]; room != nil {
		for _, p := range room.peers {
			if p.memberID == m.ID {
				p.memberRole = m.Role
			}
		}
	}
}

// pushFromReplica pushes the deliveries another replica's commit left for
// this replica's connections.
func (b *Broker) pushFromReplica(meshID string, ids []string) {
	b.mu.Lock()
	var keys []string
	if room := b.rooms[meshID]; room != nil {
		for _, p := range room.peers {
			if p.conn != nil && !slices.Contains(keys, p.key) {
				keys = append(keys, p.key)
			}
		}
	}
	b.mu.Unlock()
	if len(keys) == 0 {
		return
	}
	ctx, cancel := b.storeCtx()
	pending, err := b.replicas.store.PendingAmong(ctx, meshID, ids, keys, time.Now())
	cancel()
	if err != nil {
		b.log.Warn("pending from another replica", "err", err)
		b.replicas.listening() // the drains read them instead
		return
	}
	for _, d := range pending {
		b.replicas.pushes.Add(1)
		b.pushLocal(d.Msg, []string{d.Key})
	}
}

// remoteRows are the peers_list rows of other replicas' presences that me
// may see, with their order keys.
func remoteRows(remote []livePresence, me *peer) []listedPeer {
	var out []listedPeer
	for _, lp := range remote {
		if !lp.Visible && lp.MemberID != me.memberID {
			continue
		}
		out = append(out, listedPeer{connectedAt: lp.ConnectedAt, presenceID: lp.PresenceID, row: lp.Row})
	}
	return out
}

// listedPeer is one peers_list row with what orders it.
type listedPeer struct {
	connectedAt time.Time
	presenceID  string
	row         PeerRow
}

// sortListed orders rows by connection time, then presence id.
func sortListed(ps []listedPeer) {
	sort.Slice(ps, func(i, j int) bool {
		if !ps[i].connectedAt.Equal(ps[j].connectedAt) {
			return ps[i].connectedAt.Before(ps[j].connectedAt)
		}
		return ps[i].presenceID < ps[j].presenceID
	})
}
