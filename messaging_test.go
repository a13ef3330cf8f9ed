// End to end: two daemons with separate homes on one real broker, sessions
// registered through IPC, messages sent through POST /v1/send and read from
// /v1/events and /v1/inbox.
package main

import (
	"context"
	"net/url"
	"os"
	"testing"
	"time"
)

// msgFixture is a broker with mesh alpha, whose member "me" runs daemon d1
// and member "bob" daemon d2.
type msgFixture struct {
	broker *Broker
	url    string
	me     Mesh // alpha as seen by d1's member
	bob    Mesh // alpha as seen by d2's member
	h1, h2 testHome
	d1, d2 *testDaemon
}

// msgBrokerOptions lifts the send rate limit so that tests can send freely.
func msgBrokerOptions() BrokerOptions {
	return BrokerOptions{SendBurst: 10_000, SendPerMinute: 1_000_000}
}

func newMsgFixture(t testing.TB, mutate func(*DaemonOptions)) *msgFixture {
	t.Helper()
	return newMsgFixtureWith(t, msgBrokerOptions(), mutate)
}

// newMsgFixtureWith is newMsgFixture on a broker with these options.
func newMsgFixtureWith(t testing.TB, opts BrokerOptions, mutate func(*DaemonOptions)) *msgFixture {
	t.Helper()
	b, url := startTestBrokerWith(t, opts)
	f := &msgFixture{broker: b, url: url}
	f.me = newTestMesh(t, b, url, "alpha", "me")
	f.bob = addTestMember(t, b, f.me, "bob", "member")
	f.h1, f.h2 = newTestHome(t), newTestHome(t)
	f.h1.writeConfig(t, f.me)
	f.h2.writeConfig(t, f.bob)
	f.d1 = startTestDaemon(t, f.h1, mutate)
	f.d2 = startTestDaemon(t, f.h2, mutate)
	f.d1.waitLink(t, "alpha", LinkOpen)
	f.d2.waitLink(t, "alpha", LinkOpen)
	return f
}

// testSession is a session registered with a daemon through IPC.
type testSession struct {
	reg RegisterRequest
	key Keypair
	cl  *DaemonClient
}

func (s testSession) pub() string { return s.key.PublicHex() }

// registerTestSession registers a session with presence and waits for its
// link to open.
func registerTestSession(t testing.TB, td *testDaemon, m Mesh, name string) testSession {
	t.Helper()
	reg, key := registration(t, m, name, os.Getpid())
	if err := td.client("").RegisterSession(context.Background(), reg); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	waitFor(t, name+"'s link open", func() bool {
		s := td.sessions.Resolve(reg.Token)
		return s != nil && td.sessionLinkState(s) == LinkOpen
	})
	return testSession{reg: reg, key: key, cl: td.client(reg.Token)}
}

// ipcSend posts a send and returns the answer, failing on an IPC error.
func ipcSend(t *testing.T, cl *DaemonClient, body map[string]any) SendReply {
	t.Helper()
	var out SendReply
	if err := cl.Do(context.Background(), "POST", "/v1/send", body, &out); err != nil {
		t.Fatalf("send %v: %v", body, err)
	}
	return out
}

// sendAndSettle sends and waits for the broker's answer.
func sendAndSettle(t *testing.T, cl *DaemonClient, to, text string) SendReply {
	t.Helper()
	out := ipcSend(t, cl, map[string]any{"to": to, "message": text, "wait_ms": int(testWait / time.Millisecond)})
	if out.Status != "done" {
		t.Fatalf("send to %s = %+v, want done", shortKey(to), out)
	}
	return out
}

// messageWith picks message events whose body is text.
func messageWith(text string) func(DaemonEvent) bool {
	return func(ev DaemonEvent) bool {
		return ev.Kind == eventMessage && eventData(ev)["body"] == text
	}
}

// ipcPath builds a path with query parameters, skipping empty values.
func ipcPath(path string, kv ...string) string {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			q.Set(kv[i], kv[i+1])
		}
	}
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}

