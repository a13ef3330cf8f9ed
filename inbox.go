// The daemon's inbox: every message push a link receives is
// decrypted, stored once per recipient in inbox.db, acknowledged to the
// broker, and — when new — published as a `message` event.
//
// Policy:
//   - Decrypt with the session key if the push came on a session link, then
//     with the member key. A body nobody can read is stored as NULL with
//     decrypt_failed=1, never as garbage.
//   - One row per (recipient_pubkey, client_message_id): two sessions of
//     this daemon that both receive a message each get their row, and a
//     redelivered push finds its row and adds nothing.
//   - client_ack goes out on the connection the push came in on, for a new
//     row and for a duplicate alike, and only once the row is stored: a
//     failed write leaves the push un-acked, so the broker redelivers it.
//   - A caller with a session token sees, marks, flushes and deletes only
//     its own rows: those addressed to its session key, to its member key,
//     or to nobody in particular (rows older than recipient tracking).
//   - Reading the inbox stamps the rows it returned as seen, after the read
//     (mark_seen=false peeks). Rows older than 30 days are pruned hourly
//     (Daemon.startPruner).
//   - Read from a session, the inbox is the pull path of surfaced.go: the
//     rows it returns count as shown to that session's model, and "unread"
//     means not shown to it by any path yet. Read from outside a session
//     (a person at a terminal), unread means not read by anyone, and
//     nothing counts as shown to a model.
package main

