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
// limits…); an empty DataDir gets a temp dir.
func startTestBrokerWith(t testing.TB, opts BrokerOptions) (*Broker, string) {
	t.Helper()
	if opts.DataDir == "" && opts.Store == nil {
		opts.DataDir = t.TempDir()
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

// addMember enrolls a key in a mesh directly, as a join would.
func (b *Broker) addMember(ctx context.Context, meshID, pubkey, displayName, role string) (storedMember, error) {
	m := storedMember{ID: newID(), MeshID: meshID, Pubkey: pubkey, DisplayName: displayName, Role: role, CreatedAt: time.Now()}
	return m, insertMember(ctx, b.store.(*sqliteBrokerStore).w, m)
}
