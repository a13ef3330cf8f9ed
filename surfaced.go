// Which inbox rows a session's model has been shown, how and when. Three
// paths show messages to the model: the MCP server's channel notification,
// the Claude Code hooks (`claudemesh hook …`), and `claudemesh inbox` run
// from the session (pull). Each row is shown once, whichever path gets to
// it first.
//
// Policy:
//   - A path claims rows before it shows them, in one UPDATE whose WHERE
//     clause is the claim rule: two paths racing for a row cannot both win.
//   - A channel emit proves nothing: Claude Code drops channel
//     notifications without a trace when the channel is not live (no
//     development-channels flag, print mode, an account or provider
//     without channels, org policy). Its claim is recorded unconfirmed, and
//     left to be confirmed by evidence: the row's message id in the
//     session's transcript (Claude Code writes a channel message there as
//     soon as it queues it), or a reply to the row from that session.
//   - A hook or a pull shows the text itself, so its claim is confirmed at
//     once. Either also takes rows whose channel claim is still unconfirmed
//     after surfacingFallbackDelay and not in the transcript: a dropped
//     channel message reaches the model once, and a working channel never
//     causes a second showing, however soon the model runs `inbox`.
//   - A channel emit that failed gives its claim back.
//   - A confirmed row is also seen (seen_at), as if read in the inbox.
//   - Every claim and confirmation is published as a `surfaced` event.
package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// Surfacing paths: how a row was shown to a session's model, and how a
// session can be shown messages at all (surfacingpath.go).
const (
	surfacedViaChannel = "channel"
	surfacedViaHooks   = "hooks"
	surfacedViaPull    = "pull"
)

// What confirmed a row was shown.
const (
	evidenceShown      = "shown"      // the path printed the text itself (hooks, pull)
	evidenceTranscript = "transcript" // the message id is in the session's transcript
	evidenceReply      = "reply"      // the session answered it with --reply-to
)

// surfacingFallbackDelay is how long a channel claim may stay unconfirmed
// before a hook or a pull shows the row instead. A live channel confirms within
// milliseconds: Claude Code writes what it queues to the transcript at once.
const surfacingFallbackDelay = 10 * time.Second

// surfacedState is how and when a row was shown to a session's model.
type surfacedState struct {
	At          int64  // ms; 0: no path has shown it
	Via         string // channel, hooks or pull; "" for a row read before this was recorded
	ConfirmedAt int64  // ms; 0 while a channel claim waits for evidence
	Evidence    string // what confirmed it
	SessionID   string // the session whose path showed it
}

// surfaceClaim is one path's claim on rows.
type surfaceClaim struct {
	Via       string
	SessionID string
	IDs       []string // nil: the oldest claimable rows in scope, up to Limit
	Limit     int
	// FallbackBefore (ms): with Via hooks or pull, channel claims older
	// than this that are still unconfirmed are taken too.
	FallbackBefore int64
}

// claimRule is the WHERE clause a claim of via may take a row under.
func claimRule(via string, fallbackBefore int64) (string, []any) {
	if via == surfacedViaHooks || via == surfacedViaPull {
		return "(surfaced_at IS NULL OR (surfaced_via = 'channel' AND surfaced_confirmed_at IS NULL AND surfaced_at <= ?))", []any{fallbackBefore}
	}
	return "surfaced_at IS NULL", nil
}