import (
	"cmp"
	"context"
	"database/sql"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

var inboxMigrations = []string{`
CREATE TABLE inbox (
  id                   TEXT PRIMARY KEY,
  client_message_id    TEXT NOT NULL,
  broker_message_id    TEXT,
  mesh                 TEXT NOT NULL,
  topic                TEXT,
  sender_pubkey        TEXT NOT NULL,
  sender_member_pubkey TEXT,
  sender_name          TEXT NOT NULL,
  body                 TEXT,
  decrypt_failed       INTEGER NOT NULL DEFAULT 0,
  meta                 TEXT,
  received_at          INTEGER NOT NULL,
  reply_to_id          TEXT,
  priority             TEXT,
  subtype              TEXT,
  created_at           TEXT,
  seen_at              INTEGER,
  recipient_pubkey     TEXT,
  recipient_kind       TEXT
);
CREATE UNIQUE INDEX inbox_recipient_message ON inbox(recipient_pubkey, client_message_id);
CREATE INDEX inbox_received_at ON inbox(received_at);
CREATE INDEX inbox_mesh_received ON inbox(mesh, received_at);
CREATE INDEX inbox_topic ON inbox(topic);
CREATE INDEX inbox_sender ON inbox(sender_pubkey);
CREATE INDEX inbox_seen_at ON inbox(seen_at);
`, `
-- A redelivered push is found by the broker's id too: its client id can
-- differ between a broker's live fan-out and its queue drain.
CREATE INDEX inbox_recipient_broker_message ON inbox(recipient_pubkey, broker_message_id);
`, `
-- How and when each row was shown to a session's model (surfaced.go). A row
-- read before these columns existed counts as shown then, by a path nobody
-- recorded, so that no path shows it again.
ALTER TABLE inbox ADD COLUMN surfaced_at INTEGER;
ALTER TABLE inbox ADD COLUMN surfaced_via TEXT;
ALTER TABLE inbox ADD COLUMN surfaced_confirmed_at INTEGER;
ALTER TABLE inbox ADD COLUMN surfaced_evidence TEXT;
ALTER TABLE inbox ADD COLUMN surfaced_session TEXT;
UPDATE inbox SET surfaced_at = seen_at, surfaced_confirmed_at = seen_at WHERE seen_at IS NOT NULL;
CREATE INDEX inbox_surfaced_at ON inbox(surfaced_at);
`, `
-- What each message was sent to (a key, @group, * or #topic), when the
-- push said.
ALTER TABLE inbox ADD COLUMN target_spec TEXT;
-- Full-text search of the bodies received. The index keeps its own copy of
-- the text under the row's rowid (the stores never VACUUM, which could
-- renumber rowids); triggers keep it in step with inserts and deletes, and
-- the bodies of rows are never updated.
CREATE VIRTUAL TABLE inbox_fts USING fts5(body, tokenize = 'unicode61 remove_diacritics 2');
INSERT INTO inbox_fts (rowid, body) SELECT rowid, body FROM inbox;
CREATE TRIGGER inbox_fts_insert AFTER INSERT ON inbox BEGIN
  INSERT INTO inbox_fts (rowid, body) VALUES (new.rowid, new.body);
END;
CREATE TRIGGER inbox_fts_delete AFTER DELETE ON inbox BEGIN
  DELETE FROM inbox_fts WHERE rowid = old.rowid;
END;
-- History pairs a row with the outbox row of the same message by the
-- broker's id.
CREATE INDEX inbox_broker_message ON inbox(broker_message_id);
`, `
-- Rows are indexed for search when a search runs (Inbox.indexForSearch),
-- not as they are stored: storing a message costs what it did before the
-- index. Deletes still leave the index at once.
DROP TRIGGER inbox_fts_insert;
`, `
-- Receipts back to each message's sender (receiptsend.go): where they go
-- (the sender's member key; NULL for a row that sends none), whether a rung
-- its sender has not been told of is due, and the last rung the broker took.
ALTER TABLE inbox ADD COLUMN receipt_to TEXT;
ALTER TABLE inbox ADD COLUMN receipt_due INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inbox ADD COLUMN receipt_sent TEXT;
CREATE INDEX inbox_receipt_due ON inbox(mesh, received_at) WHERE receipt_due = 1;
-- What a recipient tells senders: every rung (surfaced), or delivered only.
-- key is a session key, or the member key for the member and the sessions
-- that say nothing of their own.
CREATE TABLE receipt_policy (
  mesh   TEXT NOT NULL,
  key    TEXT NOT NULL,
  shares TEXT NOT NULL CHECK (shares IN ('delivered', 'surfaced')),
  PRIMARY KEY (mesh, key)
);
`}

// inboxRow is one stored message.
type inboxRow struct {
	ID                 string
	ClientMessageID    string
	BrokerMessageID    string
	Mesh               string
	Topic              string
	SenderPubkey       string
	SenderMemberPubkey string
	SenderName         string
	Body               *string // nil: nothing readable (DecryptFailed says why)
	DecryptFailed      bool
	ReceivedAt         int64 // ms
	ReplyToID          string
	Priority           string
	Subtype            string
	CreatedAt          string // the broker's ISO time
	SeenAt             int64  // ms, 0 = unread
	RecipientPubkey    string
	RecipientKind      string
	Surfaced           surfacedState
	TargetSpec         string // what it was sent to: a key (a DM), @group, * or #topic; "" when unknown
	// ReceiptTo is where this row's receipts go: its sender's member key
	// ("" when the push did not name it). Written, not read back.
	ReceiptTo string
}

const inboxColumns = `id, client_message_id, broker_message_id, mesh, topic, sender_pubkey, sender_member_pubkey, sender_name,
  body, decrypt_failed, received_at, reply_to_id, priority, subtype, created_at, seen_at, recipient_pubkey, recipient_kind,
  surfaced_at, surfaced_via, surfaced_confirmed_at, surfaced_evidence, surfaced_session, target_spec`

func scanInboxRow(s rowScanner) (*inboxRow, error) {
	var r inboxRow
	var brokerID, topic, senderMember, body, reply, prio, subtype, created, recip, kind, target sql.NullString
	var seen, surfacedAt, confirmedAt sql.NullInt64
	var via, evidence, by sql.NullString
	err := s.Scan(&r.ID, &r.ClientMessageID, &brokerID, &r.Mesh, &topic, &r.SenderPubkey, &senderMember, &r.SenderName,
		&body, &r.DecryptFailed, &r.ReceivedAt, &reply, &prio, &subtype, &created, &seen, &recip, &kind,
		&surfacedAt, &via, &confirmedAt, &evidence, &by, &target)
	if err != nil {
		return nil, noRows(err)
	}
	r.BrokerMessageID, r.Topic, r.SenderMemberPubkey = brokerID.String, topic.String, senderMember.String
	if body.Valid {
		r.Body = &body.String
	}
	r.ReplyToID, r.Priority, r.Subtype, r.CreatedAt = reply.String, prio.String, subtype.String, created.String
	r.SeenAt, r.RecipientPubkey, r.RecipientKind, r.TargetSpec = seen.Int64, recip.String, kind.String, target.String
	r.Surfaced = surfacedState{At: surfacedAt.Int64, Via: via.String, ConfirmedAt: confirmedAt.Int64, Evidence: evidence.String,
		SessionID: by.String}
	return &r, nil
}

// Inbox is inbox.db.
type Inbox struct {
	db *sql.DB
	st *stmtCache
}

func openInbox(path string) (*Inbox, error) {
	db, err := openSQLite(path, inboxMigrations, smallWAL...)
	if err != nil {
		return nil, err
	}
	return &Inbox{db: db, st: newStmtCache(db)}, nil
}

// Close closes the database.
func (ib *Inbox) Close() error {
	ib.st.Close()
	return ib.db.Close()
}

// Insert stores r unless the message is already stored for its recipient
// or for one of alsoSeenBy (keys whose row shows the same message to the
// same reader); isNew says whether it was stored now. A message is the
// same when its client id or its broker id is.
func (ib *Inbox) Insert(ctx context.Context, r *inboxRow, alsoSeenBy ...string) (isNew bool, err error) {
	keys := append([]any{nullable(r.RecipientPubkey)}, anySlice(alsoSeenBy)...)
	args := []any{r.ID, r.ClientMessageID, nullable(r.BrokerMessageID), r.Mesh, nullable(r.Topic), r.SenderPubkey,
		nullable(r.SenderMemberPubkey), r.SenderName, r.Body, r.DecryptFailed, r.ReceivedAt, nullable(r.ReplyToID),
		nullable(r.Priority), nullable(r.Subtype), nullable(r.CreatedAt), nullable(r.RecipientPubkey), nullable(r.RecipientKind),
		nullable(r.TargetSpec), nullable(r.ReceiptTo), r.ReceiptTo != ""}
	args = append(append(args, keys...), r.ClientMessageID, nullable(r.BrokerMessageID))
	res, err := ib.st.ExecContext(ctx, nil, `INSERT INTO inbox (`+inboxColumns+`, receipt_to, receipt_due)
SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, NULL, NULL, NULL, NULL, NULL, ?, ?, ?
WHERE NOT EXISTS (SELECT 1 FROM inbox WHERE recipient_pubkey IN (`+placeholders(len(keys))+`)
  AND (client_message_id = ? OR broker_message_id = ?))
ON CONFLICT (recipient_pubkey, client_message_id) DO NOTHING`, args...)
	n, err := affected(res, err)
	return n == 1, err
}

// inboxScope selects rows: by mesh, by recipient (for a session caller),
// and the listing filters.
type inboxScope struct {
	Mesh       string   // "" = every mesh
	Recipients []string // non-nil: only rows addressed to one of these keys, or to nobody
	Since      int64    // ms; received at or after
	Before     int64    // ms; received before
	Topic      string
	From       string // sender key: the session or the member that sent
	Sender     string // a sender's name (any case) or a prefix of its session or member key
	UnreadOnly bool
	// Unsurfaced: only rows no path has shown to a session's model yet.
	Unsurfaced bool
}

// where renders the scope as a WHERE clause with its arguments.
func (s inboxScope) where() (string, []any) {
	var conds []string
	var args []any
	add := func(cond string, a ...any) {
		conds = append(conds, cond)
		args = append(args, a...)
	}
	if s.Mesh != "" {
		add("mesh = ?", s.Mesh)
	}
	if s.Recipients != nil {
		cond := "recipient_pubkey IS NULL"
		for _, k := range s.Recipients {
			cond += " OR recipient_pubkey = ?"
			args = append(args, k)
		}
		conds = append(conds, "("+cond+")")
	}
	if s.Since > 0 {
		add("received_at >= ?", s.Since)
	}
	if s.Before > 0 {
		add("received_at < ?", s.Before)
	}
	if s.Topic != "" {
		add("topic = ?", strings.TrimPrefix(s.Topic, "#"))
	}
	if s.From != "" {
		add("(sender_pubkey = ? OR sender_member_pubkey = ?)", s.From, s.From)
	}
	if s.Sender != "" {
		if isKeyPrefix(s.Sender) {
			p := strings.ToLower(s.Sender) + "%"
			add("(sender_name = ? COLLATE NOCASE OR sender_pubkey LIKE ? OR sender_member_pubkey LIKE ?)", s.Sender, p, p)
		} else {
			add("sender_name = ? COLLATE NOCASE", s.Sender)
		}
	}
	if s.UnreadOnly {
		conds = append(conds, "seen_at IS NULL")
	}
	if s.Unsurfaced {
		conds = append(conds, "surfaced_at IS NULL")
	}
	if len(conds) == 0 {
		return "1", nil
	}
	return strings.Join(conds, " AND "), args
}

// List returns the newest rows in scope.
func (ib *Inbox) List(ctx context.Context, s inboxScope, limit int) ([]*inboxRow, error) {
	where, args := s.where()
	rows, err := ib.db.QueryContext(ctx, `SELECT `+inboxColumns+` FROM inbox WHERE `+where+
		` ORDER BY received_at DESC, rowid DESC LIMIT ?`, append(args, limit)...)
	return collect(rows, err, scanInboxRow)
}

// MarkSeen stamps unread rows of ids that are in scope; it returns how
// many went from unread to seen.
func (ib *Inbox) MarkSeen(ctx context.Context, ids []string, s inboxScope, now time.Time) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	where, args := s.where()
	all := append(append([]any{now.UnixMilli()}, args...), anySlice(ids)...)
	return affected(ib.db.ExecContext(ctx, `UPDATE inbox SET seen_at = ? WHERE `+where+` AND seen_at IS NULL AND id IN (`+placeholders(len(ids))+`)`, all...))
}

