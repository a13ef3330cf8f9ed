// Tests of adopting the stores another claudemesh daemon left in the
// daemon dir: a database made with claudemesh's own inbox and outbox schema
// (1.34.11: CREATE ... IF NOT EXISTS plus ALTER TABLE, no schema version).
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// claudemeshInboxSchema and claudemeshOutboxSchema are the TypeScript
// daemon's tables as its migrations leave them.
const claudemeshInboxSchema = `
CREATE TABLE IF NOT EXISTS inbox (
  id TEXT PRIMARY KEY,
  client_message_id TEXT NOT NULL UNIQUE,
  broker_message_id TEXT,
  mesh TEXT NOT NULL,
  topic TEXT,
  sender_pubkey TEXT NOT NULL,
  sender_name TEXT NOT NULL,
  body TEXT,
  meta TEXT,
  received_at INTEGER NOT NULL,
  reply_to_id TEXT
);
CREATE INDEX IF NOT EXISTS inbox_received_at ON inbox(received_at);
CREATE INDEX IF NOT EXISTS inbox_topic ON inbox(topic);
CREATE INDEX IF NOT EXISTS inbox_sender ON inbox(sender_pubkey);
ALTER TABLE inbox ADD COLUMN seen_at INTEGER;
CREATE INDEX IF NOT EXISTS inbox_seen_at ON inbox(seen_at);
ALTER TABLE inbox ADD COLUMN recipient_pubkey TEXT;
ALTER TABLE inbox ADD COLUMN recipient_kind TEXT;
CREATE INDEX IF NOT EXISTS inbox_recipient ON inbox(recipient_pubkey);
`

const claudemeshOutboxSchema = `
CREATE TABLE IF NOT EXISTS outbox (
  id TEXT PRIMARY KEY,
  client_message_id TEXT NOT NULL UNIQUE,
  request_fingerprint BLOB NOT NULL,
  payload BLOB NOT NULL,
  enqueued_at INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending','inflight','done','dead','aborted')),
  last_error TEXT,
  delivered_at INTEGER,
  broker_message_id TEXT,
  aborted_at INTEGER,
  aborted_by TEXT,
  superseded_by TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(status, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_aborted ON outbox(status, aborted_at) WHERE status = 'aborted';
ALTER TABLE outbox ADD COLUMN mesh TEXT;
ALTER TABLE outbox ADD COLUMN target_spec TEXT;
ALTER TABLE outbox ADD COLUMN nonce TEXT;
ALTER TABLE outbox ADD COLUMN ciphertext TEXT;
ALTER TABLE outbox ADD COLUMN priority TEXT;
ALTER TABLE outbox ADD COLUMN sender_session_pubkey TEXT;
`

