// History: the messages this machine sent and received, read back in time
// order (GET /v1/history: `claudemesh export`, the UI) and searched with
// SQLite FTS5 (GET /v1/search: `claudemesh search`, the UI's search box).
//
// Policy:
//   - A message is one entry however many of this machine's stores hold it:
//     a message sent from here is its outbox row, and the inbox rows of this
//     machine's own sessions that received it (same broker message id) are
//     its deliveries, not entries of their own.
//   - A requeued row is replaced by its successor: an aborted row that was
//     superseded is never listed.
//   - A session caller sees its own inbox rows (as `inbox` does) and the
//     outbox rows it or its member sent on its mesh; anyone else sees all.
//   - Search matches every word typed, as a word or a word's prefix. FTS5's
//     query syntax is never taken from the caller, so no text is an error.
//   - Rows join the search index when a search runs, in one transaction,
//     not one by one as messages arrive: the message path pays nothing.
package main

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// History's directions.
const (
	historyIn  = "in"
	historyOut = "out"
)

// Snippet marks around each match in a search result's text.
const (
	snippetOpen  = "\x02"
	snippetClose = "\x03"
)

// Search bounds: a query of more words or bytes costs more than it finds.
const (
	maxSearchWords = 16
	maxSearchBytes = 1000
)

// historyCursor is a position in history's order: time (ms), then
// direction ("in" before "out"), then row id.
type historyCursor struct {
	at  int64
	dir string
	id  string
}

func (c historyCursor) String() string { return fmt.Sprintf("%d:%s:%s", c.at, c.dir, c.id) }

func (c historyCursor) compare(o historyCursor) int {
	return cmp.Or(cmp.Compare(c.at, o.at), cmp.Compare(c.dir, o.dir), cmp.Compare(c.id, o.id))
}

// parseHistoryCursor reads a Next; "" is the start.
func parseHistoryCursor(s string) (historyCursor, error) {
	if s == "" {
		return historyCursor{}, nil
	}
	at, rest, ok1 := strings.Cut(s, ":")
	dir, id, ok2 := strings.Cut(rest, ":")
	n, err := strconv.ParseInt(at, 10, 64)
	if !ok1 || !ok2 || err != nil || (dir != historyIn && dir != historyOut) || id == "" {
		return historyCursor{}, badRequest("invalid_after", "after must be the next of an earlier page")
	}
	return historyCursor{at: n, dir: dir, id: id}, nil
}

// after is the condition that puts a row of direction dir, whose time is
// in column col, after c.
func (c historyCursor) after(col, dir string) (string, []any) {
	switch {
	case c.dir == "":
		return "1", nil
	case dir == c.dir:
		return "(" + col + " > ? OR (" + col + " = ? AND id > ?))", []any{c.at, c.at, c.id}
	case dir > c.dir: // at the same time, this direction comes after c's
		return col + " >= ?", []any{c.at}
	default:
		return col + " > ?", []any{c.at}
	}
}

// outboxScope selects outbox rows: by mesh and time, and, when Restricted,
// only those sent by one of Sessions (session keys) or by the member on one
// of MemberMeshes.
type outboxScope struct {
	Mesh         string
	Since        int64 // ms; accepted at or after
	Restricted   bool
	Sessions     []string
	MemberMeshes []string
}

func (s outboxScope) where() (string, []any) {
	conds := []string{"NOT (status = 'aborted' AND superseded_by IS NOT NULL)"}
	var args []any
	if s.Mesh != "" {
		conds, args = append(conds, "mesh = ?"), append(args, s.Mesh)
	}
	if s.Since > 0 {
		conds, args = append(conds, "enqueued_at >= ?"), append(args, s.Since)
	}
	if s.Restricted {
		senders := []string{"0"}
		if len(s.Sessions) > 0 {
			senders = append(senders, "sender_session_pubkey IN ("+placeholders(len(s.Sessions))+")")
			args = append(args, anySlice(s.Sessions)...)
		}
		if len(s.MemberMeshes) > 0 {
			senders = append(senders, "(sender_session_pubkey IS NULL AND mesh IN ("+placeholders(len(s.MemberMeshes))+"))")
			args = append(args, anySlice(s.MemberMeshes)...)
		}
		conds = append(conds, "("+strings.Join(senders, " OR ")+")")
	}
	return strings.Join(conds, " AND "), args
}

