// The drain: the worker that hands outbox rows to brokers.
//
// Policy:
//   - Rows travel in lanes, one per link: a mesh's member link, or one
//     session's link for rows that session sent. Lanes run concurrently, so
//     a stalled link never holds up another mesh or session; within a lane
//     rows go one at a time in the order they were accepted.
//   - Nothing polls: an insert, a requeue, a link opening or a ban wakes
//     the drain; a lane waiting for a retry sleeps until exactly then.
//   - A session's rows leave only on that session's link — they are sealed
//     with its key — and wait while it is down; they are never re-signed or
//     sent on the member link. A lane whose link is down waits without
//     spending attempts.
//   - A member link the broker banned (close 4002) never reopens by itself:
//     its rows die with last_error naming the ban instead of waiting out
//     MaxAge. Rows of a kicked session link wait; the session can register
//     again.
//   - Each send waits AckTimeout (15 s) for the broker's ack. A permanent
//     broker error (unknown_target, forbidden, invalid, payload_too_large,
//     judged by the ack error's code prefix) kills the row; anything else is
//     retried after min(30 s, 0.5 s·2^attempts), and the row dies after 25
//     attempts or 7 days.
//   - Shutdown puts a row whose send was interrupted back to pending; a
//     crash leaves it inflight, and the outbox returns it to pending when
//     it next opens.
package main

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// DrainTiming holds the drain's limits; tests shorten them.
type DrainTiming struct {
	AckTimeout  time.Duration // how long one send waits for the broker's ack
	BackoffBase time.Duration // retry n waits BackoffBase·2^n …
	BackoffMax  time.Duration // … at most this long
	MaxAttempts int           // sends before a row is dead
	MaxAge      time.Duration // age at which an unsent row is dead
}

func defaultDrainTiming() DrainTiming {
	return DrainTiming{AckTimeout: 15 * time.Second, BackoffBase: 500 * time.Millisecond, BackoffMax: 30 * time.Second,
		MaxAttempts: 25, MaxAge: 7 * 24 * time.Hour}
}

// fillDefaults sets every zero field to its default.
func (t *DrainTiming) fillDefaults() {
	def := defaultDrainTiming()
	setDefault(&t.AckTimeout, def.AckTimeout)
	setDefault(&t.BackoffBase, def.BackoffBase)
	setDefault(&t.BackoffMax, def.BackoffMax)
	setDefault(&t.MaxAttempts, def.MaxAttempts)
	setDefault(&t.MaxAge, def.MaxAge)
}

// backoff is the wait before the next try of a row that has been tried
// attempts times.
func (t DrainTiming) backoff(attempts int) time.Duration {
	d := t.BackoffBase
	for i := 0; i < attempts && d < t.BackoffMax; i++ {
		d *= 2
	}
	return min(d, t.BackoffMax)
}

// permanentSendErrors are the broker's refusals that no retry can fix.
var permanentSendErrors = map[string]bool{
	codeUnknownTarget: true, codeForbidden: true, codeInvalid: true, codePayloadTooLarge: true,
}

// ackErrorCode is the code an ack's error string starts with ("code: …").
func ackErrorCode(s string) string {
	code, _, _ := strings.Cut(s, ":")
	return strings.TrimSpace(code)
}

// sendVerdict is what one send attempt came to.
type sendVerdict int

const (
	verdictDone sendVerdict = iota
	verdictRetry
	verdictDead
)

// judgeSend classifies a send's ack or error; reason is for last_error.
func judgeSend(ack AckFrame, err error) (sendVerdict, string) {
	var be *BrokerError
	switch {
	case errors.As(err, &be):
		if permanentSendErrors[be.Code] {
			return verdictDead, be.Code + ": " + be.Message
		}
		return verdictRetry, be.Code + ": " + be.Message
	case errors.Is(err, errBrokerTimeout):
		return verdictRetry, "ack_timeout"
	case err != nil:
		return verdictRetry, err.Error()
	case ack.Error != "":
		if permanentSendErrors[ackErrorCode(ack.Error)] {
			return verdictDead, ack.Error
		}
		return verdictRetry, ack.Error
	}
	return verdictDone, ""
}

