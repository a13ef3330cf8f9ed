// The fault test: a broker and three daemons run as processes of the built
// binary, a few thousand mixed messages (DMs to sessions and to member
// keys, broadcasts, a group; sent by sessions and by members) go out while
// a seeded schedule kills the broker and the daemons with SIGKILL and
// restarts them; then every inbox is counted, and any lost, duplicated or
// misdelivered delivery fails the test.
//
//	go test -run Faults -faults .                          # one run, 60 s of faults
//	go test -run Faults -faults -faults.duration 10m -faults.runs 3 -faults.seed 7 .
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var (
	faultsOn       = flag.Bool("faults", false, "run the fault test: processes, a seeded SIGKILL schedule, every inbox counted")
	faultsDuration = flag.Duration("faults.duration", 60*time.Second, "how long the fault schedule runs")
	faultsSeed     = flag.Uint64("faults.seed", 0, "the first run's seed (0: from the clock); run i uses seed+i")
	faultsRuns     = flag.Int("faults.runs", 1, "seeded runs in a row")
)

func TestFaults(t *testing.T) {
	if !*faultsOn {
		t.Skip("the fault test runs only with -faults (it takes -faults.duration plus convergence)")
	}
	seed := *faultsSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	for i := range *faultsRuns {
		s := seed + uint64(i)
		t.Run(fmt.Sprintf("seed=%d", s), func(t *testing.T) { runFaults(t, s, *faultsDuration) })
		if t.Failed() {
			return
		}
	}
}