// Flush deletes the rows in scope.
func (ib *Inbox) Flush(ctx context.Context, s inboxScope) (int64, error) {
	where, args := s.where()
	return affected(ib.db.ExecContext(ctx, `DELETE FROM inbox WHERE `+where, args...))
}

// Delete removes one row if it is in scope.
func (ib *Inbox) Delete(ctx context.Context, id string, s inboxScope) (bool, error) {
	where, args := s.where()
	n, err := affected(ib.db.ExecContext(ctx, `DELETE FROM inbox WHERE id = ? AND `+where, append([]any{id}, args...)...))
	return n == 1, err
}

// Prune deletes rows received before cutoff (the daemon's hourly pruner).
func (ib *Inbox) Prune(ctx context.Context, cutoff time.Time) (int64, error) {
	return affected(ib.db.ExecContext(ctx, `DELETE FROM inbox WHERE received_at < ?`, cutoff.UnixMilli()))
}

// Inbound: the MessageSink.

// inboxSink stores message pushes in the inbox and publishes new ones.
type inboxSink struct {
	ib  *Inbox
	bus *Bus
	log *slog.Logger
	// stored, when set, hears of each new row after it is stored (the
	// daemon: receipts to send, replies to note).
	stored func(r *inboxRow)
}

func (s *inboxSink) HandleMessage(ctx context.Context, msg InboundMessage) {
	row, alsoSeenBy := inboxRowFromPush(msg, time.Now())
	isNew, err := s.ib.Insert(ctx, row, alsoSeenBy...)
	if err != nil {
		// Not acked: the broker pushes it again.
		if isDiskFull(err) {
			reclaimWAL(s.ib.db)
		}
		s.log.Warn("inbox_insert_failed", "mesh", msg.Mesh, "message_id", msg.Push.MessageID, "err", err.Error())
		return
	}
	if isNew {
		s.bus.Publish(Event{Kind: eventMessage, Mesh: row.Mesh, RecipientKind: row.RecipientKind,
			RecipientPubkey: row.RecipientPubkey, Data: messageEventData(row)})
		if s.stored != nil {
			s.stored(row)
		}
	}
	if err := msg.Frame.Reply(ctx, ClientAckFrame{Type: frameClientAck, ClientMessageID: row.ClientMessageID,
		BrokerMessageID: msg.Push.MessageID}); err != nil {
		s.log.Info("client_ack_failed", "mesh", msg.Mesh, "message_id", msg.Push.MessageID, "err", err.Error())
	}
}

