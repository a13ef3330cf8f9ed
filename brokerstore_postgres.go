// The broker store on PostgreSQL: what several `broker serve` replicas share.
// The semantics are the SQLite store's — one durable append per send plus its
// deliveries in one transaction, dedupe by a unique constraint, multicasts
// resolved inside that transaction, an ack that deletes its delivery and a
// message that goes with its last one — with PostgreSQL's own full-text
// search for memory. Times are integer milliseconds since the epoch and JSON-shaped
// columns hold JSON text, as in SQLite, so both stores read back the same
// bytes. A store lives in the schema its URL selects (search_path), so one
// database can hold several brokers' stores.
//
// The driver is pgx with its own pool rather than database/sql: LISTEN and
// NOTIFY need a dedicated connection that database/sql cannot hand out, and
// pgx pipelines a batch's statements in one round trip.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// postgresMigrations: postgresMigrations[i] moves the schema from version i
// to i+1, each in its own transaction. Append only.
var postgresMigrations = []string{
	// 1: the whole schema of one broker.
	`
CREATE TABLE meshes (
	id           TEXT PRIMARY KEY,
	slug         TEXT NOT NULL UNIQUE,
	name         TEXT NOT NULL,
	owner_pubkey TEXT NOT NULL,
	root_key     TEXT NOT NULL,
	created_at   BIGINT NOT NULL
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
	created_at     BIGINT NOT NULL,
	revoked_at     BIGINT,
	grants         TEXT NOT NULL DEFAULT '{}',
	UNIQUE (mesh_id, pubkey)
);
CREATE TABLE invites (
	token      TEXT PRIMARY KEY,
	id         TEXT UNIQUE,
	mesh_id    TEXT NOT NULL REFERENCES meshes(id),
	role       TEXT NOT NULL,
	max_uses   INTEGER NOT NULL,
	used_count INTEGER NOT NULL DEFAULT 0,
	expires_at BIGINT NOT NULL,
	revoked_at BIGINT,
	created_at BIGINT NOT NULL
);
CREATE TABLE session_keys (
	mesh_id        TEXT NOT NULL,
	session_pubkey TEXT NOT NULL,
	member_id      TEXT NOT NULL REFERENCES members(id),
	first_seen     BIGINT NOT NULL,
	last_seen      BIGINT NOT NULL,
	PRIMARY KEY (mesh_id, session_pubkey)
);
CREATE TABLE messages (
	seq                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
	created_at           BIGINT NOT NULL,
	expires_at           BIGINT NOT NULL,
	client_message_id    TEXT,
	request_fingerprint  TEXT NOT NULL DEFAULT '',
	reply_to_id          TEXT NOT NULL DEFAULT '',
	subtype              TEXT NOT NULL DEFAULT '',
	topic                TEXT NOT NULL DEFAULT ''
);
-- Broker-side dedupe: one message per (mesh, sender member, client_message_id),
-- whichever replica took the send.
CREATE UNIQUE INDEX messages_dedupe ON messages (mesh_id, sender_member_id, client_message_id)
	WHERE client_message_id IS NOT NULL;
CREATE INDEX messages_expiry ON messages (expires_at);
CREATE TABLE deliveries (
	message_id    TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
	recipient_key TEXT NOT NULL,
	mesh_id       TEXT NOT NULL,
	expires_at    BIGINT NOT NULL,
	delivered_at  BIGINT,
	PRIMARY KEY (message_id, recipient_key)
);
CREATE INDEX deliveries_pending ON deliveries (mesh_id, recipient_key) WHERE delivered_at IS NULL;
CREATE TABLE state (
	mesh_id    TEXT NOT NULL,
	key        TEXT NOT NULL,
	value      TEXT NOT NULL,
	updated_by TEXT NOT NULL,
	updated_at BIGINT NOT NULL,
	PRIMARY KEY (mesh_id, key)
);
CREATE TABLE memories (
	id            TEXT PRIMARY KEY,
	mesh_id       TEXT NOT NULL,
	content       TEXT NOT NULL,
	tags          TEXT NOT NULL DEFAULT '[]',
	remembered_by TEXT NOT NULL,
	remembered_at BIGINT NOT NULL,
	forgotten_at  BIGINT,
	search        TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', content || ' ' || tags)) STORED
);
-- Full-text index over live memories only.
CREATE INDEX memories_search ON memories USING GIN (search) WHERE forgotten_at IS NULL;
CREATE TABLE skills (
	mesh_id      TEXT NOT NULL,
	name         TEXT NOT NULL,
	description  TEXT NOT NULL,
	instructions TEXT NOT NULL,
	tags         TEXT NOT NULL DEFAULT '[]',
	author       TEXT NOT NULL,
	manifest     TEXT,
	created_at   BIGINT NOT NULL,
	PRIMARY KEY (mesh_id, name)
);
CREATE TABLE peer_state (
	mesh_id      TEXT NOT NULL,
	member_id    TEXT NOT NULL,
	groups       TEXT NOT NULL DEFAULT '[]',
	visible      BOOLEAN NOT NULL DEFAULT TRUE,
	profile      TEXT NOT NULL DEFAULT '{}',
	summary      TEXT NOT NULL DEFAULT '',
	stats        TEXT,
	last_seen_at BIGINT NOT NULL,
	PRIMARY KEY (mesh_id, member_id)
);
-- The audit log: one hash chain per mesh.
CREATE TABLE audit_log (
	mesh_id    TEXT NOT NULL,
	seq        BIGINT NOT NULL,
	event_type TEXT NOT NULL,
	actor      TEXT,
	payload    TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	prev_hash  TEXT NOT NULL,
	hash       TEXT NOT NULL,
	PRIMARY KEY (mesh_id, seq)
);
-- The last presence of every member link and session key; replica_id is the
-- replica that wrote it, so that one replica's absence never ends a key
-- another replica holds.
CREATE TABLE presences (
	mesh_id    TEXT NOT NULL,
	key        TEXT NOT NULL,
	member_id  TEXT NOT NULL,
	role       TEXT NOT NULL,
	groups     TEXT NOT NULL DEFAULT '[]',
	visible    BOOLEAN NOT NULL DEFAULT TRUE,
	present    BOOLEAN NOT NULL,
	seen_at    BIGINT NOT NULL,
	replica_id TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (mesh_id, key)
);
`,
	// 2: v2 invites: a short code in token, the owner's capability
	// signature, and which version a row is.
	`
ALTER TABLE invites ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE invites ADD COLUMN signature TEXT NOT NULL DEFAULT '';
CREATE INDEX invites_mesh ON invites (mesh_id, created_at);
`,
	// 3: replicas and what each holds.
	`
CREATE TABLE replicas (
	id           TEXT PRIMARY KEY,
	started_at   BIGINT NOT NULL,
	heartbeat_at BIGINT NOT NULL,
	stopped_at   BIGINT, -- a clean stop
	reaped_at    BIGINT  -- found dead or stopped by another replica
);
CREATE TABLE live_presences (
	replica_id     TEXT NOT NULL,
	presence_id    TEXT NOT NULL,
	mesh_id        TEXT NOT NULL,
	key            TEXT NOT NULL,
	member_id      TEXT NOT NULL,
	member_pubkey  TEXT NOT NULL,
	session_pubkey TEXT NOT NULL,
	display_name   TEXT NOT NULL,
	role           TEXT NOT NULL,
	visible        BOOLEAN NOT NULL,
	one_shot       BOOLEAN NOT NULL,
	connected      BOOLEAN NOT NULL,
	connected_at   BIGINT NOT NULL,
	last_active_at BIGINT NOT NULL,
	peer_row       TEXT NOT NULL,
	PRIMARY KEY (replica_id, presence_id)
);
CREATE INDEX live_presences_mesh ON live_presences (mesh_id);
`,
	// 4: the store holds what is pending. An ack deletes its delivery and a
	// message goes with its last delivery; its dedupe key moves to a table
	// of its own that keeps it until the message's expiry.
	`
DELETE FROM deliveries WHERE delivered_at IS NOT NULL;
CREATE TABLE dedupe_keys (
	mesh_id           TEXT NOT NULL,
	sender_member_id  TEXT NOT NULL,
	client_message_id TEXT NOT NULL,
	message_id        TEXT NOT NULL,
	expires_at        BIGINT NOT NULL,
	PRIMARY KEY (mesh_id, sender_member_id, client_message_id)
);
CREATE INDEX dedupe_keys_expiry ON dedupe_keys (expires_at);
INSERT INTO dedupe_keys (mesh_id, sender_member_id, client_message_id, message_id, expires_at)
	SELECT mesh_id, sender_member_id, client_message_id, id, expires_at FROM messages WHERE client_message_id IS NOT NULL;
DELETE FROM messages m WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id);
DROP INDEX messages_dedupe;
DROP INDEX deliveries_pending;
ALTER TABLE deliveries DROP COLUMN delivered_at;
CREATE INDEX deliveries_recipient ON deliveries (mesh_id, recipient_key);
`,
}