// brokerProc is `claudemesh broker serve` as a child process.
type brokerProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startBrokerProc runs `broker serve` on addr with data as its data dir
// and home, plus extra flags, and waits until it answers /health. The rate
// limits are lifted: every link reconnects from 127.0.0.1 after each kill,
// and the senders outpace a member's default rate.
func startBrokerProc(t *testing.T, addr, data, logPath string, extra ...string) *brokerProc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := append([]string{"broker", "serve", "--listen", addr, "--data", data,
		"--send-burst", "1000000", "--send-per-minute", "100000000",
		"--handshake-burst", "1000000", "--handshake-per-minute", "100000000"}, extra...)
	cmd := exec.Command(claudemeshBinary(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + data}
	cmd.Stdout, cmd.Stderr = logf, logf
	p := &brokerProc{cmd: cmd, done: startChild(t, cmd, logPath)}
	waitLong(t, "broker "+addr+" to answer", func() bool {
		select {
		case <-p.done:
			log, _ := os.ReadFile(logPath)
			t.Fatalf("broker %s exited during start:\n%s", addr, log)
		default:
		}
		resp, err := http.Get("http://" + addr + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

func (p *brokerProc) kill9(t *testing.T) {
	t.Helper()
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// newProcBrokerMesh prepares a broker data dir in work, on a free
// loopback address, with mesh alpha: alice (the owner), bob, and carol, in
// group dev by her default groups. The broker is not started.
func newProcBrokerMesh(t *testing.T, work string) (addr, data string, alice, bob, carol Mesh) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = l.Addr().String()
	l.Close()
	url := "ws://" + addr + "/ws"
	data = filepath.Join(work, "broker")
	setup, err := newBroker(BrokerOptions{DataDir: data})
	if err != nil {
		t.Fatal(err)
	}
	alice = newTestMesh(t, setup, url, "alpha", "alice")
	bob = addTestMember(t, setup, alice, "bob", roleMember)
	carol = addTestMember(t, setup, alice, "carol", roleMember)
	// A member link declares its member's default groups.
	if _, err := setup.store.(*sqliteBrokerStore).w.Exec(`UPDATE members SET default_groups = ? WHERE pubkey = ?`,
		`[{"name":"dev"}]`, carol.Pubkey); err != nil {
		t.Fatal(err)
	}
	if err := setup.Close(); err != nil {
		t.Fatal(err)
	}
	return addr, data, alice, bob, carol
}

// A broker paused with SIGSTOP for longer than the links' silence watchdog,
// then resumed: the links notice, reconnect once it answers again, and what
// was sent meanwhile arrives once.
func TestBrokerPausedPastWatchdog(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the built binary")
	}
	const silence = 2 * time.Second
	work := shortTempDir(t)
	addr, data, alice, bob, carol := newProcBrokerMesh(t, work)
	broker := startBrokerProc(t, addr, data, filepath.Join(work, "broker.log"))
	watchdog := func(o *DaemonOptions) { o.Link.PingInterval, o.Link.SilenceTimeout = silence/4, silence }
	ha, hb := newTestHome(t), newTestHome(t)
	ha.writeConfig(t, alice)
	hb.writeConfig(t, bob)
	da, db := startTestDaemon(t, ha, watchdog), startTestDaemon(t, hb, watchdog)
	da.waitLink(t, "alpha", LinkOpen)
	db.waitLink(t, "alpha", LinkOpen)
	bert := registerTestSession(t, db, bob, "bert")
	sendAndSettle(t, da.client(""), bert.pub(), "before the pause")

	if err := syscall.Kill(broker.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			syscall.Kill(broker.cmd.Process.Pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	texts := []string{"paused dm", "paused broadcast"}
	for i, to := range []string{bert.pub(), "*"} {
		if err := da.client("").Do(context.Background(), "POST", "/v1/send", SendRequest{To: to, Message: texts[i]}, nil); err != nil {
			t.Fatal(err)
		}
	}
	waitLong(t, "both links to give up on the silent broker", func() bool {
		return da.MemberLink("alpha").State() != LinkOpen && db.MemberLink("alpha").State() != LinkOpen
	})
	resume()
	da.waitLink(t, "alpha", LinkOpen)
	db.waitLink(t, "alpha", LinkOpen)
	waitLong(t, "both messages in bert's inbox", func() bool {
		items := inboxItems(t, bert.cl)
		return countBody(items, texts[0]) == 1 && countBody(items, texts[1]) == 1
	})
	waitLong(t, "the broker to hold nothing undelivered but carol's copy (she never connects)", func() bool {
		return countRows(t, filepath.Join(data, brokerDBFile),
			`SELECT count(*) FROM deliveries WHERE recipient_key != '`+carol.Pubkey+`'`) == 0
	})
	for _, text := range append(texts, "before the pause") {
		if n := countBody(inboxItems(t, bert.cl), text); n != 1 {
			t.Fatalf("%q is in bert's inbox %d times, want once", text, n)
		}
	}
}

// faultEndpoint is one sender or recipient: a session (token set) or a
// member link.
type faultEndpoint struct {
	name   string
	daemon int // index into the daemons
	member int // index into the members
	key    string
	token  string // sessions only
	dev    bool   // declared group dev
}

// faultSend is one message the test sent, by its body.
type faultSend struct {
	from   *faultEndpoint
	target string
	body   string
}

func runFaults(t *testing.T, seed uint64, duration time.Duration) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var rngMu sync.Mutex
	intn := func(n int) int { rngMu.Lock(); defer rngMu.Unlock(); return rng.IntN(n) }
	t.Logf("seed %d, %v of faults", seed, duration)

	work := shortTempDir(t)
	addr, data, alice, bob, carol := newProcBrokerMesh(t, work)
	brokerLog := filepath.Join(work, "broker.log")
	members := []Mesh{alice, bob, carol}
	names := []string{"alice", "bob", "carol"}

	var brokerMu sync.Mutex
	broker := startBrokerProc(t, addr, data, brokerLog)
	homes := make([]testHome, len(members))
	daemons := make([]*daemonProc, len(members))
	var daemonMu sync.Mutex
	for i, m := range members {
		homes[i] = newTestHome(t)
		homes[i].writeConfig(t, m)
		daemons[i] = startDaemonProc(t, homes[i])
	}
	for _, d := range daemons {
		d.waitOpen(t, "alpha")
	}
	daemonAt := func(i int) *daemonProc { daemonMu.Lock(); defer daemonMu.Unlock(); return daemons[i] }

	var endpoints []*faultEndpoint
	for i, m := range members {
		endpoints = append(endpoints, &faultEndpoint{name: names[i], daemon: i, member: i, key: m.Pubkey, dev: i == 2})
		if i == 2 {
			continue
		}
		for j := 1; j <= 2; j++ {
			name := fmt.Sprintf("%s-%d", names[i], j)
			reg, key := registration(t, m, name, os.Getpid())
			if j == 1 {
				reg.Groups = textList{"dev"}
			}
			if err := daemons[i].client("").RegisterSession(context.Background(), reg); err != nil {
				t.Fatalf("register %s: %v", name, err)
			}
			endpoints = append(endpoints, &faultEndpoint{name: name, daemon: i, member: i, key: key.PublicHex(), token: reg.Token, dev: j == 1})
		}
	}
	for _, e := range endpoints {
		if e.token == "" {
			continue
		}
		waitLong(t, e.name+"'s link open", func() bool {
			s, err := daemonAt(e.daemon).client(e.token).SessionMe(context.Background())
			return err == nil && s != nil && s.Link == LinkOpen
		})
	}

	// The schedule: every 1.5–5 s one process is killed with SIGKILL and
	// restarted 0.1–1.1 s later; the victims come in rounds of all four
	// (the broker and each daemon) in a seeded order.
	stopFaults := make(chan struct{})
	var kills [4]atomic.Int64
	var faultsDone sync.WaitGroup
	faultsDone.Add(1)
	go func() {
		defer faultsDone.Done()
		var round []int
		for {
			select {
			case <-stopFaults:
				return
			case <-time.After(time.Duration(1500+intn(3500)) * time.Millisecond):
			}
			if len(round) == 0 {
				rngMu.Lock()
				round = rng.Perm(4)
				rngMu.Unlock()
			}
			victim := round[0]
			round = round[1:]
			kills[victim].Add(1)
			pause := time.Duration(100+intn(1000)) * time.Millisecond
			if victim == 3 {
				brokerMu.Lock()
				broker.kill9(t)
				time.Sleep(pause)
				broker = startBrokerProc(t, addr, data, brokerLog)
				brokerMu.Unlock()
				continue
			}
			daemonAt(victim).kill9(t)
			time.Sleep(pause)
			d := startDaemonProc(t, homes[victim])
			daemonMu.Lock()
			daemons[victim] = d
			daemonMu.Unlock()
		}
	}()

	// The senders: each endpoint sends on its own, to a random target, until
	// the schedule ends. A send is retried with the same client_message_id
	// until its daemon accepts it; the outbox deduplicates the retries.
	targets := []string{"*", "@dev"}
	for _, e := range endpoints {
		targets = append(targets, e.key)
	}
	var sentMu sync.Mutex
	var sent []faultSend
	deadline := time.Now().Add(duration)
	var senders sync.WaitGroup
	for _, e := range endpoints {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for n := 0; time.Now().Before(deadline); n++ {
				target := targets[intn(len(targets))]
				if target == e.key {
					continue
				}
				body := fmt.Sprintf("%s#%d", e.name, n)
				req := SendRequest{To: target, Message: body, ClientMessageID: newUUID()}
				for attempt := 0; ; attempt++ {
					var reply SendReply
					err := daemonAt(e.daemon).client(e.token).Do(context.Background(), "POST", "/v1/send", req, &reply)
					if err == nil {
						break
					}
					if attempt > 600 { // a minute of refusals: the daemon is not coming back
						t.Errorf("%s: send %s never accepted: %v", e.name, body, err)
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
				sentMu.Lock()
				sent = append(sent, faultSend{from: e, target: target, body: body})
				sentMu.Unlock()
				time.Sleep(time.Duration(60+intn(60)) * time.Millisecond)
			}
		}()
	}
	senders.Wait()
	close(stopFaults)
	faultsDone.Wait()
	if t.Failed() {
		return
	}

	// Convergence: every outbox empty of waiting rows, the broker holding
	// nothing undelivered.
	// A long schedule leaves backlogs behind long retry backoffs: allow
	// for them in proportion.
	waitFaults(t, "every outbox sent and every delivery acked", 3*time.Minute+duration/2, func() bool {
		for _, h := range homes {
			if n := countRows(t, filepath.Join(h.Paths.DaemonDir, "outbox.db"), `SELECT count(*) FROM outbox WHERE status IN ('pending', 'inflight')`); n != 0 {
				return false
			}
		}
		return countRows(t, filepath.Join(data, brokerDBFile), `SELECT count(*) FROM deliveries`) == 0
	})

	// Every inbox, counted.
	type copyAt struct {
		daemon int
		key    string
	}
	got := map[string][]copyAt{}
	rows := 0
	for i, h := range homes {
		db := openReadOnly(t, filepath.Join(h.Paths.DaemonDir, "inbox.db"))
		rs, err := db.Query(`SELECT coalesce(body, ''), coalesce(recipient_pubkey, '') FROM inbox WHERE coalesce(subtype, '') != 'system'`)
		if err != nil {
			t.Fatal(err)
		}
		for rs.Next() {
			var body, key string
			if err := rs.Scan(&body, &key); err != nil {
				t.Fatal(err)
			}
			got[body] = append(got[body], copyAt{i, key})
			rows++
		}
		rs.Close()
		db.Close()
	}
	dead := 0
	for _, h := range homes {
		dead += countRows(t, filepath.Join(h.Paths.DaemonDir, "outbox.db"), `SELECT count(*) FROM outbox WHERE status = 'dead'`)
	}
	lost, duplicated, misdelivered, expected := 0, 0, 0, 0
	kinds := map[string]int{}
	for _, s := range sent {
		want := faultRecipients(s, endpoints)
		expected += len(want)
		kinds[faultKind(s.target, endpoints)]++
		copies := got[s.body]
		delete(got, s.body)
		seen := map[copyAt]int{}
		for _, c := range copies {
			seen[c]++
		}
		for _, w := range want {
			c := copyAt{w.daemon, w.key}
			switch n := seen[c]; {
			case n == 0:
				lost++
				t.Logf("lost: %s → %s at %s", s.body, s.target, w.name)
			case n > 1:
				duplicated += n - 1
				t.Logf("duplicated: %s at %s ×%d", s.body, w.name, n)
			}
			delete(seen, c)
		}
		for c, n := range seen {
			misdelivered += n
			t.Logf("misdelivered: %s → %s on daemon %d key %s", s.body, s.target, c.daemon, shortKey(c.key))
		}
	}
	for body, copies := range got {
		misdelivered += len(copies)
		t.Logf("never sent, yet received: %q", body)
	}
	t.Logf("seed %d: %d sends (%d DM to a session, %d DM to a member, %d broadcast, %d group), %d deliveries expected, %d inbox rows; "+
		"kills: broker %d, alice's daemon %d, bob's %d, carol's %d; lost %d, duplicated %d, misdelivered %d, dead outbox rows %d",
		seed, len(sent), kinds["session"], kinds["member"], kinds["broadcast"], kinds["group"], expected, rows,
		kills[3].Load(), kills[0].Load(), kills[1].Load(), kills[2].Load(), lost, duplicated, misdelivered, dead)
	if lost+duplicated+misdelivered+dead > 0 {
		log, _ := os.ReadFile(brokerLog)
		t.Logf("broker log tail:\n%s", tailLines(string(log), 40))
		t.Fatalf("lost %d, duplicated %d, misdelivered %d, dead %d", lost, duplicated, misdelivered, dead)
	}
}

// faultRecipients is where a message must land, by the delivery rule: a
// DM on its key; a multicast on every session it reaches but the sender's,
// and on the link of a member it reaches none of (never the sender's).
func faultRecipients(s faultSend, endpoints []*faultEndpoint) []*faultEndpoint {
	kind := faultKind(s.target, endpoints)
	if kind == "session" || kind == "member" {
		for _, e := range endpoints {
			if e.key == s.target {
				return []*faultEndpoint{e}
			}
		}
		return nil
	}
	var out []*faultEndpoint
	byMember := map[int][]*faultEndpoint{}
	for _, e := range endpoints {
		byMember[e.member] = append(byMember[e.member], e)
	}
	for m := range 3 {
		var sessions []*faultEndpoint
		var link *faultEndpoint
		intended := kind == "broadcast"
		for _, e := range byMember[m] {
			reaches := kind == "broadcast" || e.dev
			intended = intended || reaches
			switch {
			case e.token == "":
				link = e
			case reaches && e.key != s.from.key:
				sessions = append(sessions, e)
			}
		}
		switch {
		case !intended:
		case len(sessions) > 0:
			out = append(out, sessions...)
		case m != s.from.member:
			out = append(out, link)
		}
	}
	return out
}

// faultKind names a send's kind of target.
func faultKind(target string, endpoints []*faultEndpoint) string {
	switch target {
	case "*":
		return "broadcast"
	case "@dev":
		return "group"
	}
	for _, e := range endpoints {
		if e.key == target && e.token == "" {
			return "member"
		}
	}
	return "session"
}

func openReadOnly(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// countRows runs a count query on a database file another process writes.
func countRows(t *testing.T, path, query string) int {
	t.Helper()
	db := openReadOnly(t, path)
	defer db.Close()
	var n int
	if err := db.QueryRow(query).Scan(&n); err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Logf("count %s: %v", filepath.Base(path), err)
		return -1
	}
	return n
}

// waitFaults polls cond every 200 ms until it holds or limit passes.
func waitFaults(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}