// inboxRowFromPush builds the row for a push: decrypted body, sender and
// recipient, and the other keys whose row of the same message would show it
// to the same reader a second time.
//
// A DM's recipient is the key that opened it, whichever link brought it: a
// DM to the member key is the member's even when a broker hands it to one
// of its sessions. A broadcast, group or topic message keeps the link's
// recipient, but some brokers push it to the member's daemon link and to
// each of its session links alike: a session's copy is a duplicate of the
// member's row (which every session sees), and the member's copy is a
// duplicate of any row a session of this member already has.
func inboxRowFromPush(msg InboundMessage, now time.Time) (*inboxRow, []string) {
	p := msg.Push
	// The broker's id is stable across redeliveries, so dedupe still works.
	cmid := cmp.Or(p.ClientMessageID, p.MessageID)
	if cmid == "" {
		cmid = newUUID()
	}
	name := cmp.Or(p.SenderName, shortID(p.SenderPubkey))
	body, failed, openedBy := decryptPushBody(p, msg.Keys)
	recipient, kind := msg.RecipientPubkey, msg.RecipientKind
	var alsoSeenBy []string
	switch {
	case openedBy != "":
		recipient, kind = openedBy, recipientSession
		if openedBy == msg.MemberPubkey {
			kind = recipientMember
		}
	case body != nil && kind == recipientSession && msg.MemberPubkey != "":
		alsoSeenBy = []string{msg.MemberPubkey}
	case body != nil && kind == recipientMember:
		alsoSeenBy = msg.MemberSessions
	}
	receiptTo := ""
	if p.MessageID != "" && isHexKey(p.SenderMemberPubkey) {
		receiptTo = p.SenderMemberPubkey
	}
	return &inboxRow{
		ReceiptTo: receiptTo, ID: newUUID(), ClientMessageID: cmid, BrokerMessageID: p.MessageID, Mesh: msg.Mesh, Topic: p.Topic,
		SenderPubkey: p.SenderPubkey, SenderMemberPubkey: p.SenderMemberPubkey, SenderName: name,
		Body: body, DecryptFailed: failed, ReceivedAt: now.UnixMilli(), ReplyToID: p.ReplyToID,
		Priority: cmp.Or(p.Priority, priorityNext), Subtype: p.Subtype, CreatedAt: p.CreatedAt,
		RecipientPubkey: recipient, RecipientKind: kind, TargetSpec: pushTarget(p, openedBy),
	}, alsoSeenBy
}

