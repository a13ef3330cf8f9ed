// Test helpers for anything that needs a real broker: other tests in the
// package (the daemon's too) may use them. Their signatures are stable.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// startTestBroker starts a broker with the production defaults on
// 127.0.0.1:0 with a temp data dir and returns it with its ws:// URL. It is
// closed when the test ends.
func startTestBroker(t testing.TB) (*Broker, string) {
	t.Helper()
	return startTestBrokerWith(t, BrokerOptions{})
}

// startTestBrokerWith is startTestBroker with options (short leases, low
// limits…); without a store of its own it gets a new one of the test's
// store (forEachStore).
func startTestBrokerWith(t testing.TB, opts BrokerOptions) (*Broker, string) {
	t.Helper()
	if opts.DataDir == "" && opts.Store == nil && opts.StoreURL == "" {
		testStoreOf(t).place(t, &opts)
	}
	b, err := newBroker(opts)
	if err != nil {
		t.Fatalf("newBroker: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Close()
		t.Fatalf("listen: %v", err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := b.Serve(l); err != nil {
			t.Errorf("broker serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		b.Close()
		<-served
	})
	return b, "ws://" + l.Addr().String() + "/ws"
}

// testStore is one store the broker tests run against: place points a
// broker's options at a new, empty store of its kind.
type testStore struct {
	name  string
	place func(t testing.TB, opts *BrokerOptions)
}

// testStores is every store the broker suite runs against.
var testStores = []testStore{
	{"sqlite", func(t testing.TB, opts *BrokerOptions) { opts.DataDir = t.TempDir() }},
	{"postgres", func(t testing.TB, opts *BrokerOptions) { opts.StoreURL = testPostgresSchemaURL(t) }},
}

// testStoreByName holds the store of each subtest forEachStore runs.
var testStoreByName sync.Map // test name → testStore

// forEachStore runs body once per store, as subtests named after them; the
// brokers body starts (startTestBrokerWith, newTestStore) use that store.
func forEachStore(t *testing.T, body func(t *testing.T)) {
	t.Helper()
	for _, s := range testStores {
		t.Run(s.name, func(t *testing.T) {
			testStoreByName.Store(t.Name(), s)
			t.Cleanup(func() { testStoreByName.Delete(t.Name()) })
			body(t)
		})
	}
}

// testStoreOf is the store of the forEachStore subtest t is in (or under);
// SQLite elsewhere.
func testStoreOf(t testing.TB) testStore {
	for name := t.Name(); ; {
		if s, ok := testStoreByName.Load(name); ok {
			return s.(testStore)
		}
		i := strings.LastIndex(name, "/")
		if i < 0 {
			return testStores[0]
		}
		name = name[:i]
	}
}

// newTestStore is a new empty store of the test's kind, as broker options:
// start several brokers with it to restart a broker on its store.
func newTestStore(t testing.TB) BrokerOptions {
	var opts BrokerOptions
	testStoreOf(t).place(t, &opts)
	return opts
}

// newTestMesh creates a mesh directly in the broker's store, owned by a new
// key that is its first member (admin), and returns that member's config
// entry, ready for config.json.
func newTestMesh(t testing.TB, b *Broker, wsURL, slug, ownerName string) Mesh {
	t.Helper()
	kp := mustNewKeypair()
	mesh, member, err := b.createMesh(context.Background(), slug, slug, kp.PublicHex(), ownerName)
	if err != nil {
		t.Fatalf("create mesh %s: %v", slug, err)
	}
	return Mesh{MeshID: mesh.ID, MemberID: member.ID, Slug: slug, Name: slug, Pubkey: kp.PublicHex(),
		SecretKey: kp.SecretHex(), BrokerURL: wsURL, JoinedAt: isoTime(time.Now()), RootKey: mesh.RootKey, InviteVersion: 1}
}

// addTestMember enrolls a new key in the mesh of m (role "member" or
// "admin") and returns its config entry.
func addTestMember(t testing.TB, b *Broker, m Mesh, displayName, role string) Mesh {
	t.Helper()
	kp := mustNewKeypair()
	member, err := b.addMember(context.Background(), m.MeshID, kp.PublicHex(), displayName, role)
	if err != nil {
		t.Fatalf("add member %s: %v", displayName, err)
	}
	out := m
	out.MemberID, out.Pubkey, out.SecretKey, out.JoinedAt = member.ID, kp.PublicHex(), kp.SecretHex(), isoTime(time.Now())
	out.RootKey = ""
	return out
}

// newAliceBobMesh is a broker (with opts) holding mesh "team", owned by
// alice, with member bob, and alice's member connection to it.
func newAliceBobMesh(t testing.TB, opts BrokerOptions) (b *Broker, url string, alice, bob Mesh, a *testClient) {
	t.Helper()
	b, url = startTestBrokerWith(t, opts)
	alice = newTestMesh(t, b, url, "team", "alice")
	bob = addTestMember(t, b, alice, "bob", roleMember)
	return b, url, alice, bob, connectMember(t, url, alice)
}

// testWait bounds every wait on a condition in broker tests.
const testWait = 10 * time.Second

// testClient is a bare protocol client over a real WebSocket.
type testClient struct {
	t       testing.TB
	ws      *websocket.Conn
	frames  chan []byte
	done    chan struct{}
	err     error   // why the read loop ended; valid after done
	backlog []frame // frames skipped by expect or roundTrip, oldest first
}

// dialTestClient opens a socket to the broker; it is closed at test end.
func dialTestClient(t testing.TB, wsURL string) *testClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", wsURL, err)
	}
	ws.SetReadLimit(1 << 22)
	tc := &testClient{t: t, ws: ws, frames: make(chan []byte, 4096), done: make(chan struct{})}
	go func() {
		defer close(tc.done)
		for {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				tc.err = err
				return
			}
			tc.frames <- data
		}
	}()
	t.Cleanup(func() { ws.CloseNow() })
	return tc
}

