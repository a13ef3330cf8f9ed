// The broker store on SQLite (WAL). Times are integer milliseconds since the
// epoch; JSON-shaped columns hold JSON text. Writes go through one
// connection so that competing writers queue in Go instead of sleeping in
// SQLite's busy handler; reads use their own pool and never wait on writes.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// brokerMigrations: migrations[i] moves the schema from version i to i+1.
// Append only.
var brokerMigrations = []string{
	// 1: the whole schema.
	`
CREATE TABLE meshes (
	id           TEXT PRIMARY KEY,
	slug         TEXT NOT NULL UNIQUE,
	name         TEXT NOT NULL,
	owner_pubkey TEXT NOT NULL,
	root_key     TEXT NOT NULL,
	created_at   INTEGER NOT NULL
);
CREATE TABLE members (
	id             TEXT PRIMARY KEY,
	mesh_id        TEXT NOT NULL REFERENCES meshes(id),
	pubkey         TEXT NOT NULL,
	display_name   TEXT NOT NULL,
	role           TEXT NOT NULL,
	role_tag       TEXT NOT NULL DEFAULT '',
	default_groups TEXT NOT NULL DEFAULT '[]',
	message_mode   TEXT NOT NULL DEFAULT 'push',
	created_at     INTEGER NOT NULL,
	revoked_at     INTEGER,
	UNIQUE (mesh_id, pubkey)
);
CREATE TABLE invites (
	token      TEXT PRIMARY KEY,
	mesh_id    TEXT NOT NULL REFERENCES meshes(id),
	role       TEXT NOT NULL,
	max_uses   INTEGER NOT NULL,
	used_count INTEGER NOT NULL DEFAULT 0,
	expires_at INTEGER NOT NULL,
	revoked_at INTEGER,
	created_at INTEGER NOT NULL
);
CREATE TABLE session_keys (
	mesh_id        TEXT NOT NULL,
	session_pubkey TEXT NOT NULL,
	member_id      TEXT NOT NULL REFERENCES members(id),
	first_seen     INTEGER NOT NULL,
	last_seen      INTEGER NOT NULL,
	PRIMARY KEY (mesh_id, session_pubkey)
);
CREATE TABLE messages (
	seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
	id                   TEXT NOT NULL UNIQUE,
	mesh_id              TEXT NOT NULL,
	sender_member_id     TEXT NOT NULL,
	sender_pubkey        TEXT NOT NULL,
	sender_member_pubkey TEXT NOT NULL,
	sender_name          TEXT NOT NULL,
	target_spec          TEXT NOT NULL,
	priority             TEXT NOT NULL,
	nonce                TEXT NOT NULL,
	ciphertext           TEXT NOT NULL,
	created_at           INTEGER NOT NULL,
	expires_at           INTEGER NOT NULL,
	client_message_id    TEXT,
	request_fingerprint  TEXT NOT NULL DEFAULT '',
	reply_to_id          TEXT NOT NULL DEFAULT '',
	subtype              TEXT NOT NULL DEFAULT '',
	topic                TEXT NOT NULL DEFAULT ''
);
-- Broker-side dedupe: one message per (mesh, sender member, client_message_id).
CREATE UNIQUE INDEX messages_dedupe ON messages (mesh_id, sender_member_id, client_message_id)
	WHERE client_message_id IS NOT NULL;
CREATE INDEX messages_expiry ON messages (expires_at);
CREATE TABLE deliveries (
	message_id    TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
	recipient_key TEXT NOT NULL,
	mesh_id       TEXT NOT NULL,
	expires_at    INTEGER NOT NULL,
	delivered_at  INTEGER,
	PRIMARY KEY (message_id, recipient_key)
);
CREATE INDEX deliveries_pending ON deliveries (mesh_id, recipient_key) WHERE delivered_at IS NULL;
CREATE TABLE state (
	mesh_id    TEXT NOT NULL,
	key        TEXT NOT NULL,
	value      TEXT NOT NULL,
	updated_by TEXT NOT NULL,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (mesh_id, key)
);
CREATE TABLE memories (
	id            TEXT PRIMARY KEY,
	mesh_id       TEXT NOT NULL,
	content       TEXT NOT NULL,
	tags          TEXT NOT NULL DEFAULT '[]',
	remembered_by TEXT NOT NULL,
	remembered_at INTEGER NOT NULL,
	forgotten_at  INTEGER
);
-- Full-text index over live memories; rows leave it when forgotten.
CREATE VIRTUAL TABLE memories_fts USING fts5 (id UNINDEXED, mesh_id UNINDEXED, content, tags, tokenize = 'porter unicode61');
CREATE TABLE skills (
	mesh_id      TEXT NOT NULL,
	name         TEXT NOT NULL,
	description  TEXT NOT NULL,
	instructions TEXT NOT NULL,
	tags         TEXT NOT NULL DEFAULT '[]',
	author       TEXT NOT NULL,
	manifest     TEXT,
	created_at   INTEGER NOT NULL,
	PRIMARY KEY (mesh_id, name)
);
CREATE TABLE peer_state (
	mesh_id      TEXT NOT NULL,
	member_id    TEXT NOT NULL,
	groups       TEXT NOT NULL DEFAULT '[]',
	visible      INTEGER NOT NULL DEFAULT 1,
	profile      TEXT NOT NULL DEFAULT '{}',
	summary      TEXT NOT NULL DEFAULT '',
	stats        TEXT,
	last_seen_at INTEGER NOT NULL,
	PRIMARY KEY (mesh_id, member_id)
);
`,
	// 2: the last presence of every member link and session key.
	`
CREATE TABLE presences (
	mesh_id   TEXT NOT NULL,
	key       TEXT NOT NULL,
	member_id TEXT NOT NULL,
	role      TEXT NOT NULL,
	groups    TEXT NOT NULL DEFAULT '[]',
	visible   INTEGER NOT NULL DEFAULT 1,
	present   INTEGER NOT NULL,
	seen_at   INTEGER NOT NULL,
	PRIMARY KEY (mesh_id, key)
);
`,
	// 3: each member's grants, a JSON object of sender key → capabilities.
	`
ALTER TABLE members ADD COLUMN grants TEXT NOT NULL DEFAULT '{}';
`,
	// 4: the audit log, one hash chain per mesh (audit.go), and a short id
	// for each invite, which the log and the invite verbs name it by.
	`
CREATE TABLE audit_log (
	mesh_id    TEXT NOT NULL,
	seq        INTEGER NOT NULL,
	event_type TEXT NOT NULL,
	actor      TEXT,
	payload    TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	prev_hash  TEXT NOT NULL,
	hash       TEXT NOT NULL,
	PRIMARY KEY (mesh_id, seq)
);
ALTER TABLE invites ADD COLUMN id TEXT;
UPDATE invites SET id = lower(hex(randomblob(6)));
CREATE UNIQUE INDEX invites_id ON invites (id);
`,
	// 5: v2 invites: a short code in token, the owner's capability
	// signature, and which version a row is.
	`
ALTER TABLE invites ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE invites ADD COLUMN signature TEXT NOT NULL DEFAULT '';
CREATE INDEX invites_mesh ON invites (mesh_id, created_at);
`,
	// 6: the lean message layout (brokerstore_sqlite_messages.go). Only
	// what is still pending moves over; delivered messages go.
	`
DROP INDEX messages_dedupe;
DROP INDEX messages_expiry;
DROP INDEX deliveries_pending;
ALTER TABLE deliveries RENAME TO deliveries_v2;
ALTER TABLE messages RENAME TO messages_v2;
` + sqlMessageSchema + `
INSERT INTO messages (seq, id, mesh_id, sender_member_id, sender_pubkey, sender_member_pubkey, sender_name, target_spec, priority,
	nonce, ciphertext, created_at, expires_at, client_message_id, request_fingerprint, reply_to_id, subtype, topic, pending)
SELECT m.seq, m.id, m.mesh_id, m.sender_member_id, m.sender_pubkey, m.sender_member_pubkey, m.sender_name, m.target_spec, m.priority,
	m.nonce, m.ciphertext, m.created_at, m.expires_at, m.client_message_id, m.request_fingerprint, m.reply_to_id, m.subtype, m.topic,
	(SELECT count(*) FROM deliveries_v2 d WHERE d.message_id = m.id AND d.delivered_at IS NULL)
FROM messages_v2 m
WHERE EXISTS (SELECT 1 FROM deliveries_v2 d WHERE d.message_id = m.id AND d.delivered_at IS NULL);
INSERT INTO deliveries (recipient_key, msg_seq)
SELECT d.recipient_key, m.seq FROM deliveries_v2 d JOIN messages m ON m.id = d.message_id WHERE d.delivered_at IS NULL;
DROP TABLE deliveries_v2;
DROP TABLE messages_v2;
` + sqlMessageTrigger,
}

