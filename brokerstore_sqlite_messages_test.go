// Tests of the SQLite store's message layout: a message goes with its last
// delivery, bytes and text come back as sent, and a database of the
// previous layout moves its pending messages over.
package main

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMessagePruning: each ack retires its delivery, and a message's last
// one takes the message with it; a retry of a message that is gone is
// stored again.
func TestMessagePruning(t *testing.T) {
	st, msg := batchTestStore(t)
	s := st.(*sqliteBrokerStore)
	ctx := context.Background()
	count := func(q string) int {
		var n int
		if err := s.r.QueryRow(q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	m := msg("multi")
	res, _, err := s.WriteBatch(ctx, []appendOp{{Msg: m, Recipients: []string{"k1", "k2", "k1"}}}, nil)
	if err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	if got := count(`SELECT pending FROM messages`); got != 2 {
		t.Fatalf("pending = %d, want 2 (k1 once, k2)", got)
	}
	if _, n, _ := s.WriteBatch(ctx, nil, []deliveryMark{{MeshID: m.MeshID, Key: "k1", Seq: res[0].Seq}}); n != 1 {
		t.Fatalf("mark k1 by seq = %d, want 1", n)
	}
	if got := count(`SELECT count(*) FROM messages`); got != 1 {
		t.Fatalf("messages after one of two acks = %d, want 1", got)
	}
	if _, n, _ := s.WriteBatch(ctx, nil, []deliveryMark{{MeshID: m.MeshID, Key: "k1", Seq: res[0].Seq}}); n != 0 {
		t.Fatalf("a second mark of k1 = %d, want 0", n)
	}
	if _, n, _ := s.WriteBatch(ctx, nil, []deliveryMark{{MeshID: m.MeshID, Key: "k2", MessageID: m.ID}}); n != 1 {
		t.Fatalf("mark k2 by id = %d, want 1", n)
	}
	if got := count(`SELECT count(*) FROM messages`) + count(`SELECT count(*) FROM deliveries`); got != 0 {
		t.Fatalf("rows after every ack = %d, want 0", got)
	}
	again, _, err := s.WriteBatch(ctx, []appendOp{{Msg: msg("multi"), Recipients: []string{"k1"}}}, nil)
	if err != nil || again[0].Dup || again[0].Err != nil {
		t.Fatalf("retry after every ack = %+v, %v; want stored anew", again, err)
	}
	nobody, _, err := s.WriteBatch(ctx, []appendOp{{Msg: msg("nobody")}}, nil)
	if err != nil || nobody[0].Err != nil || nobody[0].ID == "" || count(`SELECT count(*) FROM messages`) != 1 {
		t.Fatalf("a message for nobody = %+v, %v; want answered and not stored", nobody, err)
	}
}

// TestMessageBytesRoundTrip: canonical base64 is stored as bytes and
// anything else as text; both come back exactly as sent.
func TestMessageBytesRoundTrip(t *testing.T) {
	s, msg := batchTestStore(t)
	ctx := context.Background()
	for _, tc := range []struct{ name, nonce, ciphertext string }{
		{"base64", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX", "aGVsbG8gd29ybGQ="},
		{"unpadded", "AAEC", "aGVsbG8"},
		{"not base64", "n", "plain text, not base64!"},
		{"url alphabet", "-_-_", "a-b_"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := msg(tc.name)
			m.Nonce, m.Ciphertext = tc.nonce, tc.ciphertext
			if _, _, err := s.WriteBatch(ctx, []appendOp{{Msg: m, Recipients: []string{tc.name}}}, nil); err != nil {
				t.Fatal(err)
			}
			got, err := s.PendingFor(ctx, m.MeshID, tc.name, 0, time.Now(), 10)
			if err != nil || len(got) != 1 || got[0].Nonce != tc.nonce || got[0].Ciphertext != tc.ciphertext {
				t.Fatalf("PendingFor = %+v, %v; want nonce %q, ciphertext %q", got, err, tc.nonce, tc.ciphertext)
			}
		})
	}
}

// TestMessageLayoutMigration: a database of the previous layout keeps its
// pending deliveries, in order, and drops what was delivered.
func TestMessageLayoutMigration(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, brokerDBFile)
	const previous = 5
	db, err := openSQLite(path, brokerMigrations[:previous])
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	for _, q := range []string{
		`INSERT INTO meshes VALUES ('mesh', 'team', 'team', 'o', 'r', 0)`,
		`INSERT INTO members (id, mesh_id, pubkey, display_name, role, created_at) VALUES ('alice', 'mesh', 'o', 'alice', 'admin', 0)`,
		`INSERT INTO messages (id, mesh_id, sender_member_id, sender_pubkey, sender_member_pubkey, sender_name, target_spec, priority, nonce, ciphertext, created_at, expires_at, client_message_id)
			VALUES ('m1', 'mesh', 'alice', 'o', 'o', 'alice', '*', 'next', 'bm9uY2U=', 'b25l', 1, ` + strconv.FormatInt(now+3600_000, 10) + `, 'c1'),
			       ('m2', 'mesh', 'alice', 'o', 'o', 'alice', '*', 'next', 'bm9uY2U=', 'dHdv', 2, ` + strconv.FormatInt(now+3600_000, 10) + `, 'c2'),
			       ('m3', 'mesh', 'alice', 'o', 'o', 'alice', 'k1', 'next', 'n', 'three', 3, ` + strconv.FormatInt(now+3600_000, 10) + `, NULL)`,
		`INSERT INTO deliveries (message_id, recipient_key, mesh_id, expires_at, delivered_at) VALUES
			('m1', 'k1', 'mesh', 0, 5), ('m1', 'k2', 'mesh', 0, NULL),
			('m2', 'k1', 'mesh', 0, 6), ('m2', 'k2', 'mesh', 0, 7),
			('m3', 'k1', 'mesh', 0, NULL)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	s, err := openSQLiteBrokerStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for key, want := range map[string]string{"k1": "m3:three", "k2": "m1:b25l"} {
		got, err := s.PendingFor(ctx, "mesh", key, 0, time.Now(), 10)
		var ids []string
		for _, m := range got {
			ids = append(ids, m.ID+":"+m.Ciphertext)
		}
		if err != nil || strings.Join(ids, ",") != want {
			t.Errorf("PendingFor(%s) = %v, %v; want %s", key, ids, err, want)
		}
	}
	var messages int
	if err := s.r.QueryRow(`SELECT count(*) FROM messages`).Scan(&messages); err != nil || messages != 2 {
		t.Fatalf("messages after the migration = %d, %v; want 2 (m2 was delivered everywhere)", messages, err)
	}
	// The dedupe key of a message still pending holds; ack retires it.
	dup, _, err := s.WriteBatch(ctx, []appendOp{{Msg: storedMessage{ID: newID(), MeshID: "mesh", SenderMemberID: "alice",
		ClientMessageID: "c1", CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}, Recipients: []string{"k2"}}},
		[]deliveryMark{{MeshID: "mesh", Key: "k1", MessageID: "m3"}})
	if err != nil || !dup[0].Dup || dup[0].ID != "m1" {
		t.Fatalf("retry of c1 = %+v, %v; want a duplicate of m1", dup, err)
	}
	if n, _ := s.CountPendingDeliveries(ctx, time.Now()); n != 1 {
		t.Fatalf("pending after acking m3 = %d, want 1", n)
	}
}

// TestIdleWALTruncated: once writes stop, the background checkpoint gives
// back the disk the WAL took for a burst.
func TestIdleWALTruncated(t *testing.T) {
	dir := t.TempDir()
	s, err := openSQLiteBrokerStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	now := time.Now()
	mesh := storedMesh{ID: newID(), Slug: "team", Name: "team", OwnerPubkey: "o", RootKey: "r", CreatedAt: now}
	owner := storedMember{ID: newID(), MeshID: mesh.ID, Pubkey: "o", DisplayName: "alice", Role: roleAdmin, CreatedAt: now}
	if err := s.CreateMesh(ctx, mesh, owner); err != nil {
		t.Fatal(err)
	}
	body := base64.StdEncoding.EncodeToString(make([]byte, 4096))
	var ops []appendOp
	for i := range 500 {
		ops = append(ops, appendOp{Recipients: []string{"k1"}, Msg: storedMessage{ID: newMessageID(now), MeshID: mesh.ID,
			SenderMemberID: owner.ID, SenderPubkey: "o", SenderMemberPubkey: "o", SenderName: "alice", TargetSpec: "k1",
			Priority: priorityNext, Nonce: "n", Ciphertext: body, CreatedAt: now, ExpiresAt: now.Add(time.Hour),
			ClientMessageID: strconv.Itoa(i)}})
	}
	if _, _, err := s.WriteBatch(ctx, ops, nil); err != nil {
		t.Fatal(err)
	}
	wal := filepath.Join(dir, brokerDBFile+"-wal")
	if fi, err := os.Stat(wal); err != nil || fi.Size() < 1<<20 {
		t.Fatalf("WAL after the burst: %v, %v; want over 1 MB", fi, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		fi, err := os.Stat(wal)
		if err == nil && fi.Size() == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("WAL of an idle store after 10 s: %v, %v; want empty", fi, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