// postgresBrokerStore implements brokerStore.
type postgresBrokerStore struct {
	pool *pgxpool.Pool
	// schema is where the store's tables live; it also names the store's
	// notification channel, so that stores sharing a database stay apart.
	schema string
	// replicaID is the replica this store serves, written with each
	// presence it saves.
	replicaID string
}

// postgresPoolSize is the most connections one replica holds: its group
// committer, readers, presence writes and the listener.
const postgresPoolSize = 10

// isPostgresURL reports whether a --store value names PostgreSQL.
func isPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// openPostgresBrokerStore connects to the database at url, brings its
// schema up to date and returns the store for replica replicaID.
func openPostgresBrokerStore(ctx context.Context, url, replicaID string) (*postgresBrokerStore, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres url: %w", err)
	}
	if cfg.MaxConns > postgresPoolSize {
		cfg.MaxConns = postgresPoolSize
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s := &postgresBrokerStore{pool: pool, replicaID: replicaID}
	if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&s.schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := migratePostgres(ctx, pool, postgresMigrations); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// migratePostgres applies the migrations the schema lacks, each in one
// transaction under an advisory lock, so that replicas starting together
// migrate once.
func migratePostgres(ctx context.Context, pool *pgxpool.Pool, migrations []string) error {
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS claudemesh_schema (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("postgres schema table: %w", err)
	}
	for {
		done, err := migrateOnce(ctx, pool, migrations)
		if err != nil || done {
			return err
		}
	}
}

// migrateOnce applies the next missing migration; done when none is missing.
func migrateOnce(ctx context.Context, pool *pgxpool.Pool, migrations []string) (done bool, err error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.claudemesh_schema'))`); err != nil {
		return false, err
	}
	version := 0
	err = tx.QueryRow(ctx, `SELECT version FROM claudemesh_schema`).Scan(&version)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if _, err := tx.Exec(ctx, `INSERT INTO claudemesh_schema (version) VALUES (0)`); err != nil {
			return false, err
		}
	case err != nil:
		return false, err
	}
	if version > len(migrations) {
		return false, fmt.Errorf("postgres schema is at version %d, newer than this claudemesh (%d): upgrade claudemesh", version, len(migrations))
	}
	if version == len(migrations) {
		return true, tx.Commit(ctx)
	}
	if _, err := tx.Exec(ctx, migrations[version]); err != nil {
		return false, fmt.Errorf("postgres migration %d: %w", version+1, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE claudemesh_schema SET version = $1`, version+1); err != nil {
		return false, err
	}
	return false, tx.Commit(ctx)
}

func (s *postgresBrokerStore) Close() error {
	s.pool.Close()
	return nil
}

func (s *postgresBrokerStore) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// isPgUniqueViolation recognises a unique or primary key violation.
func isPgUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// pgRows adapts pgx rows to collect's scanning; an error is the query's.
func pgCollect[T any](rows pgx.Rows, err error, scan func(rowScanner) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// pgAffected is the row count of an Exec.
func pgAffected(tag pgconn.CommandTag, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// pgQuerier is a pool or a transaction.
type pgQuerier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Meshes and members.

func (s *postgresBrokerStore) CreateMesh(ctx context.Context, mesh storedMesh, owner storedMember, audit ...auditEvent) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO meshes (id, slug, name, owner_pubkey, root_key, created_at) VALUES ($1, $2, $3, $4, $5, $6)`,
			mesh.ID, mesh.Slug, mesh.Name, mesh.OwnerPubkey, mesh.RootKey, ms(mesh.CreatedAt))
		if isPgUniqueViolation(err) {
			return errExists
		}
		if err != nil {
			return err
		}
		if err := pgInsertMember(ctx, tx, owner); err != nil {
			return err
		}
		return pgAppendAuditIn(ctx, tx, audit)
	})
}