// pushTarget is what a push was sent to: its target spec, or, from a
// broker that does not say, the key that opened it when it was a DM.
func pushTarget(p PushFrame, openedBy string) string {
	if p.TargetSpec != "" {
		return p.TargetSpec
	}
	return openedBy
}

// decryptPushBody reads a push's body: a DM opens with one of keys (openedBy
// is that key's public half); a broadcast, group or topic body is base64
// text. Anything unreadable is (nil, true, "").
func decryptPushBody(p PushFrame, keys []Keypair) (body *string, failed bool, openedBy string) {
	if p.Ciphertext == "" {
		return nil, false, ""
	}
	direct := isHexKey(p.TargetSpec)
	multicast := p.TargetSpec != "" && !direct
	if !multicast && p.Nonce != "" && isHexKey(p.SenderPubkey) {
		for _, k := range keys {
			if out, err := openDM(p.Nonce, p.Ciphertext, p.SenderPubkey, k); err == nil && utf8.Valid(out) {
				s := string(out)
				return &s, false, k.PublicHex()
			}
		}
	}
	if direct {
		return nil, true, ""
	}
	// A multicast body, or a push from a broker that does not say its
	// target: plain base64 text. Without the target, accept only what reads
	// as text, so that a DM nobody could open is not stored as noise.
	raw, err := unb64(p.Ciphertext)
	if err != nil || !utf8.Valid(raw) || (!multicast && !readableText(raw)) {
		return nil, true, ""
	}
	s := string(raw)
	return &s, false, ""
}

// readableText: no control characters but tab, newline and carriage return.
func readableText(b []byte) bool {
	for _, r := range string(b) {
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0x7f {
			return false
		}
	}
	return true
}