// sqliteBrokerStore implements brokerStore.
type sqliteBrokerStore struct {
	w           *sql.DB    // one connection: writes queue here
	ws          *stmtCache // prepared statements on w
	r           *sql.DB    // reads, and the background checkpoint
	rs          *stmtCache // prepared statements on r: the reads every handshake and drain makes
	checkpoints *checkpointer
}

// The broker store's pragmas beyond openSQLite's.
var (
	brokerWritePragmas = []string{
		// The writer never checkpoints inside a commit: that took a tenth of
		// the broker's CPU under load and stalled every send behind it. The
		// background checkpointer does it instead.
		"wal_autocheckpoint(0)",
		// 32 MB of page cache: the pending messages, their deliveries and
		// the indexes a commit touches stay in memory (the default 2 MB
		// spilled and re-read pages on every batch).
		"cache_size(-32768)",
	}
	brokerReadPragmas = []string{
		"cache_size(-8192)", // drains read recent pages; 8 MB per reader keeps them
	}
)

// brokerWALPages is the WAL size, in pages, past which the background
// checkpoint stops being polite (it waits for readers and briefly holds
// writers back) so the file stays bounded under a sustained load.
const brokerWALPages = 16384

// brokerDBFile is the store's file inside the broker's data dir.
const brokerDBFile = "broker.db"

