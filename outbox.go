// The daemon's outbox: every message a local client sends is
// accepted into outbox.db, already encrypted, and the drain (drain.go) hands
// it to the broker.
//
// Policy:
//   - Idempotency comes first: the (client_message_id, request fingerprint)
//     lookup happens before mesh and target resolution, so a replay of a
//     finished send is answered from the store even if the peer went away.
//   - The accept runs in one BEGIN IMMEDIATE transaction and follows the
//     duplicate-lookup table claudemesh clients rely on, case by case (decide,
//     below); fingerprints are compared in constant time.
//   - A session caller with presence encrypts with its session key and its
//     rows leave only on its own link (claudemesh 1.34.0 sender attribution). A send to
//     a mesh other than the session's goes as that mesh's member.
//   - A message that cannot fit the broker's limit once encrypted is refused
//     at once (413) instead of dying later in the drain.
//   - Rows a crash left inflight go back to pending when the store opens.
//   - A requeue aborts the old row and inserts its successor, routing
//     included, in one transaction.
//   - Rows that are done, aborted or dead are pruned after 30 days
//     (Daemon.startPruner, hourly); until then a replay of their client id
//     is answered from the row.
package main

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"
)

// Outbox row statuses.
const (
	outboxPending  = "pending"
	outboxInflight = "inflight"
	outboxDone     = "done"
	outboxDead     = "dead"
	outboxAborted  = "aborted"
)

var outboxStatuses = []string{outboxPending, outboxInflight, outboxDone, outboxDead, outboxAborted}

// outboxMigrations: the columns of claudemesh's outbox, plus routing,
// sender attribution and the reply id the drain puts on the wire.
var outboxMigrations = []string{`
CREATE TABLE outbox (
  id                    TEXT PRIMARY KEY,
  client_message_id     TEXT NOT NULL UNIQUE,
  request_fingerprint   BLOB NOT NULL,
  payload               BLOB NOT NULL,
  enqueued_at           INTEGER NOT NULL,
  attempts              INTEGER NOT NULL DEFAULT 0,
  next_attempt_at       INTEGER NOT NULL,
  status                TEXT NOT NULL CHECK (status IN ('pending','inflight','done','dead','aborted')),
  last_error            TEXT,
  delivered_at          INTEGER,
  broker_message_id     TEXT,
  aborted_at            INTEGER,
  aborted_by            TEXT,
  superseded_by         TEXT,
  mesh                  TEXT,
  target_spec           TEXT,
  nonce                 TEXT,
  ciphertext            TEXT,
  priority              TEXT,
  sender_session_pubkey TEXT,
  reply_to_id           TEXT
);
CREATE INDEX outbox_pending ON outbox(status, next_attempt_at);
CREATE INDEX outbox_lane ON outbox(status, mesh, sender_session_pubkey, enqueued_at);
CREATE INDEX outbox_aborted ON outbox(status, aborted_at) WHERE status = 'aborted';
`, `
-- Full-text search of what was sent, kept like the inbox's (payload is the
-- message's text; it never changes once a row exists).
CREATE VIRTUAL TABLE outbox_fts USING fts5(body, tokenize = 'unicode61 remove_diacritics 2');
INSERT INTO outbox_fts (rowid, body) SELECT rowid, CAST(payload AS TEXT) FROM outbox;
CREATE TRIGGER outbox_fts_insert AFTER INSERT ON outbox BEGIN
  INSERT INTO outbox_fts (rowid, body) VALUES (new.rowid, CAST(new.payload AS TEXT));
END;
CREATE TRIGGER outbox_fts_delete AFTER DELETE ON outbox BEGIN
  DELETE FROM outbox_fts WHERE rowid = old.rowid;
END;
CREATE INDEX outbox_broker_message ON outbox(broker_message_id);
CREATE INDEX outbox_enqueued ON outbox(enqueued_at);
`, `
-- Indexed for search when a search runs (Outbox.indexForSearch), as the
-- inbox is. History reads the outbox without indexes of its own: every
-- index is written on a send's path, and a history read is rare.
DROP TRIGGER outbox_fts_insert;
DROP INDEX outbox_broker_message;
DROP INDEX outbox_enqueued;
`, `
-- The receipt ladder (ladder.go): whether the broker relayed receipts when
-- it took the row, how many delivery keys a multicast resolved to, and when
-- the sending session was told the message stayed unseen.
ALTER TABLE outbox ADD COLUMN receipts TEXT;
ALTER TABLE outbox ADD COLUMN recipients INTEGER;
ALTER TABLE outbox ADD COLUMN unsurfaced_told_at INTEGER;
-- One ladder per recipient key: what its receipts and replies said. Times
-- in ms are when this daemon learned of a rung (one clock with the send);
-- the reported times are the recipient's own.
CREATE TABLE receipts (
  client_message_id       TEXT NOT NULL,
  recipient_pubkey        TEXT NOT NULL,
  recipient_member_pubkey TEXT,
  recipient_name          TEXT,
  delivered_at            INTEGER,
  surfaced_at             INTEGER,
  surfaced_via            TEXT,
  surfaced_confirmed      INTEGER NOT NULL DEFAULT 0,
  reported_delivered_at   TEXT,
  reported_surfaced_at    TEXT,
  shares                  TEXT,
  replied_at              INTEGER,
  reply_id                TEXT,
  PRIMARY KEY (client_message_id, recipient_pubkey)
) WITHOUT ROWID;
`}