// messageEventData is the `message` event announcing a new row, in the field
// names a claudemesh client reads.
func messageEventData(r *inboxRow) *MessageEvent {
	return &MessageEvent{
		ID: r.ID, Mesh: r.Mesh, ClientMessageID: r.ClientMessageID, BrokerMessageID: nullString(r.BrokerMessageID),
		SenderPubkey: r.SenderPubkey, SenderMemberPubkey: nullString(r.SenderMemberPubkey), SenderName: r.SenderName,
		Topic: nullString(r.Topic), ReplyToID: nullString(r.ReplyToID), Priority: r.Priority, Subtype: r.Subtype, Body: r.Body,
		CreatedAt: nullString(r.CreatedAt), RecipientPubkey: r.RecipientPubkey, RecipientKind: r.RecipientKind,
		Target: r.TargetSpec,
	}
}

// messageRef is the id a reader quotes back (`--reply-to`): the broker's
// message id, else the inbox row id.
func messageRef(brokerID, rowID string) string {
	if brokerID != "" {
		return brokerID
	}
	return rowID
}

// Inbox routes.

func (r *inboxRow) item() inboxItem {
	return inboxItem{
		ID: r.ID, ClientMessageID: r.ClientMessageID, BrokerMessageID: nullString(r.BrokerMessageID), Mesh: r.Mesh,
		Topic: nullString(r.Topic), SenderPubkey: r.SenderPubkey, SenderMemberPubkey: nullString(r.SenderMemberPubkey),
		SenderName: r.SenderName, Body: r.Body, DecryptFailed: r.DecryptFailed, ReceivedAt: isoTime(time.UnixMilli(r.ReceivedAt)),
		ReplyToID: nullString(r.ReplyToID), Priority: r.Priority, SeenAt: nullString(deref(msISO(r.SeenAt))),
		RecipientPubkey: nullString(r.RecipientPubkey), RecipientKind: nullString(r.RecipientKind),
		surfacedFields: r.Surfaced.fields(),
	}
}

// callerScope is what a caller may touch: a session only its own rows (its
// session key, its member key, or nobody's), on its mesh unless it names
// another; anyone else every row, on the mesh it names.
func (d *Daemon) callerScope(s *Session, mesh string) inboxScope {
	sc := inboxScope{Mesh: mesh}
	if s == nil {
		return sc
	}
	if sc.Mesh == "" {
		sc.Mesh = s.Mesh
	}
	sc.Recipients = []string{}
	if s.Presence != nil {
		sc.Recipients = append(sc.Recipients, s.Presence.SessionPubkey)
	}
	if k := d.memberKeyOf(s); k != "" {
		sc.Recipients = append(sc.Recipients, k)
	}
	return sc
}

// parseISOParam reads an ISO time query parameter (0 when absent).
func parseISOParam(name, v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return 0, badRequest("invalid_"+name, "%s must be an ISO time such as 2026-05-04T18:00:00Z", name)
	}
	return max(t.UnixMilli(), 1), nil
}

func (d *Daemon) handleInboxList(req *ipcRequest, q InboxQuery) (InboxReply, error) {
	ib := d.inbox
	sc := d.callerScope(req.session, q.Mesh)
	var err error
	if sc.Since, err = parseISOParam("since", q.Since); err != nil {
		return InboxReply{}, err
	}
	sc.Topic, sc.From = q.Topic, q.From
	if req.session != nil {
		// Unread for a session is what no path has shown its model yet.
		sc.Unsurfaced = q.UnreadOnly
	} else {
		sc.UnreadOnly = q.UnreadOnly
	}
	markSeen := q.MarkSeen == nil || *q.MarkSeen
	if req.session != nil && q.UnreadOnly && markSeen {
		return d.pullUnread(req, sc, clampLimit(q.Limit, 100, 1000), q.Mesh)
	}
	rows, err := ib.List(req.Context(), sc, clampLimit(q.Limit, 100, 1000))
	if err != nil {
		return InboxReply{}, err
	}
	if len(rows) == 0 {
		if err := d.unknownMeshFilter(q.Mesh); err != nil {
			return InboxReply{}, err
		}
	}
	var unread, listed []string
	for _, r := range rows {
		listed = append(listed, r.ID)
		if r.SeenAt == 0 {
			unread = append(unread, r.ID)
		}
	}
	var marked int64
	if markSeen {
		if marked, err = ib.MarkSeen(req.Context(), unread, sc, time.Now()); err != nil {
			return InboxReply{}, err
		}
		if req.session != nil && len(listed) > 0 {
			// The session's model reads these now: the pull path shows them.
			if _, err := d.surface(req.Context(), req.session, surfaceClaim{Via: surfacedViaPull, IDs: listed}); err != nil {
				return InboxReply{}, err
			}
		}
	}
	items := []inboxItem{}
	for _, r := range rows {
		items = append(items, r.item())
	}
	return InboxReply{Items: items, MarkedSeen: marked}, nil
}