// openSQLiteBrokerStore opens (creating) the store in dir.
func openSQLiteBrokerStore(dir string) (*sqliteBrokerStore, error) {
	if err := ensurePrivateDir(dir); err != nil {
		return nil, fmt.Errorf("broker data dir: %w", err)
	}
	path := filepath.Join(dir, brokerDBFile)
	w, err := openSQLite(path, brokerMigrations, brokerWritePragmas...)
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	r, err := openSQLite(path, brokerMigrations, brokerReadPragmas...)
	if err != nil {
		w.Close()
		return nil, err
	}
	s := &sqliteBrokerStore{w: w, ws: newStmtCache(w), r: r, rs: newStmtCache(r), checkpoints: startCheckpointer(r, brokerWALPages)}
	// Prepared now, outside any transaction: the write pool has one
	// connection, so preparing on it while a transaction holds it would wait
	// for ever.
	for _, q := range messagePathStatements {
		if _, err := s.ws.prepared(context.Background(), q); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

func (s *sqliteBrokerStore) Close() error {
	s.checkpoints.stop()
	s.ws.Close()
	s.rs.Close()
	return errors.Join(s.w.Close(), s.r.Close())
}

func (s *sqliteBrokerStore) Ping(ctx context.Context) error {
	var one int
	return s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMs(v int64) time.Time { return time.UnixMilli(v).UTC() }

func msPtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UnixMilli()
}

func fromMsPtr(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMs(v.Int64)
	return &t
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return "null"
	}
	return string(b)
}

// isUniqueViolation recognises SQLite's constraint error without importing
// the driver's error type.
func isUniqueViolation(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "UNIQUE constraint failed") ||
		strings.Contains(err.Error(), "PRIMARY KEY constraint failed"))
}

// Meshes and members.

func (s *sqliteBrokerStore) CreateMesh(ctx context.Context, mesh storedMesh, owner storedMember, audit ...auditEvent) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, `INSERT INTO meshes (id, slug, name, owner_pubkey, root_key, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		mesh.ID, mesh.Slug, mesh.Name, mesh.OwnerPubkey, mesh.RootKey, ms(mesh.CreatedAt))
	if isUniqueViolation(err) {
		return errExists
	}
	if err != nil {
		return err
	}
	if err := insertMember(ctx, tx, owner); err != nil {
		return err
	}
	if err := appendAuditIn(ctx, tx, audit); err != nil {
		return err
	}
	return tx.Commit()
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func insertMember(ctx context.Context, tx execer, m storedMember) error {
	m.DefaultGroups = nonNil(m.DefaultGroups)
	if m.MessageMode == "" {
		m.MessageMode = "push"
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO members (id, mesh_id, pubkey, display_name, role, role_tag, default_groups, message_mode, created_at, revoked_at, grants)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		m.ID, m.MeshID, m.Pubkey, m.DisplayName, m.Role, m.RoleTag, jsonText(m.DefaultGroups), m.MessageMode, ms(m.CreatedAt), msPtr(m.RevokedAt),
		grantsText(m.Grants))
	if isUniqueViolation(err) {
		return errExists
	}
	return err
}

const meshColumns = `id, slug, name, owner_pubkey, root_key, created_at`

func scanMesh(row rowScanner) (storedMesh, error) {
	var m storedMesh
	var created int64
	err := row.Scan(&m.ID, &m.Slug, &m.Name, &m.OwnerPubkey, &m.RootKey, &created)
	m.CreatedAt = fromMs(created)
	return m, noRows(err)
}

func (s *sqliteBrokerStore) MeshByID(ctx context.Context, id string) (storedMesh, error) {
	var m storedMesh
	err := s.rs.scanOne(ctx, nil, `SELECT `+meshColumns+` FROM meshes WHERE id = ?`, func(row rowScanner) (err error) {
		m, err = scanMesh(row)
		return err
	}, id)
	return m, err
}

func (s *sqliteBrokerStore) MeshBySlug(ctx context.Context, slug string) (storedMesh, error) {
	return scanMesh(s.r.QueryRowContext(ctx, `SELECT `+meshColumns+` FROM meshes WHERE slug = ?`, slug))
}

func (s *sqliteBrokerStore) CountMeshes(ctx context.Context) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM meshes`).Scan(&n)
	return n, err
}