// narrow keeps only the senders both scopes allow.
func (s outboxScope) narrow(sessions, memberMeshes []string) outboxScope {
	if !s.Restricted {
		s.Restricted, s.Sessions, s.MemberMeshes = true, sessions, memberMeshes
		return s
	}
	keep := func(have, allowed []string) []string {
		var out []string
		for _, h := range have {
			if slices.Contains(allowed, h) {
				out = append(out, h)
			}
		}
		return out
	}
	s.Sessions, s.MemberMeshes = keep(s.Sessions, sessions), keep(s.MemberMeshes, memberMeshes)
	return s
}

// The stores' history queries.

// historyRows is the inbox rows in scope after c, oldest first (newest
// first with newest).
func (ib *Inbox) historyRows(ctx context.Context, sc inboxScope, c historyCursor, newest bool, limit int) ([]*inboxRow, error) {
	where, args := sc.where()
	cond, cargs := c.after("received_at", historyIn)
	order := "received_at, id"
	if newest {
		order = "received_at DESC, id DESC"
	}
	rows, err := ib.db.QueryContext(ctx, `SELECT `+inboxColumns+` FROM inbox WHERE `+where+` AND `+cond+
		` ORDER BY `+order+` LIMIT ?`, append(append(args, cargs...), limit)...)
	return collect(rows, err, scanInboxRow)
}

// searchRows is the inbox rows in scope whose body matches an FTS5 query,
// newest first, each with its snippet.
func (ib *Inbox) searchRows(ctx context.Context, sc inboxScope, match string, limit int) ([]*inboxRow, []string, error) {
	where, args := sc.where()
	rows, err := ib.db.QueryContext(ctx, `SELECT `+inboxColumns+`, f.snip FROM (SELECT rowid AS r,
  snippet(inbox_fts, 0, char(2), char(3), '…', 16) AS snip FROM inbox_fts WHERE inbox_fts MATCH ?) AS f
JOIN inbox ON inbox.rowid = f.r WHERE `+where+` ORDER BY received_at DESC, id DESC LIMIT ?`,
		append(append([]any{match}, args...), limit)...)
	return scanWithSnippets(rows, err, scanInboxRow)
}

// indexForSearch adds the rows stored since the last search to the search
// index. The index holds exactly the rows up to its highest rowid (a
// delete leaves both; a new row's rowid is above every row there), so the
// rows above it are the ones missing.
func (ib *Inbox) indexForSearch(ctx context.Context) error {
	return catchUpIndex(ctx, ib.db, `INSERT INTO inbox_fts (rowid, body) SELECT rowid, body FROM inbox
WHERE rowid > COALESCE((SELECT rowid FROM inbox_fts ORDER BY rowid DESC LIMIT 1), 0)`)
}

// indexForSearch is the inbox's, for the outbox.
func (o *Outbox) indexForSearch(ctx context.Context) error {
	return catchUpIndex(ctx, o.db, `INSERT INTO outbox_fts (rowid, body) SELECT rowid, CAST(payload AS TEXT) FROM outbox
WHERE rowid > COALESCE((SELECT rowid FROM outbox_fts ORDER BY rowid DESC LIMIT 1), 0)`)
}

// catchUpIndex runs an index catch-up in a transaction that holds the
// write lock from its start, so that two searches at once index each row
// once.
func catchUpIndex(ctx context.Context, db *sql.DB, query string) error {
	tx, err := db.BeginTx(ctx, nil) // immediate: the connection's _txlock
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, query); err != nil {
		return err
	}
	return tx.Commit()
}