func pgInsertMember(ctx context.Context, q pgQuerier, m storedMember) error {
	m.DefaultGroups = nonNil(m.DefaultGroups)
	if m.MessageMode == "" {
		m.MessageMode = "push"
	}
	_, err := q.Exec(ctx, `INSERT INTO members (id, mesh_id, pubkey, display_name, role, role_tag, default_groups, message_mode, created_at, revoked_at, grants)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		m.ID, m.MeshID, m.Pubkey, m.DisplayName, m.Role, m.RoleTag, jsonText(m.DefaultGroups), m.MessageMode, ms(m.CreatedAt), msPtr(m.RevokedAt),
		grantsText(m.Grants))
	if isPgUniqueViolation(err) {
		return errExists
	}
	return err
}

func (s *postgresBrokerStore) MeshByID(ctx context.Context, id string) (storedMesh, error) {
	return scanMesh(s.pool.QueryRow(ctx, `SELECT `+meshColumns+` FROM meshes WHERE id = $1`, id))
}

func (s *postgresBrokerStore) MeshBySlug(ctx context.Context, slug string) (storedMesh, error) {
	return scanMesh(s.pool.QueryRow(ctx, `SELECT `+meshColumns+` FROM meshes WHERE slug = $1`, slug))
}

func (s *postgresBrokerStore) CountMeshes(ctx context.Context) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM meshes`).Scan(&n)
	return n, err
}

func (s *postgresBrokerStore) MemberByPubkey(ctx context.Context, meshID, pubkey string) (storedMember, error) {
	return scanMember(s.pool.QueryRow(ctx, `SELECT `+memberColumns+` FROM members WHERE mesh_id = $1 AND pubkey = $2`, meshID, pubkey))
}

func (s *postgresBrokerStore) Members(ctx context.Context, meshID string) ([]storedMember, error) {
	return pgMembers(ctx, s.pool, meshID)
}

func pgMembers(ctx context.Context, q pgQuerier, meshID string) ([]storedMember, error) {
	rows, err := q.Query(ctx, `SELECT `+memberColumns+` FROM members WHERE mesh_id = $1 ORDER BY created_at, id`, meshID)
	return pgCollect(rows, err, scanMember)
}

func (s *postgresBrokerStore) SetMemberRevoked(ctx context.Context, meshID, memberID string, revokedAt *time.Time, audit ...auditEvent) error {
	return s.updateMember(ctx, `UPDATE members SET revoked_at = $1 WHERE mesh_id = $2 AND id = $3`, []any{msPtr(revokedAt), meshID, memberID}, audit)
}

func (s *postgresBrokerStore) SetGrants(ctx context.Context, meshID, memberID string, grants grantMap, audit ...auditEvent) error {
	return s.updateMember(ctx, `UPDATE members SET grants = $1 WHERE mesh_id = $2 AND id = $3`, []any{grantsText(grants), meshID, memberID}, audit)
}

func (s *postgresBrokerStore) SetMemberRole(ctx context.Context, meshID, memberID, role string, audit ...auditEvent) error {
	return s.updateMember(ctx, `UPDATE members SET role = $1 WHERE mesh_id = $2 AND id = $3`, []any{role, meshID, memberID}, audit)
}

// updateMember runs one UPDATE of a member row (errNotFound when there is
// none) with its audit events, in one transaction.
func (s *postgresBrokerStore) updateMember(ctx context.Context, query string, args []any, audit []auditEvent) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		n, err := pgAffected(tx.Exec(ctx, query, args...))
		if err != nil {
			return err
		}
		if n == 0 {
			return errNotFound
		}
		return pgAppendAuditIn(ctx, tx, audit)
	})
}

// Invites.