// inboxItems reads a caller's inbox without marking anything seen.
func inboxItems(t *testing.T, cl *DaemonClient, query ...string) []inboxItem {
	t.Helper()
	var out struct {
		Items []inboxItem `json:"items"`
	}
	if err := cl.Do(context.Background(), "GET", ipcPath("/v1/inbox", append([]string{"mark_seen", "false"}, query...)...), nil, &out); err != nil {
		t.Fatalf("inbox: %v", err)
	}
	return out.Items
}

func countBody(items []inboxItem, text string) int {
	n := 0
	for _, it := range items {
		if it.Body != nil && *it.Body == text {
			n++
		}
	}
	return n
}

// A → B and B → A between sessions of two daemons: each DM arrives once on
// the recipient's stream, attributed to the sending session, addressed to
// the receiving session; nothing echoes back to the sender.
func TestSessionDMsBetweenDaemons(t *testing.T) {
	f := newMsgFixture(t, nil)
	a := registerTestSession(t, f.d1, f.me, "alice")
	b := registerTestSession(t, f.d2, f.bob, "bert")
	streamA, streamB := subscribe(t, f.d1, a.reg.Token), subscribe(t, f.d2, b.reg.Token)

	sent := sendAndSettle(t, a.cl, b.pub(), "hello bert")
	ev := eventData(streamB.next(t, "A's DM on B's stream", messageWith("hello bert")))
	if ev["sender_pubkey"] != a.pub() || ev["recipient_kind"] != recipientSession || ev["recipient_pubkey"] != b.pub() ||
		ev["sender_member_pubkey"] != f.me.Pubkey || ev["client_message_id"] != sent.ClientMessageID ||
		ev["broker_message_id"] != deref(sent.BrokerMessageID) {
		t.Fatalf("B got %v", ev)
	}

	// B answers by a 16-hex prefix of A's key: the daemon resolves it.
	sendAndSettle(t, b.cl, a.pub()[:16], "hi alice")
	ev = eventData(streamA.next(t, "B's reply on A's stream", messageWith("hi alice")))
	if ev["sender_pubkey"] != b.pub() || ev["recipient_pubkey"] != a.pub() || ev["recipient_kind"] != recipientSession {
		t.Fatalf("A got %v", ev)
	}

	if n := countBody(inboxItems(t, b.cl), "hello bert"); n != 1 {
		t.Fatalf("B's inbox holds %d copies of A's DM, want 1", n)
	}
	// No self-echo: the sending daemon stored nothing of its own message.
	if n := countBody(inboxItems(t, f.d1.client("")), "hello bert"); n != 0 {
		t.Fatalf("A's daemon stored its own DM %d times", n)
	}
	if n := countBody(inboxItems(t, f.d2.client("")), "hi alice"); n != 0 {
		t.Fatalf("B's daemon stored its own reply %d times", n)
	}
}

// Two sessions of one member on one daemon DM each other: the DM leaves on
// the sender's session link and arrives on the sibling's.
func TestSiblingSessionDMs(t *testing.T) {
	f := newMsgFixture(t, nil)
	a := registerTestSession(t, f.d1, f.me, "alice")
	a2 := registerTestSession(t, f.d1, f.me, "alice-2")
	streamA, streamA2 := subscribe(t, f.d1, a.reg.Token), subscribe(t, f.d1, a2.reg.Token)

	sendAndSettle(t, a.cl, a2.pub(), "to my sibling")
	ev := eventData(streamA2.next(t, "sibling DM", messageWith("to my sibling")))
	if ev["sender_pubkey"] != a.pub() || ev["recipient_pubkey"] != a2.pub() {
		t.Fatalf("sibling got %v", ev)
	}
	sendAndSettle(t, a2.cl, "alice", "and back")
	streamA.next(t, "sibling's answer by name", messageWith("and back"))

	items := inboxItems(t, f.d1.client(""))
	if countBody(items, "to my sibling") != 1 || countBody(items, "and back") != 1 {
		t.Fatalf("daemon inbox = %+v, want one row per DM", items)
	}
}