// byBrokerIDs is the inbox rows in scope of these broker message ids.
func (ib *Inbox) byBrokerIDs(ctx context.Context, sc inboxScope, ids []string) ([]*inboxRow, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	where, args := sc.where()
	rows, err := ib.db.QueryContext(ctx, `SELECT `+inboxColumns+` FROM inbox WHERE `+where+
		` AND broker_message_id IN (`+placeholders(len(ids))+`) ORDER BY received_at, id`, append(args, anySlice(ids)...)...)
	return collect(rows, err, scanInboxRow)
}

// historyRows is the outbox rows in scope after c, oldest first (newest
// first with newest).
func (o *Outbox) historyRows(ctx context.Context, sc outboxScope, c historyCursor, newest bool, limit int) ([]*outboxRow, error) {
	where, args := sc.where()
	cond, cargs := c.after("enqueued_at", historyOut)
	order := "enqueued_at, id"
	if newest {
		order = "enqueued_at DESC, id DESC"
	}
	rows, err := o.db.QueryContext(ctx, `SELECT `+outboxColumns+` FROM outbox WHERE `+where+` AND `+cond+
		` ORDER BY `+order+` LIMIT ?`, append(append(args, cargs...), limit)...)
	return collect(rows, err, scanOutboxRow)
}

// searchRows is the outbox rows in scope whose text matches an FTS5 query,
// newest first, each with its snippet.
func (o *Outbox) searchRows(ctx context.Context, sc outboxScope, match string, limit int) ([]*outboxRow, []string, error) {
	where, args := sc.where()
	rows, err := o.db.QueryContext(ctx, `SELECT `+outboxColumns+`, f.snip FROM (SELECT rowid AS r,
  snippet(outbox_fts, 0, char(2), char(3), '…', 16) AS snip FROM outbox_fts WHERE outbox_fts MATCH ?) AS f
JOIN outbox ON outbox.rowid = f.r WHERE `+where+` ORDER BY enqueued_at DESC, id DESC LIMIT ?`,
		append(append([]any{match}, args...), limit)...)
	return scanWithSnippets(rows, err, scanOutboxRow)
}

// sentBrokerIDs is which of these broker message ids an outbox row in
// scope has.
func (o *Outbox) sentBrokerIDs(ctx context.Context, sc outboxScope, ids []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(ids) == 0 {
		return out, nil
	}
	where, args := sc.where()
	rows, err := o.db.QueryContext(ctx, `SELECT broker_message_id FROM outbox WHERE `+where+
		` AND broker_message_id IN (`+placeholders(len(ids))+`)`, append(args, anySlice(ids)...)...)
	found, err := collect(rows, err, func(s rowScanner) (id string, err error) { return id, s.Scan(&id) })
	for _, id := range found {
		out[id] = true
	}
	return out, err
}

// snippetScanner scans a row's columns and then its snippet.
type snippetScanner struct {
	rowScanner
	snip *string
}

func (s snippetScanner) Scan(dest ...any) error { return s.rowScanner.Scan(append(dest, s.snip)...) }

// scanWithSnippets collects rows whose last column is a snippet.
func scanWithSnippets[T any](rows *sql.Rows, err error, scan func(rowScanner) (T, error)) ([]T, []string, error) {
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var out []T
	var snips []string
	for rows.Next() {
		var snip string
		v, err := scan(snippetScanner{rows, &snip})
		if err != nil {
			return nil, nil, err
		}
		out, snips = append(out, v), append(snips, snip)
	}
	return out, snips, rows.Err()
}

// searchMatch turns what a person typed into an FTS5 query: every word
// must match, as a word or as a word's prefix; "" when nothing typed could
// match.
func searchMatch(q string) string {
	words := ftsTerms(q, "*")
	return strings.Join(words[:min(len(words), maxSearchWords)], " ")
}

// The routes.

// historyEntry is one message on its way into a reply.
type historyEntry struct {
	pos     historyCursor
	out     *outboxRow
	in      *inboxRow
	snippet string
}

func outEntries(rows []*outboxRow, snips []string) []historyEntry {
	out := make([]historyEntry, len(rows))
	for i, r := range rows {
		out[i] = historyEntry{pos: historyCursor{at: r.EnqueuedAt, dir: historyOut, id: r.ID}, out: r}
		if snips != nil {
			out[i].snippet = snips[i]
		}
	}
	return out
}