// sendJSON writes one frame.
func (tc *testClient) sendJSON(v any) {
	tc.t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		tc.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	if err := tc.ws.Write(ctx, websocket.MessageText, data); err != nil {
		tc.t.Fatalf("write frame: %v", err)
	}
}

// frame is a received frame, decoded loosely.
type frame map[string]any

func (f frame) str(k string) string { s, _ := f[k].(string); return s }

// expect returns the first frame of type typ for which match (if non-nil)
// holds. Frames it passes over are kept, in order, for later calls.
func (tc *testClient) expect(typ string, match func(frame) bool) frame {
	tc.t.Helper()
	return tc.await(typ, func(f frame) bool { return f.str("type") == typ && (match == nil || match(f)) })
}

// await returns the first frame, from the backlog or the socket, that match
// accepts; what is passed over goes to the backlog.
func (tc *testClient) await(what string, match func(frame) bool) frame {
	tc.t.Helper()
	for i, f := range tc.backlog {
		if match(f) {
			tc.backlog = append(tc.backlog[:i:i], tc.backlog[i+1:]...)
			return f
		}
	}
	deadline := time.After(testWait)
	for {
		select {
		case data := <-tc.frames:
			var f frame
			if err := json.Unmarshal(data, &f); err != nil {
				tc.t.Fatalf("frame is not JSON: %s", data)
			}
			if match(f) {
				return f
			}
			tc.backlog = append(tc.backlog, f)
		case <-tc.done:
			if len(tc.frames) > 0 {
				continue
			}
			tc.t.Fatalf("socket ended while waiting for %s: %v", what, tc.err)
		case <-deadline:
			tc.t.Fatalf("no %s within %v", what, testWait)
		}
	}
}

// expectClose waits for the broker to close the socket and returns the
// close code and reason, skipping frames.
func (tc *testClient) expectClose() (websocket.StatusCode, string) {
	tc.t.Helper()
	select {
	case <-tc.done:
	case <-time.After(testWait):
		tc.t.Fatalf("socket still open after %v", testWait)
	}
	var ce websocket.CloseError
	if errors.As(tc.err, &ce) {
		return ce.Code, ce.Reason
	}
	return -1, tc.err.Error()
}