const memberColumns = `id, mesh_id, pubkey, display_name, role, role_tag, default_groups, message_mode, created_at, revoked_at, grants`

func scanMember(row rowScanner) (storedMember, error) {
	var m storedMember
	var groups, grants string
	var created int64
	var revoked sql.NullInt64
	if err := row.Scan(&m.ID, &m.MeshID, &m.Pubkey, &m.DisplayName, &m.Role, &m.RoleTag, &groups, &m.MessageMode, &created, &revoked, &grants); err != nil {
		return m, noRows(err)
	}
	_ = json.Unmarshal([]byte(groups), &m.DefaultGroups)
	if grants != "{}" {
		_ = json.Unmarshal([]byte(grants), &m.Grants)
	}
	m.CreatedAt = fromMs(created)
	m.RevokedAt = fromMsPtr(revoked)
	return m, nil
}

func (s *sqliteBrokerStore) MemberByPubkey(ctx context.Context, meshID, pubkey string) (storedMember, error) {
	var m storedMember
	err := s.rs.scanOne(ctx, nil, `SELECT `+memberColumns+` FROM members WHERE mesh_id = ? AND pubkey = ?`, func(row rowScanner) (err error) {
		m, err = scanMember(row)
		return err
	}, meshID, pubkey)
	return m, err
}

func (s *sqliteBrokerStore) Members(ctx context.Context, meshID string) ([]storedMember, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+memberColumns+` FROM members WHERE mesh_id = ? ORDER BY created_at, id`, meshID)
	return collect(rows, err, scanMember)
}

func (s *sqliteBrokerStore) SetMemberRevoked(ctx context.Context, meshID, memberID string, revokedAt *time.Time, audit ...auditEvent) error {
	return s.updateMember(ctx, `UPDATE members SET revoked_at = ? WHERE mesh_id = ? AND id = ?`, []any{msPtr(revokedAt), meshID, memberID}, audit)
}

// updateMember runs one UPDATE of a member row (errNotFound when there is
// none) with its audit events, in one transaction.
func (s *sqliteBrokerStore) updateMember(ctx context.Context, query string, args []any, audit []auditEvent) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	n, err := affected(tx.ExecContext(ctx, query, args...))
	if err != nil {
		return err
	}
	if n == 0 {
		return errNotFound
	}
	if err := appendAuditIn(ctx, tx, audit); err != nil {
		return err
	}
	return tx.Commit()
}

// grantsText is a grants column: {} for none.
func grantsText(g grantMap) string {
	if len(g) == 0 {
		return "{}"
	}
	return jsonText(g)
}

func (s *sqliteBrokerStore) SetGrants(ctx context.Context, meshID, memberID string, grants grantMap, audit ...auditEvent) error {
	return s.updateMember(ctx, `UPDATE members SET grants = ? WHERE mesh_id = ? AND id = ?`, []any{grantsText(grants), meshID, memberID}, audit)
}

func (s *sqliteBrokerStore) SetMemberRole(ctx context.Context, meshID, memberID, role string, audit ...auditEvent) error {
	return s.updateMember(ctx, `UPDATE members SET role = ? WHERE mesh_id = ? AND id = ?`, []any{role, meshID, memberID}, audit)
}

// Invites.