func inEntries(rows []*inboxRow, snips []string) []historyEntry {
	out := make([]historyEntry, len(rows))
	for i, r := range rows {
		out[i] = historyEntry{pos: historyCursor{at: r.ReceivedAt, dir: historyIn, id: r.ID}, in: r}
		if snips != nil {
			out[i].snippet = snips[i]
		}
	}
	return out
}

// historyScopes is what a caller may read of both stores on mesh ("" =
// every mesh, or a session's own).
func (d *Daemon) historyScopes(s *Session, mesh string) (inboxScope, outboxScope) {
	isc := d.callerScope(s, mesh)
	osc := outboxScope{Mesh: isc.Mesh}
	if s != nil {
		osc.Restricted, osc.MemberMeshes = true, []string{s.Mesh}
		if s.Presence != nil {
			osc.Sessions = []string{s.Presence.SessionPubkey}
		}
	}
	return isc, osc
}

// localSenders is who on this machine goes by from, a name (any case) or
// a key prefix: the session keys of registered sessions, and the meshes on
// which the member does.
func (d *Daemon) localSenders(from string) (sessions, memberMeshes []string) {
	prefix := isKeyPrefix(from)
	lower := strings.ToLower(from)
	matches := func(name, key string) bool {
		return strings.EqualFold(name, from) || prefix && strings.HasPrefix(key, lower)
	}
	for _, s := range d.sessions.List() {
		if s.Presence != nil && matches(s.DisplayName, s.Presence.SessionPubkey) {
			sessions = append(sessions, s.Presence.SessionPubkey)
		}
	}
	name := d.memberName()
	for _, e := range d.allMeshes() {
		if matches(name, e.Key.PublicHex()) {
			memberMeshes = append(memberMeshes, e.Mesh.Slug)
		}
	}
	return sessions, memberMeshes
}

func (d *Daemon) handleHistory(req *ipcRequest, q HistoryQuery) (HistoryReply, error) {
	isc, osc := d.historyScopes(req.session, q.Mesh)
	since, err := parseISOParam("since", q.Since)
	if err != nil {
		return HistoryReply{}, err
	}
	isc.Since, osc.Since = since, since
	cur, err := parseHistoryCursor(q.After)
	if err != nil {
		return HistoryReply{}, err
	}
	if q.Latest && q.After != "" {
		return HistoryReply{}, badRequest("invalid_after", "latest reads the newest messages: it takes no after")
	}
	limit := clampLimit(q.Limit, 200, 1000)
	ctx := req.Context()
	outs, err := d.outbox.historyRows(ctx, osc, cur, q.Latest, limit)
	if err != nil {
		return HistoryReply{}, err
	}
	ins, err := d.inbox.historyRows(ctx, isc, cur, q.Latest, limit)
	if err != nil {
		return HistoryReply{}, err
	}
	entries := append(outEntries(outs, nil), inEntries(ins, nil)...)
	slices.SortFunc(entries, func(a, b historyEntry) int { return a.pos.compare(b.pos) })
	var next string
	if q.Latest {
		entries = entries[max(len(entries)-limit, 0):]
	} else if len(entries) >= limit {
		entries = entries[:limit]
		next = entries[limit-1].pos.String()
	}
	msgs, err := d.historyMessages(ctx, entries, isc, osc)
	if err != nil {
		return HistoryReply{}, err
	}
	if len(msgs) == 0 && next == "" {
		if err := d.unknownMeshFilter(q.Mesh); err != nil {
			return HistoryReply{}, err
		}
	}
	return HistoryReply{Messages: msgs, Next: next}, nil
}