// hello authenticates as the member of m (optionally with a cold-path
// session key) and returns the hello_ack.
func (tc *testClient) hello(m Mesh, sessionID string) frame {
	tc.t.Helper()
	tc.sendJSON(signedHello(tc.t, m, sessionID, "", time.Now()))
	return tc.expect(frameHelloAck, nil)
}

// testHandshakeMs is at in ms, moved on by a millisecond when the same key
// already signed a handshake for that millisecond in this test binary: the
// broker refuses a repeat as a replay, and ed25519 signatures are
// deterministic. Unlike handshakeTimestamp it keeps a deliberately old or
// future `at` where it is (the skew tests need that).
func testHandshakeMs(pubkey string, at time.Time) int64 {
	testHandshakeMu.Lock()
	defer testHandshakeMu.Unlock()
	ts := at.UnixMilli()
	for testHandshakeUsed[pubkey+"|"+strconv.FormatInt(ts, 10)] {
		ts++
	}
	testHandshakeUsed[pubkey+"|"+strconv.FormatInt(ts, 10)] = true
	return ts
}

var (
	testHandshakeMu   sync.Mutex
	testHandshakeUsed = map[string]bool{}
)

// signedHello builds a member hello frame.
func signedHello(t testing.TB, m Mesh, sessionID, sessionPubkey string, at time.Time) HelloFrame {
	t.Helper()
	kp, err := m.Keypair()
	if err != nil {
		t.Fatal(err)
	}
	ts := testHandshakeMs(m.Pubkey, at)
	channel := channelDaemon
	if sessionPubkey != "" {
		channel = channelCLI
	}
	return HelloFrame{Type: frameHello, MeshID: m.MeshID, MemberID: m.MemberID, Pubkey: m.Pubkey, SessionPubkey: sessionPubkey,
		SessionID: sessionID, Pid: 4242, Cwd: "/tmp", PeerType: "ai", Channel: channel, Timestamp: ts,
		Signature: kp.sign(helloSignedString(m.MeshID, m.MemberID, m.Pubkey, ts))}
}

// signedSessionHello builds a session_hello vouched for by m's member key.
func signedSessionHello(t testing.TB, m Mesh, session Keypair, sessionID, displayName string, at time.Time) SessionHelloFrame {
	t.Helper()
	member, err := m.Keypair()
	if err != nil {
		t.Fatal(err)
	}
	ts := testHandshakeMs(session.PublicHex(), at)
	att := signAttestation(member, session.PublicHex(), at.Add(12*time.Hour).UnixMilli())
	return SessionHelloFrame{Type: frameSessionHello, MeshID: m.MeshID, ParentMemberID: m.MemberID, ParentMemberPubkey: m.Pubkey,
		SessionPubkey: session.PublicHex(), ParentAttestation: &att, DisplayName: displayName, SessionID: sessionID, Pid: 4343,
		Cwd: "/tmp/s", PeerType: "ai", Channel: channelSession, Timestamp: ts,
		Signature: session.sign(sessionHelloSignedString(m.MeshID, m.Pubkey, session.PublicHex(), ts))}
}

// sessionHello authenticates as a session of m's member and returns the ack.
func (tc *testClient) sessionHello(m Mesh, session Keypair, sessionID, displayName string) frame {
	tc.t.Helper()
	tc.sendJSON(signedSessionHello(tc.t, m, session, sessionID, displayName, time.Now()))
	return tc.expect(frameHelloAck, nil)
}

// connectMember dials and says hello as m's member.
func connectMember(t testing.TB, wsURL string, m Mesh) *testClient {
	t.Helper()
	tc := dialTestClient(t, wsURL)
	tc.hello(m, "daemon-"+m.MemberID[:6])
	return tc
}