func (s *sqliteBrokerStore) CreateInvite(ctx context.Context, inv storedInvite, audit ...auditEvent) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, `INSERT INTO invites (id, version, token, signature, mesh_id, role, max_uses, used_count, expires_at, revoked_at, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)`,
		inv.ID, max(inv.Version, 1), inv.Token, inv.Signature, inv.MeshID, inv.Role, inv.MaxUses, ms(inv.ExpiresAt), msPtr(inv.RevokedAt), ms(inv.CreatedAt))
	if isUniqueViolation(err) {
		return errExists
	}
	if err != nil {
		return err
	}
	if err := appendAuditIn(ctx, tx, audit); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *sqliteBrokerStore) RedeemInvite(ctx context.Context, req redeemRequest) (redeemResult, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return redeemResult{}, err
	}
	defer tx.Rollback()
	inv, err := scanInvite(tx.QueryRowContext(ctx, `SELECT `+inviteColumns+` FROM invites WHERE token = ?`, req.Token))
	if err := checkRedeemable(inv, err, req); err != nil {
		return redeemResult{}, err
	}
	existing, err := scanMember(tx.QueryRowContext(ctx, `SELECT `+memberColumns+` FROM members WHERE mesh_id = ? AND pubkey = ?`, req.MeshID, req.Pubkey))
	if err == nil {
		return rejoin(existing)
	}
	if !errors.Is(err, errNotFound) {
		return redeemResult{}, err
	}
	n, err := affected(tx.ExecContext(ctx, `UPDATE invites SET used_count = used_count + 1 WHERE token = ? AND used_count < max_uses`, req.Token))
	if err != nil {
		return redeemResult{}, err
	}
	if n == 0 {
		return redeemResult{}, errInviteExhausted
	}
	m := storedMember{ID: req.NewMemberID, MeshID: req.MeshID, Pubkey: req.Pubkey, DisplayName: req.DisplayName,
		Role: inv.Role, CreatedAt: req.Now}
	if err := insertMember(ctx, tx, m); err != nil {
		return redeemResult{}, &joinError{"member_insert_failed", err.Error()}
	}
	if err := appendAuditIn(ctx, tx, joinAudit(inv, m, inv.UsedCount+1)); err != nil {
		return redeemResult{}, err
	}
	if err := tx.Commit(); err != nil {
		return redeemResult{}, err
	}
	return redeemResult{MemberID: m.ID}, nil
}

const inviteColumns = `coalesce(id, ''), version, token, signature, mesh_id, role, max_uses, used_count, expires_at, revoked_at, created_at`

func scanInvite(row rowScanner) (storedInvite, error) {
	var inv storedInvite
	var expires, created int64
	var revoked sql.NullInt64
	err := row.Scan(&inv.ID, &inv.Version, &inv.Token, &inv.Signature, &inv.MeshID, &inv.Role, &inv.MaxUses, &inv.UsedCount,
		&expires, &revoked, &created)
	inv.ExpiresAt, inv.RevokedAt, inv.CreatedAt = fromMs(expires), fromMsPtr(revoked), fromMs(created)
	return inv, noRows(err)
}

func (s *sqliteBrokerStore) InviteByToken(ctx context.Context, token string) (storedInvite, error) {
	return scanInvite(s.r.QueryRowContext(ctx, `SELECT `+inviteColumns+` FROM invites WHERE token = ?`, token))
}

func (s *sqliteBrokerStore) ListInvites(ctx context.Context, meshID string) ([]storedInvite, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+inviteColumns+` FROM invites WHERE mesh_id = ? ORDER BY created_at DESC, id`, meshID)
	return collect(rows, err, scanInvite)
}

