// SQLite, shared by the broker store and the daemon's outbox and inbox:
// opening with the pragmas they all want, and numbered migrations recorded
// in PRAGMA user_version, each applied in its own transaction.
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"

	_ "modernc.org/sqlite" // registers the "sqlite" driver; pure Go, keeps the binary CGO-free
)

// errNotFound is what stores return for a missing row, whatever the driver says.
var errNotFound = errors.New("not found")

// openSQLite opens (creating with mode 0600) the database at path and brings
// its schema up to date with migrations; migrations[i] moves user_version
// from i to i+1.
func openSQLite(path string, migrations []string, pragmas ...string) (*sql.DB, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f.Close()
	q := url.Values{}
	for _, p := range []string{
		"journal_mode(WAL)",   // readers never block the writer, and a crash loses nothing committed
		"synchronous(NORMAL)", // safe with WAL; FULL would fsync every commit for no durability gain here
		"busy_timeout(5000)",  // wait for a competing writer instead of failing with SQLITE_BUSY
		"foreign_keys(ON)",    // enforce the schema's references
		// After a checkpoint the WAL is cut back to this size, so a burst of
		// writes cannot keep the disk space it once needed.
		"journal_size_limit(4194304)",
	} {
		q.Add("_pragma", p)
	}
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate") // every transaction takes the write lock up front: no upgrade deadlocks
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := migrate(context.Background(), db, migrations); err != nil {
		db.Close()
		if isDamaged(err) {
			return nil, fmt.Errorf("%s is damaged (%v): claudemesh will not use it as an empty store. "+
				"Stop what uses it, move it aside (mv %s %s.broken; the same for its -wal and -shm files) to start with a fresh one, "+
				"or put back a backup", path, err, path, path)
		}
		return nil, fmt.Errorf("migrate %s: %w", path, err)
	}
	return db, nil
}

// SQLite's primary result codes that need their own handling.
const (
	sqliteCorrupt = 11
	sqliteFull    = 13
	sqliteNotADB  = 26
)

// sqliteCode is the primary result code of a SQLite error, 0 for others.
func sqliteCode(err error) int {
	var se interface{ Code() int }
	if errors.As(err, &se) {
		return se.Code() & 0xff
	}
	return 0
}

// isDamaged reports an error from a file that is not, or is no longer, a
// whole SQLite database (truncated, overwritten, corrupt).
func isDamaged(err error) bool {
	c := sqliteCode(err)
	return c == sqliteCorrupt || c == sqliteNotADB
}

// isDiskFull reports a write that failed for want of space.
func isDiskFull(err error) bool {
	return sqliteCode(err) == sqliteFull || errors.Is(err, syscall.ENOSPC)
}

// reclaimWAL checkpoints db and truncates its WAL to nothing: after a
// write failed for want of space, the WAL gives back what it holds so that
// the next write can succeed once any space is free.
func reclaimWAL(db *sql.DB) {
	_, _ = db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
}

// smallWAL are the pragmas of a store that must keep working on a nearly
// full disk (the daemon's inbox and outbox): a checkpoint every 64 pages
// keeps the WAL near 256 KB, so it cannot take up the space a commit or a
// checkpoint needs.
var smallWAL = []string{"wal_autocheckpoint(64)"}

// migrate applies the migrations the database has not seen yet.
func migrate(ctx context.Context, db *sql.DB, migrations []string) error {
	var current int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&current); err != nil {
		return err
	}
	if current > len(migrations) {
		return fmt.Errorf("database schema %d is newer than this claudemesh knows (%d)", current, len(migrations))
	}
	for i := current; i < len(migrations); i++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", i+1)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// placeholders is n comma-separated "?" for an IN list.
func placeholders(n int) string { return strings.TrimSuffix(strings.Repeat("?,", n), ",") }

// anySlice is xs as query arguments.
func anySlice[T any](xs []T) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

// noRows maps sql.ErrNoRows to errNotFound and passes other errors through.
func noRows(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return errNotFound
	}
	return err
}