func (s *postgresBrokerStore) CreateInvite(ctx context.Context, inv storedInvite, audit ...auditEvent) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO invites (id, version, token, signature, mesh_id, role, max_uses, used_count, expires_at, revoked_at, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10)`,
			inv.ID, max(inv.Version, 1), inv.Token, inv.Signature, inv.MeshID, inv.Role, inv.MaxUses, ms(inv.ExpiresAt), msPtr(inv.RevokedAt), ms(inv.CreatedAt))
		if isPgUniqueViolation(err) {
			return errExists
		}
		if err != nil {
			return err
		}
		return pgAppendAuditIn(ctx, tx, audit)
	})
}

func (s *postgresBrokerStore) RedeemInvite(ctx context.Context, req redeemRequest) (out redeemResult, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		out, err = pgRedeemIn(ctx, tx, req)
		return err
	})
	return out, err
}

// pgRedeemIn is RedeemInvite inside tx. The invite's row is locked first, so
// that redemptions of one invite on several replicas queue.
func pgRedeemIn(ctx context.Context, tx pgx.Tx, req redeemRequest) (redeemResult, error) {
	inv, err := scanInvite(tx.QueryRow(ctx, `SELECT `+inviteColumns+` FROM invites WHERE token = $1 FOR UPDATE`, req.Token))
	if err := checkRedeemable(inv, err, req); err != nil {
		return redeemResult{}, err
	}
	existing, err := scanMember(tx.QueryRow(ctx, `SELECT `+memberColumns+` FROM members WHERE mesh_id = $1 AND pubkey = $2`, req.MeshID, req.Pubkey))
	if err == nil {
		return rejoin(existing)
	}
	if !errors.Is(err, errNotFound) {
		return redeemResult{}, err
	}
	n, err := pgAffected(tx.Exec(ctx, `UPDATE invites SET used_count = used_count + 1 WHERE token = $1 AND used_count < max_uses`, req.Token))
	if err != nil {
		return redeemResult{}, err
	}
	if n == 0 {
		return redeemResult{}, errInviteExhausted
	}
	m := storedMember{ID: req.NewMemberID, MeshID: req.MeshID, Pubkey: req.Pubkey, DisplayName: req.DisplayName,
		Role: inv.Role, CreatedAt: req.Now}
	if err := pgInsertMember(ctx, tx, m); err != nil {
		return redeemResult{}, &joinError{"member_insert_failed", err.Error()}
	}
	if err := pgAppendAuditIn(ctx, tx, joinAudit(inv, m, inv.UsedCount+1)); err != nil {
		return redeemResult{}, err
	}
	return redeemResult{MemberID: m.ID}, nil
}

func (s *postgresBrokerStore) InviteByToken(ctx context.Context, token string) (storedInvite, error) {
	return scanInvite(s.pool.QueryRow(ctx, `SELECT `+inviteColumns+` FROM invites WHERE token = $1`, token))
}

func (s *postgresBrokerStore) ListInvites(ctx context.Context, meshID string) ([]storedInvite, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+inviteColumns+` FROM invites WHERE mesh_id = $1 ORDER BY created_at DESC, id`, meshID)
	return pgCollect(rows, err, scanInvite)
}

func (s *postgresBrokerStore) RevokeInvite(ctx context.Context, meshID, ref, actor string, at time.Time) (inv storedInvite, changed bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		inv, err = scanInvite(tx.QueryRow(ctx, `SELECT `+inviteColumns+` FROM invites WHERE mesh_id = $1 AND (id = $2 OR token = $2) FOR UPDATE`, meshID, ref))
		if err != nil || inv.RevokedAt != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE invites SET revoked_at = $1 WHERE token = $2`, ms(at), inv.Token); err != nil {
			return err
		}
		inv.RevokedAt, changed = &at, true
		return pgAppendAuditIn(ctx, tx, []auditEvent{revokeAudit(inv, actor, at)})
	})
	if err != nil {
		changed = false
	}
	return inv, changed, err
}

// The audit log.

// pgAppendAuditIn appends events to their meshes' chains in tx. A
// transaction-scoped advisory lock per mesh keeps replicas from appending
// to one chain at once: the read of its last entry and the insert of the
// next are one step.
func pgAppendAuditIn(ctx context.Context, tx pgx.Tx, events []auditEvent) error {
	for _, e := range events {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.audit.' || $1))`, e.MeshID); err != nil {
			return err
		}
		var prev *AuditEntry
		var last AuditEntry
		err := tx.QueryRow(ctx, `SELECT seq, hash FROM audit_log WHERE mesh_id = $1 ORDER BY seq DESC LIMIT 1`, e.MeshID).Scan(&last.ID, &last.Hash)
		switch {
		case err == nil:
			prev = &last
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		entry, err := chainEntry(prev, e)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO audit_log (mesh_id, seq, event_type, actor, payload, created_at, prev_hash, hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, entry.MeshID, entry.ID, entry.EventType, entry.Actor, string(entry.Payload),
			ms(e.CreatedAt), entry.PrevHash, entry.Hash); err != nil {
			return err
		}
	}
	return nil
}

func (s *postgresBrokerStore) AppendAudit(ctx context.Context, events ...auditEvent) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return pgAppendAuditIn(ctx, tx, events) })
}

func (s *postgresBrokerStore) AuditLog(ctx context.Context, meshID string, afterID int64, limit int) ([]AuditEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT mesh_id, seq, event_type, actor, payload, created_at, prev_hash, hash
		FROM audit_log WHERE mesh_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, meshID, afterID, limit)
	return pgCollect(rows, err, func(row rowScanner) (AuditEntry, error) {
		var e AuditEntry
		var payload string
		var at int64
		err := row.Scan(&e.MeshID, &e.ID, &e.EventType, &e.Actor, &payload, &at, &e.PrevHash, &e.Hash)
		e.Payload, e.CreatedAt = json.RawMessage(payload), isoTime(fromMs(at))
		return e, err
	})
}

// Session keys.

