// Tests of the PostgreSQL store's message tables: an ack deletes its
// delivery and a message goes with its last one, also when two replicas ack
// its last deliveries at once; dedupe keys outlive their messages until
// expiry; a schema of the previous version keeps only what is pending.
package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// onPostgres makes the stores t opens (openTestStore, startTestBrokerWith)
// PostgreSQL ones, as forEachStore's postgres subtest does.
func onPostgres(t *testing.T) {
	for _, s := range testStores {
		if s.name == "postgres" {
			testStoreByName.Store(t.Name(), s)
		}
	}
	t.Cleanup(func() { testStoreByName.Delete(t.Name()) })
}

// pgBatchTestStore is batchTestStore on PostgreSQL.
func pgBatchTestStore(t *testing.T) (*postgresBrokerStore, func(cmid string) storedMessage) {
	t.Helper()
	onPostgres(t)
	s, msg := batchTestStore(t)
	return unwrapStore(s).(*postgresBrokerStore), msg
}

// pgCount is a count(*) query's answer on s.
func pgCount(t *testing.T, s *postgresBrokerStore, query string, args ...any) int {
	t.Helper()
	var n int
	if err := s.pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// pgTableRows counts the rows of the message tables.
func pgTableRows(t *testing.T, s *postgresBrokerStore) (messages, deliveries, keys int) {
	t.Helper()
	return pgCount(t, s, `SELECT count(*) FROM messages`), pgCount(t, s, `SELECT count(*) FROM deliveries`),
		pgCount(t, s, `SELECT count(*) FROM dedupe_keys`)
}

// TestPostgresMessagePruning: each ack deletes its delivery and the last one
// takes the message; the dedupe key stays, so a re-send after every ack is
// answered with the original id and stores nothing; the expiry purge takes
// the keys.
func TestPostgresMessagePruning(t *testing.T) {
	s, msg := pgBatchTestStore(t)
	ctx := context.Background()
	m := msg("multi")
	res, _, err := s.WriteBatch(ctx, []appendOp{{Msg: m, Recipients: []string{"k1", "k2", "k1"}}}, nil)
	if err != nil || res[0].Err != nil || res[0].Seq == 0 {
		t.Fatal(err, res)
	}
	if msgs, dels, keys := pgTableRows(t, s); msgs != 1 || dels != 2 || keys != 1 {
		t.Fatalf("after the send: %d messages, %d deliveries, %d keys; want 1, 2 (k1 once, k2), 1", msgs, dels, keys)
	}
	if n, err := markOne(ctx, s, m.MeshID, "k1", m.ID, "", time.Now()); err != nil || n != 1 {
		t.Fatalf("mark k1 by id = %d, %v; want 1", n, err)
	}
	if msgs, dels, _ := pgTableRows(t, s); msgs != 1 || dels != 1 {
		t.Fatalf("after one of two acks: %d messages, %d deliveries; want 1, 1", msgs, dels)
	}
	if n, err := markOne(ctx, s, m.MeshID, "k1", m.ID, "", time.Now()); err != nil || n != 0 {
		t.Fatalf("a second mark of k1 = %d, %v; want 0", n, err)
	}
	if n, err := markOne(ctx, s, m.MeshID, "k2", "", "multi", time.Now()); err != nil || n != 1 {
		t.Fatalf("mark k2 by client id = %d, %v; want 1", n, err)
	}
	if msgs, dels, keys := pgTableRows(t, s); msgs != 0 || dels != 0 || keys != 1 {
		t.Fatalf("after every ack: %d messages, %d deliveries, %d keys; want 0, 0, 1", msgs, dels, keys)
	}
	again, _, err := s.WriteBatch(ctx, []appendOp{{Msg: msg("multi"), Recipients: []string{"k1"}}}, nil)
	if err != nil || !again[0].Dup || again[0].ID != m.ID || again[0].Err != nil {
		t.Fatalf("re-send after every ack = %+v, %v; want a duplicate of %s", again, err, m.ID)
	}
	if p, _ := s.PendingFor(ctx, m.MeshID, "k1", 0, time.Now(), 10); len(p) != 0 {
		t.Fatalf("the re-send left %d pending for k1", len(p))
	}

	nobody := msg("nobody")
	res, _, err = s.WriteBatch(ctx, []appendOp{{Msg: nobody}}, nil)
	if err != nil || res[0].Err != nil || res[0].Dup || res[0].ID != nobody.ID {
		t.Fatalf("a message for nobody = %+v, %v; want answered", res, err)
	}
	if msgs, _, _ := pgTableRows(t, s); msgs != 0 {
		t.Fatalf("a message for nobody was stored")
	}
	if res, _, _ = s.WriteBatch(ctx, []appendOp{{Msg: msg("nobody"), Recipients: []string{"k1"}}}, nil); !res[0].Dup || res[0].ID != nobody.ID {
		t.Fatalf("re-send of a message for nobody = %+v; want a duplicate", res)
	}

	pending := msg("pending")
	if _, _, err := appendOne(ctx, s, pending, []string{"k3"}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PurgeExpired(ctx, time.Now()); err != nil || n != 0 {
		t.Fatalf("purge before any expiry = %d, %v", n, err)
	}
	if n, err := s.PurgeExpired(ctx, pending.ExpiresAt); err != nil || n != 1 {
		t.Fatalf("purge at expiry = %d, %v; want the pending message", n, err)
	}
	if msgs, dels, keys := pgTableRows(t, s); msgs+dels+keys != 0 {
		t.Fatalf("after the expiry purge: %d messages, %d deliveries, %d keys; want none", msgs, dels, keys)
	}
}

// TestPostgresConcurrentLastAcks: two replicas ack the last two deliveries
// of the same messages at once, in opposite orders and in several batches:
// no batch fails (no deadlock) and no message outlives its deliveries.
func TestPostgresConcurrentLastAcks(t *testing.T) {
	url := testPostgresSchemaURL(t)
	ctx := context.Background()
	open := func(replica string) *postgresBrokerStore {
		s, err := openPostgresBrokerStore(ctx, url, replica)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open("replica-a"), open("replica-b")
	now := time.Now()
	mesh := storedMesh{ID: newID(), Slug: "team", Name: "team", OwnerPubkey: "o", RootKey: "r", CreatedAt: now}
	owner := storedMember{ID: newID(), MeshID: mesh.ID, Pubkey: "o", DisplayName: "alice", Role: roleAdmin, CreatedAt: now}
	if err := a.CreateMesh(ctx, mesh, owner); err != nil {
		t.Fatal(err)
	}
	const n, batches = 200, 10
	var appends []appendOp
	for i := range n {
		appends = append(appends, appendOp{Recipients: []string{"k1", "k2"}, Msg: storedMessage{ID: newMessageID(now), MeshID: mesh.ID,
			SenderMemberID: owner.ID, SenderPubkey: "o", SenderMemberPubkey: "o", SenderName: "alice", TargetSpec: "*",
			Priority: priorityNext, Nonce: "n", Ciphertext: "c", CreatedAt: now, ExpiresAt: now.Add(time.Hour),
			ClientMessageID: "c" + strconv.Itoa(i)}})
	}
	if _, _, err := a.WriteBatch(ctx, appends, nil); err != nil {
		t.Fatal(err)
	}
	// Both replicas ack the same messages in their nth batch: a k1's
	// deliveries first to last, b k2's last to first.
	acks := func(key string, reverse bool) [][]deliveryMark {
		out := make([][]deliveryMark, batches)
		for b := range out {
			for i := range n / batches {
				if reverse {
					i = n/batches - 1 - i
				}
				out[b] = append(out[b], deliveryMark{MeshID: mesh.ID, Key: key, MessageID: appends[b*n/batches+i].Msg.ID, At: now})
			}
		}
		return out
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*batches)
	marked := [2]int{}
	for r, run := range []struct {
		s     *postgresBrokerStore
		marks [][]deliveryMark
	}{{a, acks("k1", false)}, {b, acks("k2", true)}} {
		wg.Go(func() {
			for _, marks := range run.marks {
				_, m, err := run.s.WriteBatch(ctx, nil, marks)
				if err != nil {
					errs <- fmt.Errorf("replica %d: %w", r, err)
				}
				marked[r] += m
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if marked != [2]int{n, n} {
		t.Errorf("marked %v, want %d on each replica", marked, n)
	}
	if msgs, dels, keys := pgTableRows(t, a); msgs != 0 || dels != 0 || keys != n {
		t.Fatalf("after every ack on two replicas: %d messages, %d deliveries, %d keys; want 0, 0, %d", msgs, dels, keys, n)
	}
}

// TestPostgresLastAcksInterleaved: two transactions each delete one of a
// message's last two deliveries and retire it before either commits; the
// second waits for the first and deletes the message.
func TestPostgresLastAcksInterleaved(t *testing.T) {
	s, msg := pgBatchTestStore(t)
	ctx := context.Background()
	m := msg("both")
	if _, _, err := appendOne(ctx, s, m, []string{"k1", "k2"}); err != nil {
		t.Fatal(err)
	}
	begin := func() pgx.Tx {
		tx, err := s.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tx.Rollback(ctx) })
		return tx
	}
	ack := func(tx pgx.Tx, key string) []string {
		n, ids, err := pgDeleteDeliveries(ctx, tx, []deliveryMark{{MeshID: m.MeshID, Key: key, MessageID: m.ID}})
		if err != nil || n != 1 {
			t.Fatalf("delete %s's delivery = %d, %v", key, n, err)
		}
		return ids
	}
	retire := func(tx pgx.Tx, ids []string) error {
		b := &pgx.Batch{}
		queueRetire(b, ids)
		return tx.SendBatch(ctx, b).Close()
	}
	a, b := begin(), begin()
	idsA, idsB := ack(a, "k1"), ack(b, "k2")
	if err := retire(a, idsA); err != nil {
		t.Fatal(err)
	}
	retiredB := make(chan error, 1)
	go func() { retiredB <- retire(b, idsB) }()
	// The second retire must wait on the first's lock, not run past it.
	deadline := time.Now().Add(testWait)
	for pgCount(t, s, `SELECT count(*) FROM pg_locks WHERE NOT granted`) == 0 {
		select {
		case err := <-retiredB:
			t.Fatalf("the second retire ran (%v) while the first transaction was open: it cannot see that ack", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the second retire neither waits nor ends")
		}
	}
	if err := a.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-retiredB; err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if msgs, dels, _ := pgTableRows(t, s); msgs != 0 || dels != 0 {
		t.Fatalf("after both acks: %d messages, %d deliveries; want none", msgs, dels)
	}
}

// TestPostgresMigrationDropsAcked: a store of the previous schema version
// with acked, half-acked and pending deliveries keeps what is pending, and
// re-sends of its messages, acked or not, dedupe.
func TestPostgresMigrationDropsAcked(t *testing.T) {
	url := testPostgresSchemaURL(t)
	ctx := context.Background()
	s, err := openPostgresBrokerStore(ctx, url, "old")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Back to the schema before this store's message layout.
	const previous = 3
	for _, stmt := range []string{`DROP SCHEMA ` + s.schema + ` CASCADE`, `CREATE SCHEMA ` + s.schema} {
		if _, err := s.pool.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	if err := migratePostgres(ctx, s.pool, postgresMigrations[:previous]); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	mesh := storedMesh{ID: newID(), Slug: "team", Name: "team", OwnerPubkey: "o", RootKey: "r", CreatedAt: now}
	owner := storedMember{ID: newID(), MeshID: mesh.ID, Pubkey: "o", DisplayName: "alice", Role: roleAdmin, CreatedAt: now}
	if err := s.CreateMesh(ctx, mesh, owner); err != nil {
		t.Fatal(err)
	}
	at, expires := ms(now), ms(now.Add(time.Hour))
	// acked: every delivery acked; half: one of two; pending: none, and no
	// client id.
	for _, m := range []struct {
		id   string
		cmid any
	}{{"acked", "c-acked"}, {"half", "c-half"}, {"pending", nil}} {
		if _, err := s.pool.Exec(ctx, `INSERT INTO messages (id, mesh_id, sender_member_id, sender_pubkey, sender_member_pubkey, sender_name,
			target_spec, priority, nonce, ciphertext, created_at, expires_at, client_message_id)
			VALUES ($1, $2, $3, 'o', 'o', 'alice', '*', 'next', 'n', 'c', $4, $5, $6)`, m.id, mesh.ID, owner.ID, at, expires, m.cmid); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO deliveries (message_id, recipient_key, mesh_id, expires_at, delivered_at) VALUES
		('acked', 'k1', $1, $2, $3), ('acked', 'k2', $1, $2, $3), ('half', 'k1', $1, $2, $3), ('half', 'k2', $1, $2, NULL),
		('pending', 'k1', $1, $2, NULL)`, mesh.ID, expires, at); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = openPostgresBrokerStore(ctx, url, "new")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v := pgCount(t, s, `SELECT version FROM claudemesh_schema`); v != len(postgresMigrations) {
		t.Fatalf("schema version %d, want %d", v, len(postgresMigrations))
	}
	if msgs, dels, keys := pgTableRows(t, s); msgs != 2 || dels != 2 || keys != 2 {
		t.Fatalf("after the migration: %d messages, %d deliveries, %d keys; want 2 (half, pending), 2 (half→k2, pending→k1), 2", msgs, dels, keys)
	}
	if n := pgCount(t, s, `SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname IN ('deliveries_pending', 'messages_dedupe')`); n != 0 {
		t.Fatalf("%d indexes of the previous layout remain", n)
	}
	for key, want := range map[string][]string{"k1": {"pending"}, "k2": {"half"}} {
		p, err := s.PendingFor(ctx, mesh.ID, key, 0, now, 10)
		if err != nil || len(p) != len(want) || p[0].ID != want[0] {
			t.Fatalf("PendingFor(%s) = %+v, %v; want %v", key, p, err, want)
		}
	}
	if n, _ := s.CountPendingDeliveries(ctx, now); n != 2 {
		t.Fatalf("CountPendingDeliveries = %d, want 2", n)
	}
	for cmid, id := range map[string]string{"c-acked": "acked", "c-half": "half"} {
		res, _, err := s.WriteBatch(ctx, []appendOp{{Recipients: []string{"k1"}, Msg: storedMessage{ID: newMessageID(now), MeshID: mesh.ID,
			SenderMemberID: owner.ID, SenderPubkey: "o", SenderMemberPubkey: "o", SenderName: "alice", TargetSpec: "k1",
			Priority: priorityNext, Nonce: "n", Ciphertext: "c", CreatedAt: now, ExpiresAt: now.Add(time.Hour), ClientMessageID: cmid}}}, nil)
		if err != nil || !res[0].Dup || res[0].ID != id {
			t.Fatalf("re-send of %s after the migration = %+v, %v; want a duplicate of %s", cmid, res, err, id)
		}
	}
	// The half-acked message's last ack takes it.
	if n, err := markOne(ctx, s, mesh.ID, "k2", "half", "", now); err != nil || n != 1 {
		t.Fatalf("mark half→k2 = %d, %v", n, err)
	}
	if msgs, dels, _ := pgTableRows(t, s); msgs != 1 || dels != 1 {
		t.Fatalf("after the last ack of half: %d messages, %d deliveries; want 1, 1", msgs, dels)
	}
}