func (d *Daemon) handleSearch(req *ipcRequest, q SearchQuery) (HistoryReply, error) {
	if len(q.Q) > maxSearchBytes {
		return HistoryReply{}, badRequest("invalid_query", "the query is longer than %d bytes", maxSearchBytes)
	}
	match := searchMatch(q.Q)
	if match == "" {
		return HistoryReply{}, badRequest("missing_query", "give a word to search for")
	}
	isc, osc := d.historyScopes(req.session, q.Mesh)
	since, err := parseISOParam("since", q.Since)
	if err != nil {
		return HistoryReply{}, err
	}
	isc.Since, osc.Since = since, since
	if q.From != "" {
		isc.Sender = q.From
		osc = osc.narrow(d.localSenders(q.From))
	}
	limit := clampLimit(q.Limit, 50, 500)
	ctx := req.Context()
	if err := d.outbox.indexForSearch(ctx); err != nil {
		return HistoryReply{}, err
	}
	if err := d.inbox.indexForSearch(ctx); err != nil {
		return HistoryReply{}, err
	}
	outs, outSnips, err := d.outbox.searchRows(ctx, osc, match, limit)
	if err != nil {
		return HistoryReply{}, err
	}
	ins, inSnips, err := d.inbox.searchRows(ctx, isc, match, limit)
	if err != nil {
		return HistoryReply{}, err
	}
	entries := append(outEntries(outs, outSnips), inEntries(ins, inSnips)...)
	slices.SortFunc(entries, func(a, b historyEntry) int { return b.pos.compare(a.pos) })
	entries = entries[:min(len(entries), limit)]
	msgs, err := d.historyMessages(ctx, entries, isc, osc)
	if err != nil {
		return HistoryReply{}, err
	}
	if len(msgs) == 0 {
		if err := d.unknownMeshFilter(q.Mesh); err != nil {
			return HistoryReply{}, err
		}
	}
	return HistoryReply{Messages: msgs}, nil
}

// historyMessages renders entries, in their order: a received entry whose
// message was sent from here (in scope) is left out, and its row becomes a
// delivery of the sent one.
func (d *Daemon) historyMessages(ctx context.Context, entries []historyEntry, isc inboxScope, osc outboxScope) ([]historyMessage, error) {
	var sentIDs, receivedIDs []string
	for _, e := range entries {
		switch {
		case e.out != nil && e.out.BrokerMessageID != "":
			sentIDs = append(sentIDs, e.out.BrokerMessageID)
		case e.in != nil && e.in.BrokerMessageID != "":
			receivedIDs = append(receivedIDs, e.in.BrokerMessageID)
		}
	}
	// The scopes' time bound is the page's, not the pairing's: a delivery
	// comes after its send, and a send may be just before since.
	dsc := isc
	dsc.Since, dsc.Before, dsc.UnreadOnly = 0, 0, false
	dsc.Sender, dsc.From = "", ""
	deliveries, err := d.inbox.byBrokerIDs(ctx, dsc, sentIDs)
	if err != nil {
		return nil, err
	}
	byBroker := map[string][]*inboxRow{}
	for _, r := range deliveries {
		byBroker[r.BrokerMessageID] = append(byBroker[r.BrokerMessageID], r)
	}
	ssc := osc
	ssc.Since = 0
	sentHere, err := d.outbox.sentBrokerIDs(ctx, ssc, receivedIDs)
	if err != nil {
		return nil, err
	}
	var cmids []string
	for _, e := range entries {
		if e.out != nil {
			cmids = append(cmids, e.out.ClientMessageID)
		}
	}
	receipts, err := d.outbox.receiptsOf(ctx, cmids)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := []historyMessage{}
	for _, e := range entries {
		var m historyMessage
		switch {
		case e.out != nil:
			l := ladderOf(e.out, receipts[e.out.ClientMessageID], now)
			m = d.sentMessage(e.out, byBroker[e.out.BrokerMessageID], &l)
		case sentHere[e.in.BrokerMessageID]:
			continue
		default:
			m = d.receivedMessage(e.in)
		}
		m.Snippet = e.snippet
		out = append(out, m)
	}
	return out, nil
}