func (s *sqliteBrokerStore) RevokeInvite(ctx context.Context, meshID, ref, actor string, at time.Time) (storedInvite, bool, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return storedInvite{}, false, err
	}
	defer tx.Rollback()
	inv, err := scanInvite(tx.QueryRowContext(ctx, `SELECT `+inviteColumns+` FROM invites WHERE mesh_id = ? AND (id = ? OR token = ?)`, meshID, ref, ref))
	if err != nil {
		return inv, false, err
	}
	if inv.RevokedAt != nil {
		return inv, false, nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE invites SET revoked_at = ? WHERE token = ?`, ms(at), inv.Token); err != nil {
		return inv, false, err
	}
	inv.RevokedAt = &at
	if err := appendAuditIn(ctx, tx, []auditEvent{revokeAudit(inv, actor, at)}); err != nil {
		return inv, false, err
	}
	return inv, true, tx.Commit()
}

// The audit log.

// appendAuditIn appends events to their meshes' chains in tx. The write
// connection is the only one, so no other append runs between the read of
// a chain's last entry and the insert of the next.
func appendAuditIn(ctx context.Context, tx *sql.Tx, events []auditEvent) error {
	for _, e := range events {
		var prev *AuditEntry
		var last AuditEntry
		err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_log WHERE mesh_id = ? ORDER BY seq DESC LIMIT 1`, e.MeshID).Scan(&last.ID, &last.Hash)
		switch {
		case err == nil:
			prev = &last
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		entry, err := chainEntry(prev, e)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit_log (mesh_id, seq, event_type, actor, payload, created_at, prev_hash, hash)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, entry.MeshID, entry.ID, entry.EventType, entry.Actor, string(entry.Payload),
			ms(e.CreatedAt), entry.PrevHash, entry.Hash); err != nil {
			return err
		}
	}
	return nil
}

func (s *sqliteBrokerStore) AppendAudit(ctx context.Context, events ...auditEvent) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := appendAuditIn(ctx, tx, events); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *sqliteBrokerStore) AuditLog(ctx context.Context, meshID string, afterID int64, limit int) ([]AuditEntry, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT mesh_id, seq, event_type, actor, payload, created_at, prev_hash, hash
		FROM audit_log WHERE mesh_id = ? AND seq > ? ORDER BY seq LIMIT ?`, meshID, afterID, limit)
	return collect(rows, err, func(row rowScanner) (AuditEntry, error) {
		var e AuditEntry
		var actor sql.NullString
		var payload string
		var at int64
		err := row.Scan(&e.MeshID, &e.ID, &e.EventType, &actor, &payload, &at, &e.PrevHash, &e.Hash)
		if actor.Valid {
			e.Actor = &actor.String
		}
		e.Payload, e.CreatedAt = json.RawMessage(payload), isoTime(fromMs(at))
		return e, err
	})
}

// Session keys.

func (s *sqliteBrokerStore) RememberSessionKey(ctx context.Context, meshID, sessionPubkey, memberID string, now time.Time) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO session_keys (mesh_id, session_pubkey, member_id, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (mesh_id, session_pubkey) DO UPDATE SET last_seen = excluded.last_seen, member_id = excluded.member_id`,
		meshID, sessionPubkey, memberID, ms(now), ms(now))
	return err
}

func (s *sqliteBrokerStore) KeyOwner(ctx context.Context, meshID, key string) (storedMember, error) {
	return scanMember(s.r.QueryRowContext(ctx, `
		SELECT `+memberColumns+` FROM members WHERE mesh_id = ? AND pubkey = ?
		UNION ALL
		SELECT `+prefixed("m.", memberColumns)+` FROM session_keys k JOIN members m ON m.id = k.member_id WHERE k.mesh_id = ? AND k.session_pubkey = ?
		LIMIT 1`, meshID, key, meshID, key))
}