func (s *postgresBrokerStore) RememberSessionKey(ctx context.Context, meshID, sessionPubkey, memberID string, now time.Time) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO session_keys (mesh_id, session_pubkey, member_id, first_seen, last_seen) VALUES ($1, $2, $3, $4, $4)
		ON CONFLICT (mesh_id, session_pubkey) DO UPDATE SET last_seen = excluded.last_seen, member_id = excluded.member_id`,
		meshID, sessionPubkey, memberID, ms(now))
	return err
}

func (s *postgresBrokerStore) KeyOwner(ctx context.Context, meshID, key string) (storedMember, error) {
	return scanMember(s.pool.QueryRow(ctx, `
		SELECT `+memberColumns+` FROM members WHERE mesh_id = $1 AND pubkey = $2
		UNION ALL
		SELECT `+prefixed("m.", memberColumns)+` FROM session_keys k JOIN members m ON m.id = k.member_id WHERE k.mesh_id = $1 AND k.session_pubkey = $2
		LIMIT 1`, meshID, key))
}

// Messages and deliveries.
//
// Policy:
//   - The tables hold what is pending: an ack deletes its delivery, and the
//     batch that deleted a message's last delivery deletes the message
//     (retireMessages). The expiry purge takes the rest.
//   - The dedupe key (mesh, sender member, client_message_id) is a row of
//     dedupe_keys, written with the message and kept until the message's
//     expiry, not only while the message is stored: a sender whose send_ack
//     was lost re-sends, possibly days later and to another replica, after
//     every recipient has acked. Answered as a duplicate with the original
//     id, it matches the receipts the recipients sent for that id; stored
//     anew, it would get a new id that no receipt names, since the
//     recipients' inboxes drop the second copy silently. A key is a narrow
//     row; the message body goes with its last delivery.
//   - The key is the only unique constraint a send inserts under, so a
//     re-send racing the original (or its last ack) on another replica
//     waits for that transaction and then dedupes: no window in which
//     neither the message nor its key is visible.
//   - A message for nobody stores its key and nothing else: there is
//     nothing to deliver, and its re-send still dedupes.

// pgAppendMessage stores a send's dedupe key, message and deliveries in one
// statement; it returns the message's id and store order (0 when it has
// no recipient), or no row when (mesh, sender member, client_message_id)
// exists.
const pgAppendMessage = `
WITH k AS (
	INSERT INTO dedupe_keys (mesh_id, sender_member_id, client_message_id, message_id, expires_at)
	SELECT $2::text, $3::text, $13::text, $1::text, $12::bigint WHERE $13::text IS NOT NULL
	ON CONFLICT DO NOTHING
	RETURNING message_id
), fresh AS (
	SELECT WHERE $13::text IS NULL OR EXISTS (SELECT FROM k)
), m AS (
	INSERT INTO messages (id, mesh_id, sender_member_id, sender_pubkey, sender_member_pubkey, sender_name,
		target_spec, priority, nonce, ciphertext, created_at, expires_at, client_message_id, request_fingerprint, reply_to_id, subtype, topic)
	SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::text, $9::text, $10::text, $11::bigint, $12::bigint,
		$13::text, $14::text, $15::text, $16::text, $17::text
	FROM fresh WHERE cardinality($18::text[]) > 0
	RETURNING id, seq, mesh_id, expires_at
), d AS (
	INSERT INTO deliveries (message_id, recipient_key, mesh_id, expires_at)
	SELECT m.id, k, m.mesh_id, m.expires_at FROM m, (SELECT DISTINCT unnest($18::text[]) AS k) keys
	ON CONFLICT DO NOTHING
)
SELECT $1::text, coalesce((SELECT seq FROM m), 0) FROM fresh`

// pgFindDuplicate is the message a dedupe key names, with its store order
// while it is still stored (0 once its deliveries are all acked).
const pgFindDuplicate = `SELECT k.message_id, coalesce(m.seq, 0) FROM dedupe_keys k LEFT JOIN messages m ON m.id = k.message_id
	WHERE k.mesh_id = $1 AND k.sender_member_id = $2 AND k.client_message_id = $3`

// A mark deletes one key's delivery and names its message, for
// retireMessages. By client id it looks among the key's own deliveries
// (the deliveries_recipient index), not among every message of the mesh.
const (
	pgMarkByID       = `DELETE FROM deliveries WHERE message_id = $1 AND recipient_key = $2 AND mesh_id = $3 RETURNING message_id`
	pgMarkByClientID = `DELETE FROM deliveries d USING messages m
		WHERE d.recipient_key = $1 AND d.mesh_id = $2 AND m.id = d.message_id AND m.client_message_id = $3
		RETURNING d.message_id`
)

// Retiring the messages whose deliveries a batch deleted: lock them in id
// order, then delete those left with no delivery.
//
// Why two statements and not a row trigger on deliveries: two replicas
// acking a message's last two deliveries at once would each still see the
// other's delivery (neither has committed) and both keep the message. The
// lock makes the second wait for the first to commit, and the delete, a
// statement of its own, reads after the wait and so sees the first one's
// ack. Locking the batch's messages together in id order keeps two
// batches that share messages from deadlocking, which per-ack locks taken
// in ack order would not. A message being inserted is never at risk: its
// deliveries are inserted by the same statement, so no other transaction
// sees it without them.
const (
	pgLockMessages   = `SELECT id FROM messages WHERE id = ANY($1) ORDER BY id FOR UPDATE`
	pgRetireMessages = `DELETE FROM messages m WHERE m.id = ANY($1) AND NOT EXISTS (SELECT FROM deliveries d WHERE d.message_id = m.id)`
)

// WriteBatch applies appends and marks in one transaction (group commit).
// The fast path pipelines every statement of the batch in one round trip;
// when any append fails, the transaction is rolled back and the batch is
// replayed with a savepoint per append, so that the failing one is undone
// and reported alone. A failed mark or commit fails the batch. The stored
// messages' ids are announced to the other replicas (pushEvents) by the
// same transaction.
func (s *postgresBrokerStore) WriteBatch(ctx context.Context, appends []appendOp, marks []deliveryMark) ([]appendResult, int, error) {
	results, marked, err := s.writeBatch(ctx, appends, marks, false)
	var failed *appendFailure
	if errors.As(err, &failed) {
		return s.writeBatch(ctx, appends, marks, true)
	}
	return results, marked, err
}

// appendFailure is one append's error on the pipelined path.
type appendFailure struct{ err error }

func (e *appendFailure) Error() string { return "append: " + e.err.Error() }

func (s *postgresBrokerStore) writeBatch(ctx context.Context, appends []appendOp, marks []deliveryMark, savepoints bool) ([]appendResult, int, error) {
	results := make([]appendResult, len(appends))
	marked := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		recipients, err := s.resolveIn(ctx, tx, appends)
		if err != nil {
			return err
		}
		if savepoints {
			for i, a := range appends {
				results[i] = s.appendSaved(ctx, tx, a, recipients[i])
			}
		} else {
			batch := &pgx.Batch{}
			for i, a := range appends {
				batch.Queue(pgAppendMessage, appendArgs(a.Msg, recipients[i])...)
			}
			br := tx.SendBatch(ctx, batch)
			for i := range appends {
				var id string
				var seq int64
				err := br.QueryRow().Scan(&id, &seq)
				switch {
				case errors.Is(err, pgx.ErrNoRows):
					results[i] = appendResult{Dup: true}
				case err != nil:
					br.Close()
					return &appendFailure{err}
				default:
					results[i] = appendResult{ID: id, Seq: seq, Recipients: recipients[i]}
				}
			}
			if err := br.Close(); err != nil {
				return err
			}
			for i, a := range appends {
				if results[i].Dup {
					if err := tx.QueryRow(ctx, pgFindDuplicate, a.Msg.MeshID, a.Msg.SenderMemberID, a.Msg.ClientMessageID).Scan(&results[i].ID, &results[i].Seq); err != nil {
						return &appendFailure{err}
					}
				}
			}
		}
		n, touched, err := pgDeleteDeliveries(ctx, tx, marks)
		if err != nil {
			return err
		}
		marked = n
		batch := &pgx.Batch{}
		queueRetire(batch, touched)
		// A notification is delivered when the transaction commits, never
		// for a batch that fails.
		for _, payload := range s.pushEvents(appends, results) {
			batch.Queue(`SELECT pg_notify($1, $2)`, s.channel(), string(payload))
		}
		if batch.Len() > 0 {
			if err := tx.SendBatch(ctx, batch).Close(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return results, marked, nil
}

// queueRetire queues the retiring of messages ids (pgLockMessages, then
// pgRetireMessages) on batch.
func queueRetire(batch *pgx.Batch, ids []string) {
	if len(ids) > 0 {
		batch.Queue(pgLockMessages, ids)
		batch.Queue(pgRetireMessages, ids)
	}
}

// pgDeleteDeliveries applies marks in tx, pipelined: it counts the
// deliveries deleted and returns their messages' ids, each once.
func pgDeleteDeliveries(ctx context.Context, tx pgx.Tx, marks []deliveryMark) (int, []string, error) {
	if len(marks) == 0 {
		return 0, nil, nil
	}
	batch := &pgx.Batch{}
	for _, m := range marks {
		if m.MessageID != "" {
			batch.Queue(pgMarkByID, m.MessageID, m.Key, m.MeshID)
		} else {
			batch.Queue(pgMarkByClientID, m.Key, m.MeshID, m.ClientMessageID)
		}
	}
	br := tx.SendBatch(ctx, batch)
	deleted := 0
	var ids []string
	seen := map[string]bool{}
	for range marks {
		rows, err := br.Query()
		gone, err := pgCollect(rows, err, func(r rowScanner) (string, error) {
			var id string
			return id, r.Scan(&id)
		})
		if err != nil {
			br.Close()
			return 0, nil, err
		}
		deleted += len(gone)
		for _, id := range gone {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	return deleted, ids, br.Close()
}

// appendSaved is one append under its own savepoint: on failure it is
// undone and its error reported, and the transaction goes on.
func (s *postgresBrokerStore) appendSaved(ctx context.Context, tx pgx.Tx, a appendOp, recipients []string) appendResult {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return appendResult{Err: err}
	}
	var id string
	var seq int64
	dup := false
	err = sp.QueryRow(ctx, pgAppendMessage, appendArgs(a.Msg, recipients)...).Scan(&id, &seq)
	if errors.Is(err, pgx.ErrNoRows) {
		dup = true
		err = sp.QueryRow(ctx, pgFindDuplicate, a.Msg.MeshID, a.Msg.SenderMemberID, a.Msg.ClientMessageID).Scan(&id, &seq)
	}
	if err != nil {
		if rerr := sp.Rollback(ctx); rerr != nil {
			return appendResult{Err: errors.Join(err, rerr)}
		}
		return appendResult{Err: err}
	}
	if err := sp.Commit(ctx); err != nil {
		return appendResult{Err: err}
	}
	if dup {
		return appendResult{ID: id, Seq: seq, Dup: true}
	}
	return appendResult{ID: id, Seq: seq, Recipients: recipients}
}

func appendArgs(msg storedMessage, recipients []string) []any {
	return []any{msg.ID, msg.MeshID, msg.SenderMemberID, msg.SenderPubkey, msg.SenderMemberPubkey, msg.SenderName,
		msg.TargetSpec, msg.Priority, msg.Nonce, msg.Ciphertext, ms(msg.CreatedAt), ms(msg.ExpiresAt),
		nullable(msg.ClientMessageID), msg.RequestFingerprint, msg.ReplyToID, msg.Subtype, msg.Topic, nonNil(recipients)}
}

// resolveIn returns each append's delivery keys: its own, or for a
// multicast its resolution from the mesh's members and presences as tx sees
// them (read once per mesh: nothing in the batch changes them).
func (s *postgresBrokerStore) resolveIn(ctx context.Context, tx pgx.Tx, appends []appendOp) ([][]string, error) {
	type meshView struct {
		members   []storedMember
		presences []storedPresence
	}
	views := map[string]*meshView{}
	out := make([][]string, len(appends))
	for i, a := range appends {
		if a.Multicast == nil {
			out[i] = a.Recipients
			continue
		}
		v := views[a.Msg.MeshID]
		if v == nil {
			members, err := pgMembers(ctx, tx, a.Msg.MeshID)
			if err != nil {
				return nil, err
			}
			rows, err := tx.Query(ctx, `SELECT `+presenceColumns+` FROM presences WHERE mesh_id = $1 ORDER BY key`, a.Msg.MeshID)
			presences, err := pgCollect(rows, err, scanPresence)
			if err != nil {
				return nil, err
			}
			v = &meshView{members, presences}
			views[a.Msg.MeshID] = v
		}
		out[i] = resolveMulticast(*a.Multicast, v.members, v.presences)
	}
	return out, nil
}

func (s *postgresBrokerStore) PendingFor(ctx context.Context, meshID, key string, afterSeq int64, now time.Time, limit int) ([]storedMessage, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+messageColumns+` FROM deliveries d JOIN messages m ON m.id = d.message_id
		WHERE d.mesh_id = $1 AND d.recipient_key = $2 AND d.expires_at > $3 AND m.seq > $4
		ORDER BY m.seq LIMIT $5`, meshID, key, ms(now), afterSeq, limit)
	return pgCollect(rows, err, scanMessage)
}

// Presences.

// SavePresences writes presences as this replica's. An absence does not
// overwrite a presence that another replica holds: that key came back
// there.
func (s *postgresBrokerStore) SavePresences(ctx context.Context, ps []storedPresence) error {
	batch := &pgx.Batch{}
	for _, p := range ps {
		batch.Queue(`INSERT INTO presences (mesh_id, key, member_id, role, groups, visible, present, seen_at, replica_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
			ON CONFLICT (mesh_id, key) DO UPDATE SET member_id = excluded.member_id, role = excluded.role, groups = excluded.groups,
				visible = excluded.visible, present = excluded.present, seen_at = excluded.seen_at, replica_id = excluded.replica_id
			WHERE excluded.present OR NOT presences.present OR presences.replica_id = excluded.replica_id`,
			p.MeshID, p.Key, p.MemberID, p.Role, jsonText(nonNil(p.Groups)), p.Visible, p.Present, ms(p.SeenAt), s.replicaID)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, batch).Close() })
}

// Another live replica's presences are its own to end.
func (s *postgresBrokerStore) EndPresences(ctx context.Context, startedAt, now time.Time) (int, error) {
	n, err := pgAffected(s.pool.Exec(ctx, `UPDATE presences SET present = FALSE, seen_at = $1
		WHERE present AND seen_at < $2 AND (replica_id = $3 OR replica_id NOT IN (SELECT id FROM replicas WHERE reaped_at IS NULL))`,
		ms(now), ms(startedAt), s.replicaID))
	return int(n), err
}

// PurgeExpired deletes expired deliveries before their messages, the order
// an ack's transaction takes its locks in (delivery, then message), so a
// purge and a batch acking an expiring message queue instead of
// deadlocking. A dedupe key goes with its message's expiry.
func (s *postgresBrokerStore) PurgeExpired(ctx context.Context, now time.Time) (int, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM deliveries WHERE expires_at <= $1`, ms(now)); err != nil {
			return err
		}
		var err error
		if n, err = pgAffected(tx.Exec(ctx, `DELETE FROM messages WHERE expires_at <= $1`, ms(now))); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM dedupe_keys WHERE expires_at <= $1`, ms(now)); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM presences WHERE NOT present AND seen_at < $1`, ms(now.Add(-groupMemory)))
		return err
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