// writeForeignStore makes path with schema and rows in WAL mode, as that
// daemon runs it, and as a daemon that crashed leaves it: the files are
// copied while the writer is still open, so the rows are in path-wal only.
func writeForeignStore(t *testing.T, path, schema string, rows ...string) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "store.db")
	db, err := sql.Open("sqlite", "file:"+src+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range append([]string{schema}, rows...) {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		data, err := os.ReadFile(src + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path+suffix, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// A daemon dir holding claudemesh's inbox.db and outbox.db boots: the old
// files are kept beside, their rows are ours now (a pending broadcast with
// routing goes out, one without dies saying why), and the next boot adopts
// nothing.
func TestDaemonAdoptsClaudemeshStores(t *testing.T) {
	b, url := startTestBroker(t)
	me := newTestMesh(t, b, url, "alpha", "me")
	h := newTestHome(t)
	h.writeConfig(t, me)
	member := me.Pubkey
	// Recent times: older rows would be pruned or expire at boot.
	ms := func(ago time.Duration) string { return strconv.FormatInt(time.Now().Add(-ago).UnixMilli(), 10) }
	nonce, ct := plainBody([]byte("queued before the switch"))
	fp := strings.Repeat("ab", 32)
	writeForeignStore(t, h.Paths.InboxDB(), claudemeshInboxSchema,
		`INSERT INTO inbox (id, client_message_id, broker_message_id, mesh, sender_pubkey, sender_name, body, meta, received_at)
		 VALUES ('r1', 'c1', 'b1', 'alpha', 'aa', 'zed', 'from before recipients', '{"created_at":"2026-05-01T10:00:00.000Z"}', `+ms(3*time.Hour)+`)`,
		`INSERT INTO inbox (id, client_message_id, broker_message_id, mesh, sender_pubkey, sender_name, body, meta, received_at, seen_at, recipient_pubkey, recipient_kind)
		 VALUES ('r2', 'c2', 'b2', 'alpha', 'bb', 'amy', 'already read', NULL, `+ms(2*time.Hour)+`, `+ms(time.Hour)+`, '`+member+`', 'member')`)
	writeForeignStore(t, h.Paths.OutboxDB(), claudemeshOutboxSchema,
		`INSERT INTO outbox (id, client_message_id, request_fingerprint, payload, enqueued_at, next_attempt_at, status, broker_message_id, delivered_at)
		 VALUES ('o1', 'k1', x'`+fp+`', 'sent an hour ago', `+ms(time.Hour)+`, `+ms(time.Hour)+`, 'done', 'bm1', `+ms(time.Hour)+`)`,
		`INSERT INTO outbox (id, client_message_id, request_fingerprint, payload, enqueued_at, next_attempt_at, status)
		 VALUES ('o2', 'k2', x'`+fp+`', 'from before routing columns', `+ms(time.Hour)+`, `+ms(time.Hour)+`, 'pending')`,
		`INSERT INTO outbox (id, client_message_id, request_fingerprint, payload, enqueued_at, next_attempt_at, status, mesh, target_spec, nonce, ciphertext, priority)
		 VALUES ('o3', 'k3', x'`+fp+`', 'queued before the switch', `+ms(time.Minute)+`, `+ms(time.Minute)+`, 'pending', 'alpha', '*', '`+nonce+`', '`+ct+`', 'next')`)

	logs := &syncBuffer{}
	td := startTestDaemon(t, h, func(o *DaemonOptions) { o.Log = slog.New(slog.NewJSONHandler(logs, nil)) })
	for _, store := range []string{"inbox", "outbox"} {
		if !strings.Contains(logs.String(), `"msg":"store_adopted","store":"`+store+`","rows":`) {
			t.Fatalf("no store_adopted line for %s:\n%s", store, logs)
		}
	}
	for _, p := range []string{h.Paths.InboxDB(), h.Paths.OutboxDB()} {
		if kept, _ := filepath.Glob(p + ".old-*"); len(kept) == 0 {
			t.Fatalf("%s was not kept beside", p)
		}
	}

	items := inboxItems(t, td.client(""))
	if len(items) != 2 {
		t.Fatalf("inbox = %+v, want the 2 old rows\n%s", items, logs)
	}
	byID := map[string]inboxItem{}
	for _, it := range items {
		byID[it.ClientMessageID] = it
	}
	if it := byID["c1"]; it.SenderName != "zed" || it.SeenAt != "" || it.RecipientPubkey != "" || *it.Body != "from before recipients" {
		t.Fatalf("old unread row = %+v", it)
	}
	if it := byID["c2"]; it.SeenAt == "" || string(it.RecipientPubkey) != member {
		t.Fatalf("old read row = %+v", it)
	}
	var created string
	if err := td.inbox.db.QueryRow(`SELECT created_at FROM inbox WHERE id = 'r1'`).Scan(&created); err != nil || created != "2026-05-01T10:00:00.000Z" {
		t.Fatalf("created_at from meta = %q, %v", created, err)
	}

	outbox := func() map[string]outboxView {
		limit := 10
		out, err := callIPC(context.Background(), td.client(""), apiOutbox, OutboxQuery{Limit: &limit})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]outboxView{}
		for _, v := range out.Items {
			m[v.ClientMessageID] = v
		}
		return m
	}
	waitFor(t, "the old pending broadcast sent", func() bool { return outbox()["k3"].Status == outboxDone })
	rows := outbox()
	if rows["k1"].Status != outboxDone || rows["k2"].Status != outboxDead || rows["k2"].LastError == nil ||
		!strings.Contains(*rows["k2"].LastError, "no routing columns") {
		raw, _ := json.Marshal(rows)
		t.Fatalf("outbox = %s\n%s", raw, logs)
	}

	td.shutdown(t)
	logs2 := &syncBuffer{}
	startTestDaemon(t, h, func(o *DaemonOptions) { o.Log = slog.New(slog.NewJSONHandler(logs2, nil)) })
	if strings.Contains(logs2.String(), "store_adopted") || strings.Contains(logs2.String(), "store_moved_aside") {
		t.Fatalf("our own stores were adopted again:\n%s", logs2)
	}
}

// A file with a table of that name but nothing to copy is moved aside and
// the daemon starts with an empty store; a missing or own file is left alone.
func TestAdoptForeignStoreOutcomes(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 5, 4, 18, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		prepare func(path string)
		log     string // the line it must write, "" for none
		kept    bool
	}{
		{"missing file", func(string) {}, "", false},
		{"our own store", func(p string) {
			db, err := openSQLite(p, inboxMigrations)
			if err != nil {
				t.Fatal(err)
			}
			db.Close()
		}, "", false},
		{"claudemesh's store", func(p string) { writeForeignStore(t, p, claudemeshInboxSchema) }, "store_adopted", true},
		{"a table of that name with nothing in common", func(p string) { writeForeignStore(t, p, `CREATE TABLE inbox (x)`) }, "store_moved_aside", true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.Repeat("i", i+1)+".db")
			tc.prepare(path)
			logs := &syncBuffer{}
			if err := adoptForeignStore(path, "inbox", inboxMigrations, slog.New(slog.NewJSONHandler(logs, nil)), now); err != nil {
				t.Fatalf("adoptForeignStore: %v", err)
			}
			if (tc.log == "") != (logs.String() == "") || !strings.Contains(logs.String(), tc.log) {
				t.Fatalf("log = %q, want a %q line", logs, tc.log)
			}
			if _, err := os.Stat(path + ".old-20260504T180000Z"); (err == nil) != tc.kept {
				t.Fatalf("kept file: %v, want kept=%v", err, tc.kept)
			}
			if tc.kept {
				ib, err := openInbox(path)
				if err != nil {
					t.Fatalf("the store in its place does not open: %v", err)
				}
				ib.Close()
			}
		})
	}
}
