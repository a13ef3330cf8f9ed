// Group commit for the broker's two hot writes: a send's append (message +
// deliveries) and a client_ack's delivery mark. One writer goroutine owns
// them; whatever has queued up while it committed the previous batch goes
// into the next transaction together, so under load one commit carries
// many messages and acks, and an idle broker commits each write at once.
//
// Policy:
//   - A send is acked only after the batch holding its append has
//     committed: its message and deliveries are durable before anyone
//     hears of it, and a broker restart loses nothing that was acked.
//   - The socket that read a send does not wait for its commit: the append
//     carries a completion, and one completer goroutine runs the
//     completions of each committed batch in commit order (acks and
//     fan-out), off the writer. A connection's sends are therefore
//     answered in the order it sent them.
//   - When writes are arriving faster than the writer commits them (one
//     was queued before the previous commit ended, or several wait
//     together) and the batch is still small, the writer lingers up to
//     maxLinger for more before committing, so a moderate load is not
//     committed one write per transaction. A write that reaches an idle
//     writer and finds nothing else waiting commits at once, however recent
//     the last commit: one DM and then its receipt, each alone, would
//     otherwise wait out the linger at every hop for company that never
//     comes.
//   - A client_ack is queued and the socket goes on reading. Marks are
//     lazier still: they ride along with the next batch that commits
//     anything else, or commit on their own once markBatch of them wait or
//     the oldest has waited markLinger. Until then the recipient's
//     in-memory acked set keeps the delivery from being pushed again; if
//     the broker dies first, the delivery is still pending and is pushed
//     again on the next connection — at least once, and the recipient's
//     inbox dedupes.
//   - Each append fails alone: a batch whose transaction fails is tried
//     again append by append (and its marks together), so the common path
//     needs no savepoint per append. An append that fails then is refused
//     (its sender retries with the same client_message_id, which dedupes);
//     marks that fail stay pending and are pushed again.
//   - The queue to the writer is bounded (writeQueueSize): past it,
//     producers wait, which stops their sockets' readers (backpressure).
//   - The writer outlives the sockets: close stops it only after every
//     socket goroutine has ended, commits what is queued, then runs the
//     last completions.
package main

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

const (
	maxWriteBatch     = 512              // writes per transaction
	writeQueueSize    = 4096             // writes waiting for the writer before producers wait
	writeBatchTimeout = 10 * time.Second // one batch's transaction

	maxLinger      = time.Millisecond      // longest wait for a small batch to grow
	lingerWhenBusy = 5 * time.Millisecond  // a commit this recent means writes are arriving steadily
	lingerEnough   = 64                    // a batch this big commits without lingering
	markBatch      = 1024                  // marks that commit on their own
	markLinger     = 50 * time.Millisecond // the longest a mark waits for company
)

// writeOp is one queued write: an append (with its completion), a mark,
// or a presence (closing saved once it is written).
type writeOp struct {
	append   *appendOp
	done     func(appendResult) // appends only; run by the completer
	mark     *deliveryMark
	presence *storedPresence
	saved    chan struct{}
	queued   time.Time // appends and presences: when the producer queued it
}

// groupCommitter is the broker's writer goroutine and its completer.
type groupCommitter struct {
	store brokerStore
	log   *slog.Logger
	ops   chan writeOp
	// completions waiting for the completer. Never full, so the writer
	// never waits for a completion (which may need the broker's lock,
	// held by a producer waiting for room in ops). Bounded all the same:
	// each connection has at most maxSendsInFlight appends outstanding.
	compMu      sync.Mutex
	completions []completion
	compReady   chan struct{}
	stop        chan struct{}
	done        chan struct{}
	completed   chan struct{}
	// marked counts deliveries a committed batch marked delivered.
	marked func(n int)
}

// completion is one committed append's result and what to do with it.
type completion struct {
	done   func(appendResult)
	result appendResult
}

func newGroupCommitter(store brokerStore, log *slog.Logger, marked func(int)) *groupCommitter {
	g := &groupCommitter{store: store, log: log, ops: make(chan writeOp, writeQueueSize),
		compReady: make(chan struct{}, 1),
		stop:      make(chan struct{}), done: make(chan struct{}), completed: make(chan struct{}), marked: marked}
	go g.loop()
	go g.complete()
	return g
}

// appendMessage stores a message and its deliveries through the group
// commit: it returns once the batch holding the append has committed (or
// failed), with the message's id and whether it was a duplicate.
func (g *groupCommitter) appendMessage(msg storedMessage, recipients []string) (string, bool, error) {
	reply := make(chan appendResult, 1)
	g.appendAsync(appendOp{Msg: msg, Recipients: recipients}, func(r appendResult) { reply <- r })
	r := <-reply
	return r.ID, r.Dup, r.Err
}

// appendAsync queues one append (waiting only while the queue is full);
// the completer runs done with its result once its batch has committed or
// failed. done must not block for long: it holds up every later
// completion.
func (g *groupCommitter) appendAsync(op appendOp, done func(appendResult)) {
	g.ops <- writeOp{append: &op, done: done, queued: time.Now()}
}

