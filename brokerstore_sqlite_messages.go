// Messages and deliveries in the SQLite broker store: the hot path, laid
// out for the fewest b-tree writes per send and per ack.
//
// Layout and policy:
//   - A message's key is its integer store order (seq, the rowid), and a
//     delivery is the pair (recipient key, seq) in a table without rowid:
//     one b-tree, in which a recipient's pending deliveries are one range
//     in send order. Deliveries hold nothing else; their expiry is their
//     message's.
//   - A message counts its deliveries not yet acknowledged (pending). An
//     ack deletes its delivery, and a trigger deletes the message with its
//     last delivery: the database holds what is pending, not what was ever
//     sent. The dedupe key (mesh, sender member, client_message_id) lives
//     as long as its message: a retry after every recipient has acked is
//     stored again, and the recipients' inboxes, which dedupe on the
//     sender's client id, show it once.
//   - Broker message ids start with their time (newMessageID), so the id
//     index grows at its right edge instead of at random places.
//   - Nonce and ciphertext are stored as the bytes their base64 spells;
//     text that is not canonical standard base64 is kept as text, so every
//     push carries exactly what was sent.
//   - The duplicate check is the insert itself (ON CONFLICT DO NOTHING
//     RETURNING): a new message costs no extra lookup.
package main

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"time"
)

// sqlMessageSchema is the message layout (migration 3 creates it).
const sqlMessageSchema = `
CREATE TABLE messages (
	seq                  INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: a drain pages by it
	id                   TEXT NOT NULL,
	mesh_id              TEXT NOT NULL,
	sender_member_id     TEXT NOT NULL,
	sender_pubkey        TEXT NOT NULL,
	sender_member_pubkey TEXT NOT NULL,
	sender_name          TEXT NOT NULL,
	target_spec          TEXT NOT NULL,
	priority             TEXT NOT NULL,
	nonce                BLOB NOT NULL,
	ciphertext           BLOB NOT NULL,
	created_at           INTEGER NOT NULL,
	expires_at           INTEGER NOT NULL,
	client_message_id    TEXT,
	request_fingerprint  TEXT NOT NULL DEFAULT '',
	reply_to_id          TEXT NOT NULL DEFAULT '',
	subtype              TEXT NOT NULL DEFAULT '',
	topic                TEXT NOT NULL DEFAULT '',
	pending              INTEGER NOT NULL -- deliveries not yet acknowledged
);
CREATE UNIQUE INDEX messages_id ON messages (id);
-- Broker-side dedupe: one message per (mesh, sender member, client_message_id).
CREATE UNIQUE INDEX messages_dedupe ON messages (mesh_id, sender_member_id, client_message_id)
	WHERE client_message_id IS NOT NULL;
CREATE TABLE deliveries (
	recipient_key TEXT NOT NULL,
	msg_seq       INTEGER NOT NULL,
	PRIMARY KEY (recipient_key, msg_seq)
) WITHOUT ROWID;
`

// sqlMessageTrigger retires a message with its last delivery.
const sqlMessageTrigger = `
CREATE TRIGGER deliveries_retire AFTER DELETE ON deliveries BEGIN
	DELETE FROM messages WHERE seq = old.msg_seq AND pending <= 1;
	UPDATE messages SET pending = pending - 1 WHERE seq = old.msg_seq;
END;
`

// The statements on a message's path, prepared once on the write connection.
const (
	sqlInsertMessage = `INSERT INTO messages (id, mesh_id, sender_member_id, sender_pubkey, sender_member_pubkey, sender_name,
		target_spec, priority, nonce, ciphertext, created_at, expires_at, client_message_id, request_fingerprint, reply_to_id, subtype, topic, pending)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT DO NOTHING RETURNING seq`
	sqlFindDuplicate  = `SELECT seq, id FROM messages WHERE mesh_id = ? AND sender_member_id = ? AND client_message_id = ?`
	sqlInsertDelivery = `INSERT INTO deliveries (recipient_key, msg_seq) VALUES (?, ?)`
	sqlMarkBySeq      = `DELETE FROM deliveries WHERE recipient_key = ? AND msg_seq = ?`
	sqlMarkByID       = `DELETE FROM deliveries WHERE recipient_key = ?
			AND msg_seq = (SELECT seq FROM messages WHERE id = ? AND mesh_id = ?)`
	sqlMarkByClientID = `DELETE FROM deliveries WHERE recipient_key = ?
			AND msg_seq IN (SELECT seq FROM messages WHERE mesh_id = ? AND client_message_id = ?)`
)