// pullUnread is `inbox --unread` read from a session: what no path has
// shown its model yet, taken for the pull path in the same step that finds
// it, so that a hook or the channel racing for a row shows it, or this
// does, never both. The oldest go first when there are more than limit;
// the list is newest first, as every listing.
func (d *Daemon) pullUnread(req *ipcRequest, sc inboxScope, limit int, mesh string) (InboxReply, error) {
	d.confirmFromTranscript(req.Context(), req.session, d.states.get(req.session).transcript)
	cutoff := time.Now().Add(-surfacingFallbackDelay).UnixMilli()
	rows, err := d.surfaceIn(req.Context(), req.session, sc, surfaceClaim{Via: surfacedViaPull, Limit: limit, FallbackBefore: cutoff})
	if err != nil {
		return InboxReply{}, err
	}
	if len(rows) == 0 {
		if err := d.unknownMeshFilter(mesh); err != nil {
			return InboxReply{}, err
		}
	}
	items := make([]inboxItem, 0, len(rows))
	for i := len(rows) - 1; i >= 0; i-- {
		items = append(items, rows[i].item())
	}
	return InboxReply{Items: items, MarkedSeen: int64(len(rows))}, nil
}

func (d *Daemon) handleInboxSeen(req *ipcRequest, body InboxSeenRequest) (InboxSeenReply, error) {
	if len(body.IDs) == 0 {
		return InboxSeenReply{}, badRequest("missing_ids", "missing 'ids' (string[])")
	}
	sc := d.callerScope(req.session, "")
	sc.Mesh = "" // ids name rows; the session's recipients are the scope
	n, err := d.inbox.MarkSeen(req.Context(), body.IDs, sc, time.Now())
	if err != nil {
		return InboxSeenReply{}, err
	}
	return InboxSeenReply{MarkedSeen: n}, nil
}

func (d *Daemon) handleInboxFlush(req *ipcRequest, q InboxFlushQuery) (InboxFlushReply, error) {
	sc := d.callerScope(req.session, q.Mesh)
	var err error
	if sc.Before, err = parseISOParam("before", q.Before); err != nil {
		return InboxFlushReply{}, err
	}
	if req.session == nil && sc.Mesh == "" && sc.Before == 0 && !q.All {
		return InboxFlushReply{}, badRequest("missing_filter", "flushing needs mesh, before, or all=true (which deletes every row on every mesh)")
	}
	n, err := d.inbox.Flush(req.Context(), sc)
	if err != nil {
		return InboxFlushReply{}, err
	}
	if n == 0 {
		if err := d.unknownMeshFilter(q.Mesh); err != nil {
			return InboxFlushReply{}, err
		}
	}
	return InboxFlushReply{Removed: n}, nil
}

// unknownMeshFilter is the error for an inbox read or flush that matched
// nothing because its mesh filter names a mesh this daemon never joined (a
// typo, most likely): saying "no messages" would hide it. Rows of a mesh
// left since are still found by the filter, so a left mesh is not an error
// while it has rows.
func (d *Daemon) unknownMeshFilter(mesh string) error {
	if mesh == "" {
		return nil
	}
	if _, ok := d.mesh(mesh); ok {
		return nil
	}
	return d.errMeshNotAttached(mesh)
}

func (d *Daemon) handleInboxDelete(req *ipcRequest, in InboxDeleteRequest) (InboxDeleteReply, error) {
	sc := d.callerScope(req.session, "")
	sc.Mesh = ""
	ok, err := d.inbox.Delete(req.Context(), in.ID, sc)
	if err != nil {
		return InboxDeleteReply{}, err
	}
	if !ok {
		return InboxDeleteReply{}, newAPIError(http.StatusNotFound, "not_found", "no inbox row "+in.ID).with("id", in.ID)
	}
	return InboxDeleteReply{Removed: 1, ID: in.ID}, nil
}
