// The warning a sending session gets, once, when a message it sent has
// stayed unshown to its recipient's model for longer than a threshold
// (unsurfacedWarnAfter in the machine config; 10 minutes by default): with
// its next hook, or through its MCP server when that is a live channel.
//
// Policy:
//   - A message qualifies once the broker acked it longer ago than the
//     threshold (and more recently than the broker keeps messages), its
//     broker relays receipts, and its ladder can still climb: a recipient,
//     or one the broker counted, has not reached surfaced and does not
//     withhold it.
//   - A session is told of a message once: the path that claims the
//     warning first (the outbox row's unsurfaced_told_at) tells it.
//   - Receipts never start a warning of their own: a message that reached
//     surfaced before the threshold is never mentioned.
package main

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"
)

const (
	// defaultUnsurfacedAfter is how long a sent message may stay unshown
	// before its session is told.
	defaultUnsurfacedAfter = 10 * time.Minute
	// unsurfacedPerCall bounds the warnings one hook or sweep tells.
	unsurfacedPerCall = 5
	// defaultUnsurfacedSweep is how often the channel sessions' warnings are
	// looked for.
	defaultUnsurfacedSweep = 30 * time.Second
)

// parseUnsurfacedAfter reads the config's unsurfacedWarnAfter: a duration
// ("10m", "1h"), or "off" (or "0") for no warnings; "" is the default.
func parseUnsurfacedAfter(s string) (time.Duration, error) {
	switch strings.TrimSpace(s) {
	case "":
		return defaultUnsurfacedAfter, nil
	case "off", "0":
		return 0, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < time.Second {
		return 0, fmt.Errorf("unsurfacedWarnAfter %q: want a duration of at least 1s (10m, 1h) or off", s)
	}
	return d, nil
}

// unsurfacedCandidates are a session's sent rows that the broker acked
// between after and before (ms) and no path has warned of, oldest first.
func (o *Outbox) unsurfacedCandidates(ctx context.Context, sessionPubkey string, after, before int64) ([]*outboxRow, error) {
	rows, err := o.db.QueryContext(ctx, `SELECT `+outboxColumns+` FROM outbox WHERE sender_session_pubkey = ? AND status = ?
  AND receipts = ? AND unsurfaced_told_at IS NULL AND delivered_at > ? AND delivered_at <= ? ORDER BY delivered_at LIMIT 100`,
		sessionPubkey, outboxDone, receiptsOn, after, before)
	return collect(rows, err, scanOutboxRow)
}

// claimUnsurfacedWarning marks row id's warning told; false when another
// path told it first.
func (o *Outbox) claimUnsurfacedWarning(ctx context.Context, id string, now int64) (bool, error) {
	res, err := o.db.ExecContext(ctx, `UPDATE outbox SET unsurfaced_told_at = ? WHERE id = ? AND unsurfaced_told_at IS NULL`, now, id)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// claimUnsurfaced takes the warnings due to session s now: the messages it
// sent that have stayed unshown past the threshold.
func (d *Daemon) claimUnsurfaced(ctx context.Context, s *Session, now time.Time) []UnsurfacedNotice {
	after := d.unsurfacedAfter()
	if after <= 0 || s.Presence == nil {
		return nil
	}
	rows, err := d.outbox.unsurfacedCandidates(ctx, s.Presence.SessionPubkey, now.Add(-defaultMessageTTL).UnixMilli(), now.Add(-after).UnixMilli())
	if err != nil || len(rows) == 0 {
		return nil
	}
	ladders, err := d.laddersOf(ctx, rows, now)
	if err != nil {
		return nil
	}
	var out []UnsurfacedNotice
	for i, r := range rows {
		l := ladders[i]
		if ladderTop(l) {
			continue
		}
		if ok, err := d.outbox.claimUnsurfacedWarning(ctx, r.ID, now.UnixMilli()); err != nil || !ok {
			continue
		}
		to := r.TargetSpec
		if isHexKey(to) {
			to = d.keyName(r.Mesh, to)
			if len(l.Recipients) == 1 && l.Recipients[0].Name != "" {
				to = l.Recipients[0].Name // as its receipts name it
			}
		}
		n := UnsurfacedNotice{ID: r.ID, MessageID: r.BrokerMessageID, Mesh: r.Mesh, Target: r.TargetSpec, ToName: to,
			SentAt: deref(msISO(r.DeliveredAt)), Ladder: l}
		n.Text = unsurfacedWords(n, now.Sub(time.UnixMilli(r.DeliveredAt)))
		out = append(out, n)
		if len(out) == unsurfacedPerCall {
			break
		}
	}
	return out
}

// unsurfacedWords is the warning as the sending model reads it.
func unsurfacedWords(n UnsurfacedNotice, age time.Duration) string {
	id := shortID(cmp.Or(n.MessageID, n.ID))
	round := time.Minute
	if age < time.Minute {
		round = time.Second
	}
	head := fmt.Sprintf("Your message to %s (msg %s, sent %s ago) ", n.ToName, id, age.Round(round))
	l := n.Ladder
	if l.Summary != "" {
		return head + "has been shown to some of its recipients only: " + l.Summary + ". " +
			"`claudemesh message status " + id + "` says who has not seen it."
	}
	delivered := false
	for _, r := range l.Recipients {
		delivered = delivered || rungOrder[r.Rung] >= rungOrder[rungDelivered]
	}
	if delivered {
		return head + "reached " + n.ToName + "'s machine but has not been shown to its model yet: it may be busy, " +
			"or see messages only when it runs `claudemesh inbox`. Do not wait on an answer."
	}
	return head + "has not reached " + n.ToName + "'s machine yet: it may be offline. The broker keeps it until it comes back."
}

// unsurfacedAfter is the threshold in force.
func (d *Daemon) unsurfacedAfter() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.warnAfter
}

// runUnsurfacedSweep tells the sessions whose MCP server is a live channel
// of their unshown messages as the threshold passes; the rest hear of them
// with their next hook.
func (d *Daemon) runUnsurfacedSweep(ctx context.Context) {
	t := time.NewTicker(d.opts.UnsurfacedSweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := time.Now()
			for _, s := range d.sessions.List() {
				if s.Presence == nil || surfacingOf(d.states.get(s)) != surfacedViaChannel {
					continue
				}
				for _, n := range d.claimUnsurfaced(ctx, s, now) {
					d.bus.Publish(Event{Kind: eventUnsurfaced, Mesh: n.Mesh, RecipientKind: recipientSession,
						RecipientPubkey: s.Presence.SessionPubkey, Data: &n})
				}
			}
		}
	}
}
