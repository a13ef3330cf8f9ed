// The receipt ladder of what this machine sent: how far each message got,
// per recipient key — queued (in the outbox) → sent (the broker acked it) →
// delivered (the recipient's daemon stored it) → surfaced (shown to its
// model, and how) → replied (it answered with reply_to_id); or dead (with
// the reason) or expired (not delivered within the broker's message TTL).
//
// Policy:
//   - Receipts are applied only to a row of this outbox whose broker id they
//     name, and, for a DM, only when they come from its target (the key, or
//     a session of the member key it was sent to): a broadcast or group
//     message has one ladder per recipient key that reported.
//   - A rung once reached is kept: a later receipt adds to a ladder and
//     never takes a rung back. A surfacing that is confirmed replaces an
//     unconfirmed one (a channel emit later proven, or a hook that showed
//     what a channel claim left unproven).
//   - A receipt is acked to the broker only once it is stored, so a crash
//     loses none: the broker pushes it again.
//   - A reply to a message from this outbox is its recipient's replied
//     rung, whether or not its broker relays receipts.
//   - Every change is published as a `receipt` event to the session that
//     sent the message (to machine-wide streams only, for the member's
//     own messages), and as an `outbox` event with the ladder.
package main

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// What a sent row's receipts are.
const (
	receiptsOn  = "on"  // the broker relays them
	receiptsOff = "off" // it does not: the ladder stops at sent
)

// Rungs of the ladder.
const (
	rungQueued    = "queued"
	rungSent      = "sent"
	rungDelivered = "delivered"
	rungSurfaced  = "surfaced"
	rungReplied   = "replied"
	rungDead      = "dead"
	rungExpired   = "expired"
	rungAborted   = "aborted"
)

// rungOrder ranks the rungs a recipient climbs.
var rungOrder = map[string]int{rungQueued: 0, rungSent: 1, rungDelivered: 2, rungSurfaced: 3, rungReplied: 4}

// receiptRow is one recipient key's ladder of one sent message.
type receiptRow struct {
	ClientMessageID       string
	RecipientPubkey       string
	RecipientMemberPubkey string
	RecipientName         string
	DeliveredAt           int64 // ms, learned
	SurfacedAt            int64
	SurfacedVia           string
	SurfacedConfirmed     bool
	ReportedDeliveredAt   string
	ReportedSurfacedAt    string
	Shares                string
	RepliedAt             int64
	ReplyID               string
}

const receiptColumns = `client_message_id, recipient_pubkey, COALESCE(recipient_member_pubkey, ''), COALESCE(recipient_name, ''),
  COALESCE(delivered_at, 0), COALESCE(surfaced_at, 0), COALESCE(surfaced_via, ''), surfaced_confirmed,
  COALESCE(reported_delivered_at, ''), COALESCE(reported_surfaced_at, ''), COALESCE(shares, ''), COALESCE(replied_at, 0),
  COALESCE(reply_id, '')`

func scanReceiptRow(s rowScanner) (receiptRow, error) {
	var r receiptRow
	err := s.Scan(&r.ClientMessageID, &r.RecipientPubkey, &r.RecipientMemberPubkey, &r.RecipientName, &r.DeliveredAt,
		&r.SurfacedAt, &r.SurfacedVia, &r.SurfacedConfirmed, &r.ReportedDeliveredAt, &r.ReportedSurfacedAt, &r.Shares,
		&r.RepliedAt, &r.ReplyID)
	return r, err
}

// receiptsOf lists the ladders of the messages with these client ids.
func (o *Outbox) receiptsOf(ctx context.Context, cmids []string) (map[string][]receiptRow, error) {
	out := map[string][]receiptRow{}
	if len(cmids) == 0 {
		return out, nil
	}
	q := `SELECT ` + receiptColumns + ` FROM receipts WHERE client_message_id IN (` +
		placeholders(len(cmids)) + `) ORDER BY client_message_id, recipient_pubkey`
	var rows *sql.Rows
	var err error
	if len(cmids) == 1 {
		// One message's ladder is read with every receipt and every send:
		// its statement is kept. Lists of other lengths are rarer and each
		// length would be a statement of its own.
		rows, err = o.st.QueryContext(ctx, nil, q, cmids[0])
	} else {
		rows, err = o.db.QueryContext(ctx, q, anySlice(cmids)...)
	}
	list, err := collect(rows, err, scanReceiptRow)
	for _, r := range list {
		out[r.ClientMessageID] = append(out[r.ClientMessageID], r)
	}
	return out, err
}