// affected is how many rows an Exec changed, or the error it failed with.
func affected(res sql.Result, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// nullable stores "" as NULL.
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// rowScanner is a *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(dest ...any) error }

// collect scans every row of a query with scan (an empty result is an
// empty slice, never nil, so that it encodes as []).
func collect[T any](rows *sql.Rows, err error, scan func(rowScanner) (T, error)) ([]T, error) {
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

// stmtCache prepares each query once and reuses it: for the small
// statements on a message's path, parsing the SQL costs more than running
// it. Safe for concurrent use; close it before the database.
type stmtCache struct {
	db *sql.DB
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func newStmtCache(db *sql.DB) *stmtCache { return &stmtCache{db: db, m: map[string]*sql.Stmt{}} }

// prepared returns the statement for query, preparing it on first use.
func (c *stmtCache) prepared(ctx context.Context, query string) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[query]; ok {
		return st, nil
	}
	st, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.m[query] = st
	return st, nil
}

// in returns the statement for query bound to tx (nil tx: the database).
func (c *stmtCache) in(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	st, err := c.prepared(ctx, query)
	if err != nil || tx == nil {
		return st, err
	}
	return tx.StmtContext(ctx, st), nil
}

// ExecContext runs a cached statement, in tx when tx is not nil.
func (c *stmtCache) ExecContext(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	st, err := c.in(ctx, tx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// QueryContext runs a cached query.
func (c *stmtCache) QueryContext(ctx context.Context, tx *sql.Tx, query string, args ...any) (*sql.Rows, error) {
	st, err := c.in(ctx, tx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// scanOne runs a cached single-row query and scans it with scan.
func (c *stmtCache) scanOne(ctx context.Context, tx *sql.Tx, query string, scan func(rowScanner) error, args ...any) error {
	st, err := c.in(ctx, tx, query)
	if err != nil {
		return err
	}
	return scan(st.QueryRowContext(ctx, args...))
}

// Close closes every cached statement.
func (c *stmtCache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.m {
		st.Close()
	}
	c.m = map[string]*sql.Stmt{}
}

// ftsTerms quotes each word of free text as an FTS5 term, with suffix
// after it ("*" matches the word as a prefix). Only letters and digits make
// words, as in the indexes' tokenizer, so what a person types is never FTS5
// syntax.
func ftsTerms(q, suffix string) []string {
	words := strings.FieldsFunc(q, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsNumber(r) })
	for i, w := range words {
		words[i] = `"` + w + `"` + suffix
	}
	return words
}

// checkpointer copies a WAL database's committed pages back into the main
// file from a goroutine of its own, so that no commit waits for it: the
// writer runs with wal_autocheckpoint(0). It checkpoints PASSIVE (never
// blocking the writer or a reader) every checkpointEvery; once the WAL has
// grown past hardPages despite that, it checkpoints RESTART, which waits
// for readers and holds the writer back briefly, so the WAL then starts
// again from its beginning and its size stays bounded. Once the writes
// stop (the WAL has not grown for a period and is all copied back), it
// checkpoints TRUNCATE, so an idle database gives back the disk a burst
// took.
type checkpointer struct {
	done chan struct{}
	quit chan struct{}
}

// checkpointEvery is the background checkpoint's period: often enough that
// a checkpoint copies a few MB at a time at the broker's peak write rate.
const checkpointEvery = 200 * time.Millisecond

func startCheckpointer(db *sql.DB, hardPages int) *checkpointer {
	c := &checkpointer{done: make(chan struct{}), quit: make(chan struct{})}
	go func() {
		defer close(c.done)
		t := time.NewTicker(checkpointEvery)
		defer t.Stop()
		lastPages := 0
		for {
			select {
			case <-t.C:
				var busy, logPages, copied int
				if db.QueryRow(`PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logPages, &copied) != nil {
					continue
				}
				switch {
				case logPages > hardPages:
					_, _ = db.Exec(`PRAGMA wal_checkpoint(RESTART)`)
				case logPages > 0 && copied == logPages && logPages == lastPages:
					_, _ = db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
					logPages = 0
				}
				lastPages = logPages
			case <-c.quit:
				return
			}
		}
	}()
	return c
}

// stop ends the goroutine; the database's last connection to close
// checkpoints what is left.
func (c *checkpointer) stop() {
	close(c.quit)
	<-c.done
}
