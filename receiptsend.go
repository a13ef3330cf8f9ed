// Receipts a recipient sends: for each message stored in the inbox, its
// sender is told how far it got here — delivered once the row is stored,
// surfaced (with how) once a path has shown it to a session's model.
//
// Policy:
//   - A row whose push named its sender's member key has receipts; what is
//     due is kept on the row (receipt_due), and sent only while the mesh's
//     member link is open to a broker that relays receipts (the hello_ack's
//     receipts feature): a receipt produced while the broker is away, or
//     cut short by a crash, goes out when the link is open again. Rows of a
//     broker that never relays them stay due until they are pruned.
//   - Receipts leave on the member link, one at a time, each saying the
//     highest rung reached so far: a surfaced receipt implies delivered. A
//     rung is marked sent only once the broker took it, and only if the
//     row did not change meanwhile.
//   - A recipient that shares only delivered (profile --receipts delivered)
//     sends no surfaced receipt, and every receipt it sends says so. A
//     session's own choice wins over its member's.
//   - A broker that answers a receipt with unknown_message_type gets no
//     more until the link connects again; one that refuses one for good
//     (forbidden, unknown_target, invalid) drops that row's receipts; any
//     other failure is retried.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Receipt sharing levels (profile --receipts).
const (
	sharesDelivered = receiptDelivered
	sharesSurfaced  = receiptSurfaced
)

// receiptRetry is how long receipts wait after a failure that may pass.
const receiptRetry = 2 * time.Second

// dueReceipt is one inbox row whose sender has a rung to learn.
type dueReceipt struct {
	ID, BrokerMessageID, ClientMessageID, RecipientPubkey, To string
	ReceivedAt                                                int64
	SurfacedAt                                                int64
	Via                                                       string
	Confirmed                                                 bool
	Sent                                                      string
	Shares                                                    string
}

// body is the receipt the row says now.
func (r dueReceipt) body() ReceiptBody {
	b := ReceiptBody{MessageID: r.BrokerMessageID, ClientMessageID: r.ClientMessageID, State: receiptDelivered,
		DeliveredAt: isoTime(time.UnixMilli(r.ReceivedAt)), Shares: r.Shares}
	if r.SurfacedAt != 0 && validReceiptVia(r.Via) && r.Shares == sharesSurfaced {
		b.State, b.SurfacedAt, b.Via, b.Confirmed = receiptSurfaced, isoTime(time.UnixMilli(r.SurfacedAt)), r.Via, r.Confirmed
	}
	return b
}

// rung is what receipt_sent records of a body: its state, path and
// confirmation.
func (b ReceiptBody) rung() string {
	if b.State == receiptSurfaced {
		return b.State + ":" + b.Via + ":" + strconv.FormatBool(b.Confirmed)
	}
	return b.State + ":" + b.Shares
}

// dueReceipts lists up to limit rows of mesh with a receipt due, oldest
// first; memberKey is this machine's member key there, whose policy applies
// to sessions without their own.
func (ib *Inbox) dueReceipts(ctx context.Context, mesh, memberKey string, limit int) ([]dueReceipt, error) {
	rows, err := ib.st.QueryContext(ctx, nil, `SELECT id, COALESCE(broker_message_id, ''), client_message_id, COALESCE(recipient_pubkey, ''),
  receipt_to, received_at, COALESCE(surfaced_at, 0), COALESCE(surfaced_via, ''), surfaced_confirmed_at IS NOT NULL,
  COALESCE(receipt_sent, ''),
  COALESCE((SELECT shares FROM receipt_policy p WHERE p.mesh = inbox.mesh AND p.key = inbox.recipient_pubkey),
           (SELECT shares FROM receipt_policy p WHERE p.mesh = inbox.mesh AND p.key = ?), 'surfaced')
FROM inbox WHERE receipt_due = 1 AND mesh = ? ORDER BY received_at LIMIT ?`, memberKey, mesh, limit)
	return collect(rows, err, func(s rowScanner) (dueReceipt, error) {
		var r dueReceipt
		return r, s.Scan(&r.ID, &r.BrokerMessageID, &r.ClientMessageID, &r.RecipientPubkey, &r.To, &r.ReceivedAt,
			&r.SurfacedAt, &r.Via, &r.Confirmed, &r.Sent, &r.Shares)
	})
}