// connectSession dials and says session_hello for a session of m's member.
func connectSession(t testing.TB, wsURL string, m Mesh, session Keypair, name string) *testClient {
	t.Helper()
	tc := dialTestClient(t, wsURL)
	tc.sessionHello(m, session, "sess-"+session.PublicHex()[:8], name)
	return tc
}

// connectSessionIn is connectSession for a session that says, in its hello,
// that it is in these groups; it returns the session's key.
func connectSessionIn(t testing.TB, wsURL string, m Mesh, name string, groups ...GroupRef) (*testClient, string) {
	t.Helper()
	tc := dialTestClient(t, wsURL)
	h := signedSessionHello(t, m, mustNewKeypair(), "sess-"+name, name, time.Now())
	h.Groups = groups
	tc.sendJSON(h)
	tc.expect(frameHelloAck, nil)
	return tc, h.SessionPubkey
}

// sendText sends a plain-body message to target and returns the ack.
func (tc *testClient) sendText(target, text, clientMessageID string) frame {
	tc.t.Helper()
	nonce, ct := plainBody([]byte(text))
	id := clientMessageID
	if id == "" {
		id = newUUID()
	}
	tc.sendJSON(SendFrame{Type: frameSend, ID: id, ClientMessageID: clientMessageID, TargetSpec: target,
		Priority: priorityNext, Nonce: nonce, Ciphertext: ct})
	return tc.expect(frameAck, func(f frame) bool { return f.str("id") == id })
}

// pushText decodes a plain-body push.
func pushText(f frame) string {
	raw, _ := unb64(f.str("ciphertext"))
	return string(raw)
}

// expectPush waits for a non-system push whose body is text.
func (tc *testClient) expectPush(text string) frame {
	tc.t.Helper()
	return tc.expect(framePush, func(f frame) bool { return f.str("subtype") != subtypeSystem && pushText(f) == text })
}

// ackPush sends client_ack for a push.
func (tc *testClient) ackPush(f frame) {
	tc.t.Helper()
	tc.sendJSON(ClientAckFrame{Type: frameClientAck, ClientMessageID: f.str("client_message_id"), BrokerMessageID: f.str("messageId")})
}

// roundTrip sends a request with a fresh _reqId and returns the reply that
// echoes it.
func (tc *testClient) roundTrip(req map[string]any) frame {
	tc.t.Helper()
	id := "rq-" + newUUID()[:8]
	req["_reqId"] = id
	tc.sendJSON(req)
	return tc.await(fmt.Sprintf("reply to %v", req["type"]), func(f frame) bool { return f.str("_reqId") == id })
}

// waitFor polls cond until it holds, failing after testWait.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// findPeer is the mesh's presence that match picks (nil when none does).
func findPeer(b *Broker, meshID string, match func(*peer) bool) *peer {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.rooms[meshID].peers {
		if match(p) {
			return p
		}
	}
	return nil
}

// waitOffline waits until presence p has lost its socket (it is in grace).
func waitOffline(t testing.TB, b *Broker, p *peer) {
	t.Helper()
	waitFor(t, p.displayName+" offline", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return p.conn == nil
	})
}

// peersOf lists the peers' display names as the client sees them.
func peersOf(tc *testClient) []string {
	tc.t.Helper()
	f := tc.roundTrip(map[string]any{"type": frameListPeers})
	var names []string
	for _, p := range f["peers"].([]any) {
		names = append(names, p.(map[string]any)["displayName"].(string))
	}
	return names
}

// liveCount counts the mesh's connections with a socket. Caller holds b.mu.
func (r *meshRoom) liveCount() int {
	n := 0
	for _, p := range r.peers {
		if p.conn != nil {
			n++
		}
	}
	return n
}