// drainLinks is how the drain finds links (the Daemon).
type drainLinks interface {
	MemberLink(slug string) *Link
	SessionLinkByPubkey(pubkey string) *Link
}

// laneKey names a lane: a mesh's member link, or one session's link.
type laneKey struct{ mesh, session string }

// drainer runs the lanes.
type drainer struct {
	ob     *Outbox
	links  drainLinks
	timing DrainTiming
	log    *slog.Logger

	mu      sync.Mutex
	lanes   map[laneKey]bool
	changed chan struct{}                // closed and replaced by Wake
	waiters map[string][]chan *outboxRow // row id → told the row's new state
	kick    chan struct{}
	// onChange hears of every state change notify tells waiters of (row
	// nil: read it); set before Start.
	onChange func(id string, row *outboxRow)
	wg       sync.WaitGroup
	ctx      context.Context // set by Start; lanes run under it
}

func newDrainer(ob *Outbox, links drainLinks, timing DrainTiming, log *slog.Logger) *drainer {
	return &drainer{ob: ob, links: links, timing: timing, log: log, lanes: map[laneKey]bool{},
		changed: make(chan struct{}), waiters: map[string][]chan *outboxRow{}, kick: make(chan struct{}, 1)}
}

// Start runs the drain until ctx ends; Wait waits for it to finish.
func (dr *drainer) Start(ctx context.Context) {
	dr.mu.Lock()
	dr.ctx = ctx
	dr.mu.Unlock()
	dr.wg.Add(1)
	go func() {
		defer dr.wg.Done()
		for {
			dr.scan(ctx)
			select {
			case <-ctx.Done():
				return
			case <-dr.kick:
			}
		}
	}()
}

// Wait blocks until every lane has stopped (after ctx ended).
func (dr *drainer) Wait() {
	if dr != nil {
		dr.wg.Wait()
	}
}

// Wake tells the drain something changed: a row was added or requeued, or
// a link opened or was banned.
func (dr *drainer) Wake() {
	if dr == nil {
		return
	}
	dr.mu.Lock()
	close(dr.changed)
	dr.changed = make(chan struct{})
	dr.mu.Unlock()
	dr.rescan()
}

// WakeLane is Wake for a row just added to lane: the lane starts at once,
// without a scan of the outbox.
func (dr *drainer) WakeLane(l laneKey) {
	if dr == nil {
		return
	}
	dr.mu.Lock()
	close(dr.changed)
	dr.changed = make(chan struct{})
	start := !dr.lanes[l] && dr.ctx != nil && dr.ctx.Err() == nil
	if start {
		dr.lanes[l] = true
		dr.wg.Add(1)
	}
	dr.mu.Unlock()
	if start {
		go dr.runLane(dr.ctx, l)
	}
}

func (dr *drainer) rescan() {
	select {
	case dr.kick <- struct{}{}:
	default:
	}
}

func (dr *drainer) changedCh() <-chan struct{} {
	dr.mu.Lock()
	defer dr.mu.Unlock()
	return dr.changed
}

// scan starts a worker for every lane with pending rows that has none.
func (dr *drainer) scan(ctx context.Context) {
	lanes, err := dr.ob.pendingLanes(ctx)
	if err != nil {
		if ctx.Err() == nil {
			dr.log.Warn("drain_scan_failed", "err", err.Error())
		}
		return
	}
	dr.mu.Lock()
	defer dr.mu.Unlock()
	for _, l := range lanes {
		if dr.lanes[l] || ctx.Err() != nil {
			continue
		}
		dr.lanes[l] = true
		dr.wg.Add(1)
		go dr.runLane(ctx, l)
	}
}

// notify tells whoever waits on a row its new state (nil: read it).
func (dr *drainer) notify(id string, now *outboxRow) {
	dr.mu.Lock()
	chs := dr.waiters[id]
	delete(dr.waiters, id)
	dr.mu.Unlock()
	for _, ch := range chs {
		ch <- now // buffered: never blocks
	}
	if dr.onChange != nil {
		dr.onChange(id, now)
	}
}