// mergeReceipt is r with what notice n adds, learned at now; changed says
// whether that is anything.
func mergeReceipt(r receiptRow, n ReceiptNoticeFrame, now int64) (receiptRow, bool) {
	before := r
	r.RecipientMemberPubkey = cmp.Or(n.RecipientMemberPubkey, r.RecipientMemberPubkey)
	r.RecipientName = cmp.Or(n.RecipientName, r.RecipientName)
	if n.Shares != "" {
		r.Shares = n.Shares
	}
	if r.DeliveredAt == 0 {
		r.DeliveredAt, r.ReportedDeliveredAt = now, n.DeliveredAt
	}
	if n.State == receiptSurfaced && (r.SurfacedAt == 0 || n.Confirmed && !r.SurfacedConfirmed) {
		if r.SurfacedAt == 0 || r.SurfacedVia != n.Via {
			r.SurfacedAt, r.ReportedSurfacedAt = now, n.SurfacedAt
		}
		r.SurfacedVia, r.SurfacedConfirmed = n.Via, n.Confirmed
	}
	return r, r != before
}

// applyReceipt stores what a receipt notice says of the message with
// client id cmid; it returns the recipient's ladder before and after.
func (o *Outbox) applyReceipt(ctx context.Context, cmid string, n ReceiptNoticeFrame, now time.Time) (before, after receiptRow, changed bool, err error) {
	err = o.updateReceipt(ctx, cmid, n.RecipientPubkey, func(r receiptRow) (receiptRow, bool) {
		before = r
		after, changed = mergeReceipt(r, n, now.UnixMilli())
		return after, changed
	})
	return before, after, changed, err
}

