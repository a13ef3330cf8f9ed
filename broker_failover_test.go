// Failure tests of replicas on PostgreSQL: a replica killed with SIGKILL in
// the middle of a burst while its daemons fail over through brokerUrls, and
// PostgreSQL itself restarted during traffic. Every inbox is counted:
// nothing lost, nothing twice.
package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// startReplicaProc runs `broker serve` on a PostgreSQL store as a child
// process, with the rate limits lifted.
func startReplicaProc(t *testing.T, addr, store, replica, logPath string) *brokerProc {
	t.Helper()
	return startBrokerProc(t, addr, filepath.Join(filepath.Dir(logPath), replica), logPath, "--store", store, "--replica-id", replica)
}

// inboxBodies counts the non-system bodies in a daemon's inbox file.
func inboxBodies(t *testing.T, h testHome) map[string]int {
	t.Helper()
	db := openReadOnly(t, filepath.Join(h.Paths.DaemonDir, "inbox.db"))
	defer db.Close()
	rows, err := db.Query(`SELECT coalesce(body, '') FROM inbox WHERE coalesce(subtype, '') != 'system'`)
	if err != nil {
		return nil
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var body string
		if rows.Scan(&body) == nil {
			out[body]++
		}
	}
	return out
}

// waitWhileMoving polls count until it reaches want, or until it has not
// moved for 6·testWait: on a busy machine a long delivery is slow, not
// stuck, and only a stall says something is lost. count only grows, so the
// wait is bounded by want stalls.
func waitWhileMoving(count func() int, want int) {
	last, since := count(), time.Now()
	for last < want && time.Since(since) < 6*testWait {
		time.Sleep(100 * time.Millisecond)
		if n := count(); n != last {
			last, since = n, time.Now()
		}
	}
}

// aliceAndBert start alice's and bob's daemons, linked to mesh alpha, with
// bob's session bert registered.
func aliceAndBert(t *testing.T, alice, bob Mesh) (ha, hb testHome, da *testDaemon, bert testSession) {
	t.Helper()
	ha, hb = newTestHome(t), newTestHome(t)
	ha.writeConfig(t, alice)
	hb.writeConfig(t, bob)
	da, db := startTestDaemon(t, ha, nil), startTestDaemon(t, hb, nil)
	da.waitLink(t, "alpha", LinkOpen)
	db.waitLink(t, "alpha", LinkOpen)
	return ha, hb, da, registerTestSession(t, db, bob, "bert")
}