func (s *postgresBrokerStore) CountPendingDeliveries(ctx context.Context, now time.Time) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM deliveries WHERE expires_at > $1`, ms(now)).Scan(&n)
	return n, err
}

// Shared state.

func (s *postgresBrokerStore) SetState(ctx context.Context, meshID string, e StateEntry) error {
	at, err := time.Parse(time.RFC3339Nano, e.UpdatedAt)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO state (mesh_id, key, value, updated_by, updated_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (mesh_id, key) DO UPDATE SET value = excluded.value, updated_by = excluded.updated_by, updated_at = excluded.updated_at`,
		meshID, e.Key, string(e.Value), e.UpdatedBy, ms(at))
	return err
}

func (s *postgresBrokerStore) GetState(ctx context.Context, meshID, key string) (StateEntry, error) {
	return scanState(s.pool.QueryRow(ctx, `SELECT key, value, updated_by, updated_at FROM state WHERE mesh_id = $1 AND key = $2`, meshID, key))
}

func (s *postgresBrokerStore) ListState(ctx context.Context, meshID string) ([]StateEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT key, value, updated_by, updated_at FROM state WHERE mesh_id = $1 ORDER BY key`, meshID)
	return pgCollect(rows, err, scanState)
}

// Memory.

func (s *postgresBrokerStore) Remember(ctx context.Context, meshID string, m Memory) error {
	at, err := time.Parse(time.RFC3339Nano, m.RememberedAt)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO memories (id, mesh_id, content, tags, remembered_by, remembered_at) VALUES ($1, $2, $3, $4, $5, $6)`,
		m.ID, meshID, m.Content, jsonText(nonNil(m.Tags)), m.RememberedBy, ms(at))
	return err
}