// A DM to a member key lands on that member's daemon as a member row,
// which every session of that member sees.
func TestDMToMemberKey(t *testing.T) {
	f := newMsgFixture(t, nil)
	a := registerTestSession(t, f.d1, f.me, "alice")
	b := registerTestSession(t, f.d2, f.bob, "bert")
	streamB := subscribe(t, f.d2, b.reg.Token)
	sendAndSettle(t, a.cl, f.bob.Pubkey, "for bob's member")
	ev := eventData(streamB.next(t, "member DM", messageWith("for bob's member")))
	if ev["recipient_kind"] != recipientMember || ev["recipient_pubkey"] != f.bob.Pubkey || ev["sender_pubkey"] != a.pub() {
		t.Fatalf("member DM = %v", ev)
	}
	// Without a session the sender is the member.
	sendAndSettle(t, f.d1.client(""), f.bob.Pubkey, "from the member")
	ev = eventData(streamB.next(t, "member-to-member DM", messageWith("from the member")))
	if ev["sender_pubkey"] != f.me.Pubkey {
		t.Fatalf("member-sent DM attributed to %v", ev["sender_pubkey"])
	}
}

// A session that quits and is launched again under the same name: the
// quit is a deliberate leave, so the broker ends the old presence at once
// (peers are told it left, well inside the grace window), the name means
// the new session, and the banner counts one peer, not a ghost. Stopping
// the daemon is a leave of all its links.
func TestRelaunchUnderTheSameNameWithinTheGrace(t *testing.T) {
	f := newMsgFixture(t, nil)
	zed := registerTestSession(t, f.d1, f.me, "zed")
	bert := registerTestSession(t, f.d2, f.bob, "bert")
	streamB := subscribe(t, f.d2, bert.reg.Token)
	if err := f.d1.client("").DeregisterSession(context.Background(), zed.reg.Token); err != nil {
		t.Fatal(err)
	}
	streamB.next(t, "zed's peer_leave", func(ev DaemonEvent) bool {
		return ev.Kind == eventPeerLeave && eventData(ev)["pubkey"] == zed.pub()
	})
	zed2 := registerTestSession(t, f.d1, f.me, "zed")
	if out := sendAndSettle(t, bert.cl, "zed", "welcome back"); out.Target != zed2.pub() {
		t.Fatalf("send zed went to %s, want the new session %s", shortKey(out.Target), shortKey(zed2.pub()))
	}
	peers, err := daemonMCP{cl: bert.cl}.Peers(context.Background(), "alpha")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(welcomePeers(peers, &mcpSelf{SessionPubkey: bert.pub(), Mesh: "alpha"})); n != 1 {
		t.Fatalf("the banner would count %d peers, want 1: %+v", n, peers)
	}
	// daemon down is a leave too: its member and its session are gone at once.
	f.d1.shutdown(t)
	left := map[any]bool{f.me.Pubkey: false, zed2.pub(): false}
	streamB.next(t, "peer_leave of alice's member and zed after daemon down", func(ev DaemonEvent) bool {
		if k := eventData(ev)["pubkey"]; ev.Kind == eventPeerLeave {
			if _, ours := left[k]; ours {
				left[k] = true
			}
		}
		return left[f.me.Pubkey] && left[zed2.pub()]
	})
}

// A broker that does not honour the leave keeps the old presence for its
// grace window and lists it as live: the daemon that let the session go
// knows it will not come back, so the name still means the new session.
func TestRelaunchOnABrokerThatKeepsTheGhost(t *testing.T) {
	fb, m, td := startFakeBrokerDaemon(t)
	old := registerTestSession(t, td, m, "zed")
	if err := td.client("").DeregisterSession(context.Background(), old.reg.Token); err != nil {
		t.Fatal(err)
	}
	relaunched := registerTestSession(t, td, m, "zed")
	fb.setPeers(
		PeerRow{Pubkey: old.pub(), MemberPubkey: m.Pubkey, DisplayName: "zed", PeerRole: peerRoleSession},
		PeerRow{Pubkey: relaunched.pub(), MemberPubkey: m.Pubkey, DisplayName: "zed", PeerRole: peerRoleSession},
	)
	if out := sendAndSettle(t, td.client(""), "zed", "which zed?"); out.Target != relaunched.pub() {
		t.Fatalf("send zed went to %s, want the relaunched session %s", shortKey(out.Target), shortKey(relaunched.pub()))
	}
}