// A burst of 2,000 messages between members on two replicas; one replica
// is killed with SIGKILL a quarter of the way in, and its daemon fails over
// to the other through brokerUrls. Every message arrives once.
func TestReplicaKilledDuringBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the built binary")
	}
	const total = 2000
	store := testPostgresSchemaURL(t)
	work := shortTempDir(t)
	addrA, addrB := freeLoopbackAddr(t), freeLoopbackAddr(t)
	urlA, urlB := "ws://"+addrA+"/ws", "ws://"+addrB+"/ws"
	setup, err := newBroker(BrokerOptions{StoreURL: store, ReplicaID: "setup"})
	if err != nil {
		t.Fatal(err)
	}
	alice := newTestMesh(t, setup, urlA, "alpha", "alice")
	bob := addTestMember(t, setup, alice, "bob", roleMember)
	setup.Close()
	alice.BrokerURLs = []string{urlA, urlB}
	bob.BrokerURL, bob.BrokerURLs = urlB, []string{urlB, urlA}

	a := startReplicaProc(t, addrA, store, "ra", filepath.Join(work, "ra.log"))
	startReplicaProc(t, addrB, store, "rb", filepath.Join(work, "rb.log"))
	ha, hb, da, bert := aliceAndBert(t, alice, bob)

	// Four senders on alice's daemon; A dies once a quarter has gone out.
	var sent atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += 4 {
				body := fmt.Sprintf("burst %04d", i)
				if err := da.client("").Do(context.Background(), "POST", "/v1/send", SendRequest{To: bert.pub(), Message: body}, nil); err != nil {
					errs <- fmt.Errorf("queue %s: %w", body, err)
					return
				}
				if sent.Add(1) == total/4 {
					a.kill9(t)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	da.waitLink(t, "alpha", LinkOpen) // on replica B: A is gone
	var got map[string]int
	waitWhileMoving(func() int { got = inboxBodies(t, hb); return len(got) }, total)
	lost, dup := 0, 0
	for i := range total {
		switch n := got[fmt.Sprintf("burst %04d", i)]; {
		case n == 0:
			lost++
		case n > 1:
			dup++
		}
	}
	if lost > 0 || dup > 0 || len(got) != total {
		outbox := countRows(t, filepath.Join(ha.Paths.DaemonDir, "outbox.db"), `SELECT count(*) FROM outbox WHERE status IN ('pending', 'inflight')`)
		probe, err := newBroker(BrokerOptions{StoreURL: store, ReplicaID: "probe"})
		pending := -1
		if err == nil {
			pending = len(storeStrings(t, probe, `SELECT message_id FROM deliveries WHERE recipient_key = ?`, bert.pub()))
			probe.Close()
		}
		t.Fatalf("bert's inbox after the kill: %d lost, %d duplicated, %d distinct bodies (want %d, each once); "+
			"alice's outbox still holds %d, the store %d undelivered for bert", lost, dup, len(got), total, outbox, pending)
	}
	if n := countRows(t, filepath.Join(ha.Paths.DaemonDir, "outbox.db"), `SELECT count(*) FROM outbox WHERE status IN ('pending', 'inflight', 'dead')`); n != 0 {
		t.Fatalf("alice's outbox holds %d undelivered rows", n)
	}
}

// PostgreSQL restarted under traffic: a send while it is down gets a
// retryable error, the replica reconnects by itself, and the daemons'
// outboxes deliver everything once.
func TestPostgresRestartDuringTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a PostgreSQL server")
	}
	const total = 300
	cluster := startTestPGCluster(t)
	b, url := startTestBrokerWith(t, BrokerOptions{StoreURL: cluster.URL(), HeartbeatInterval: 200 * time.Millisecond,
		SendBurst: 1 << 20, SendPerMinute: 1 << 30})
	alice := newTestMesh(t, b, url, "alpha", "alice")
	bob := addTestMember(t, b, alice, "bob", roleMember)
	_, hb, da, bert := aliceAndBert(t, alice, bob)
	raw := connectMember(t, url, alice)

	send := func(i int) {
		body := fmt.Sprintf("traffic %03d", i)
		if err := da.client("").Do(context.Background(), "POST", "/v1/send", SendRequest{To: bert.pub(), Message: body}, nil); err != nil {
			t.Fatalf("queue %s: %v", body, err)
		}
	}
	for i := range total / 3 {
		send(i)
	}
	if err := cluster.StopServer(); err != nil {
		t.Fatal(err)
	}
	// While the database is down a send is refused with a retryable
	// error, never acked as stored.
	if ack := raw.sendText("*", "while down", "c-down"); ack["queued"] == true || !strings.HasPrefix(ack.str("error"), codeInternal) {
		t.Fatalf("send with PostgreSQL down: ack %v, want an %s error", ack, codeInternal)
	}
	for i := total / 3; i < 2*total/3; i++ {
		send(i)
	}
	if err := cluster.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 2 * total / 3; i < total; i++ {
		send(i)
	}
	// The same send again, now that the database is back, is stored.
	waitLong(t, "the retried send to be stored", func() bool {
		return raw.sendText("*", "while down", "c-down")["queued"] == true
	})
	var got map[string]int
	waitLong(t, "every message in bob's daemon's inbox", func() bool {
		got = inboxBodies(t, hb)
		return len(got) >= total+1
	})
	if n := got["while down"]; n != 1 {
		t.Fatalf("the send refused while down and retried is in bob's inbox %d times, want once", n)
	}
	for i := range total {
		if n := got[fmt.Sprintf("traffic %03d", i)]; n != 1 {
			t.Fatalf("traffic %03d is in bert's inbox %d times, want once", i, n)
		}
	}
	if len(got) != total+1 {
		t.Fatalf("bob's daemon's inbox has %d distinct bodies, want %d", len(got), total+1)
	}
}