// Surface claims rows for a path and returns the ones this call took,
// oldest first, as they are now.
func (ib *Inbox) Surface(ctx context.Context, sc inboxScope, c surfaceClaim, now time.Time) ([]*inboxRow, error) {
	if c.IDs != nil && len(c.IDs) == 0 {
		return nil, nil
	}
	where, args := sc.where()
	rule, ruleArgs := claimRule(c.Via, c.FallbackBefore)
	at := now.UnixMilli()
	set := `surfaced_at = ?, surfaced_via = ?, surfaced_session = ?, surfaced_confirmed_at = NULL, surfaced_evidence = NULL,
  receipt_due = (receipt_to IS NOT NULL)`
	setArgs := []any{at, c.Via, nullable(c.SessionID)}
	if c.Via != surfacedViaChannel {
		set = `surfaced_at = ?, surfaced_via = ?, surfaced_session = ?, surfaced_confirmed_at = ?, surfaced_evidence = ?,
  seen_at = coalesce(seen_at, ?), receipt_due = (receipt_to IS NOT NULL)`
		setArgs = append(setArgs, at, evidenceShown, at)
	}
	q := `UPDATE inbox SET ` + set + ` WHERE ` + where + ` AND ` + rule
	all := append(append(setArgs, args...), ruleArgs...)
	if c.IDs != nil {
		q += ` AND id IN (` + placeholders(len(c.IDs)) + `)`
		all = append(all, anySlice(c.IDs)...)
	} else {
		q += ` AND id IN (SELECT id FROM inbox WHERE ` + where + ` AND ` + rule + ` ORDER BY received_at, rowid LIMIT ?)`
		all = append(append(append(all, args...), ruleArgs...), max(c.Limit, 1))
	}
	rows, err := ib.db.QueryContext(ctx, q+` RETURNING `+inboxColumns, all...)
	out, err := collect(rows, err, scanInboxRow)
	sortOldestFirst(out)
	return out, err
}

// Unsurface gives back channel claims that were never confirmed: the emit
// they were for failed.
func (ib *Inbox) Unsurface(ctx context.Context, sc inboxScope, ids []string) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	where, args := sc.where()
	return affected(ib.db.ExecContext(ctx, `UPDATE inbox SET surfaced_at = NULL, surfaced_via = NULL, surfaced_session = NULL
WHERE `+where+` AND surfaced_via = 'channel' AND surfaced_confirmed_at IS NULL AND id IN (`+placeholders(len(ids))+`)`,
		append(args, anySlice(ids)...)...))
}

// Confirm records evidence that unconfirmed channel claims among ids
// reached the model, and returns the rows it confirmed.
func (ib *Inbox) Confirm(ctx context.Context, sc inboxScope, ids []string, evidence string, now time.Time) ([]*inboxRow, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	where, args := sc.where()
	at := now.UnixMilli()
	rows, err := ib.db.QueryContext(ctx, `UPDATE inbox SET surfaced_confirmed_at = ?, surfaced_evidence = ?, seen_at = coalesce(seen_at, ?),
  receipt_due = (receipt_to IS NOT NULL)
WHERE `+where+` AND surfaced_via = 'channel' AND surfaced_confirmed_at IS NULL AND id IN (`+placeholders(len(ids))+`)
RETURNING `+inboxColumns, append(append([]any{at, evidence, at}, args...), anySlice(ids)...)...)
	out, err := collect(rows, err, scanInboxRow)
	sortOldestFirst(out)
	return out, err
}

// Unconfirmed lists the channel claims in scope that wait for evidence,
// oldest first.
func (ib *Inbox) Unconfirmed(ctx context.Context, sc inboxScope, limit int) ([]*inboxRow, error) {
	where, args := sc.where()
	rows, err := ib.db.QueryContext(ctx, `SELECT `+inboxColumns+` FROM inbox WHERE `+where+
		` AND surfaced_via = 'channel' AND surfaced_confirmed_at IS NULL ORDER BY received_at, rowid LIMIT ?`, append(args, limit)...)
	return collect(rows, err, scanInboxRow)
}

// Claimable lists the rows in scope that a claim of via could take now,
// oldest first.
func (ib *Inbox) Claimable(ctx context.Context, sc inboxScope, via string, fallbackBefore int64, limit int) ([]*inboxRow, error) {
	where, args := sc.where()
	rule, ruleArgs := claimRule(via, fallbackBefore)
	rows, err := ib.db.QueryContext(ctx, `SELECT `+inboxColumns+` FROM inbox WHERE `+where+` AND `+rule+
		` ORDER BY received_at, rowid LIMIT ?`, append(append(args, ruleArgs...), limit)...)
	return collect(rows, err, scanInboxRow)
}