// tsQuery turns free text into a tsquery matching any of its words: only
// letters and digits survive, so user input is never tsquery syntax.
func tsQuery(q string) string {
	words := strings.FieldsFunc(q, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsNumber(r) })
	return strings.Join(words, " | ")
}

func (s *postgresBrokerStore) Recall(ctx context.Context, meshID, query string, limit int) ([]Memory, error) {
	q := tsQuery(query)
	if q == "" {
		return []Memory{}, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT id, content, tags, remembered_by, remembered_at
		FROM memories, to_tsquery('english', $1) q
		WHERE mesh_id = $2 AND forgotten_at IS NULL AND search @@ q
		ORDER BY ts_rank(search, q) DESC, remembered_at DESC LIMIT $3`, q, meshID, limit)
	return pgCollect(rows, err, scanMemory)
}

func (s *postgresBrokerStore) Forget(ctx context.Context, meshID, id string, now time.Time) (bool, error) {
	n, err := pgAffected(s.pool.Exec(ctx, `UPDATE memories SET forgotten_at = $1 WHERE mesh_id = $2 AND id = $3 AND forgotten_at IS NULL`, ms(now), meshID, id))
	return n > 0, err
}

// Skills.

func (s *postgresBrokerStore) PutSkill(ctx context.Context, meshID string, sk Skill) error {
	at, err := time.Parse(time.RFC3339Nano, sk.CreatedAt)
	if err != nil {
		return err
	}
	var manifest *string
	if len(sk.Manifest) > 0 && string(sk.Manifest) != "null" {
		m := string(sk.Manifest)
		manifest = &m
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO skills (mesh_id, name, description, instructions, tags, author, manifest, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (mesh_id, name) DO UPDATE SET description = excluded.description, instructions = excluded.instructions,
			tags = excluded.tags, author = excluded.author, manifest = excluded.manifest, created_at = excluded.created_at`,
		meshID, sk.Name, sk.Description, sk.Instructions, jsonText(nonNil(sk.Tags)), sk.Author, manifest, ms(at))
	return err
}