// sentMessage renders an outbox row with its ladder and this machine's
// deliveries of it.
func (d *Daemon) sentMessage(r *outboxRow, deliveries []*inboxRow, ladder *messageLadder) historyMessage {
	body := string(r.Payload)
	m := historyMessage{
		Direction: historyOut, ID: r.ID, Ref: cmp.Or(r.BrokerMessageID, r.ID), Mesh: r.Mesh,
		At: isoTime(time.UnixMilli(r.EnqueuedAt)), To: r.TargetSpec, Body: &body, ReplyToID: r.ReplyToID,
		Priority: cmp.Or(r.Priority, priorityNext), ClientMessageID: r.ClientMessageID, BrokerMessageID: r.BrokerMessageID,
		Outbox: &historyOutbox{Status: r.Status, Attempts: r.Attempts, LastError: r.LastError,
			DeliveredAt: deref(msISO(r.DeliveredAt)), Ladder: ladder},
	}
	if e, ok := d.joinedMesh(r.Mesh); ok {
		m.FromMemberPubkey = e.Key.PublicHex()
	}
	if r.SenderSessionPubkey != "" {
		m.FromPubkey = r.SenderSessionPubkey
		m.FromName = d.keyName(r.Mesh, r.SenderSessionPubkey)
	} else {
		m.FromPubkey, m.FromName = m.FromMemberPubkey, d.memberName()
	}
	if strings.HasPrefix(r.TargetSpec, "#") {
		m.Topic = strings.TrimPrefix(r.TargetSpec, "#")
	}
	if isHexKey(r.TargetSpec) {
		m.ToName = d.keyName(r.Mesh, r.TargetSpec)
	}
	for _, in := range deliveries {
		m.Deliveries = append(m.Deliveries, historyDelivery{InboxID: in.ID, To: in.RecipientPubkey,
			ToName: d.keyName(in.Mesh, in.RecipientPubkey), At: isoTime(time.UnixMilli(in.ReceivedAt)),
			SeenAt: deref(msISO(in.SeenAt)), Surfaced: in.Surfaced.shown()})
	}
	return m
}

// receivedMessage renders an inbox row.
func (d *Daemon) receivedMessage(r *inboxRow) historyMessage {
	m := historyMessage{
		Direction: historyIn, ID: r.ID, Ref: messageRef(r.BrokerMessageID, r.ID), Mesh: r.Mesh,
		At: isoTime(time.UnixMilli(r.ReceivedAt)), FromName: r.SenderName, FromPubkey: r.SenderPubkey,
		FromMemberPubkey: r.SenderMemberPubkey, To: cmp.Or(r.TargetSpec, r.RecipientPubkey),
		ReceivedBy: d.keyName(r.Mesh, r.RecipientPubkey), Topic: r.Topic, Body: r.Body, ReplyToID: r.ReplyToID,
		Priority: cmp.Or(r.Priority, priorityNext), ClientMessageID: r.ClientMessageID, BrokerMessageID: r.BrokerMessageID,
		SeenAt: deref(msISO(r.SeenAt)), Surfaced: r.Surfaced.shown(),
	}
	if isHexKey(m.To) {
		m.ToName = d.keyName(r.Mesh, m.To)
	}
	return m
}

// keyName is what a key on mesh goes by: one of this machine's sessions,
// its member, or a peer the daemon has seen; else the key's first digits.
func (d *Daemon) keyName(mesh, key string) string {
	if key == "" {
		return ""
	}
	if s, ok := d.ownSessionSender(mesh, key); ok {
		return s.Name
	}
	if e, ok := d.joinedMesh(mesh); ok && e.Key.PublicHex() == key {
		return d.memberName()
	}
	if s, ok := d.senders.lookup(mesh, key); ok {
		return s.Name
	}
	return shortID(key)
}

// memberName is the name this machine's member goes by (the config's
// display name), or "this machine".
func (d *Daemon) memberName() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return cmp.Or(d.displayName, "this machine")
}

// shown is a row's surfaced record, nil while no path has shown it.
func (s surfacedState) shown() *surfacedFields {
	if s.At == 0 {
		return nil
	}
	f := s.fields()
	return &f
}