// CountClaimable counts the rows in scope that a claim of via could take.
func (ib *Inbox) CountClaimable(ctx context.Context, sc inboxScope, via string, fallbackBefore int64) (int, error) {
	where, args := sc.where()
	rule, ruleArgs := claimRule(via, fallbackBefore)
	var n int
	err := ib.db.QueryRowContext(ctx, `SELECT count(*) FROM inbox WHERE `+where+` AND `+rule, append(args, ruleArgs...)...).Scan(&n)
	return n, err
}

// NextFallback is the claim time (ms) of the oldest unconfirmed channel
// claim in scope: the first a hook may take over.
func (ib *Inbox) NextFallback(ctx context.Context, sc inboxScope) (int64, bool, error) {
	where, args := sc.where()
	var at sql.NullInt64
	err := ib.db.QueryRowContext(ctx, `SELECT min(surfaced_at) FROM inbox WHERE `+where+
		` AND surfaced_via = 'channel' AND surfaced_confirmed_at IS NULL`, args...).Scan(&at)
	return at.Int64, at.Valid, err
}

// AnsweredBy finds the rows in scope that a reply to replyTo answers: the
// message's broker id, or its row id.
func (ib *Inbox) AnsweredBy(ctx context.Context, sc inboxScope, replyTo string) ([]string, error) {
	where, args := sc.where()
	rows, err := ib.db.QueryContext(ctx, `SELECT id FROM inbox WHERE `+where+` AND (broker_message_id = ? OR id = ?)`,
		append(args, replyTo, replyTo)...)
	return collect(rows, err, func(s rowScanner) (string, error) {
		var id string
		return id, s.Scan(&id)
	})
}

func sortOldestFirst(rows []*inboxRow) {
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].ReceivedAt < rows[j].ReceivedAt })
}

// transcriptTail bounds how much of a transcript is read for evidence: its
// end, where what was queued since a recent emit is.
const transcriptTail = 2 << 20