// addMember enrolls a key in a mesh directly, as a join would: through a
// one-use invite of the role, in any store.
func (b *Broker) addMember(ctx context.Context, meshID, pubkey, displayName, role string) (storedMember, error) {
	now := time.Now()
	inv := storedInvite{ID: newInviteID(), Token: newID(), MeshID: meshID, Role: role, MaxUses: 1, ExpiresAt: now.Add(time.Hour), CreatedAt: now}
	if err := b.store.CreateInvite(ctx, inv); err != nil {
		return storedMember{}, err
	}
	m := storedMember{ID: newID(), MeshID: meshID, Pubkey: pubkey, DisplayName: displayName, Role: role, CreatedAt: now}
	_, err := b.store.RedeemInvite(ctx, redeemRequest{Token: inv.Token, MeshID: meshID, Pubkey: pubkey, DisplayName: displayName,
		Now: now, NewMemberID: m.ID})
	return m, err
}

// storeExec runs one statement, written with ? placeholders, on the
// broker's own store, whichever it is: for tests that set up a row the
// broker's verbs cannot make.
func storeExec(t testing.TB, b *Broker, query string, args ...any) {
	t.Helper()
	var err error
	switch s := unwrapStore(b.store).(type) {
	case *sqliteBrokerStore:
		_, err = s.w.Exec(query, args...)
	case *postgresBrokerStore:
		_, err = s.pool.Exec(context.Background(), dollarPlaceholders(query), args...)
	default:
		t.Fatalf("storeExec: unknown store %T", b.store)
	}
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// storeStrings runs a query returning one text column on the broker's store.
func storeStrings(t testing.TB, b *Broker, query string, args ...any) []string {
	t.Helper()
	scan := func(r rowScanner) (string, error) {
		var v string
		return v, r.Scan(&v)
	}
	var out []string
	var err error
	switch s := unwrapStore(b.store).(type) {
	case *sqliteBrokerStore:
		rows, qerr := s.r.Query(query, args...)
		out, err = collect(rows, qerr, scan)
	case *postgresBrokerStore:
		rows, qerr := s.pool.Query(context.Background(), dollarPlaceholders(query), args...)
		out, err = pgCollect(rows, qerr, scan)
	default:
		t.Fatalf("storeStrings: unknown store %T", b.store)
	}
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return out
}

// dollarPlaceholders numbers a query's ? placeholders as PostgreSQL's $n.
func dollarPlaceholders(q string) string {
	var sb strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			sb.WriteString("$" + strconv.Itoa(n))
			continue
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// breakStore makes the broker's store fail every later call.
func breakStore(b *Broker) {
	switch s := b.store.(type) {
	case *sqliteBrokerStore:
		s.r.Close()
	case *postgresBrokerStore:
		s.pool.Close()
	}
}

// openTestStore opens a new empty store of the test's kind (forEachStore),
// closed when the test ends.
func openTestStore(t testing.TB) brokerStore {
	t.Helper()
	opts := newTestStore(t)
	var s brokerStore
	var err error
	if opts.StoreURL != "" {
		s, err = openPostgresBrokerStore(context.Background(), opts.StoreURL, "replica-"+newID()[:8])
	} else {
		s, err = openSQLiteBrokerStore(opts.DataDir)
	}
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// appendOne is one append in a batch of its own.
func appendOne(ctx context.Context, s brokerStore, msg storedMessage, recipients []string) (string, bool, error) {
	res, _, err := s.WriteBatch(ctx, []appendOp{{Msg: msg, Recipients: recipients}}, nil)
	if err != nil {
		return "", false, err
	}
	return res[0].ID, res[0].Dup, res[0].Err
}

// markOne is one delivery mark in a batch of its own.
func markOne(ctx context.Context, s brokerStore, meshID, key, messageID, clientMessageID string, now time.Time) (int, error) {
	_, n, err := s.WriteBatch(ctx, nil, []deliveryMark{{MeshID: meshID, Key: key, MessageID: messageID, ClientMessageID: clientMessageID, At: now}})
	return n, err
}

// unwrapStore is the store under a test's wrapper around it.
func unwrapStore(s brokerStore) brokerStore {
	if r, ok := s.(*routeRecorder); ok {
		return r.brokerStore
	}
	return s
}