// prefixed qualifies each of a comma-separated column list with prefix.
func prefixed(prefix, columns string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = prefix + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

// Presences.

const presenceColumns = `mesh_id, key, member_id, role, groups, visible, present, seen_at`

func scanPresence(row rowScanner) (storedPresence, error) {
	var p storedPresence
	var groups string
	var seen int64
	err := row.Scan(&p.MeshID, &p.Key, &p.MemberID, &p.Role, &groups, &p.Visible, &p.Present, &seen)
	_ = json.Unmarshal([]byte(groups), &p.Groups)
	p.SeenAt = fromMs(seen)
	return p, err
}

func (s *sqliteBrokerStore) SavePresences(ctx context.Context, ps []storedPresence) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, p := range ps {
		if _, err := tx.ExecContext(ctx, `INSERT INTO presences (`+presenceColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (mesh_id, key) DO UPDATE SET member_id = excluded.member_id, role = excluded.role, groups = excluded.groups,
				visible = excluded.visible, present = excluded.present, seen_at = excluded.seen_at`,
			p.MeshID, p.Key, p.MemberID, p.Role, jsonText(nonNil(p.Groups)), p.Visible, p.Present, ms(p.SeenAt)); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (s *sqliteBrokerStore) EndPresences(ctx context.Context, startedAt, now time.Time) (int, error) {
	n, err := affected(s.w.ExecContext(ctx, `UPDATE presences SET present = 0, seen_at = ? WHERE present = 1 AND seen_at < ?`,
		ms(now), ms(startedAt)))
	return int(n), err
}

// Shared state.

func (s *sqliteBrokerStore) SetState(ctx context.Context, meshID string, e StateEntry) error {
	at, err := time.Parse(time.RFC3339Nano, e.UpdatedAt)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO state (mesh_id, key, value, updated_by, updated_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (mesh_id, key) DO UPDATE SET value = excluded.value, updated_by = excluded.updated_by, updated_at = excluded.updated_at`,
		meshID, e.Key, string(e.Value), e.UpdatedBy, ms(at))
	return err
}

func scanState(row rowScanner) (StateEntry, error) {
	var e StateEntry
	var value string
	var at int64
	if err := row.Scan(&e.Key, &value, &e.UpdatedBy, &at); err != nil {
		return e, noRows(err)
	}
	e.Value = json.RawMessage(value)
	e.UpdatedAt = isoTime(fromMs(at))
	return e, nil
}

func (s *sqliteBrokerStore) GetState(ctx context.Context, meshID, key string) (StateEntry, error) {
	return scanState(s.r.QueryRowContext(ctx, `SELECT key, value, updated_by, updated_at FROM state WHERE mesh_id = ? AND key = ?`, meshID, key))
}

func (s *sqliteBrokerStore) ListState(ctx context.Context, meshID string) ([]StateEntry, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT key, value, updated_by, updated_at FROM state WHERE mesh_id = ? ORDER BY key`, meshID)
	return collect(rows, err, scanState)
}

// Memory.

func (s *sqliteBrokerStore) Remember(ctx context.Context, meshID string, m Memory) error {
	at, err := time.Parse(time.RFC3339Nano, m.RememberedAt)
	if err != nil {
		return err
	}
	m.Tags = nonNil(m.Tags)
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO memories (id, mesh_id, content, tags, remembered_by, remembered_at) VALUES (?, ?, ?, ?, ?, ?)`,
		m.ID, meshID, m.Content, jsonText(m.Tags), m.RememberedBy, ms(at)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO memories_fts (id, mesh_id, content, tags) VALUES (?, ?, ?, ?)`,
		m.ID, meshID, m.Content, strings.Join(m.Tags, " ")); err != nil {
		return err
	}
	return tx.Commit()
}

// ftsQuery turns free text into an FTS5 query that matches any of its words
// (each quoted, so user input is never FTS syntax), ranked by bm25.
func ftsQuery(q string) string { return strings.Join(ftsTerms(q, ""), " OR ") }

func (s *sqliteBrokerStore) Recall(ctx context.Context, meshID, query string, limit int) ([]Memory, error) {
	q := ftsQuery(query)
	if q == "" {
		return []Memory{}, nil
	}
	rows, err := s.r.QueryContext(ctx, `SELECT m.id, m.content, m.tags, m.remembered_by, m.remembered_at
		FROM memories_fts f JOIN memories m ON m.id = f.id
		WHERE memories_fts MATCH ? AND f.mesh_id = ? AND m.forgotten_at IS NULL
		ORDER BY bm25(memories_fts), m.remembered_at DESC LIMIT ?`, q, meshID, limit)
	return collect(rows, err, scanMemory)
}

func scanMemory(row rowScanner) (Memory, error) {
	var m Memory
	var tags string
	var at int64
	if err := row.Scan(&m.ID, &m.Content, &tags, &m.RememberedBy, &at); err != nil {
		return m, err
	}
	m.Tags = jsonTags(tags)
	m.RememberedAt = isoTime(fromMs(at))
	return m, nil
}

// jsonTags decodes a tags column; never nil, so that it encodes as [].
func jsonTags(s string) []string {
	var tags []string
	_ = json.Unmarshal([]byte(s), &tags)
	if tags == nil {
		return []string{}
	}
	return tags
}

func (s *sqliteBrokerStore) Forget(ctx context.Context, meshID, id string, now time.Time) (bool, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	n, err := affected(tx.ExecContext(ctx, `UPDATE memories SET forgotten_at = ? WHERE mesh_id = ? AND id = ? AND forgotten_at IS NULL`, ms(now), meshID, id))
	if err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM memories_fts WHERE id = ? AND mesh_id = ?`, id, meshID); err != nil {
		return false, err
	}
	return n > 0, tx.Commit()
}

// Skills.