var messagePathStatements = []string{sqlInsertMessage, sqlFindDuplicate, sqlInsertDelivery, sqlMarkBySeq, sqlMarkByID, sqlMarkByClientID}

// WriteBatch applies appends and delivery marks in one transaction (group
// commit). Any error rolls the whole batch back.
func (s *sqliteBrokerStore) WriteBatch(ctx context.Context, appends []appendOp, marks []deliveryMark) ([]appendResult, int, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback()
	results := make([]appendResult, len(appends))
	for i, a := range appends {
		recipients := a.Recipients
		if a.Multicast != nil {
			if recipients, err = s.multicastIn(ctx, tx, a.Msg.MeshID, *a.Multicast); err != nil {
				return nil, 0, err
			}
		}
		if results[i], err = s.appendIn(ctx, tx, a.Msg, uniqueKeys(recipients)); err != nil {
			return nil, 0, err
		}
	}
	marked := 0
	for _, m := range marks {
		n, err := s.markIn(ctx, tx, m)
		if err != nil {
			return nil, 0, err
		}
		marked += n
	}
	if err := tx.Commit(); err != nil {
		return nil, 0, err
	}
	return results, marked, nil
}

// uniqueKeys is keys without repeats, in first-seen order.
func uniqueKeys(keys []string) []string {
	if len(keys) < 2 {
		return keys
	}
	seen := make(map[string]bool, len(keys))
	out := keys[:0:0]
	for _, k := range keys {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

// appendIn stores one message and its deliveries in tx, or finds the
// message its (mesh, sender member, client_message_id) already names. A
// message for nobody is not stored.
func (s *sqliteBrokerStore) appendIn(ctx context.Context, tx *sql.Tx, msg storedMessage, recipients []string) (appendResult, error) {
	if len(recipients) == 0 {
		return appendResult{ID: msg.ID, Recipients: recipients}, nil
	}
	var seq int64
	err := s.ws.scanOne(ctx, tx, sqlInsertMessage, func(r rowScanner) error { return r.Scan(&seq) },
		msg.ID, msg.MeshID, msg.SenderMemberID, msg.SenderPubkey, msg.SenderMemberPubkey, msg.SenderName,
		msg.TargetSpec, msg.Priority, packBase64(msg.Nonce), packBase64(msg.Ciphertext), ms(msg.CreatedAt), ms(msg.ExpiresAt),
		nullable(msg.ClientMessageID), msg.RequestFingerprint, msg.ReplyToID, msg.Subtype, msg.Topic, len(recipients))
	if errors.Is(err, sql.ErrNoRows) {
		// Nothing inserted: the dedupe key exists.
		var id string
		err := s.ws.scanOne(ctx, tx, sqlFindDuplicate, func(r rowScanner) error { return r.Scan(&seq, &id) },
			msg.MeshID, msg.SenderMemberID, msg.ClientMessageID)
		if err != nil {
			return appendResult{}, fmt.Errorf("message %s conflicts with no stored message: %w", msg.ID, err)
		}
		return appendResult{ID: id, Seq: seq, Dup: true}, nil
	}
	if err != nil {
		return appendResult{}, err
	}
	for _, key := range recipients {
		if _, err := s.ws.ExecContext(ctx, tx, sqlInsertDelivery, key, seq); err != nil {
			return appendResult{}, err
		}
	}
	return appendResult{ID: msg.ID, Seq: seq, Recipients: recipients}, nil
}

// multicastIn resolves a multicast in tx from the mesh's members and
// presences.
func (s *sqliteBrokerStore) multicastIn(ctx context.Context, tx *sql.Tx, meshID string, t multicastTarget) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT `+memberColumns+` FROM members WHERE mesh_id = ? ORDER BY created_at, id`, meshID)
	members, err := collect(rows, err, scanMember)
	if err != nil {
		return nil, err
	}
	rows, err = tx.QueryContext(ctx, `SELECT `+presenceColumns+` FROM presences WHERE mesh_id = ? ORDER BY key`, meshID)
	presences, err := collect(rows, err, scanPresence)
	if err != nil {
		return nil, err
	}
	return resolveMulticast(t, members, presences), nil
}

// markIn retires one delivery in tx: by store order, else by broker id,
// else by the sender's client id.
func (s *sqliteBrokerStore) markIn(ctx context.Context, tx *sql.Tx, m deliveryMark) (int, error) {
	var n int64
	var err error
	switch {
	case m.Seq > 0:
		n, err = affected(s.ws.ExecContext(ctx, tx, sqlMarkBySeq, m.Key, m.Seq))
	case m.MessageID != "":
		n, err = affected(s.ws.ExecContext(ctx, tx, sqlMarkByID, m.Key, m.MessageID, m.MeshID))
	default:
		n, err = affected(s.ws.ExecContext(ctx, tx, sqlMarkByClientID, m.Key, m.MeshID, m.ClientMessageID))
	}
	return int(n), err
}

const messageColumns = `m.seq, m.id, m.mesh_id, m.sender_member_id, m.sender_pubkey, m.sender_member_pubkey, m.sender_name, m.target_spec, m.priority,
	m.nonce, m.ciphertext, m.created_at, m.expires_at, coalesce(m.client_message_id, ''), m.request_fingerprint, m.reply_to_id, m.subtype, m.topic`

func scanMessage(row rowScanner) (storedMessage, error) {
	var m storedMessage
	var created, expires int64
	var nonce, ciphertext any
	err := row.Scan(&m.Seq, &m.ID, &m.MeshID, &m.SenderMemberID, &m.SenderPubkey, &m.SenderMemberPubkey, &m.SenderName, &m.TargetSpec, &m.Priority,
		&nonce, &ciphertext, &created, &expires, &m.ClientMessageID, &m.RequestFingerprint, &m.ReplyToID, &m.Subtype, &m.Topic)
	m.Nonce, m.Ciphertext = unpackBase64(nonce), unpackBase64(ciphertext)
	m.CreatedAt, m.ExpiresAt = fromMs(created), fromMs(expires)
	return m, err
}

// packBase64 is s as the bytes it encodes when s is canonical standard
// base64 (what claudemesh clients send), else s itself as text.
func packBase64(s string) any {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || base64.StdEncoding.EncodeToString(b) != s {
		return s
	}
	return b
}

// unpackBase64 turns a column packBase64 wrote back into the text sent.
func unpackBase64(v any) string {
	switch v := v.(type) {
	case []byte:
		return base64.StdEncoding.EncodeToString(v)
	case string:
		return v
	}
	return ""
}

func (s *sqliteBrokerStore) PendingFor(ctx context.Context, meshID, key string, afterSeq int64, now time.Time, limit int) ([]storedMessage, error) {
	rows, err := s.rs.QueryContext(ctx, nil, `SELECT `+messageColumns+` FROM deliveries d JOIN messages m ON m.seq = d.msg_seq
		WHERE d.recipient_key = ? AND d.msg_seq > ? AND m.mesh_id = ? AND m.expires_at > ?
		ORDER BY d.msg_seq LIMIT ?`, key, afterSeq, meshID, ms(now), limit)
	return collect(rows, err, scanMessage)
}

func (s *sqliteBrokerStore) PurgeExpired(ctx context.Context, now time.Time) (int, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM messages WHERE expires_at <= ?`, ms(now)).Scan(&n); err != nil {
		return 0, err
	}
	if n > 0 {
		// The trigger takes each message with its last delivery.
		if _, err := tx.ExecContext(ctx, `DELETE FROM deliveries WHERE msg_seq IN (SELECT seq FROM messages WHERE expires_at <= ?)`, ms(now)); err != nil {
			return 0, err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM messages WHERE expires_at <= ?`, ms(now)); err != nil {
			return 0, err
		}
	}
	// A key gone for longer than groupMemory no longer counts for any
	// multicast: its row would only slow every resolution down.
	if _, err := tx.ExecContext(ctx, `DELETE FROM presences WHERE present = 0 AND seen_at < ?`, ms(now.Add(-groupMemory))); err != nil {
		return 0, err
	}
	return n, tx.Commit()
}

func (s *sqliteBrokerStore) CountPendingDeliveries(ctx context.Context, now time.Time) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM deliveries d JOIN messages m ON m.seq = d.msg_seq WHERE m.expires_at > ?`, ms(now)).Scan(&n)
	return n, err
}