// outboxRow is one row of the outbox.
type outboxRow struct {
	ID                  string
	ClientMessageID     string
	Fingerprint         []byte
	Payload             []byte
	EnqueuedAt          int64 // ms
	Attempts            int
	NextAttemptAt       int64 // ms
	Status              string
	LastError           string
	DeliveredAt         int64 // ms, 0 = not yet
	BrokerMessageID     string
	AbortedAt           int64
	AbortedBy           string
	SupersededBy        string
	Mesh                string
	TargetSpec          string
	Nonce               string
	Ciphertext          string
	Priority            string
	SenderSessionPubkey string
	ReplyToID           string
	Receipts            string // receiptsOn or receiptsOff once sent; "" before
	Recipients          *int   // a multicast's delivery keys, once sent
	UnsurfacedToldAt    int64  // ms; the sending session was told it stayed unseen
}

const outboxColumns = `id, client_message_id, request_fingerprint, payload, enqueued_at, attempts, next_attempt_at, status,
  last_error, delivered_at, broker_message_id, aborted_at, aborted_by, superseded_by,
  mesh, target_spec, nonce, ciphertext, priority, sender_session_pubkey, reply_to_id,
  receipts, recipients, unsurfaced_told_at`

func scanOutboxRow(s rowScanner) (*outboxRow, error) {
	var r outboxRow
	var lastErr, brokerID, abortedBy, superseded, mesh, target, nonce, ct, prio, sess, reply sql.NullString
	var delivered, abortedAt, recipients, told sql.NullInt64
	var receipts sql.NullString
	err := s.Scan(&r.ID, &r.ClientMessageID, &r.Fingerprint, &r.Payload, &r.EnqueuedAt, &r.Attempts, &r.NextAttemptAt, &r.Status,
		&lastErr, &delivered, &brokerID, &abortedAt, &abortedBy, &superseded,
		&mesh, &target, &nonce, &ct, &prio, &sess, &reply, &receipts, &recipients, &told)
	if err != nil {
		return nil, noRows(err)
	}
	r.Receipts, r.UnsurfacedToldAt = receipts.String, told.Int64
	if recipients.Valid {
		n := int(recipients.Int64)
		r.Recipients = &n
	}
	r.LastError, r.BrokerMessageID, r.AbortedBy, r.SupersededBy = lastErr.String, brokerID.String, abortedBy.String, superseded.String
	r.Mesh, r.TargetSpec, r.Nonce, r.Ciphertext, r.Priority = mesh.String, target.String, nonce.String, ct.String, prio.String
	r.SenderSessionPubkey, r.ReplyToID = sess.String, reply.String
	r.DeliveredAt, r.AbortedAt = delivered.Int64, abortedAt.Int64
	return &r, nil
}

// Outbox is outbox.db.
type Outbox struct {
	db  *sql.DB
	st  *stmtCache
	dir string // the daemon directory it lives in, named when it is full
}