// rowWaiter is a registration for a row's next state change; register before
// the row can change, so that the change cannot be missed.
type rowWaiter struct {
	dr *drainer
	id string
	ch chan *outboxRow
}

func (dr *drainer) watch(id string) *rowWaiter {
	w := &rowWaiter{dr: dr, id: id, ch: make(chan *outboxRow, 1)}
	dr.mu.Lock()
	dr.waiters[id] = append(dr.waiters[id], w.ch)
	dr.mu.Unlock()
	return w
}

func (w *rowWaiter) cancel() {
	dr := w.dr
	dr.mu.Lock()
	defer dr.mu.Unlock()
	list := dr.waiters[w.id]
	for i, c := range list {
		if c == w.ch {
			dr.waiters[w.id] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(dr.waiters[w.id]) == 0 {
		delete(dr.waiters, w.id)
	}
}

// settled reports whether a row has reached a state it will not leave by
// itself.
func settled(r *outboxRow) bool {
	return r.Status == outboxDone || r.Status == outboxDead || r.Status == outboxAborted
}

// Wait waits up to d for the row to be sent, to die, or to be told to wait
// (link down, retry later), and returns it as it then is. known is the row
// as the caller last saw it; it is read afresh when that is settled or
// stale.
func (w *rowWaiter) Wait(ctx context.Context, known *outboxRow, d time.Duration) *outboxRow {
	defer w.cancel()
	if known == nil || settled(known) {
		if r, err := w.dr.ob.get(ctx, w.id); err == nil {
			known = r
		}
	}
	if known == nil || settled(known) {
		return known
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r := <-w.ch:
		if r != nil {
			return r
		}
	case <-t.C:
	case <-ctx.Done():
	}
	if r, err := w.dr.ob.get(context.WithoutCancel(ctx), w.id); err == nil {
		return r
	}
	return known
}

// link is the link a row of this lane leaves on; dead explains why there
// can never be one: the mesh is not joined, or the broker banned this
// machine's member. A session's link may come back (the session can
// register again), so its rows wait.
func (dr *drainer) link(l laneKey) (link *Link, dead string) {
	if l.session != "" {
		return dr.links.SessionLinkByPubkey(l.session), ""
	}
	link = dr.links.MemberLink(l.mesh)
	switch {
	case link == nil:
		return nil, "no_broker_for_mesh: " + l.mesh
	case link.State() == LinkBanned:
		return nil, "banned: this machine's member is banned from mesh " + l.mesh
	}
	return link, ""
}

// sleep waits for d, a Wake, or the end of ctx.
func sleep(ctx context.Context, changed <-chan struct{}, d time.Duration) {
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-changed:
	case <-t.C:
	}
}

// runLane sends a lane's rows in order until it has none left.
func (dr *drainer) runLane(ctx context.Context, lane laneKey) {
	defer dr.wg.Done()
	defer func() {
		dr.mu.Lock()
		delete(dr.lanes, lane)
		dr.mu.Unlock()
		dr.rescan() // a row may have arrived while this lane was closing
	}()
	for ctx.Err() == nil {
		changed := dr.changedCh()
		link, dead := dr.link(lane)
		if dead == "" && link != nil && link.State() == LinkOpen {
			// The usual case in one statement: the head is due, claim it.
			row, err := dr.ob.claimHead(ctx, lane, time.Now(), dr.timing)
			if err == nil {
				dr.attempt(ctx, row, link)
				continue
			}
			if !errors.Is(err, errNotFound) {
				if ctx.Err() == nil {
					dr.log.Warn("drain_claim_failed", "err", err.Error())
				}
				if isDiskFull(err) {
					reclaimWAL(dr.ob.db)
				}
				sleep(ctx, changed, time.Second)
				continue
			}
		}
		// Nothing claimable: find out why.
		row, err := dr.ob.head(ctx, lane)
		if errors.Is(err, errNotFound) {
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				dr.log.Warn("drain_read_failed", "err", err.Error())
			}
			sleep(ctx, changed, time.Second)
			continue
		}
		now := time.Now()
		expires := time.UnixMilli(row.EnqueuedAt).Add(dr.timing.MaxAge)
		switch {
		case !now.Before(expires):
			dr.finish(row, outboxDead, "expired: not sent within "+dr.timing.MaxAge.String(), "")
		case dead != "":
			dr.finish(row, outboxDead, dead, "")
		case now.Before(time.UnixMilli(row.NextAttemptAt)):
			sleep(ctx, changed, time.UnixMilli(row.NextAttemptAt).Sub(now))
		case link == nil || link.State() != LinkOpen:
			what := "waiting: the member link of " + lane.mesh + " is not open"
			if lane.session != "" {
				what = "waiting: the sending session's link is not open"
			}
			dr.noteWaiting(row, what)
			sleep(ctx, changed, expires.Sub(now))
		}
		// Otherwise the head became claimable meanwhile: go round.
	}
}

