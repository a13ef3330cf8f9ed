// Group commit for the broker's two hot writes: a send's append (message +
// deliveries) and a client_ack's delivery mark. One writer goroutine owns
// them; whatever has queued up while it committed the previous batch goes
// into the next transaction together, so under load one commit carries
// many messages and acks, and an idle broker commits each write at once
// (no waiting for a batch to fill).
//
// Policy:
//   - A send is acked only after the batch holding its append has
//     committed: its message and deliveries are durable before anyone
//     hears of it, and a broker restart loses nothing that was acked.
//   - A client_ack is queued and the socket goes on reading; its mark is
//     durable when its batch commits. Until then the recipient's in-memory
//     acked set keeps the delivery from being pushed again; if the broker
//     dies first, the delivery is still pending and is pushed again on the
//     next connection — at least once, and the recipient's inbox dedupes.
//   - Each append fails alone: a batch whose transaction fails is tried
//     again append by append (and its marks together), so the common path
//     needs no savepoint per append. An append that fails then is refused
//     (its sender retries with the same client_message_id, which dedupes);
//     marks that fail stay pending and are pushed again.
//   - The writer outlives the sockets: Close stops it only after every
//     socket goroutine has ended, so nothing is queued behind it unanswered.
package main

import (
	"context"
	"log/slog"
	"time"
)

const (
	maxWriteBatch     = 256              // writes per transaction
	writeQueueSize    = 4096             // writes waiting for the writer before producers wait
	writeBatchTimeout = 10 * time.Second // one batch's transaction
)

// writeOp is one queued write: an append (with a reply), a mark, or a
// presence (closing saved once it is written).
type writeOp struct {
	append   *appendOp
	reply    chan appendResult // appends only; buffered
	mark     *deliveryMark
	presence *storedPresence
	saved    chan struct{}
}

// groupCommitter is the broker's writer goroutine.
type groupCommitter struct {
	store brokerStore
	log   *slog.Logger
	ops   chan writeOp
	stop  chan struct{}
	done  chan struct{}
	// marked counts deliveries a committed batch marked delivered.
	marked func(n int)
}

func newGroupCommitter(store brokerStore, log *slog.Logger, marked func(int)) *groupCommitter {
	g := &groupCommitter{store: store, log: log, ops: make(chan writeOp, writeQueueSize),
		stop: make(chan struct{}), done: make(chan struct{}), marked: marked}
	go g.loop()
	return g
}

// appendMessage stores a message and its deliveries through the group
// commit: it returns once the batch holding the append has committed (or
// failed), with the message's id and whether it was a duplicate.
func (g *groupCommitter) appendMessage(msg storedMessage, recipients []string) (string, bool, error) {
	r := g.append(appendOp{Msg: msg, Recipients: recipients})
	return r.ID, r.Dup, r.Err
}

// append queues one append and waits for its batch: appendMessage's
// general form, which also takes a multicast to resolve in the store.
func (g *groupCommitter) append(op appendOp) appendResult {
	reply := make(chan appendResult, 1)
	g.ops <- writeOp{append: &op, reply: reply}
	return <-reply
}

// savePresence queues a presence for the next batch, where it is written
// before that batch's appends; the channel is closed once it is.
func (g *groupCommitter) savePresence(p storedPresence) <-chan struct{} {
	saved := make(chan struct{})
	g.ops <- writeOp{presence: &p, saved: saved}
	return saved
}

// markDelivered queues a delivery mark for the next batch.
func (g *groupCommitter) markDelivered(m deliveryMark) {
	g.ops <- writeOp{mark: &m}
}

// close commits what is queued and stops the writer. Only call it once no
// producer can queue anything more.
func (g *groupCommitter) close() {
	close(g.stop)
	<-g.done
}

func (g *groupCommitter) loop() {
	defer close(g.done)
	batch := make([]writeOp, 0, maxWriteBatch)
	for {
		select {
		case op := <-g.ops:
			batch = append(batch, op)
		case <-g.stop:
			// No producers are left: commit the rest and end.
			for {
				select {
				case op := <-g.ops:
					batch = append(batch, op)
					if len(batch) == maxWriteBatch {
						g.commit(batch)
						batch = batch[:0]
					}
				default:
					if len(batch) > 0 {
						g.commit(batch)
					}
					return
				}
			}
		}
	collect:
		for len(batch) < maxWriteBatch {
			select {
			case op := <-g.ops:
				batch = append(batch, op)
			default:
				break collect
			}
		}
		g.commit(batch)
		clear(batch)
		batch = batch[:0]
	}
}

// commit writes one batch in one transaction and answers its appends.
func (g *groupCommitter) commit(batch []writeOp) {
	var appends []appendOp
	var marks []deliveryMark
	var presences []storedPresence
	for _, op := range batch {
		switch {
		case op.append != nil:
			appends = append(appends, *op.append)
		case op.mark != nil:
			marks = append(marks, *op.mark)
		default:
			presences = append(presences, *op.presence)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeBatchTimeout)
	defer cancel()
	if len(presences) > 0 {
		// A presence that cannot be written leaves the last one stored:
		// multicasts resolve as if the change had not happened.
		if err := g.store.SavePresences(ctx, presences); err != nil {
			g.log.Error("save presences", "count", len(presences), "err", err)
		}
		for _, op := range batch {
			if op.saved != nil {
				close(op.saved)
			}
		}
	}
	if len(appends) == 0 && len(marks) == 0 {
		return
	}
	results := g.write(ctx, appends, marks)
	i := 0
	for _, op := range batch {
		if op.append == nil {
			continue
		}
		op.reply <- results[i]
		i++
	}
}

// write commits appends and marks in one transaction and returns each
// append's result. When that fails, each append is tried again in a
// transaction of its own, and the marks in another, so that one bad
// append fails alone.
func (g *groupCommitter) write(ctx context.Context, appends []appendOp, marks []deliveryMark) []appendResult {
	results, marked, err := g.store.WriteBatch(ctx, appends, marks)
	if err == nil {
		if marked > 0 {
			g.marked(marked)
		}
		return results
	}
	g.log.Error("write batch", "appends", len(appends), "marks", len(marks), "err", err)
	results = make([]appendResult, len(appends))
	if len(appends)+min(len(marks), 1) == 1 {
		for i := range results {
			results[i].Err = err
		}
		return results
	}
	for i, a := range appends {
		one, _, err := g.store.WriteBatch(ctx, []appendOp{a}, nil)
		if err != nil {
			g.log.Error("write append", "err", err)
			results[i].Err = err
			continue
		}
		results[i] = one[0]
	}
	if len(marks) > 0 {
		if _, marked, err := g.store.WriteBatch(ctx, nil, marks); err != nil {
			g.log.Error("write marks", "marks", len(marks), "err", err)
		} else if marked > 0 {
			g.marked(marked)
		}
	}
	return results
}
