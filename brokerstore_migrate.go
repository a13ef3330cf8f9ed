// Moving a broker from its SQLite store to a PostgreSQL one (`broker
// migrate`): every table is copied row for row in one PostgreSQL
// transaction, so the target has all of it or nothing.
//
// Policy: the target must hold no mesh (a migration never merges two
// brokers); the source is only read, and stays as it was; the broker must
// be stopped while it runs, since a send taken meanwhile would not be
// copied. Full-text indexes are not copied: PostgreSQL builds its own.
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"
)

// migrateTables are copied in this order (referenced tables first). The
// columns copied are those both stores' tables have, so that a column only
// one of them keeps (a full-text index, a layout detail) never blocks a
// migration.
var migrateTables = []string{"meshes", "members", "invites", "session_keys", "messages", "deliveries",
	"state", "memories", "skills", "peer_state", "presences", "audit_log"}

// migrateSources are the SQLite rows of a table whose layout differs:
// there a delivery is only (recipient key, message order), and its
// message's id, mesh and expiry are the message's.
var migrateSources = map[string]string{
	"deliveries": `(SELECT m.id AS message_id, d.recipient_key, m.mesh_id, m.expires_at
		FROM deliveries d JOIN messages m ON m.seq = d.msg_seq)`,
}

// migrateBytes are the columns SQLite keeps as the bytes their base64 text
// spells, and PostgreSQL as that text.
var migrateBytes = map[string]bool{"nonce": true, "ciphertext": true}

// migrateReport counts what a migration copied, by table.
type migrateReport struct {
	Rows map[string]int64 `json:"rows"`
}

// migrateSQLiteToPostgres copies the SQLite broker store in dir into the
// (empty) PostgreSQL store at url.
func migrateSQLiteToPostgres(ctx context.Context, dir, url string) (migrateReport, error) {
	rep := migrateReport{Rows: map[string]int64{}}
	if _, err := os.Stat(filepath.Join(dir, brokerDBFile)); err != nil {
		return rep, fmt.Errorf("no broker store in %s: %w", dir, err)
	}
	src, err := openSQLiteBrokerStore(dir)
	if err != nil {
		return rep, err
	}
	defer src.Close()
	dst, err := openPostgresBrokerStore(ctx, url, "migrate")
	if err != nil {
		return rep, err
	}
	defer dst.Close()
	if n, err := dst.CountMeshes(ctx); err != nil || n > 0 {
		if err == nil {
			err = fmt.Errorf("the PostgreSQL store already holds %d meshes: migrate into an empty one", n)
		}
		return rep, err
	}
	err = pgx.BeginFunc(ctx, dst.pool, func(tx pgx.Tx) error {
		for _, t := range migrateTables {
			n, err := copyTable(ctx, src.r, tx, t)
			if err != nil {
				return fmt.Errorf("table %s: %w", t, err)
			}
			rep.Rows[t] = n
		}
		// The SQLite store keeps a message's dedupe key on the message;
		// here it is a row of its own, for every copied message that has one.
		if _, err := tx.Exec(ctx, `INSERT INTO dedupe_keys (mesh_id, sender_member_id, client_message_id, message_id, expires_at)
			SELECT mesh_id, sender_member_id, client_message_id, id, expires_at FROM messages WHERE client_message_id IS NOT NULL`); err != nil {
			return fmt.Errorf("dedupe keys: %w", err)
		}
		// Messages keep their sequence numbers; new ones follow them.
		_, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence('messages', 'seq'), coalesce(max(seq), 0) + 1, false) FROM messages`)
		return err
	})
	return rep, err
}

// copyTable copies one table's rows from SQLite into tx: the columns both
// have, booleans (integers in SQLite) made booleans.
func copyTable(ctx context.Context, from *sql.DB, tx pgx.Tx, table string) (int64, error) {
	columns, bools, err := sharedColumns(ctx, from, tx, table)
	if err != nil {
		return 0, err
	}
	rows, err := from.QueryContext(ctx, `SELECT `+strings.Join(columns, ", ")+` FROM `+migrateSource(table))
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var all [][]any
	for rows.Next() {
		vals := make([]any, len(columns))
		ptrs := make([]any, len(columns))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return 0, err
		}
		for i, c := range columns {
			vals[i] = pgValue(vals[i], bools[c], migrateBytes[c])
		}
		all = append(all, vals)
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	return tx.CopyFrom(ctx, pgx.Identifier{table}, columns, pgx.CopyFromRows(all))
}

// sharedColumns are the columns of table in both stores, in PostgreSQL's
// order, and which of them PostgreSQL keeps as booleans.
func sharedColumns(ctx context.Context, from *sql.DB, tx pgx.Tx, table string) ([]string, map[string]bool, error) {
	rows, err := from.QueryContext(ctx, `SELECT * FROM `+migrateSource(table)+` LIMIT 0`)
	if err != nil {
		return nil, nil, err
	}
	names, err := rows.Columns()
	rows.Close()
	if err != nil {
		return nil, nil, err
	}
	src := map[string]bool{}
	for _, n := range names {
		src[n] = true
	}
	pgRows, err := tx.Query(ctx, `SELECT column_name, data_type FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`, table)
	type column struct{ name, kind string }
	dst, err := pgCollect(pgRows, err, func(r rowScanner) (column, error) {
		var c column
		return c, r.Scan(&c.name, &c.kind)
	})
	if err != nil {
		return nil, nil, err
	}
	var columns []string
	bools := map[string]bool{}
	for _, c := range dst {
		if src[c.name] {
			columns = append(columns, c.name)
			bools[c.name] = c.kind == "boolean"
		}
	}
	if len(columns) == 0 {
		return nil, nil, fmt.Errorf("no column in common")
	}
	return columns, bools, nil
}

// migrateSource is what a table's rows are read from in SQLite.
func migrateSource(table string) string {
	if src, ok := migrateSources[table]; ok {
		return src
	}
	return table
}

// pgValue is a SQLite value as its PostgreSQL column takes it.
func pgValue(v any, boolean, base64Text bool) any {
	switch x := v.(type) {
	case []byte:
		if base64Text {
			return unpackBase64(x)
		}
		return string(x)
	case int64:
		if boolean {
			return x != 0
		}
	}
	return v
}

// errMigrateUsage is a migrate without both ends.
var errMigrateUsage = errors.New("broker migrate needs --from DIR (a SQLite broker's data dir) and --to postgres://…")