// attempt sends one claimed row and records the outcome.
func (dr *drainer) attempt(ctx context.Context, row *outboxRow, link *Link) {
	priority := row.Priority
	if !validPriority(priority) {
		priority = priorityNext
	}
	f := SendFrame{Type: frameSend, ID: row.ClientMessageID, ClientMessageID: row.ClientMessageID,
		RequestFingerprint: hex.EncodeToString(row.Fingerprint), TargetSpec: row.TargetSpec, Priority: priority,
		Nonce: row.Nonce, Ciphertext: row.Ciphertext, ReplyToID: row.ReplyToID}
	sctx, cancel := context.WithTimeout(ctx, dr.timing.AckTimeout)
	ack, err := link.Send(sctx, f)
	cancel()
	if ctx.Err() != nil {
		// Shutdown interrupted the send: the row goes out again next time
		// (the broker dedupes on client_message_id if it got there).
		_ = dr.ob.release(context.WithoutCancel(ctx), row.ID)
		return
	}
	verdict, reason := judgeSend(ack, err)
	switch {
	case verdict == verdictDone:
		id := cmp.Or(ack.MessageID, row.ClientMessageID)
		row.Receipts, row.Recipients = receiptsOff, ack.Recipients
		if ml := dr.links.MemberLink(row.Mesh); ml != nil && ml.Receipts() {
			row.Receipts = receiptsOn // they come back on the member link
		}
		dr.finish(row, outboxDone, "", id)
	case verdict == verdictDead:
		dr.finish(row, outboxDead, reason, "")
	case row.Attempts >= dr.timing.MaxAttempts:
		dr.finish(row, outboxDead, "max_attempts: "+reason, "")
	default:
		next := time.Now().Add(dr.timing.backoff(row.Attempts))
		if err := dr.ob.retryLater(context.WithoutCancel(ctx), row.ID, next, reason); err != nil {
			dr.log.Warn("drain_write_failed", "id", row.ID, "err", err.Error())
		}
		dr.log.Info("send_retry", "id", row.ID, "mesh", row.Mesh, "attempts", row.Attempts, "err", reason)
		row.Status, row.NextAttemptAt, row.LastError = outboxPending, next.UnixMilli(), reason
		dr.notify(row.ID, row)
	}
}

// finish records a row's final state and tells its waiters.
func (dr *drainer) finish(row *outboxRow, status, reason, brokerID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := time.Now()
	applied, err := dr.ob.settle(ctx, row, status, reason, brokerID, now)
	if err != nil {
		dr.log.Warn("drain_write_failed", "id", row.ID, "err", err.Error())
	}
	if status == outboxDead {
		dr.log.Warn("send_dead", "id", row.ID, "client_message_id", row.ClientMessageID, "mesh", row.Mesh, "err", reason)
	}
	if !applied {
		dr.notify(row.ID, nil) // a requeue won the race: waiters read what is stored
		return
	}
	row.Status, row.LastError, row.BrokerMessageID = status, reason, brokerID
	if status == outboxDone {
		row.DeliveredAt = now.UnixMilli()
	}
	dr.notify(row.ID, row)
}