// openOutbox opens (creating) the outbox and returns rows a crash left
// inflight to pending; recovered is how many.
func openOutbox(path string) (ob *Outbox, recovered int64, err error) {
	db, err := openSQLite(path, outboxMigrations, smallWAL...)
	if err != nil {
		return nil, 0, err
	}
	// Due at once: their send was cut short, not refused.
	recovered, err = affected(db.Exec(`UPDATE outbox SET status = 'pending', next_attempt_at = ? WHERE status = 'inflight'`, time.Now().UnixMilli()))
	if err != nil {
		db.Close()
		return nil, 0, fmt.Errorf("recover inflight rows: %w", err)
	}
	return &Outbox{db: db, st: newStmtCache(db), dir: filepath.Dir(path)}, recovered, nil
}

// Close closes the database.
func (o *Outbox) Close() error {
	o.st.Close()
	return o.db.Close()
}

// one runs a cached query for one row (in tx unless nil).
func (o *Outbox) one(ctx context.Context, tx *sql.Tx, query string, args ...any) (*outboxRow, error) {
	var r *outboxRow
	err := o.st.scanOne(ctx, tx, query, func(s rowScanner) (err error) { r, err = scanOutboxRow(s); return err }, args...)
	return r, err
}

// byClientID finds the row of an idempotency key.
func (o *Outbox) byClientID(ctx context.Context, tx *sql.Tx, cmid string) (*outboxRow, error) {
	return o.one(ctx, tx, `SELECT `+outboxColumns+` FROM outbox WHERE client_message_id = ?`, cmid)
}

// get finds a row by id.
func (o *Outbox) get(ctx context.Context, id string) (*outboxRow, error) {
	return o.one(ctx, nil, `SELECT `+outboxColumns+` FROM outbox WHERE id = ?`, id)
}

// acceptResult is the outcome of one send against the duplicate-lookup table.
type acceptResult struct {
	HTTP     int    // 202, 200 or 409
	Status   string // "queued" or "inflight" (202)
	Conflict string // 409's reason
	Inserted bool   // a new pending row was written
	Row      *outboxRow
}

// decide applies the duplicate-lookup table to an existing row (nil = none)
// and the new request's fingerprint.
func decide(existing *outboxRow, fp []byte) acceptResult {
	if existing == nil {
		return acceptResult{HTTP: http.StatusAccepted, Status: "queued", Inserted: true}
	}
	match := subtle.ConstantTimeCompare(existing.Fingerprint, fp) == 1
	r := acceptResult{Row: existing}
	switch existing.Status {
	case outboxPending:
		if match {
			r.HTTP, r.Status = http.StatusAccepted, "queued"
			return r
		}
	case outboxInflight:
		if match {
			r.HTTP, r.Status = http.StatusAccepted, "inflight"
			return r
		}
	case outboxDone:
		if match {
			r.HTTP = http.StatusOK
			return r
		}
	}
	r.HTTP = http.StatusConflict
	if match {
		r.Conflict = "outbox_" + existing.Status + "_fingerprint_match"
	} else {
		r.Conflict = "outbox_" + existing.Status + "_fingerprint_mismatch"
	}
	return r
}