// savePresence queues a presence for the next batch, where it is written
// before that batch's appends; the channel is closed once it is.
func (g *groupCommitter) savePresence(p storedPresence) <-chan struct{} {
	saved := make(chan struct{})
	g.ops <- writeOp{presence: &p, saved: saved, queued: time.Now()}
	return saved
}

// markDelivered queues a delivery mark.
func (g *groupCommitter) markDelivered(m deliveryMark) {
	g.ops <- writeOp{mark: &m}
}

// close commits what is queued, runs the last completions and stops. Only
// call it once no producer can queue anything more.
func (g *groupCommitter) close() {
	close(g.stop)
	<-g.done
	<-g.completed
}

// complete runs committed appends' completions in commit order, until the
// writer has stopped and every completion has run.
func (g *groupCommitter) complete() {
	defer close(g.completed)
	for {
		select {
		case <-g.compReady:
		case <-g.done:
		}
		g.compMu.Lock()
		cs := g.completions
		g.completions = nil
		g.compMu.Unlock()
		for _, c := range cs {
			c.done(c.result)
		}
		if len(cs) == 0 {
			select {
			case <-g.done:
				g.compMu.Lock()
				left := len(g.completions)
				g.compMu.Unlock()
				if left == 0 {
					return
				}
			default:
			}
		}
	}
}

// handOver queues a committed batch's completions for the completer.
func (g *groupCommitter) handOver(cs []completion) {
	g.compMu.Lock()
	g.completions = append(g.completions, cs...)
	g.compMu.Unlock()
	select {
	case g.compReady <- struct{}{}:
	default:
	}
}

// writerState is what the writer carries between batches.
type writerState struct {
	batch      []writeOp      // appends and presences of the next commit
	marks      []deliveryMark // marks waiting for a commit
	marksSince time.Time      // when the oldest waiting mark came
	lastCommit time.Time      // when the last commit ended
}

func (w *writerState) add(op writeOp, now time.Time) {
	if op.mark != nil {
		if len(w.marks) == 0 {
			w.marksSince = now
		}
		w.marks = append(w.marks, *op.mark)
		return
	}
	w.batch = append(w.batch, op)
}

// full reports whether the next commit holds as much as one should.
func (w *writerState) full() bool { return len(w.batch)+len(w.marks) >= maxWriteBatch }

// due reports whether anything should commit now: appends or presences
// wait, or the marks have waited long enough or are many enough.
func (w *writerState) due(now time.Time) bool {
	return len(w.batch) > 0 || len(w.marks) >= markBatch || (len(w.marks) > 0 && now.Sub(w.marksSince) >= markLinger)
}

func (g *groupCommitter) loop() {
	defer close(g.done)
	w := &writerState{batch: make([]writeOp, 0, maxWriteBatch)}
	markTimer := time.NewTimer(time.Hour)
	markTimer.Stop()
	for {
		if len(w.marks) > 0 {
			markTimer.Reset(max(markLinger-time.Since(w.marksSince), 0))
		}
		select {
		case op := <-g.ops:
			w.add(op, time.Now())
		case <-markTimer.C:
		case <-g.stop:
			// No producers are left: commit the rest and end.
			for {
				select {
				case op := <-g.ops:
					w.add(op, time.Now())
					if w.full() {
						g.commit(w)
					}
				default:
					if len(w.batch)+len(w.marks) > 0 {
						g.commit(w)
					}
					return
				}
			}
		}
		markTimer.Stop()
		g.collect(w)
		if w.due(time.Now()) {
			g.commit(w)
		}
	}
}

// collect adds what is queued to the batch without waiting, then, when
// writes are queuing up behind the commits and the batch is still small,
// lingers up to maxLinger for it to grow.
func (g *groupCommitter) collect(w *writerState) {
	for !w.full() {
		select {
		case op := <-g.ops:
			w.add(op, time.Now())
			continue
		default:
		}
		break
	}
	if len(w.batch) == 0 || len(w.batch) >= lingerEnough || time.Since(w.lastCommit) > lingerWhenBusy ||
		len(w.batch) == 1 && w.batch[0].queued.After(w.lastCommit) {
		return
	}
	deadline := time.NewTimer(maxLinger)
	defer deadline.Stop()
	for len(w.batch) < lingerEnough && !w.full() {
		select {
		case op := <-g.ops:
			w.add(op, time.Now())
		case <-deadline.C:
			return
		}
	}
}

// commit writes one batch in one transaction and hands its appends'
// results to the completer.
func (g *groupCommitter) commit(w *writerState) {
	defer func() {
		clear(w.batch)
		w.batch = w.batch[:0]
		w.marks = w.marks[:0]
		w.lastCommit = time.Now()
	}()
	var appends []appendOp
	var presences []storedPresence
	for _, op := range w.batch {
		switch {
		case op.append != nil:
			appends = append(appends, *op.append)
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
		for _, op := range w.batch {
			if op.saved != nil {
				close(op.saved)
			}
		}
	}
	if len(appends) == 0 && len(w.marks) == 0 {
		return
	}
	results := g.write(ctx, appends, w.marks)
	if len(appends) == 0 {
		return
	}
	cs := make([]completion, 0, len(appends))
	i := 0
	for _, op := range w.batch {
		if op.append != nil {
			cs = append(cs, completion{done: op.done, result: results[i]})
			i++
		}
	}
	g.handOver(cs)
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