func (s *postgresBrokerStore) GetSkill(ctx context.Context, meshID, name string) (Skill, error) {
	return scanSkill(s.pool.QueryRow(ctx, `SELECT name, description, instructions, tags, author, manifest, created_at
		FROM skills WHERE mesh_id = $1 AND name = $2`, meshID, name))
}

func (s *postgresBrokerStore) ListSkills(ctx context.Context, meshID, query string) ([]Skill, error) {
	like := "%" + strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(strings.ToLower(query)) + "%"
	rows, err := s.pool.Query(ctx, `SELECT name, description, instructions, tags, author, manifest, created_at
		FROM skills WHERE mesh_id = $1 AND ($2::text = '' OR lower(name) LIKE $3 ESCAPE '\' OR lower(description) LIKE $3 ESCAPE '\' OR lower(tags) LIKE $3 ESCAPE '\')
		ORDER BY name`, meshID, query, like)
	return pgCollect(rows, err, scanSkill)
}

func (s *postgresBrokerStore) RemoveSkill(ctx context.Context, meshID, name string) (bool, error) {
	n, err := pgAffected(s.pool.Exec(ctx, `DELETE FROM skills WHERE mesh_id = $1 AND name = $2`, meshID, name))
	return n > 0, err
}

// Peer state.

func (s *postgresBrokerStore) SavePeerState(ctx context.Context, ps storedPeerState) error {
	var stats *string
	if len(ps.Stats) > 0 {
		st := string(ps.Stats)
		stats = &st
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO peer_state (mesh_id, member_id, groups, visible, profile, summary, stats, last_seen_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (mesh_id, member_id) DO UPDATE SET groups = excluded.groups, visible = excluded.visible, profile = excluded.profile,
			summary = excluded.summary, stats = excluded.stats, last_seen_at = excluded.last_seen_at`,
		ps.MeshID, ps.MemberID, jsonText(nonNil(ps.Groups)), ps.Visible, jsonText(ps.Profile), ps.Summary, stats, ms(ps.LastSeenAt))
	return err
}

func (s *postgresBrokerStore) LoadPeerState(ctx context.Context, meshID, memberID string) (storedPeerState, error) {
	ps := storedPeerState{MeshID: meshID, MemberID: memberID}
	var groups, profile string
	var stats *string
	var seen int64
	err := s.pool.QueryRow(ctx, `SELECT groups, visible, profile, summary, stats, last_seen_at FROM peer_state WHERE mesh_id = $1 AND member_id = $2`,
		meshID, memberID).Scan(&groups, &ps.Visible, &profile, &ps.Summary, &stats, &seen)
	if err != nil {
		return ps, noRows(err)
	}
	_ = json.Unmarshal([]byte(groups), &ps.Groups)
	_ = json.Unmarshal([]byte(profile), &ps.Profile)
	if stats != nil {
		ps.Stats = []byte(*stats)
	}
	ps.LastSeenAt = fromMs(seen)
	return ps, nil
}

// newReplicaID names a broker process among the replicas of one store.
func newReplicaID() string {
	host, _ := os.Hostname()
	return strings.ToLower(cmp.Or(hostLabel(host), "broker")) + "-" + strings.ToLower(newID()[:8])
}

// hostLabel keeps the letters, digits and dashes of a host name's first label.
func hostLabel(host string) string {
	host, _, _ = strings.Cut(host, ".")
	return strings.Map(func(r rune) rune {
		if r == '-' || r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return r
		}
		return -1
	}, host)
}

// redactURL is a store URL without its password, for messages and logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