// Lookup answers a send from the store alone when its key is known; nil
// means the key is new and the send must be resolved and accepted.
func (o *Outbox) Lookup(ctx context.Context, cmid string, fp []byte) (*acceptResult, error) {
	row, err := o.byClientID(ctx, nil, cmid)
	if errors.Is(err, errNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	r := decide(row, fp)
	return &r, nil
}

// Accept inserts row unless its client_message_id exists, deciding by the
// duplicate-lookup table, inside one BEGIN IMMEDIATE transaction.
func (o *Outbox) Accept(ctx context.Context, row outboxRow) (acceptResult, error) {
	tx, err := o.db.BeginTx(ctx, nil) // immediate: the connection's _txlock
	if err != nil {
		return acceptResult{}, err
	}
	defer tx.Rollback()
	existing, err := o.byClientID(ctx, tx, row.ClientMessageID)
	if err != nil && !errors.Is(err, errNotFound) {
		return acceptResult{}, err
	}
	r := decide(existing, row.Fingerprint)
	if r.Inserted {
		if err := o.insert(ctx, tx, &row); err != nil {
			return acceptResult{}, err
		}
		r.Row = &row
	}
	return r, tx.Commit()
}

func (o *Outbox) insert(ctx context.Context, tx *sql.Tx, r *outboxRow) error {
	r.Status, r.Attempts = outboxPending, 0
	_, err := o.st.ExecContext(ctx, tx, `INSERT INTO outbox (id, client_message_id, request_fingerprint, payload, enqueued_at, attempts,
  next_attempt_at, status, mesh, target_spec, nonce, ciphertext, priority, sender_session_pubkey, reply_to_id)
VALUES (?, ?, ?, ?, ?, 0, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.ClientMessageID, r.Fingerprint, r.Payload, r.EnqueuedAt, r.NextAttemptAt,
		nullable(r.Mesh), nullable(r.TargetSpec), nullable(r.Nonce), nullable(r.Ciphertext), nullable(r.Priority),
		nullable(r.SenderSessionPubkey), nullable(r.ReplyToID))
	return err
}

// List returns rows newest first, optionally of one status.
func (o *Outbox) List(ctx context.Context, status string, limit int) ([]*outboxRow, error) {
	q := `SELECT ` + outboxColumns + ` FROM outbox`
	var args []any
	if status != "" {
		q += ` WHERE status = ?`
		args = append(args, status)
	}
	q += ` ORDER BY enqueued_at DESC, rowid DESC LIMIT ?`
	args = append(args, limit)
	rows, err := o.db.QueryContext(ctx, q, args...)
	return collect(rows, err, scanOutboxRow)
}

// errNotRequeueable: the row is missing, already aborted or already done.
var errNotRequeueable = errors.New("row not found, already aborted, or already done")

// Requeue aborts a pending, inflight or dead row and inserts a fresh
// pending row with the same message and routing under a new client id.
func (o *Outbox) Requeue(ctx context.Context, id, newClientID, by string, now time.Time) (*outboxRow, error) {
	tx, err := o.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	old, err := scanOutboxRow(tx.QueryRowContext(ctx, `SELECT `+outboxColumns+` FROM outbox WHERE id = ?`, id))
	if errors.Is(err, errNotFound) {
		return nil, errNotRequeueable
	}
	if err != nil {
		return nil, err
	}
	if old.Status == outboxDone || old.Status == outboxAborted {
		return nil, errNotRequeueable
	}
	fresh := *old
	fresh.ID, fresh.ClientMessageID = newUUID(), newClientID
	fresh.EnqueuedAt, fresh.NextAttemptAt = now.UnixMilli(), now.UnixMilli()
	if _, err := tx.ExecContext(ctx, `UPDATE outbox SET status = 'aborted', aborted_at = ?, aborted_by = ?, superseded_by = ? WHERE id = ?`,
		now.UnixMilli(), nullable(by), fresh.ID, id); err != nil {
		return nil, err
	}
	if err := o.insert(ctx, tx, &fresh); err != nil {
		if strings.Contains(err.Error(), "UNIQUE") {
			return nil, errClientIDTaken
		}
		return nil, err
	}
	return &fresh, tx.Commit()
}

var errClientIDTaken = errors.New("that client_message_id is already in the outbox")

// Prune deletes the rows that are done, aborted or dead and settled before
// cutoff: delivered, aborted, or (dead rows, which keep no time of death)
// accepted then.
func (o *Outbox) Prune(ctx context.Context, cutoff time.Time) (int64, error) {
	n, err := affected(o.db.ExecContext(ctx, `DELETE FROM outbox WHERE status IN ('done', 'aborted', 'dead')
  AND COALESCE(delivered_at, aborted_at, enqueued_at) < ?`, cutoff.UnixMilli()))
	if err == nil && n > 0 {
		_, err = o.db.ExecContext(ctx, `DELETE FROM receipts WHERE client_message_id NOT IN (SELECT client_message_id FROM outbox)`)
	}
	return n, err
}

// The send route.

// Send limits.
const (
	maxSendBody   = 256 << 10 // IPC body of POST /v1/send
	maxSendWaitMs = 30_000
)

// sendInput is a validated send with its idempotency key and fingerprint.
type sendInput struct {
	SendRequest
	Fingerprint []byte
}

// validateSend checks a send body. The Idempotency-Key header is the client
// id when the body has none; with neither, a random id is minted.
func validateSend(body SendRequest, idempotencyKey string) (*sendInput, error) {
	body.To = strings.TrimSpace(body.To)
	switch {
	case body.To == "":
		return nil, badRequest("missing_to", "missing 'to'")
	case len(body.To) > maxTargetLen:
		return nil, badRequest("invalid_target", "'to' is longer than %d bytes", maxTargetLen)
	case targetForm(body.To) == "":
		return nil, badRequest("invalid_target", "%q names no group or topic", body.To)
	case strings.TrimSpace(body.Message) == "":
		return nil, badRequest("missing_message", "missing 'message'")
	}
	if body.Priority == "" {
		body.Priority = priorityNext
	}
	if !validPriority(body.Priority) {
		return nil, badRequest("invalid_priority", "priority must be 'now' | 'next' | 'low'")
	}
	var meta any
	if m := strings.TrimSpace(string(body.Meta)); m != "" && m != "null" {
		dec := json.NewDecoder(strings.NewReader(m))
		dec.UseNumber()
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			return nil, badRequest("invalid_meta", "'meta' must be a JSON object")
		}
		meta = obj
	}
	if body.ClientMessageID == "" {
		body.ClientMessageID = strings.TrimSpace(idempotencyKey)
	}
	if body.ClientMessageID == "" {
		body.ClientMessageID = newUUID()
	}
	for field, v := range map[string]string{"client_message_id": body.ClientMessageID, "reply_to_id": body.ReplyToID} {
		if len(v) > maxIDLen {
			return nil, badRequest("invalid_"+field, "'%s' is longer than %d bytes", field, maxIDLen)
		}
	}
	if body.WaitMs < 0 || body.WaitMs > maxSendWaitMs {
		return nil, badRequest("invalid_wait", "wait_ms must be 0..%d", maxSendWaitMs)
	}
	fp, err := requestFingerprint(body.To, body.ReplyToID, body.Priority, meta, []byte(body.Message))
	if err != nil {
		return nil, badRequest("invalid_meta", "%v", err)
	}
	return &sendInput{SendRequest: body, Fingerprint: fp[:]}, nil
}

// handleSend is POST /v1/send: validate, answer a known idempotency key from
// the store, else resolve, encrypt and accept; with wait_ms, wait for the
// broker's answer before replying.
func (d *Daemon) handleSend(req *ipcRequest, body SendRequest) (SendReply, error) {
	in, err := validateSend(body, req.Header.Get("Idempotency-Key"))
	if err != nil {
		return SendReply{}, err
	}
	ctx := req.Context()
	res, err := d.outbox.Lookup(ctx, in.ClientMessageID, in.Fingerprint)
	if err != nil {
		return SendReply{}, err
	}
	var w *rowWaiter
	var known *outboxRow // the row's state as of the watch, when certain
	var presence chan *recipientPresence
	if res == nil {
		row, err := d.prepareSend(ctx, in, req.session)
		if err != nil {
			return SendReply{}, err
		}
		if in.Presence && in.WaitMs > 0 && isHexKey(row.TargetSpec) {
			// Asked while the message goes out, so that the answer waits
			// for neither in turn.
			presence = make(chan *recipientPresence, 1)
			go func() { presence <- d.lookupPresence(ctx, row.Mesh, row.TargetSpec) }()
		}
		if in.WaitMs > 0 {
			w = d.drain.watch(row.ID) // before the row exists, so no change is missed
			defer w.cancel()
		}
		r, err := d.outbox.Accept(ctx, *row)
		if isDiskFull(err) {
			reclaimWAL(d.outbox.db)
			return SendReply{}, newAPIError(http.StatusInsufficientStorage, "disk_full",
				fmt.Sprintf("no space left in %s: the message was not accepted; free some space there and send it again", d.outbox.dir))
		}
		if err != nil {
			return SendReply{}, err
		}
		res = &r
		if r.Inserted {
			d.publishOutbox(r.Row)
			known = r.Row
			d.drain.WakeLane(laneKey{mesh: row.Mesh, session: row.SenderSessionPubkey})
		}
	} else if res.HTTP == http.StatusAccepted && res.Status == "queued" {
		d.drain.Wake()
	}
	if res.HTTP == http.StatusAccepted && in.WaitMs > 0 && d.rowLinkOpen(res.Row) {
		if w == nil || !res.Inserted {
			w = d.drain.watch(res.Row.ID)
		}
		res.Row = w.Wait(ctx, known, time.Duration(in.WaitMs)*time.Millisecond)
	}
	if res.Inserted && in.ReplyToID != "" {
		// An answer is evidence that its session's model saw the message.
		d.confirmReply(ctx, req.session, in.ReplyToID)
	}
	var p *recipientPresence
	if presence != nil {
		p = <-presence
	}
	return sendReply(in, res, p)
}

// lookupPresence asks the mesh's broker for its peers and finds key among
// them; nil when the broker cannot say.
func (d *Daemon) lookupPresence(ctx context.Context, mesh, key string) *recipientPresence {
	e, ok := d.joinedMesh(mesh)
	if !ok {
		return nil
	}
	peers, err := d.listPeers(ctx, e)
	if err != nil {
		return nil
	}
	p := &recipientPresence{}
	for _, row := range peers {
		if row.Pubkey == key {
			p.Online, p.DisplayName = true, row.DisplayName
			if row.Profile != nil {
				p.Surfacing = row.Profile.Surfacing
			}
			break
		}
	}
	return p
}

// sendReply renders an accept result. 202 and 200 carry the row's state
// (and the recipient's presence when it was asked for and known); 409 is
// an error body with the conflict's name.
func sendReply(in *sendInput, res *acceptResult, recipient *recipientPresence) (SendReply, error) {
	if res.HTTP == http.StatusConflict {
		var brokerID any
		if res.Row.BrokerMessageID != "" {
			brokerID = res.Row.BrokerMessageID
		}
		return SendReply{}, newAPIError(http.StatusConflict, "idempotency_key_reused", "client_message_id "+in.ClientMessageID+" was used for another message or can no longer be sent").
			with("conflict", res.Conflict).with("daemon_fingerprint_prefix", hex.EncodeToString(in.Fingerprint)[:16]).
			with("broker_message_id", brokerID).with("client_message_id", in.ClientMessageID)
	}
	r := res.Row
	out := SendReply{ClientMessageID: r.ClientMessageID, ID: r.ID, Mesh: r.Mesh, Target: r.TargetSpec,
		Recipient: recipient, httpStatus: res.HTTP}
	switch r.Status {
	case outboxDone:
		out.Status, out.BrokerMessageID, out.Duplicate = "done", ptr(r.BrokerMessageID), ptr(!res.Inserted)
		out.httpStatus = http.StatusOK
	case outboxDead:
		out.Status, out.LastError = "dead", ptr(r.LastError)
		out.httpStatus = http.StatusOK
	case outboxInflight:
		out.Status = "inflight"
	default:
		out.Status = "queued"
	}
	if r.LastError != "" && r.Status != outboxDone {
		out.LastError = ptr(r.LastError)
	}
	return out, nil
}

// prepareSend resolves the mesh and the target, encrypts, and builds the
// row to accept.
func (d *Daemon) prepareSend(ctx context.Context, in *sendInput, s *Session) (*outboxRow, error) {
	e, err := d.pickMesh(in.Mesh, s)
	if err != nil {
		return nil, err
	}
	if e.Link.State() == LinkBanned {
		return nil, errBanned(e.Mesh.Slug) // queued, it would wait forever
	}
	sender, senderSession := e.Key, ""
	if s != nil && s.Presence != nil && s.Mesh == e.Mesh.Slug {
		sender, senderSession = s.Presence.Keypair(), s.Presence.SessionPubkey
	}
	target, err := d.resolveTarget(ctx, e, in.To)
	if err != nil {
		return nil, err
	}
	if senderSession != "" && target == senderSession {
		// Its own link drops it as an echo (claudemesh 1.34.8): it would be reported
		// sent and never seen.
		return nil, badRequest("to_self", "%s is this session's own key: a session never receives its own messages", shortKey(target))
	}
	var nonce, ct string
	if isHexKey(target) {
		if nonce, ct, err = sealDM([]byte(in.Message), target, sender); err != nil {
			return nil, badRequest("invalid_target", "cannot encrypt to %s: %v", target, err)
		}
	} else {
		nonce, ct = plainBody([]byte(in.Message))
	}
	if size := len(ct) + len(nonce) + len(target); size > d.opts.MaxMessageBytes {
		return nil, newAPIError(http.StatusRequestEntityTooLarge, "payload_too_large",
			fmt.Sprintf("the message is %d bytes once encrypted; the broker accepts at most %d (about %d bytes of text)",
				size, d.opts.MaxMessageBytes, maxPlaintextFor(d.opts.MaxMessageBytes, target))).
			with("limit", d.opts.MaxMessageBytes)
	}
	now := time.Now().UnixMilli()
	return &outboxRow{
		ID: newUUID(), ClientMessageID: in.ClientMessageID, Fingerprint: in.Fingerprint, Payload: []byte(in.Message),
		EnqueuedAt: now, NextAttemptAt: now, Mesh: e.Mesh.Slug, TargetSpec: target, Nonce: nonce, Ciphertext: ct,
		Priority: in.Priority, SenderSessionPubkey: senderSession, ReplyToID: in.ReplyToID,
	}, nil
}

// rowLinkOpen reports whether the link a row leaves on is open now.
func (d *Daemon) rowLinkOpen(r *outboxRow) bool {
	if r.SenderSessionPubkey != "" {
		l := d.SessionLinkByPubkey(r.SenderSessionPubkey)
		return l != nil && l.State() == LinkOpen
	}
	e, ok := d.joinedMesh(r.Mesh)
	return ok && e.Link.State() == LinkOpen
}

// maxPlaintextFor is roughly the longest text that fits limit: base64 of
// (text + 16 bytes of MAC for a DM) plus a 32-byte base64 nonce and the target.
func maxPlaintextFor(limit int, target string) int {
	room := limit - 32 - len(target)
	n := room / 4 * 3
	if isHexKey(target) {
		n -= 16
	}
	return max(n, 0)
}

// resolveTarget turns a send's `to` into a target spec on mesh e: names and
// key prefixes are looked up in the mesh's peer list, then, when that finds
// no one, among its members (someone offline).
func (d *Daemon) resolveTarget(ctx context.Context, e *meshEntry, to string) (string, error) {
	switch targetForm(to) {
	case targetFormMulticast:
		return to, nil
	case targetFormDirect:
		return strings.ToLower(to), nil
	}
	peers, err := d.listPeers(ctx, e)
	if err != nil {
		return "", fmt.Errorf("resolving %q needs the peer list of %s: %w", to, e.Mesh.Slug, err)
	}
	key, err := resolvePeerTarget(to, peers, nil, minDaemonPrefix, e.Mesh.Slug)
	var te *TargetError
	if errors.As(err, &te) && te.Code == "no_peer_matches" {
		members := membersFromPeers(peers)
		if e.Link.Supports(featureListMembers) {
			if listed, _, lerr := d.listMembers(ctx, e); lerr == nil {
				members = listed
			}
		}
		key, err = resolvePeerTarget(to, peers, members, minDaemonPrefix, e.Mesh.Slug)
	}
	if errors.As(err, &te) {
		status := http.StatusNotFound
		if te.Code == "ambiguous_target" {
			status = http.StatusConflict
		}
		return "", newAPIError(status, te.Code, te.Error()).with("candidates", nonNil(te.Candidates)).with("mesh", e.Mesh.Slug)
	}
	return key, err
}

// minDaemonPrefix is the shortest key prefix POST /v1/send resolves.
const minDaemonPrefix = 16

// Outbox routes.

func msISO(ms int64) *string {
	if ms == 0 {
		return nil
	}
	s := isoTime(time.UnixMilli(ms))
	return &s
}

func strOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (r *outboxRow) view() outboxView {
	return outboxView{
		ID: r.ID, ClientMessageID: r.ClientMessageID, Status: r.Status, Attempts: r.Attempts,
		EnqueuedAt: isoTime(time.UnixMilli(r.EnqueuedAt)), NextAttemptAt: isoTime(time.UnixMilli(r.NextAttemptAt)),
		DeliveredAt: msISO(r.DeliveredAt), BrokerMessageID: strOrNil(r.BrokerMessageID), LastError: strOrNil(r.LastError),
		AbortedAt: msISO(r.AbortedAt), AbortedBy: strOrNil(r.AbortedBy), SupersededBy: strOrNil(r.SupersededBy),
		PayloadBytes: len(r.Payload), Mesh: r.Mesh, Target: r.TargetSpec, Priority: r.Priority, SenderSession: r.SenderSessionPubkey,
	}
}

func (d *Daemon) handleOutboxList(req *ipcRequest, in OutboxQuery) (OutboxReply, error) {
	status := in.Status
	if status == "failed" {
		status = outboxDead
	}
	if status != "" && !containsString(outboxStatuses, status) {
		return OutboxReply{}, badRequest("invalid_status", "status must be one of %s", strings.Join(outboxStatuses, ", "))
	}
	rows, err := d.outbox.List(req.Context(), status, clampLimit(in.Limit, 50, 500))
	if err != nil {
		return OutboxReply{}, err
	}
	items := []outboxView{}
	for _, r := range rows {
		items = append(items, r.view())
	}
	if err := d.withLadders(req.Context(), rows, items); err != nil {
		return OutboxReply{}, err
	}
	return OutboxReply{Items: items}, nil
}

// clampLimit is a limit parameter clamped to 1..max, or def when absent.
func clampLimit(n *int, def, maxLimit int) int {
	if n == nil {
		return def
	}
	return min(max(*n, 1), maxLimit)
}

func (d *Daemon) handleOutboxRequeue(req *ipcRequest, body RequeueRequest) (RequeueReply, error) {
	if body.ID == "" {
		return RequeueReply{}, badRequest("missing_id", "missing 'id'")
	}
	if body.NewClientMessageID == "" {
		body.NewClientMessageID = newUUID()
	}
	if len(body.NewClientMessageID) > maxIDLen {
		return RequeueReply{}, badRequest("invalid_client_message_id", "new_client_message_id is longer than %d bytes", maxIDLen)
	}
	if body.AbortedBy == "" {
		body.AbortedBy = "operator"
	}
	fresh, err := d.outbox.Requeue(req.Context(), body.ID, body.NewClientMessageID, body.AbortedBy, time.Now())
	switch {
	case errors.Is(err, errNotRequeueable):
		return RequeueReply{}, newAPIError(http.StatusConflict, "not_requeueable", err.Error()).with("id", body.ID)
	case errors.Is(err, errClientIDTaken):
		return RequeueReply{}, newAPIError(http.StatusConflict, "client_message_id_taken", err.Error())
	case err != nil:
		return RequeueReply{}, err
	}
	d.drain.Wake()
	d.outboxRowChanged(body.ID, nil)
	d.publishOutbox(fresh)
	return RequeueReply{AbortedRowID: body.ID, NewRowID: fresh.ID, NewClientMessageID: fresh.ClientMessageID}, nil
}

// publishOutbox puts a row's new state on the event stream, with its
// ladder when it can be read.
func (d *Daemon) publishOutbox(r *outboxRow) {
	v := r.view()
	ctx, cancel := context.WithTimeout(d.ctx, 5*time.Second)
	defer cancel()
	if l, err := d.ladder(ctx, r); err == nil {
		v.Ladder = &l
	}
	d.bus.Publish(Event{Kind: eventOutbox, Mesh: r.Mesh, Data: &OutboxEvent{Row: v, Message: d.sentMessage(r, nil, v.Ladder)}})
}

// outboxRowChanged publishes a row the drain changed (nil: read it).
func (d *Daemon) outboxRowChanged(id string, r *outboxRow) {
	defer d.ladderWaiters.notify(id)
	if r == nil {
		ctx, cancel := context.WithTimeout(d.ctx, 5*time.Second)
		defer cancel()
		var err error
		if r, err = d.outbox.get(ctx, id); err != nil {
			return
		}
	}
	d.publishOutbox(r)
}
