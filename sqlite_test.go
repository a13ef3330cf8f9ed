// Tests of opening SQLite: migrations once, a newer schema refused, a failed
// migration rolled back.
package main

import (
	"bytes"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
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

// A damaged store file — overwritten or cut short — is refused with an
// error that names the file and says what to do, never opened as an
// empty store.
func TestDamagedStoreFilesAreNamed(t *testing.T) {
	opens := map[string]func(dir string) error{
		"inbox.db": func(dir string) error {
			ib, err := openInbox(filepath.Join(dir, "inbox.db"))
			if err == nil {
				ib.Close()
			}
			return err
		},
		"outbox.db": func(dir string) error {
			ob, _, err := openOutbox(filepath.Join(dir, "outbox.db"))
			if err == nil {
				ob.Close()
			}
			return err
		},
		brokerDBFile: func(dir string) error {
			s, err := openSQLiteBrokerStore(dir)
			if err == nil {
				s.Close()
			}
			return err
		},
	}
	damages := map[string]func(t *testing.T, path string){
		"overwritten": func(t *testing.T, path string) {
			os.Remove(path + "-wal")
			os.Remove(path + "-shm")
			if err := os.WriteFile(path, bytes.Repeat([]byte("not a database "), 500), 0o600); err != nil {
				t.Fatal(err)
			}
		},
		"cut short": func(t *testing.T, path string) {
			os.Remove(path + "-wal")
			os.Remove(path + "-shm")
			if err := os.Truncate(path, 1000); err != nil {
				t.Fatal(err)
			}
		},
	}
	for file, open := range opens {
		for how, damage := range damages {
			t.Run(file+" "+how, func(t *testing.T) {
				dir := t.TempDir()
				if err := open(dir); err != nil {
					t.Fatalf("fresh store: %v", err)
				}
				path := filepath.Join(dir, file)
				damage(t, path)
				err := open(dir)
				if err == nil || !strings.Contains(err.Error(), path+" is damaged") || !strings.Contains(err.Error(), "move it aside") {
					t.Fatalf("open a damaged %s = %v, want an error naming it and what to do", file, err)
				}
			})
		}
	}
}