// receiptSent records that the broker took rung for the row, unless the
// row's surfacing changed since it was read (then it stays due).
func (ib *Inbox) receiptSent(ctx context.Context, r dueReceipt, rung string) error {
	_, err := ib.st.ExecContext(ctx, nil, `UPDATE inbox SET receipt_sent = ?, receipt_due = 0
WHERE id = ? AND COALESCE(surfaced_at, 0) = ? AND COALESCE(surfaced_via, '') = ? AND (surfaced_confirmed_at IS NOT NULL) = ?`,
		rung, r.ID, r.SurfacedAt, r.Via, r.Confirmed)
	return err
}

// receiptsDropped stops receipts for a row the broker refused for good.
func (ib *Inbox) receiptsDropped(ctx context.Context, id, why string) error {
	_, err := ib.db.ExecContext(ctx, `UPDATE inbox SET receipt_due = 0, receipt_to = NULL, receipt_sent = ? WHERE id = ?`, "refused: "+why, id)
	return err
}

// setReceiptPolicy records what key tells senders on mesh; rows whose
// receipts that changes are due again.
func (ib *Inbox) setReceiptPolicy(ctx context.Context, mesh, key, shares string) error {
	tx, err := ib.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO receipt_policy (mesh, key, shares) VALUES (?, ?, ?)
ON CONFLICT (mesh, key) DO UPDATE SET shares = excluded.shares`, mesh, key, shares); err != nil {
		return err
	}
	if shares == sharesSurfaced {
		// What was withheld so far is told now.
		if _, err := tx.ExecContext(ctx, `UPDATE inbox SET receipt_due = 1 WHERE mesh = ? AND receipt_to IS NOT NULL
  AND surfaced_at IS NOT NULL AND COALESCE(receipt_sent, '') NOT LIKE 'surfaced:%'`, mesh); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// receiptPolicy is what key tells senders on mesh, and whether it said so
// itself (rather than following its member's choice or the default).
func (ib *Inbox) receiptPolicy(ctx context.Context, mesh, key, memberKey string) (string, error) {
	var shares string
	err := ib.db.QueryRowContext(ctx, `SELECT COALESCE((SELECT shares FROM receipt_policy WHERE mesh = ? AND key = ?),
  (SELECT shares FROM receipt_policy WHERE mesh = ? AND key = ?), 'surfaced')`, mesh, key, mesh, memberKey).Scan(&shares)
	return shares, err
}

// receiptSender sends the receipts that are due, mesh by mesh.
type receiptSender struct {
	d    *Daemon
	kick chan struct{}
	wg   sync.WaitGroup
}

func newReceiptSender(d *Daemon) *receiptSender {
	return &receiptSender{d: d, kick: make(chan struct{}, 1)}
}

// wake tells the sender a receipt may be due.
func (rs *receiptSender) wake() {
	if rs == nil {
		return
	}
	select {
	case rs.kick <- struct{}{}:
	default:
	}
}

// Start runs the sender until ctx ends; Wait waits for it.
func (rs *receiptSender) Start(ctx context.Context) {
	rs.wg.Add(1)
	go func() {
		defer rs.wg.Done()
		for {
			retry := rs.sendDue(ctx)
			var timer <-chan time.Time
			if retry {
				timer = time.After(receiptRetry)
			}
			select {
			case <-ctx.Done():
				return
			case <-rs.kick:
			case <-timer:
			}
		}
	}()
}

func (rs *receiptSender) Wait() {
	if rs != nil {
		rs.wg.Wait()
	}
}

// sendDue sends what is due on every mesh whose link takes receipts now;
// retry says something is left that a later try may send.
func (rs *receiptSender) sendDue(ctx context.Context) (retry bool) {
	d := rs.d
	d.mu.Lock()
	entries := make([]*meshEntry, 0, len(d.meshes))
	for _, e := range d.meshes {
		entries = append(entries, e)
	}
	d.mu.Unlock()
	for _, e := range entries {
		for ctx.Err() == nil && e.Link.State() == LinkOpen && e.Link.Receipts() {
			due, err := d.inbox.dueReceipts(ctx, e.Mesh.Slug, e.Key.PublicHex(), 100)
			if err != nil {
				if ctx.Err() == nil {
					d.log.Warn("receipts_read_failed", "mesh", e.Mesh.Slug, "err", err.Error())
				}
				return true
			}
			if len(due) == 0 {
				break
			}
			for _, r := range due {
				if again := rs.sendOne(ctx, e, r); again {
					return true
				}
			}
			if len(due) < 100 {
				break
			}
		}
	}
	return false
}

// sendOne sends one row's receipt; again reports a failure worth retrying
// later (the rest of the mesh's receipts wait for it).
func (rs *receiptSender) sendOne(ctx context.Context, e *meshEntry, r dueReceipt) (again bool) {
	d := rs.d
	body := r.body()
	rung := body.rung()
	if rung == r.Sent {
		_ = d.inbox.receiptSent(ctx, r, rung) // nothing new to tell
		return false
	}
	f := ReceiptFrame{Type: frameReceipt, ID: "rc-" + randomHex(6), To: r.To, RecipientPubkey: r.RecipientPubkey, ReceiptBody: body}
	rctx, cancel := context.WithTimeout(ctx, d.opts.RPCTimeout)
	raw, err := e.Link.Request(rctx, f, frameAck)
	cancel()
	var be *BrokerError
	var ack AckFrame
	switch {
	case errors.As(err, &be) && be.Code == codeUnknownMessageType:
		d.log.Info("receipts_off", "mesh", e.Mesh.Slug, "why", "the broker does not know receipt frames")
		e.Link.refuseReceipts()
		return false
	case err != nil:
		return true
	case json.Unmarshal(raw, &ack) != nil:
		return true
	case ack.Error != "" && permanentSendErrors[ackErrorCode(ack.Error)]:
		d.log.Info("receipt_refused", "mesh", e.Mesh.Slug, "message_id", r.BrokerMessageID, "err", ack.Error)
		_ = d.inbox.receiptsDropped(ctx, r.ID, ack.Error)
		return false
	case ack.Error != "":
		return true
	}
	if err := d.inbox.receiptSent(ctx, r, rung); err != nil {
		d.log.Warn("receipt_record_failed", "id", r.ID, "err", err.Error())
	}
	return false
}

// applyReceiptsProfile applies profile --receipts: for the calling
// session, or for this machine's member on the meshes chosen.
func (d *Daemon) applyReceiptsProfile(ctx context.Context, s *Session, mesh, shares string) ([]string, error) {
	if shares != sharesDelivered && shares != sharesSurfaced {
		return nil, badRequest("invalid_receipts", "receipts must be delivered or surfaced")
	}
	if s != nil && (mesh == "" || mesh == s.Mesh) && s.Presence != nil {
		if err := d.inbox.setReceiptPolicy(ctx, s.Mesh, s.Presence.SessionPubkey, shares); err != nil {
			return nil, err
		}
		d.receipts.wake()
		return []string{s.Mesh}, nil
	}
	meshes, err := d.meshesFor(mesh, s)
	if err != nil {
		return nil, err
	}
	if len(meshes) == 0 {
		return nil, newAPIError(http.StatusServiceUnavailable, "no_mesh", "no mesh joined yet")
	}
	var out []string
	for _, e := range meshes {
		if err := d.inbox.setReceiptPolicy(ctx, e.Mesh.Slug, e.Key.PublicHex(), shares); err != nil {
			return nil, fmt.Errorf("mesh %s: %w", e.Mesh.Slug, err)
		}
		out = append(out, e.Mesh.Slug)
	}
	d.receipts.wake()
	return out, nil
}
