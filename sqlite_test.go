// Tests of opening SQLite: migrations once, a newer schema refused, a failed
// migration rolled back.
package main

import (
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestOpenSQLiteMigratesOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	migrations := []string{
		`CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`,
		`ALTER TABLE a ADD COLUMN w TEXT; INSERT INTO a (v, w) VALUES ('x', 'y')`,
	}
	db, err := openSQLite(path, migrations)
	if err != nil {
		t.Fatal(err)
	}
	var v int
	if err := db.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != 2 {
		t.Fatalf("schema version = %d, want 2", v)
	}
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v", mode, err)
	}
	db.Close()

	// Reopening applies nothing twice; a third migration runs alone.
	db, err = openSQLite(path, append(migrations, `INSERT INTO a (v) VALUES ('z')`))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM a").Scan(&n); err != nil || n != 2 {
		t.Fatalf("rows = %d, %v; want 2", n, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("db mode = %v, %v; want 0600", st.Mode().Perm(), err)
	}
	if !errors.Is(noRows(db.QueryRow("SELECT v FROM a WHERE id = -1").Scan(new(string))), errNotFound) {
		t.Fatal("noRows must map sql.ErrNoRows to errNotFound")
	}
	if noRows(sql.ErrConnDone) != sql.ErrConnDone {
		t.Fatal("noRows must pass other errors through")
	}
}

func TestOpenSQLiteRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	db, err := openSQLite(path, []string{`CREATE TABLE a (x)`, `CREATE TABLE b (x)`})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := openSQLite(path, []string{`CREATE TABLE a (x)`}); err == nil {
		t.Fatal("opening a newer schema with older migrations must fail")
	}
}

func TestOpenSQLiteFailedMigrationRollsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	if _, err := openSQLite(path, []string{`CREATE TABLE a (x); THIS IS NOT SQL`}); err == nil {
		t.Fatal("a bad migration must fail")
	}
	db, err := openSQLite(path, []string{`CREATE TABLE a (x)`})
	if err != nil {
		t.Fatalf("after a rolled-back migration the database must still open: %v", err)
	}
	db.Close()
}
