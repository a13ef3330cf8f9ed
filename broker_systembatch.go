// Presence events gathered per mesh. Announced one push per connection, a
// join costs a frame to every peer, so a mesh of N that reconnects at once
// (after a broker restart) costs N² frames and most of the broker's time.
// A connection that takes batches (capabilitySystemBatches) gets a mesh's
// events held for a short window and sent as one system_batch frame: a
// burst of joins costs it one frame per window, however many joined.
package main

import (
	"encoding/json"
	"slices"
	"time"
)

// presenceMode is how a connection takes presence events.
type presenceMode uint8

const (
	presenceEach    presenceMode = iota // one push per event: clients that name no capability
	presenceBatched                     // system_batch frames
	presenceNone                        // none: a session link, told through its member link
)

// presenceModeOf reads a handshake's capabilities.
func presenceModeOf(capabilities []string) presenceMode {
	switch {
	case slices.Contains(capabilities, capabilityNoPresence):
		return presenceNone
	case slices.Contains(capabilities, capabilitySystemBatches):
		return presenceBatched
	}
	return presenceEach
}

const (
	// systemBatchMaxEvents sends a batch at once when full, keeping frames
	// far below what a client reads in one (about 200 bytes an event).
	systemBatchMaxEvents = 256
	systemBatchMinWindow = 10 * time.Millisecond
	systemBatchMaxWindow = 500 * time.Millisecond
	// systemBatchPerPeer lengthens the window as the mesh grows, so the
	// batch frames a mesh sends stay near 10,000 a second at most.
	systemBatchPerPeer = 100 * time.Microsecond
)

// systemBatchWindow is how long a room of this many live connections holds
// its events before sending them.
func systemBatchWindow(live int) time.Duration {
	return min(max(time.Duration(live)*systemBatchPerPeer, systemBatchMinWindow), systemBatchMaxWindow)
}

// systemBatch is a room's events waiting for their window to end.
type systemBatch struct {
	pending []SystemEvent
	timer   *time.Timer
}

// batchSystemEvent holds ev for the room's batch, sending the batch when it
// is full or, by timer, when its window ends. Caller holds b.mu.
func (b *Broker) batchSystemEvent(room *meshRoom, ev SystemEvent) {
	room.pending = append(room.pending, ev)
	switch {
	case len(room.pending) >= systemBatchMaxEvents:
		b.flushSystemBatch(room)
	case room.timer == nil:
		room.timer = time.AfterFunc(systemBatchWindow(room.live), func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.flushSystemBatch(room)
		})
	}
}

// flushSystemBatch sends the room's waiting events, one frame for every
// connection that takes batches. Events about a connection itself are not
// taken out: its client knows its own keys, and one shared frame is what
// keeps a burst's cost at one frame per connection. Caller holds b.mu.
func (b *Broker) flushSystemBatch(room *meshRoom) {
	if room.timer != nil {
		room.timer.Stop()
		room.timer = nil
	}
	if len(room.pending) == 0 {
		return
	}
	frame, _ := json.Marshal(SystemBatchFrame{Type: frameSystemBatch, MeshID: room.id, Events: room.pending})
	room.pending = nil
	for _, o := range room.peers {
		if o.conn != nil && o.presenceEvents == presenceBatched {
			o.conn.offer(frame)
		}
	}
}