func (s *sqliteBrokerStore) PutSkill(ctx context.Context, meshID string, sk Skill) error {
	at, err := time.Parse(time.RFC3339Nano, sk.CreatedAt)
	if err != nil {
		return err
	}
	sk.Tags = nonNil(sk.Tags)
	var manifest any
	if len(sk.Manifest) > 0 && string(sk.Manifest) != "null" {
		manifest = string(sk.Manifest)
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO skills (mesh_id, name, description, instructions, tags, author, manifest, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (mesh_id, name) DO UPDATE SET description = excluded.description, instructions = excluded.instructions,
			tags = excluded.tags, author = excluded.author, manifest = excluded.manifest, created_at = excluded.created_at`,
		meshID, sk.Name, sk.Description, sk.Instructions, jsonText(sk.Tags), sk.Author, manifest, ms(at))
	return err
}

func scanSkill(row rowScanner) (Skill, error) {
	var sk Skill
	var tags string
	var manifest sql.NullString
	var at int64
	if err := row.Scan(&sk.Name, &sk.Description, &sk.Instructions, &tags, &sk.Author, &manifest, &at); err != nil {
		return sk, noRows(err)
	}
	sk.Tags = jsonTags(tags)
	if manifest.Valid {
		sk.Manifest = json.RawMessage(manifest.String)
	}
	sk.CreatedAt = isoTime(fromMs(at))
	return sk, nil
}

func (s *sqliteBrokerStore) GetSkill(ctx context.Context, meshID, name string) (Skill, error) {
	return scanSkill(s.r.QueryRowContext(ctx, `SELECT name, description, instructions, tags, author, manifest, created_at
		FROM skills WHERE mesh_id = ? AND name = ?`, meshID, name))
}

func (s *sqliteBrokerStore) ListSkills(ctx context.Context, meshID, query string) ([]Skill, error) {
	like := "%" + strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(strings.ToLower(query)) + "%"
	rows, err := s.r.QueryContext(ctx, `SELECT name, description, instructions, tags, author, manifest, created_at
		FROM skills WHERE mesh_id = ? AND (? = '' OR lower(name) LIKE ? ESCAPE '\' OR lower(description) LIKE ? ESCAPE '\' OR lower(tags) LIKE ? ESCAPE '\')
		ORDER BY name`, meshID, query, like, like, like)
	return collect(rows, err, scanSkill)
}

func (s *sqliteBrokerStore) RemoveSkill(ctx context.Context, meshID, name string) (bool, error) {
	n, err := affected(s.w.ExecContext(ctx, `DELETE FROM skills WHERE mesh_id = ? AND name = ?`, meshID, name))
	return n > 0, err
}

// Peer state.

func (s *sqliteBrokerStore) SavePeerState(ctx context.Context, ps storedPeerState) error {
	ps.Groups = nonNil(ps.Groups)
	var stats any
	if len(ps.Stats) > 0 {
		stats = string(ps.Stats)
	}
	visible := 0
	if ps.Visible {
		visible = 1
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO peer_state (mesh_id, member_id, groups, visible, profile, summary, stats, last_seen_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (mesh_id, member_id) DO UPDATE SET groups = excluded.groups, visible = excluded.visible, profile = excluded.profile,
			summary = excluded.summary, stats = excluded.stats, last_seen_at = excluded.last_seen_at`,
		ps.MeshID, ps.MemberID, jsonText(ps.Groups), visible, jsonText(ps.Profile), ps.Summary, stats, ms(ps.LastSeenAt))
	return err
}

func (s *sqliteBrokerStore) LoadPeerState(ctx context.Context, meshID, memberID string) (storedPeerState, error) {
	ps := storedPeerState{MeshID: meshID, MemberID: memberID}
	var groups, profile string
	var stats sql.NullString
	var visible int
	var seen int64
	err := s.r.QueryRowContext(ctx, `SELECT groups, visible, profile, summary, stats, last_seen_at FROM peer_state WHERE mesh_id = ? AND member_id = ?`,
		meshID, memberID).Scan(&groups, &visible, &profile, &ps.Summary, &stats, &seen)
	if err != nil {
		return ps, noRows(err)
	}
	_ = json.Unmarshal([]byte(groups), &ps.Groups)
	_ = json.Unmarshal([]byte(profile), &ps.Profile)
	if stats.Valid {
		ps.Stats = json.RawMessage(stats.String)
	}
	ps.Visible = visible != 0
	ps.LastSeenAt = fromMs(seen)
	return ps, nil
}