// transcriptMentions reports which of refs occur in the last transcriptTail
// bytes of the transcript at path. A transcript is a JSONL file of Claude
// Code's; message ids are plain letters, digits and dashes, so they appear
// in it as they are.
func transcriptMentions(path string, refs []string) (map[string]bool, error) {
	if !strings.HasSuffix(path, ".jsonl") {
		return nil, errors.New("not a Claude Code transcript: " + path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	from := max(st.Size()-transcriptTail, 0)
	data, err := io.ReadAll(io.NewSectionReader(f, from, st.Size()-from))
	if err != nil {
		return nil, err
	}
	found := map[string]bool{}
	for _, r := range refs {
		if r != "" && bytes.Contains(data, []byte(r)) {
			found[r] = true
		}
	}
	return found, nil
}

// Daemon side.

// publishSurfaced announces rows that were claimed or confirmed, and wakes
// the receipts that tell their senders.
func (d *Daemon) publishSurfaced(rows []*inboxRow) {
	if len(rows) > 0 {
		d.receipts.wake()
	}
	for _, r := range rows {
		d.bus.Publish(Event{Kind: eventSurfaced, Mesh: r.Mesh, RecipientKind: r.RecipientKind, RecipientPubkey: r.RecipientPubkey,
			Data: surfacedEventData(r)})
	}
}

// surfacedEventData is the `surfaced` event of a row.
func surfacedEventData(r *inboxRow) *SurfacedEvent {
	return &SurfacedEvent{ID: r.ID, Mesh: r.Mesh, ClientMessageID: r.ClientMessageID, BrokerMessageID: nullString(r.BrokerMessageID),
		RecipientPubkey: r.RecipientPubkey, surfacedFields: r.Surfaced.fields()}
}

// fields is the state as the wire shows it.
func (s surfacedState) fields() surfacedFields {
	return surfacedFields{SurfacedAt: nullString(deref(msISO(s.At))), SurfacedVia: nullString(s.Via),
		SurfacedConfirmed: s.At != 0 && s.ConfirmedAt != 0, SurfacedConfirmedAt: nullString(deref(msISO(s.ConfirmedAt))),
		SurfacedEvidence: nullString(s.Evidence), SurfacedSession: nullString(s.SessionID)}
}

// surface claims rows for the caller's session and publishes what it took.
func (d *Daemon) surface(ctx context.Context, s *Session, c surfaceClaim) ([]*inboxRow, error) {
	return d.surfaceIn(ctx, s, d.callerScope(s, ""), c)
}

// surfaceIn is surface within a narrower scope than the session's.
func (d *Daemon) surfaceIn(ctx context.Context, s *Session, sc inboxScope, c surfaceClaim) ([]*inboxRow, error) {
	if s != nil {
		c.SessionID = s.SessionID
	}
	rows, err := d.inbox.Surface(ctx, sc, c, time.Now())
	if err != nil {
		return nil, err
	}
	d.publishSurfaced(rows)
	return rows, nil
}

// confirmFromTranscript confirms the session's unconfirmed channel claims
// whose message ids are in its transcript. A transcript that cannot be read
// confirms nothing.
func (d *Daemon) confirmFromTranscript(ctx context.Context, s *Session, transcript string) {
	if transcript == "" {
		return
	}
	sc := d.callerScope(s, "")
	pending, err := d.inbox.Unconfirmed(ctx, sc, 200)
	if err != nil || len(pending) == 0 {
		return
	}
	refs := make([]string, 0, len(pending))
	for _, r := range pending {
		refs = append(refs, messageRef(r.BrokerMessageID, r.ID))
	}
	found, err := transcriptMentions(transcript, refs)
	if err != nil {
		d.log.Debug("transcript_unreadable", "session_id", s.SessionID, "err", err.Error())
		return
	}
	var ids []string
	for _, r := range pending {
		if found[messageRef(r.BrokerMessageID, r.ID)] {
			ids = append(ids, r.ID)
		}
	}
	d.confirm(ctx, sc, ids, evidenceTranscript)
}

// confirmReply confirms the rows a session's message answers.
func (d *Daemon) confirmReply(ctx context.Context, s *Session, replyTo string) {
	if s == nil || replyTo == "" {
		return
	}
	sc := d.callerScope(s, "")
	ids, err := d.inbox.AnsweredBy(ctx, sc, replyTo)
	if err == nil {
		d.confirm(ctx, sc, ids, evidenceReply)
	}
}

func (d *Daemon) confirm(ctx context.Context, sc inboxScope, ids []string, evidence string) {
	rows, err := d.inbox.Confirm(ctx, sc, ids, evidence, time.Now())
	if err != nil {
		d.log.Warn("surfaced_confirm_failed", "err", err.Error())
		return
	}
	d.publishSurfaced(rows)
}

func (d *Daemon) handleSurface(req *ipcRequest, in SurfaceRequest) (SurfaceReply, error) {
	switch in.Via {
	case surfacedViaChannel, surfacedViaPull:
	default:
		return SurfaceReply{}, badRequest("invalid_via", "via must be channel or pull (hooks claim through /v1/hooks)")
	}
	c := surfaceClaim{Via: in.Via, Limit: clampLimit(in.Limit, 100, 1000)}
	if in.IDs != nil {
		c.IDs = []string(in.IDs)
	}
	rows, err := d.surface(req.Context(), req.session, c)
	if err != nil {
		return SurfaceReply{}, err
	}
	items := make([]inboxItem, 0, len(rows))
	for _, r := range rows {
		items = append(items, r.item())
	}
	return SurfaceReply{Items: items}, nil
}

func (d *Daemon) handleUnsurface(req *ipcRequest, in UnsurfaceRequest) (UnsurfaceReply, error) {
	if len(in.IDs) == 0 {
		return UnsurfaceReply{}, badRequest("missing_ids", "missing 'ids' (string[])")
	}
	n, err := d.inbox.Unsurface(req.Context(), d.callerScope(req.session, ""), in.IDs)
	if err != nil {
		return UnsurfaceReply{}, err
	}
	return UnsurfaceReply{Released: n}, nil
}