// updateReceipt reads a recipient's ladder (empty when new), lets change
// edit it, and writes it back when it changed, in one transaction.
func (o *Outbox) updateReceipt(ctx context.Context, cmid, key string, change func(receiptRow) (receiptRow, bool)) error {
	tx, err := o.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var r receiptRow
	err = o.st.scanOne(ctx, tx, `SELECT `+receiptColumns+` FROM receipts WHERE client_message_id = ? AND recipient_pubkey = ?`,
		func(s rowScanner) (err error) { r, err = scanReceiptRow(s); return err }, cmid, key)
	if errors.Is(err, sql.ErrNoRows) {
		r, err = receiptRow{ClientMessageID: cmid, RecipientPubkey: key}, nil
	}
	if err != nil {
		return err
	}
	r, changed := change(r)
	if !changed {
		return nil
	}
	if _, err := o.st.ExecContext(ctx, tx, `INSERT OR REPLACE INTO receipts (client_message_id, recipient_pubkey, recipient_member_pubkey,
  recipient_name, delivered_at, surfaced_at, surfaced_via, surfaced_confirmed, reported_delivered_at, reported_surfaced_at, shares,
  replied_at, reply_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ClientMessageID, r.RecipientPubkey, nullable(r.RecipientMemberPubkey), nullable(r.RecipientName), nullInt(r.DeliveredAt),
		nullInt(r.SurfacedAt), nullable(r.SurfacedVia), r.SurfacedConfirmed, nullable(r.ReportedDeliveredAt),
		nullable(r.ReportedSurfacedAt), nullable(r.Shares), nullInt(r.RepliedAt), nullable(r.ReplyID)); err != nil {
		return err
	}
	return tx.Commit()
}

// nullInt is 0 as NULL.
func nullInt(n int64) any {
	if n == 0 {
		return nil
	}
	return n
}

// byReference finds the outbox row a message reference names: its row id,
// client id or broker id, or a prefix of one (6 characters at least) that
// names one row.
func (o *Outbox) byReference(ctx context.Context, ref string) (*outboxRow, error) {
	if r, err := o.one(ctx, nil, `SELECT `+outboxColumns+` FROM outbox WHERE id = ? OR client_message_id = ?`, ref, ref); !errors.Is(err, errNotFound) {
		return r, err
	}
	if r, err := o.byBrokerID(ctx, ref); !errors.Is(err, errNotFound) {
		return r, err
	}
	if len(ref) < 6 || strings.ContainsAny(ref, "%_") {
		return nil, errNotFound
	}
	rows, err := o.db.QueryContext(ctx, `SELECT `+outboxColumns+` FROM outbox WHERE id LIKE ? OR client_message_id LIKE ? OR broker_message_id LIKE ?
  ORDER BY enqueued_at DESC LIMIT 2`, ref+"%", ref+"%", ref+"%")
	list, err := collect(rows, err, scanOutboxRow)
	switch {
	case err != nil:
		return nil, err
	case len(list) == 0:
		return nil, errNotFound
	case len(list) > 1:
		return nil, errAmbiguousReference
	}
	return list[0], nil
}

var errAmbiguousReference = errors.New("more than one message starts with that")

// byBrokerID is the row the broker gave this id. The outbox keeps no index
// on it (every index costs each send), so this reads the whole outbox: it
// serves replies and receipts without a client id, which are few.
func (o *Outbox) byBrokerID(ctx context.Context, id string) (*outboxRow, error) {
	if id == "" {
		return nil, errNotFound
	}
	return o.one(ctx, nil, `SELECT `+outboxColumns+` FROM outbox WHERE broker_message_id = ? ORDER BY enqueued_at DESC LIMIT 1`, id)
}

// Daemon side.

// onReceipt stores a receipt the member link brought and acks it, once it
// is stored or known to be none of this outbox's.
func (d *Daemon) onReceipt(l *Link, f Inbound) {
	var n ReceiptNoticeFrame
	if err := json.Unmarshal(f.Data, &n); err != nil || n.ReceiptID == "" {
		d.log.Warn("bad_receipt", "mesh", l.Mesh())
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, 5*time.Second)
	defer cancel()
	if err := d.applyReceiptNotice(ctx, l.Mesh(), n); err != nil {
		d.log.Warn("receipt_store_failed", "mesh", l.Mesh(), "message_id", n.MessageID, "err", err.Error())
		return // not acked: the broker pushes it again
	}
	_ = f.Reply(ctx, ClientAckFrame{Type: frameClientAck, BrokerMessageID: n.ReceiptID})
}

// applyReceiptNotice applies one receipt to its row's ladder.
func (d *Daemon) applyReceiptNotice(ctx context.Context, mesh string, n ReceiptNoticeFrame) error {
	var row *outboxRow
	var err error
	if n.ClientMessageID != "" {
		row, err = d.outbox.byClientID(ctx, nil, n.ClientMessageID)
	}
	if n.ClientMessageID == "" || errors.Is(err, errNotFound) {
		row, err = d.outbox.byBrokerID(ctx, n.MessageID)
	}
	switch {
	case errors.Is(err, errNotFound):
		return nil // pruned, or not this machine's
	case err != nil:
		return err
	}
	// Matched by client_message_id, the broker ids may differ: a re-send
	// after a lost send_ack is stored anew once the first copy was acked
	// everywhere, and the recipients, who drop the second copy, name the
	// first. Matched by broker id, they agree by construction.
	if row.Mesh != mesh || !isHexKey(n.RecipientPubkey) ||
		isHexKey(row.TargetSpec) && n.RecipientPubkey != row.TargetSpec && n.RecipientMemberPubkey != row.TargetSpec {
		d.log.Info("receipt_ignored", "mesh", mesh, "message_id", n.MessageID, "recipient", shortKey(n.RecipientPubkey))
		return nil
	}
	before, after, changed, err := d.outbox.applyReceipt(ctx, row.ClientMessageID, n, time.Now())
	if err != nil || !changed {
		return err
	}
	if before.DeliveredAt == 0 && after.DeliveredAt != 0 {
		d.metrics.sendToDelivered.observe(time.Duration(after.DeliveredAt-row.EnqueuedAt) * time.Millisecond)
	}
	if before.SurfacedAt == 0 && after.SurfacedAt != 0 {
		d.metrics.sendToSurfaced.observe(time.Duration(after.SurfacedAt-row.EnqueuedAt) * time.Millisecond)
	}
	d.ladderChanged(ctx, row)
	return nil
}

// noteReply records a new inbox row that answers a message this machine
// sent as its recipient's replied rung.
func (d *Daemon) noteReply(row *inboxRow) {
	if row.ReplyToID == "" || d.outbox == nil {
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, 5*time.Second)
	defer cancel()
	sent, err := d.outbox.byBrokerID(ctx, row.ReplyToID)
	if errors.Is(err, errNotFound) {
		sent, err = d.outbox.byClientID(ctx, nil, row.ReplyToID)
	}
	if err != nil || sent.Mesh != row.Mesh {
		return
	}
	if isHexKey(sent.TargetSpec) && row.SenderPubkey != sent.TargetSpec && row.SenderMemberPubkey != sent.TargetSpec {
		return // from someone the message was not for
	}
	key := row.SenderPubkey
	if list, err := d.outbox.receiptsOf(ctx, []string{sent.ClientMessageID}); err == nil {
		// A ladder kept under the member key the message went to.
		for _, r := range list[sent.ClientMessageID] {
			if r.RecipientPubkey != key && r.RecipientPubkey == row.SenderMemberPubkey {
				key = r.RecipientPubkey
			}
		}
	}
	now := time.Now().UnixMilli()
	err = d.outbox.updateReceipt(ctx, sent.ClientMessageID, key, func(r receiptRow) (receiptRow, bool) {
		if r.RepliedAt != 0 {
			return r, false
		}
		r.RepliedAt, r.ReplyID = now, messageRef(row.BrokerMessageID, row.ID)
		r.RecipientName = cmp.Or(r.RecipientName, row.SenderName)
		r.RecipientMemberPubkey = cmp.Or(r.RecipientMemberPubkey, row.SenderMemberPubkey)
		return r, true
	})
	if err != nil {
		d.log.Warn("reply_record_failed", "id", sent.ID, "err", err.Error())
		return
	}
	d.ladderChanged(ctx, sent)
}

// ladderChanged publishes a row's ladder: a `receipt` event for the session
// that sent it, and an `outbox` event with the ladder for the machine.
func (d *Daemon) ladderChanged(ctx context.Context, row *outboxRow) {
	fresh, err := d.outbox.get(ctx, row.ID)
	if err != nil {
		return
	}
	l, err := d.ladder(ctx, fresh)
	if err != nil {
		return
	}
	ev := Event{Kind: eventReceipt, Mesh: fresh.Mesh, Data: &ReceiptEvent{ID: fresh.ID, ClientMessageID: fresh.ClientMessageID,
		BrokerMessageID: fresh.BrokerMessageID, Mesh: fresh.Mesh, Target: fresh.TargetSpec, Ladder: l}}
	if fresh.SenderSessionPubkey != "" {
		ev.RecipientKind, ev.RecipientPubkey = recipientSession, fresh.SenderSessionPubkey
	}
	d.bus.Publish(ev)
	v := fresh.view()
	v.Ladder = &l
	d.bus.Publish(Event{Kind: eventOutbox, Mesh: fresh.Mesh, Data: &OutboxEvent{Row: v, Message: d.sentMessage(fresh, nil, &l)}})
	d.ladderWaiters.notify(fresh.ID)
}

// ladderWaiters are the requests waiting for a row's ladder to change, by
// row id.
type ladderWaiters struct {
	mu    sync.Mutex
	byRow map[string][]chan struct{}
}

// ladderWait is one registration; register before reading the ladder, so
// that no change between the read and the wait is missed.
type ladderWait struct {
	lw *ladderWaiters
	id string
	ch chan struct{}
}

func (lw *ladderWaiters) watch(id string) *ladderWait {
	w := &ladderWait{lw: lw, id: id, ch: make(chan struct{})}
	lw.mu.Lock()
	if lw.byRow == nil {
		lw.byRow = map[string][]chan struct{}{}
	}
	lw.byRow[id] = append(lw.byRow[id], w.ch)
	lw.mu.Unlock()
	return w
}

// notify wakes every wait on the row.
func (lw *ladderWaiters) notify(id string) {
	lw.mu.Lock()
	chs := lw.byRow[id]
	delete(lw.byRow, id)
	lw.mu.Unlock()
	for _, ch := range chs {
		close(ch)
	}
}

func (w *ladderWait) cancel() {
	w.lw.mu.Lock()
	defer w.lw.mu.Unlock()
	list := w.lw.byRow[w.id]
	for i, c := range list {
		if c == w.ch {
			w.lw.byRow[w.id] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(w.lw.byRow[w.id]) == 0 {
		delete(w.lw.byRow, w.id)
	}
}

// wait waits for a change, d, or the end of ctx, then lets go.
func (w *ladderWait) wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.ch:
		return
	case <-t.C:
	case <-ctx.Done():
	}
	w.cancel()
}

// ladder is one row's ladder.
func (d *Daemon) ladder(ctx context.Context, r *outboxRow) (messageLadder, error) {
	rec, err := d.outbox.receiptsOf(ctx, []string{r.ClientMessageID})
	if err != nil {
		return messageLadder{}, err
	}
	return ladderOf(r, rec[r.ClientMessageID], time.Now()), nil
}

// laddersOf is each row's ladder as of now, read in one query.
func (d *Daemon) laddersOf(ctx context.Context, rows []*outboxRow, now time.Time) ([]messageLadder, error) {
	cmids := make([]string, 0, len(rows))
	for _, r := range rows {
		cmids = append(cmids, r.ClientMessageID)
	}
	rec, err := d.outbox.receiptsOf(ctx, cmids)
	if err != nil {
		return nil, err
	}
	out := make([]messageLadder, 0, len(rows))
	for _, r := range rows {
		out = append(out, ladderOf(r, rec[r.ClientMessageID], now))
	}
	return out, nil
}

// withLadders puts each row's ladder on its view.
func (d *Daemon) withLadders(ctx context.Context, rows []*outboxRow, views []outboxView) error {
	ladders, err := d.laddersOf(ctx, rows, time.Now())
	if err != nil {
		return err
	}
	for i := range rows {
		views[i].Ladder = &ladders[i]
	}
	return nil
}

// ladderOf computes a row's ladder from its state and its recipients'
// receipts, as of now.
func ladderOf(r *outboxRow, rec []receiptRow, now time.Time) messageLadder {
	l := messageLadder{QueuedAt: isoTime(time.UnixMilli(r.EnqueuedAt)), Receipts: r.Receipts, Expected: r.Recipients,
		Recipients: []recipientRung{}}
	direct := isHexKey(r.TargetSpec)
	base := rungSent
	switch r.Status {
	case outboxPending, outboxInflight:
		l.Rung, l.Receipts = rungQueued, ""
		if direct {
			l.Recipients = append(l.Recipients, recipientRung{Pubkey: r.TargetSpec, Rung: rungQueued})
		}
		return l
	case outboxDead:
		l.Rung, l.Reason = rungDead, r.LastError
		if strings.HasPrefix(r.LastError, "expired") {
			l.Rung = rungExpired
		}
		return l
	case outboxAborted:
		l.Rung, l.Reason = rungAborted, "requeued as "+r.SupersededBy
		return l
	}
	l.SentAt = deref(msISO(r.DeliveredAt))
	sentAt := time.UnixMilli(r.DeliveredAt)
	if r.Receipts == receiptsOn && now.Sub(sentAt) > defaultMessageTTL {
		base = rungExpired // whoever has not reported by now never got it
	}
	since := func(ms int64) *int64 {
		if ms == 0 {
			return nil
		}
		d := ms - r.EnqueuedAt
		return &d
	}
	for _, x := range rec {
		rr := recipientRung{Pubkey: x.RecipientPubkey, MemberPubkey: x.RecipientMemberPubkey, Name: x.RecipientName,
			Rung: rungSent, Shares: x.Shares, DeliveredAt: deref(msISO(x.DeliveredAt)), SurfacedAt: deref(msISO(x.SurfacedAt)),
			RepliedAt: deref(msISO(x.RepliedAt)), Via: x.SurfacedVia, Confirmed: x.SurfacedConfirmed, ReplyID: x.ReplyID,
			DeliveredMs: since(x.DeliveredAt), SurfacedMs: since(x.SurfacedAt), RepliedMs: since(x.RepliedAt)}
		switch {
		case x.RepliedAt != 0:
			rr.Rung = rungReplied
		case x.SurfacedAt != 0:
			rr.Rung = rungSurfaced
		case x.DeliveredAt != 0:
			rr.Rung = rungDelivered
		}
		l.Recipients = append(l.Recipients, rr)
	}
	if direct && len(l.Recipients) == 0 {
		l.Recipients = append(l.Recipients, recipientRung{Pubkey: r.TargetSpec, Rung: base})
	}
	sort.SliceStable(l.Recipients, func(i, j int) bool { return rungOrder[l.Recipients[i].Rung] > rungOrder[l.Recipients[j].Rung] })
	// The message's rung is the lowest its recipients reached (with every
	// recipient the broker counted that has not reported still at sent).
	l.Rung = rungReplied
	for _, x := range l.Recipients {
		if rungOrder[x.Rung] < rungOrder[l.Rung] || x.Rung == rungExpired {
			l.Rung = x.Rung
		}
	}
	expected := len(l.Recipients)
	if r.Recipients != nil && !direct {
		expected = max(*r.Recipients, len(l.Recipients))
		if len(l.Recipients) < expected {
			l.Rung = base
		}
	}
	if len(l.Recipients) == 0 {
		l.Rung = base
	}
	if !direct {
		l.Summary = ladderSummary(l.Recipients, expected)
	}
	return l
}

// ladderSummary is a multicast's ladders in a few words: how many of its
// recipients its messages were shown to, or else delivered to.
func ladderSummary(rec []recipientRung, expected int) string {
	var delivered, surfaced, replied int
	for _, x := range rec {
		o := rungOrder[x.Rung]
		if o >= rungOrder[rungDelivered] {
			delivered++
		}
		if o >= rungOrder[rungSurfaced] {
			surfaced++
		}
		if x.Rung == rungReplied {
			replied++
		}
	}
	if expected == 0 {
		return "no recipients"
	}
	out := fmt.Sprintf("%d/%d surfaced", surfaced, expected)
	if surfaced == 0 {
		out = fmt.Sprintf("%d/%d delivered", delivered, expected)
	}
	if replied > 0 {
		out += fmt.Sprintf(", %d replied", replied)
	}
	return out
}

// ladderTop reports whether a ladder can climb no further: every recipient
// replied or surfaced (or shares no more than delivered and is there),
// receipts are off, or the row is dead.
func ladderTop(l messageLadder) bool {
	switch l.Rung {
	case rungDead, rungExpired, rungAborted:
		return true
	case rungQueued:
		return false
	}
	if l.Receipts == receiptsOff {
		return true
	}
	if l.Expected != nil && len(l.Recipients) < *l.Expected || len(l.Recipients) == 0 {
		return false
	}
	for _, x := range l.Recipients {
		switch {
		case rungOrder[x.Rung] >= rungOrder[rungSurfaced]:
		case x.Rung == rungDelivered && x.Shares == sharesDelivered:
		default:
			return false
		}
	}
	return true
}

// ladderReached reports whether every recipient (as many as the broker
// counted) reached rung.
func ladderReached(l messageLadder, rung string) bool {
	if len(l.Recipients) == 0 || l.Expected != nil && len(l.Recipients) < *l.Expected {
		return false
	}
	for _, x := range l.Recipients {
		if rungOrder[x.Rung] < rungOrder[rung] {
			return false
		}
	}
	return true
}

// The message route.

// handleMessage is GET /v1/messages/{id}: one sent message's ladder; with
// wait_ms, it answers once the ladder can climb no further or the wait is
// over.
func (d *Daemon) handleMessage(req *ipcRequest, in MessageQuery) (MessageReply, error) {
	if in.WaitMs < 0 || in.WaitMs > maxSendWaitMs {
		return MessageReply{}, badRequest("invalid_wait", "wait_ms must be 0..%d", maxSendWaitMs)
	}
	if _, ok := rungOrder[in.Until]; in.Until != "" && !ok {
		return MessageReply{}, badRequest("invalid_until", "until must be sent, delivered, surfaced or replied")
	}
	ctx := req.Context()
	row, err := d.outbox.byReference(ctx, in.ID)
	switch {
	case errors.Is(err, errNotFound):
		return MessageReply{}, newAPIError(http.StatusNotFound, "not_found", "no message "+in.ID+" in this machine's outbox").with("id", in.ID)
	case errors.Is(err, errAmbiguousReference):
		return MessageReply{}, newAPIError(http.StatusConflict, "ambiguous_id", err.Error()+": give more of the id").with("id", in.ID)
	case err != nil:
		return MessageReply{}, err
	}
	if s := req.session; s != nil && s.Presence != nil && row.SenderSessionPubkey != "" && row.SenderSessionPubkey != s.Presence.SessionPubkey {
		return MessageReply{}, newAPIError(http.StatusNotFound, "not_found", "no message "+in.ID+" sent by this session").with("id", in.ID)
	}
	deadline := time.Now().Add(time.Duration(in.WaitMs) * time.Millisecond)
	for {
		w := d.ladderWaiters.watch(row.ID)
		fresh, err := d.outbox.get(ctx, row.ID)
		if err != nil {
			w.cancel()
			return MessageReply{}, err
		}
		l, err := d.ladder(ctx, fresh)
		if err != nil {
			w.cancel()
			return MessageReply{}, err
		}
		left := time.Until(deadline)
		if ladderTop(l) || in.Until != "" && ladderReached(l, in.Until) || left <= 0 || (fresh.Status != outboxDone && !d.rowLinkOpen(fresh) && fresh.Status != outboxInflight) {
			w.cancel()
			v := fresh.view()
			v.Ladder = &l
			return MessageReply{Message: v}, nil
		}
		w.wait(ctx, left)
	}
}
