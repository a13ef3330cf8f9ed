// Stores another claudemesh daemon left in the daemon dir: its inbox.db and
// outbox.db have our tables' names but not our schema (no schema version,
// other constraints), so migrating them in place would fail and stop the
// daemon from booting.
//
// Policy: such a file is moved aside (with its -wal and -shm) and kept; a
// fresh store is made in its place and the old rows are copied in, column
// by column where the names match. An outbox row that cannot be sent (no
// routing columns) is kept as dead, saying why. If the copy fails, the
// fresh store starts empty and the moved file still holds every row. Each
// outcome is one log line naming the kept file. Boot fails only if the file
// cannot be moved at all.
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
)

// adoptFixups are the statements that finish a copy, per table: values the
// other schema keeps elsewhere, and rows our drain must not try.
var adoptFixups = map[string][]string{
	"inbox": {
		`UPDATE inbox SET created_at = json_extract(meta, '$.created_at')
		   WHERE created_at IS NULL AND json_valid(meta) AND json_type(meta, '$.created_at') = 'text'`,
		// What the other claudemesh showed counts as shown, as for rows read
		// before surfacing was recorded.
		`UPDATE inbox SET surfaced_at = seen_at, surfaced_confirmed_at = seen_at WHERE surfaced_at IS NULL AND seen_at IS NOT NULL`,
	},
	"outbox": {
		`UPDATE outbox SET status = 'dead', last_error = 'kept from an earlier claudemesh: no routing columns'
		   WHERE status IN ('pending', 'inflight')
		     AND (mesh IS NULL OR target_spec IS NULL OR nonce IS NULL OR ciphertext IS NULL OR priority IS NULL)`,
	},
}

// adoptForeignStore makes path ours when another claudemesh wrote it: table
// is there but the schema version is 0. It does nothing to a missing file or
// to one of ours.
func adoptForeignStore(path, table string, migrations []string, log *slog.Logger, now time.Time) error {
	foreign, err := isForeignStore(path, table)
	if err != nil || !foreign {
		return err
	}
	kept := fmt.Sprintf("%s.old-%s", path, now.UTC().Format("20060102T150405Z"))
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Rename(path+suffix, kept+suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s was written by another claudemesh and could not be moved aside: %w", path, err)
		}
	}
	rows, err := copyForeignRows(path, kept, table, migrations)
	if err != nil {
		log.Warn("store_moved_aside", "store", table, "kept", kept, "err", err.Error(),
			"hint", "the old rows are still in the kept file; this store starts empty")
		return nil
	}
	log.Info("store_adopted", "store", table, "rows", rows, "kept", kept)
	return nil
}

// isForeignStore reports whether path holds table without a schema
// version: what our migrations never leave behind.
func isForeignStore(path, table string) (bool, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		return false, err
	}
	defer db.Close()
	var version, tables int
	if err := db.QueryRow("PRAGMA user_version").Scan(&version); err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, table).Scan(&tables); err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	return version == 0 && tables == 1, nil
}

// copyForeignRows makes a fresh store at path and copies table's rows from
// the file at from, in one transaction.
func copyForeignRows(path, from, table string, migrations []string) (int64, error) {
	db, err := openSQLite(path, migrations)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	ctx := context.Background()
	// One connection: ATTACH belongs to the connection that ran it.
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `ATTACH DATABASE ? AS old`, "file:"+from+"?mode=ro"); err != nil {
		return 0, err
	}
	defer conn.ExecContext(ctx, `DETACH DATABASE old`)
	ours, err := tableColumns(ctx, conn, "main", table)
	if err != nil {
		return 0, err
	}
	theirs, err := tableColumns(ctx, conn, "old", table)
	if err != nil {
		return 0, err
	}
	var shared []string
	for c := range theirs {
		if ours[c] {
			shared = append(shared, `"`+c+`"`)
		}
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	cols := strings.Join(shared, ", ")
	n, err := affected(tx.ExecContext(ctx, `INSERT OR IGNORE INTO main.`+table+` (`+cols+`) SELECT `+cols+` FROM old.`+table))
	if err != nil {
		return 0, err
	}
	for _, q := range adoptFixups[table] {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return 0, err
		}
	}
	return n, tx.Commit()
}

// tableColumns is the set of a table's column names.
func tableColumns(ctx context.Context, conn *sql.Conn, schema, table string) (map[string]bool, error) {
	rows, err := conn.QueryContext(ctx, `SELECT name FROM pragma_table_info(?, ?)`, table, schema)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		out[name] = true
	}
	return out, rows.Err()
}
