// The daemon's event bus and its SSE stream (GET /v1/events).
//
// Policy: fan-out never blocks the publisher. Each subscriber has a bounded
// channel; a subscriber whose channel is full is dropped (its stream ends
// and the client reconnects), and every write to a stream has a deadline.
// What a subscriber sees is decided by its session: message and surfaced
// events only for its session key or its member key, system, broker_status,
// state, memory and profile events only for its mesh, and the machine's own
// bookkeeping (outbox rows, sessions coming and going) never; no session →
// everything.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Event kinds.
const (
	eventMessage      = "message"
	eventPeerJoin     = "peer_join"
	eventPeerLeave    = "peer_leave"
	eventSystem       = "system"
	eventBrokerStatus = "broker_status"
	eventSurfaced     = "surfaced"
	eventReceipt      = "receipt"    // a sent message climbed its ladder: for the session that sent it
	eventUnsurfaced   = "unsurfaced" // a sent message stayed unshown past the threshold: for the session that sent it
	eventOutbox       = "outbox"     // an outbox row changed
	eventSession      = "session"    // a session registered or left
	eventState        = "state"      // a shared state key changed
	eventMemory       = "memory"     // a memory was stored or forgotten through this daemon
	eventProfile      = "profile"    // this daemon changed a presence's status, summary or profile
)

// machineEvent reports whether events of kind are for the machine as a
// whole: a session's stream never carries them.
func machineEvent(kind string) bool { return kind == eventOutbox || kind == eventSession }

// Event is one thing that happened. Mesh and the recipient fields drive the
// per-subscriber demux; Data is what the stream carries: a MessageEvent, a
// BrokerStatusEvent, or for system events the broker's own eventData as a
// map (it passes on fields newer than this build).
type Event struct {
	Kind            string
	Mesh            string
	RecipientKind   string // message and surfaced events: "session" or "member"; receipt events: the sending session
	RecipientPubkey string
	Data            any
}

// stampedEvent is event data that carries the time it was published.
type stampedEvent interface{ stamp(ts string) }

// EventFilter is what one subscriber may see; the zero filter sees all.
type EventFilter struct {
	SessionPubkey string
	MeshSlug      string
	MemberPubkey  string
}

func (f EventFilter) empty() bool { return f == EventFilter{} }

// Allows applies the per-session demux, rules in order, first match decides.
func (f EventFilter) Allows(ev Event) bool {
	if f.empty() {
		return true
	}
	if machineEvent(ev.Kind) {
		return false
	}
	if ev.Kind == eventReceipt || ev.Kind == eventUnsurfaced {
		// Only the sending session hears of its messages' receipts.
		return ev.RecipientKind == recipientSession && f.SessionPubkey != "" && f.SessionPubkey == ev.RecipientPubkey
	}
	if f.MeshSlug != "" && ev.Mesh != "" && ev.Mesh != f.MeshSlug {
		return false
	}
	if ev.Kind != eventMessage && ev.Kind != eventSurfaced {
		return true
	}
	if ev.RecipientKind == "" || ev.RecipientPubkey == "" {
		return true
	}
	switch ev.RecipientKind {
	case recipientSession:
		return f.SessionPubkey != "" && f.SessionPubkey == ev.RecipientPubkey
	case recipientMember:
		return f.MemberPubkey != "" && f.MemberPubkey == ev.RecipientPubkey
	}
	return true
}

// Recipient kinds of inbound messages.
const (
	recipientSession = "session"
	recipientMember  = "member"
)

// Bus fans events out to subscribers.
type Bus struct {
	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	closed bool
	buffer int
	onDrop func(*Subscription)
}

// Subscription is one subscriber's feed. C is closed when the subscriber
// is dropped or the bus closes.
type Subscription struct {
	C      <-chan Event
	ch     chan Event
	filter EventFilter
	bus    *Bus
	once   sync.Once
}

// newBus makes a bus whose subscribers buffer up to buffer events.
func newBus(buffer int) *Bus {
	if buffer <= 0 {
		buffer = 256
	}
	return &Bus{subs: map[*Subscription]struct{}{}, buffer: buffer}
}

// Subscribe adds a subscriber that sees what filter allows.
func (b *Bus) Subscribe(filter EventFilter) *Subscription {
	ch := make(chan Event, b.buffer)
	s := &Subscription{C: ch, ch: ch, filter: filter, bus: b}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(ch)
		return s
	}
	b.subs[s] = struct{}{}
	return s
}

// Close unsubscribes; safe to call more than once.
func (s *Subscription) Close() {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	s.closeLocked()
}

func (s *Subscription) closeLocked() {
	s.once.Do(func() {
		delete(s.bus.subs, s)
		close(s.ch)
	})
}

// Publish delivers ev to every subscriber whose filter allows it, dropping
// subscribers that are not keeping up. It never blocks.
func (b *Bus) Publish(ev Event) {
	ts := time.Now().UTC().Format(time.RFC3339Nano)
	switch data := ev.Data.(type) {
	case nil:
		ev.Data = map[string]any{"ts": ts}
	case map[string]any:
		if _, ok := data["ts"]; !ok {
			data["ts"] = ts
		}
	case stampedEvent:
		data.stamp(ts)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		if !s.filter.Allows(ev) {
			continue
		}
		select {
		case s.ch <- ev:
		default:
			s.closeLocked()
			if b.onDrop != nil {
				b.onDrop(s)
			}
		}
	}
}

// Close ends every subscription; later subscriptions are closed at once.
func (b *Bus) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		s.closeLocked()
	}
}

// sseWriteTimeout bounds one write to a stream: a client that stops reading
// is cut off instead of holding a goroutine forever.
const sseWriteTimeout = 10 * time.Second

// serveSSE streams a subscription to w until the client leaves, the
// subscription is dropped or ctx ends.
func serveSSE(ctx context.Context, w http.ResponseWriter, sub *Subscription, keepalive time.Duration) {
	defer sub.Close()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(s string) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
		if _, err := fmt.Fprint(w, s); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write(": connected\n\n") {
		return
	}
	tick := time.NewTicker(keepalive)
	defer tick.Stop()
	var n int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if !write(": keepalive\n\n") {
				return
			}
		case ev, ok := <-sub.C:
			if !ok {
				return
			}
			data, err := json.Marshal(ev.Data)
			if err != nil {
				continue
			}
			n++
			if !write(fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", n, ev.Kind, data)) {
				return
			}
		}
	}
}