// noteWaiting records why a row is not going out, once.
func (dr *drainer) noteWaiting(row *outboxRow, why string) {
	if row.LastError == why {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = dr.ob.st.ExecContext(ctx, nil, `UPDATE outbox SET last_error = ? WHERE id = ? AND status = 'pending'`, why, row.ID)
	row.LastError = why
	dr.notify(row.ID, row)
}

// The drain's queries.

// pendingLanes lists the lanes that have pending rows.
func (o *Outbox) pendingLanes(ctx context.Context) ([]laneKey, error) {
	rows, err := o.st.QueryContext(ctx, nil, `SELECT DISTINCT COALESCE(mesh, ''), COALESCE(sender_session_pubkey, '') FROM outbox WHERE status = 'pending'`)
	return collect(rows, err, func(s rowScanner) (l laneKey, err error) { return l, s.Scan(&l.mesh, &l.session) })
}

// head is a lane's oldest pending row.
func (o *Outbox) head(ctx context.Context, l laneKey) (*outboxRow, error) {
	return o.one(ctx, nil, `SELECT `+outboxColumns+` FROM outbox
WHERE status = 'pending' AND mesh IS ? AND sender_session_pubkey IS ? ORDER BY enqueued_at, rowid LIMIT 1`,
		nullable(l.mesh), nullable(l.session))
}

// claimHead moves a lane's oldest pending row to inflight, counting the
// attempt, if it is due and not expired; errNotFound otherwise.
func (o *Outbox) claimHead(ctx context.Context, l laneKey, now time.Time, t DrainTiming) (*outboxRow, error) {
	return o.one(ctx, nil, `UPDATE outbox SET status = 'inflight', attempts = attempts + 1, next_attempt_at = ?
WHERE id = (SELECT id FROM outbox WHERE status = 'pending' AND mesh IS ? AND sender_session_pubkey IS ? ORDER BY enqueued_at, rowid LIMIT 1)
  AND next_attempt_at <= ? AND enqueued_at > ?
RETURNING `+outboxColumns,
		now.Add(t.AckTimeout).UnixMilli(), nullable(l.mesh), nullable(l.session), now.UnixMilli(), now.Add(-t.MaxAge).UnixMilli())
}

// release returns an interrupted inflight row to pending.
func (o *Outbox) release(ctx context.Context, id string) error {
	_, err := o.st.ExecContext(ctx, nil, `UPDATE outbox SET status = 'pending', next_attempt_at = ? WHERE id = ? AND status = 'inflight'`,
		time.Now().UnixMilli(), id)
	return err
}

// retryLater returns an inflight row to pending until next.
func (o *Outbox) retryLater(ctx context.Context, id string, next time.Time, reason string) error {
	_, err := o.st.ExecContext(ctx, nil, `UPDATE outbox SET status = 'pending', next_attempt_at = ?, last_error = ? WHERE id = ? AND status = 'inflight'`,
		next.UnixMilli(), reason, id)
	return err
}

// settle records done (with the broker's id, the time, and what the row's
// receipts will be) or dead (with the reason); applied is false when the
// row was requeued meanwhile (it stays aborted).
func (o *Outbox) settle(ctx context.Context, row *outboxRow, status, reason, brokerID string, now time.Time) (applied bool, err error) {
	var n int64
	id := row.ID
	if status == outboxDone {
		var recipients any
		if row.Recipients != nil {
			recipients = *row.Recipients
		}
		n, err = affected(o.st.ExecContext(ctx, nil, `UPDATE outbox SET status = 'done', delivered_at = ?, broker_message_id = ?, last_error = NULL,
  receipts = ?, recipients = ?
WHERE id = ? AND status IN ('pending', 'inflight')`, now.UnixMilli(), brokerID, nullable(row.Receipts), recipients, id))
	} else {
		n, err = affected(o.st.ExecContext(ctx, nil, `UPDATE outbox SET status = 'dead', last_error = ? WHERE id = ? AND status IN ('pending', 'inflight')`,
			nullable(reason), id))
	}
	return n == 1, err
}
