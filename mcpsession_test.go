// Tests of the MCP server wired to a daemon: delivery after a claim, claims
// given back after a failed emit, the welcome, reconnects and catch-up.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeDaemon is an in-memory daemon: the test hands it event streams one at
// a time and sees every claim. A row is claimed once; the catch-up claim
// takes the unclaimed rows of its inbox, oldest first.
type fakeDaemon struct {
	fakeMCPBackend
	streams chan func() (io.ReadCloser, error)
	opened  chan struct{}

	self    mcpSelf
	selfOK  bool
	selfErr error

	claimMu  sync.Mutex
	claimed  map[string]bool // rows taken, by this server or (set by a test) another path
	claims   [][]string      // what each claim took
	claimCh  chan []string   // what each claim that took something took
	released [][]string
	reports  []MCPReport
	// welcomedVia is the path that took the welcome ("hooks": set by a
	// test, the session-start hook came first); welcomeErr fails claims.
	welcomedVia string
	welcomeErr  error
}

func newFakeDaemon() *fakeDaemon {
	return &fakeDaemon{
		streams: make(chan func() (io.ReadCloser, error)),
		opened:  make(chan struct{}, 16),
		claimed: map[string]bool{},
		claimCh: make(chan []string, 16),
	}
}

func (d *fakeDaemon) Events(ctx context.Context) (io.ReadCloser, error) {
	d.opened <- struct{}{}
	select {
	case next := <-d.streams:
		return next()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (d *fakeDaemon) Me(ctx context.Context) (mcpSelf, bool, error) {
	return d.self, d.selfOK, d.selfErr
}

func (d *fakeDaemon) Surface(ctx context.Context, ids []string, limit int) ([]inboxItem, error) {
	d.mu.Lock()
	inbox := append([]inboxItem{}, d.inbox...)
	d.mu.Unlock()
	d.claimMu.Lock()
	defer d.claimMu.Unlock()
	var out []inboxItem
	var took []string
	if ids != nil {
		for _, id := range ids {
			if !d.claimed[id] {
				d.claimed[id] = true
				out, took = append(out, inboxItem{ID: id}), append(took, id)
			}
		}
	} else {
		for i := len(inbox) - 1; i >= 0 && len(out) < limit; i-- { // the inbox is newest first
			if r := inbox[i]; !d.claimed[r.ID] {
				d.claimed[r.ID] = true
				out, took = append(out, r), append(took, r.ID)
			}
		}
	}
	d.claims = append(d.claims, took)
	if len(took) > 0 {
		d.claimCh <- took
	}
	return out, nil
}

func (d *fakeDaemon) ClaimWelcome(ctx context.Context, release bool) (WelcomeClaimReply, error) {
	d.claimMu.Lock()
	defer d.claimMu.Unlock()
	switch {
	case d.welcomeErr != nil:
		return WelcomeClaimReply{}, d.welcomeErr
	case release:
		if d.welcomedVia == surfacedViaChannel {
			d.welcomedVia = ""
		}
		return WelcomeClaimReply{}, nil
	case d.welcomedVia != "":
		return WelcomeClaimReply{Via: d.welcomedVia}, nil
	}
	d.welcomedVia = surfacedViaChannel
	return WelcomeClaimReply{Claimed: true, Via: surfacedViaChannel}, nil
}

func (d *fakeDaemon) ReportMCP(ctx context.Context, r MCPReport) error {
	d.claimMu.Lock()
	defer d.claimMu.Unlock()
	d.reports = append(d.reports, r)
	return nil
}

func (d *fakeDaemon) Unsurface(ctx context.Context, ids []string) error {
	d.claimMu.Lock()
	defer d.claimMu.Unlock()
	for _, id := range ids {
		delete(d.claimed, id)
	}
	d.released = append(d.released, ids)
	return nil
}

// claimsTaken is every id a claim took so far, in order.
func (d *fakeDaemon) claimsTaken() []string {
	d.claimMu.Lock()
	defer d.claimMu.Unlock()
	var out []string
	for _, c := range d.claims {
		out = append(out, c...)
	}
	return out
}

func (d *fakeDaemon) releasedIDs() [][]string {
	d.claimMu.Lock()
	defer d.claimMu.Unlock()
	return append([][]string{}, d.released...)
}

// stream hands the daemon a new event stream and returns its writing end.
func (d *fakeDaemon) stream() *io.PipeWriter {
	pr, pw := io.Pipe()
	d.streams <- func() (io.ReadCloser, error) { return pr, nil }
	return pw
}

// mcpHangGuard bounds waits so that a broken pump fails the test instead of
// hanging it; it is far above any real wait.
const mcpHangGuard = time.Minute

func mcpRecv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(mcpHangGuard):
		t.Fatalf("no %s", what)
		panic("unreachable")
	}
}

// sessionHarness runs an MCPSession over pipes.
type sessionHarness struct {
	t      *testing.T
	d      *fakeDaemon
	sess   *MCPSession
	stdin  *io.PipeWriter
	lines  chan rpcOut
	done   chan error
	cancel context.CancelFunc
}

func startMCPSession(t *testing.T, d *fakeDaemon, out io.Writer, welcomeDelay time.Duration) *sessionHarness {
	t.Helper()
	inR, inW := io.Pipe()
	h := &sessionHarness{t: t, d: d, stdin: inW, lines: make(chan rpcOut, 64), done: make(chan error, 1)}
	if out == nil {
		outR, outW := io.Pipe()
		out = outW
		go func() {
			sc := bufio.NewScanner(outR)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var m rpcOut
				if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
					t.Errorf("output %q is not JSON: %v", sc.Text(), err)
				}
				h.lines <- m
			}
		}()
		t.Cleanup(func() { outW.Close() })
	}
	h.sess = NewMCPSession(d, mcpConfig{Version: version}, out, mcpSessionOptions{WelcomeDelay: welcomeDelay})
	h.sess.reconnectAfterEnd, h.sess.reconnectAfterError = 0, 0
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.sess.Run(ctx, inR) }()
	t.Cleanup(func() {
		cancel()
		inW.Close()
		<-h.done
	})
	return h
}

func (h *sessionHarness) send(line string) {
	h.t.Helper()
	if _, err := io.WriteString(h.stdin, line+"\n"); err != nil {
		h.t.Fatal(err)
	}
}

func (h *sessionHarness) next() rpcOut {
	h.t.Helper()
	return mcpRecv(h.t, h.lines, "message from the server")
}

// handshake initializes the server the way Claude Code does.
func (h *sessionHarness) handshake() {
	h.t.Helper()
	h.send(rpcReq(1, "initialize", mcpInitParams("2025-06-18")))
	if m := h.next(); string(m.ID) != "1" || m.Error != nil {
		h.t.Fatalf("initialize = %+v", m)
	}
	h.send(rpcNote("notifications/initialized", nil))
}

func channelParams(t *testing.T, m rpcOut) channelNotification {
	t.Helper()
	if m.Method != channelMethod {
		t.Fatalf("message = %+v, want %s", m, channelMethod)
	}
	var raw struct {
		Content string         `json:"content"`
		Meta    map[string]any `json:"meta"`
	}
	if err := json.Unmarshal(m.Params, &raw); err != nil {
		t.Fatal(err)
	}
	n := channelNotification{Content: raw.Content, Meta: map[string]string{}}
	for k, v := range raw.Meta {
		s, ok := v.(string)
		if !ok {
			t.Errorf("meta %s = %v (%T) on the wire, want a string", k, v, v)
		}
		if !channelMetaKey.MatchString(k) {
			t.Errorf("meta key %q on the wire", k)
		}
		n.Meta[k] = s
	}
	return n
}

func messageSSE(id int, rowID, body string) string {
	data := fmt.Sprintf(`{"ts":"2026-05-04T10:00:00Z","id":%q,"mesh":"team","client_message_id":"c-%s","broker_message_id":"b-%s",`+
		`"sender_pubkey":"5e55","sender_member_pubkey":"3e3b","sender_name":"bob","topic":null,"reply_to_id":null,"priority":"next",`+
		`"body":%q,"created_at":"2026-05-04T10:00:00Z","recipient_pubkey":"a11ce","recipient_kind":"session"}`, rowID, rowID, rowID, body)
	return fmt.Sprintf("id: %d\nevent: message\ndata: %s\n\n", id, data)
}

const noWelcome = time.Hour // the welcome never fires within the test

func TestMCPSessionClaimsThenDelivers(t *testing.T) {
	d := newFakeDaemon()
	h := startMCPSession(t, d, nil, noWelcome)
	h.handshake()
	events := d.stream()
	io.WriteString(events, ": connected\n\n")
	io.WriteString(events, messageSSE(1, "r1", "is staging up?"))
	n := channelParams(t, h.next())
	if n.Content != "bob: is staging up?" || n.Meta["message_id"] != "b-r1" || n.Meta["from_name"] != "bob" || n.Meta["mesh_slug"] != "team" {
		t.Errorf("notification = %+v", n)
	}
	if got := d.claimsTaken(); !reflect.DeepEqual(got, []string{"r1"}) {
		t.Errorf("claimed %q before the emit, want [r1]", got)
	}
}

// A row another path (a hook, `claudemesh inbox`) showed first is not
// emitted again.
func TestMCPSessionSkipsRowsShownElsewhere(t *testing.T) {
	d := newFakeDaemon()
	d.claimed["r1"] = true
	h := startMCPSession(t, d, nil, noWelcome)
	h.handshake()
	events := d.stream()
	io.WriteString(events, messageSSE(1, "r1", "shown by a hook already"))
	io.WriteString(events, messageSSE(2, "r2", "new"))
	if n := channelParams(t, h.next()); n.Content != "bob: new" {
		t.Errorf("first notification = %+v, want only the row nobody had shown", n)
	}
}

func TestMCPSessionHoldsEventsUntilInitialized(t *testing.T) {
	d := newFakeDaemon()
	h := startMCPSession(t, d, nil, noWelcome)
	events := d.stream()
	// The write returns once the pump has read the event.
	io.WriteString(events, messageSSE(1, "r1", "early"))
	h.send(rpcReq(1, "initialize", mcpInitParams("2025-06-18")))
	if m := h.next(); string(m.ID) != "1" {
		t.Fatalf("first message = %+v, want the initialize response: the event went out before initialized", m)
	}
	if got := d.claimsTaken(); len(got) != 0 {
		t.Fatalf("claimed %q before initialized", got)
	}
	h.send(rpcNote("notifications/initialized", nil))
	if n := channelParams(t, h.next()); n.Content != "bob: early" {
		t.Errorf("held notification = %+v", n)
	}
}

// goneClient is a client that went away.
type goneClient struct{}

func (goneClient) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestMCPSessionFailedEmitGivesTheClaimBack(t *testing.T) {
	d := newFakeDaemon()
	h := startMCPSession(t, d, goneClient{}, noWelcome)
	h.send(rpcReq(1, "initialize", mcpInitParams("2025-06-18")))
	h.send(rpcNote("notifications/initialized", nil))
	<-h.sess.Server.Initialized()
	events := d.stream()
	io.WriteString(events, messageSSE(1, "r1", "lost"))
	// The pump reads the second event only after it has finished with the
	// first, so when this write returns the first emit has failed.
	io.WriteString(events, messageSSE(2, "r2", "lost too"))
	if got := d.releasedIDs(); !reflect.DeepEqual(got, [][]string{{"r1"}}) {
		t.Errorf("given back %q, want [[r1]]: nothing reached the client", got)
	}
}

func TestMCPSessionSystemEventsAndStatus(t *testing.T) {
	d := newFakeDaemon()
	h := startMCPSession(t, d, nil, noWelcome)
	h.handshake()
	events := d.stream()
	io.WriteString(events, "id: 1\nevent: broker_status\ndata: {\"mesh\":\"team\",\"status\":\"open\"}\n\n")
	io.WriteString(events, "id: 2\nevent: peer_join\ndata: {\"mesh\":\"team\",\"event\":\"peer_joined\",\"name\":\"carol\",\"pubkey\":\"c4r01aaaa\",\"groups\":[]}\n\n")
	n := channelParams(t, h.next())
	if n.Meta["kind"] != "system" || !strings.HasPrefix(n.Content, `[system] Peer "carol"`) {
		t.Errorf("first notification = %+v, want carol joining (broker_status shows nothing)", n)
	}
	io.WriteString(events, "id: 3\nevent: message\ndata: not json\n\n")
	io.WriteString(events, messageSSE(4, "r4", "after a bad event"))
	if n := channelParams(t, h.next()); n.Content != "bob: after a bad event" {
		t.Errorf("after a bad event: %+v", n)
	}
	if got := d.claimsTaken(); !reflect.DeepEqual(got, []string{"r4"}) {
		t.Errorf("claimed %q, want only the message row", got)
	}
}

// A session whose own link was kicked, or whose member was banned, is told
// so; other links' states say nothing.
func TestMCPSessionToldWhenRemoved(t *testing.T) {
	d := newFakeDaemon()
	h := startMCPSession(t, d, nil, noWelcome)
	h.sess.sessionID = "s-1" // before the pump reads it: it waits for a stream
	h.handshake()
	events := d.stream()
	status := func(id int, data string) {
		io.WriteString(events, fmt.Sprintf("id: %d\nevent: broker_status\ndata: %s\n\n", id, data))
	}
	status(1, `{"mesh":"team","link":"session","status":"kicked","session_id":"s-2"}`)
	status(2, `{"mesh":"team","link":"member","status":"reconnecting"}`)
	status(3, `{"mesh":"team","link":"session","status":"kicked","session_id":"s-1"}`)
	n := channelParams(t, h.next())
	if n.Meta["kind"] != "system" || n.Meta["event"] != "session_kicked" || !strings.Contains(n.Content, `kicked from mesh "team"`) {
		t.Errorf("first notification = %+v, want this session's kick only", n)
	}
	status(4, `{"mesh":"team","link":"member","status":"banned"}`)
	if n := channelParams(t, h.next()); n.Meta["event"] != "member_banned" || !strings.Contains(n.Content, "banned from mesh") {
		t.Errorf("after a ban: %+v", n)
	}
	if got := d.claimsTaken(); len(got) != 0 {
		t.Errorf("status notifications claimed rows: %q", got)
	}
}

func TestMCPSessionReconnects(t *testing.T) {
	d := newFakeDaemon()
	h := startMCPSession(t, d, nil, noWelcome)
	h.handshake()
	mcpRecv(t, d.opened, "first subscription")
	d.streams <- func() (io.ReadCloser, error) { return nil, errors.New("daemon not running") }
	mcpRecv(t, d.opened, "subscription after an error")
	ended := d.stream()
	io.WriteString(ended, messageSSE(1, "r1", "before the end"))
	ended.Close()
	if n := channelParams(t, h.next()); n.Content != "bob: before the end" {
		t.Errorf("first stream: %+v", n)
	}
	mcpRecv(t, d.opened, "subscription after the stream ended")
	io.WriteString(d.stream(), messageSSE(1, "r2", "after reconnecting"))
	if n := channelParams(t, h.next()); n.Content != "bob: after reconnecting" {
		t.Errorf("second stream: %+v", n)
	}
}

// Messages that reached the inbox while the server had no stream open (the
// daemon restarted) go out when the stream is back, oldest first, each
// claimed; one also announced on the new stream goes out once.
func TestMCPSessionCatchesUpAfterReconnect(t *testing.T) {
	d := newFakeDaemon()
	h := startMCPSession(t, d, nil, 0)
	h.handshake()
	if n := channelParams(t, h.next()); n.Meta["kind"] != "welcome" {
		t.Fatalf("first notification = %+v, want the welcome", n)
	}
	waitFor(t, "the welcome done", h.sess.welcomed.Load)
	mcpRecv(t, d.opened, "first subscription")
	first, second := "sent while the daemon restarted", "and another"
	d.mu.Lock()
	d.inbox = []inboxItem{ // newest first, as the daemon lists
		{ID: "r2", BrokerMessageID: "b2", SenderName: "bob", SenderMemberPubkey: "3e3b", Priority: "now", Body: &second, Mesh: "team"},
		{ID: "r1", BrokerMessageID: "b1", SenderName: "bob", SenderMemberPubkey: "3e3b", Body: &first, Mesh: "team"},
	}
	d.mu.Unlock()
	events := d.stream()
	if n := channelParams(t, h.next()); n.Content != "bob: "+first || n.Meta["message_id"] != "b1" || n.Meta["from_pubkey"] != "3e3b" {
		t.Errorf("first caught-up notification = %+v", n)
	}
	if n := channelParams(t, h.next()); n.Content != "[URGENT] bob: "+second || n.Meta["priority"] != "now" {
		t.Errorf("second caught-up notification = %+v", n)
	}
	io.WriteString(events, messageSSE(7, "r2", second))
	io.WriteString(events, messageSSE(8, "r3", "live again"))
	if n := channelParams(t, h.next()); n.Content != "bob: live again" {
		t.Errorf("after the catch-up: %+v, want only the new message (r2 went out already)", n)
	}
	if got := d.claimsTaken(); !reflect.DeepEqual(got, []string{"r1", "r2", "r3"}) {
		t.Errorf("claimed %q, want r1, r2 (the catch-up) then r3", got)
	}
}

// Before the welcome there is nothing to catch up: the welcome counts what
// is unread. In inbox mode messages stay in the inbox after it too.
func TestMCPSessionCatchUpWaitsForTheWelcome(t *testing.T) {
	body := "unread"
	unread := []inboxItem{{ID: "r1", SenderName: "bob", Body: &body}}

	d := newFakeDaemon()
	d.inbox = unread
	h := startMCPSession(t, d, nil, noWelcome)
	h.handshake()
	io.WriteString(d.stream(), messageSSE(1, "r9", "live"))
	if n := channelParams(t, h.next()); n.Content != "bob: live" {
		t.Errorf("before the welcome: first notification = %+v, want the live message only", n)
	}

	d = newFakeDaemon()
	d.inbox = unread
	h = startMCPSession(t, d, nil, 0)
	h.sess.messageMode = messageModeInbox // before the pump reads it: it waits for a stream
	h.handshake()
	if n := channelParams(t, h.next()); n.Meta["kind"] != "welcome" {
		t.Fatalf("first notification = %+v, want the welcome", n)
	}
	waitFor(t, "the welcome done", h.sess.welcomed.Load)
	io.WriteString(d.stream(), "id: 2\nevent: peer_join\ndata: {\"mesh\":\"team\",\"name\":\"carol\",\"pubkey\":\"c4r01\"}\n\n")
	if n := channelParams(t, h.next()); n.Meta["kind"] != "system" {
		t.Errorf("inbox mode after the welcome: %+v, want no caught-up message", n)
	}
}

// The welcome goes out only under the session's claim: a claim the
// session-start hook took skips it, a daemon that cannot answer the claim
// still gets it once.
func TestMCPSessionWelcomeClaim(t *testing.T) {
	for _, tc := range []struct {
		name        string
		welcomedVia string
		claimErr    error
		want        bool
	}{
		{"unclaimed", "", nil, true},
		{"the hook came first", surfacedViaHooks, nil, false},
		{"the claim fails", "", errors.New("daemon gone"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newFakeDaemon()
			d.welcomedVia, d.welcomeErr = tc.welcomedVia, tc.claimErr
			h := startMCPSession(t, d, nil, 0)
			h.handshake()
			waitFor(t, "the welcome done", h.sess.welcomed.Load)
			io.WriteString(d.stream(), messageSSE(1, "r9", "live"))
			n := channelParams(t, h.next())
			if got := n.Meta["kind"] == "welcome"; got != tc.want {
				t.Fatalf("first notification = %+v, want a welcome: %v", n, tc.want)
			}
		})
	}
}

func TestMCPSessionWelcome(t *testing.T) {
	body1, body2 := "deploy is done", "ping"
	d := newFakeDaemon()
	d.self, d.selfOK = mcpSelf{DisplayName: "alice", SessionPubkey: "a11ce000", Role: "lead", Mesh: "team"}, true
	d.peers = []PeerRow{
		{Pubkey: "a11ce000", DisplayName: "alice"},
		{Pubkey: "b0b", DisplayName: "bob"},
		{Pubkey: "dmn", DisplayName: "alice", PeerRole: "control-plane"},
	}
	d.inbox = []inboxItem{
		{ID: "r2", BrokerMessageID: "b2", SenderName: "bob", Body: &body2},
		{ID: "r1", SenderName: "bob", Body: &body1},
	}
	h := startMCPSession(t, d, nil, 0)
	h.handshake()
	n := channelParams(t, h.next())
	want := map[string]string{"kind": "welcome", "self_display_name": "alice", "self_session_pubkey": "a11ce000",
		"self_role": "lead", "mesh_slug": "team", "peer_count": "1", "peer_names": `["bob"]`, "unread_count": "2",
		"latest_message_ids": `["b2","r1"]`}
	if !reflect.DeepEqual(n.Meta, want) {
		t.Errorf("welcome meta = %v\nwant %v", n.Meta, want)
	}
	// Previews are not the messages: after the welcome both go out in
	// full, oldest first.
	if n := channelParams(t, h.next()); n.Content != "bob: "+body1 {
		t.Errorf("after the welcome: %+v, want the oldest unread message", n)
	}
	if n := channelParams(t, h.next()); n.Content != "bob: "+body2 {
		t.Errorf("after the welcome: %+v, want the newer unread message", n)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if want := []InboxQuery{{Mesh: "team", UnreadOnly: true, Limit: ptr(mcpWelcomeUnreadLimit), MarkSeen: ptr(false)}}; !reflect.DeepEqual(d.inboxQueries, want) {
		t.Errorf("inbox read as %+v, want %+v (peeking, not marking)", d.inboxQueries, want)
	}
	if !reflect.DeepEqual(d.peersMesh, []string{"team"}) {
		t.Errorf("peers read for %q, want the session's mesh", d.peersMesh)
	}
}

func TestMCPSessionWelcomeWhenQueriesFail(t *testing.T) {
	d := newFakeDaemon()
	d.selfErr = errors.New("401")
	d.peersErr = errors.New("timeout")
	d.inboxErr = errors.New("timeout")
	h := startMCPSession(t, d, nil, 0)
	h.handshake()
	n := channelParams(t, h.next())
	if n.Meta["kind"] != "welcome" || n.Meta["peer_count"] != "" || n.Meta["unread_count"] != "" || n.Meta["self_display_name"] != "" {
		t.Errorf("welcome meta = %v", n.Meta)
	}
	// The welcome claims nothing: the next message proves it is done.
	io.WriteString(d.stream(), messageSSE(1, "r1", "x"))
	channelParams(t, h.next())
	if got := d.claimsTaken(); !reflect.DeepEqual(got, []string{"r1"}) {
		t.Errorf("claimed %q, want only the message row", got)
	}
}

func TestMCPSessionStopsOnEOF(t *testing.T) {
	d := newFakeDaemon()
	h := startMCPSession(t, d, nil, noWelcome)
	h.handshake()
	events := d.stream()
	io.WriteString(events, ": connected\n\n")
	h.stdin.Close()
	if err := mcpRecv(t, h.done, "end of Run"); err != nil {
		t.Fatalf("Run = %v, want nil at end of input", err)
	}
	h.done <- nil // for the cleanup
	// The pump let go of the stream: the daemon side sees it closed.
	if _, err := io.WriteString(events, "data: x\n\n"); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("write to the stream after Run = %v, want io.ErrClosedPipe", err)
	}
}

func TestWelcomeDelayFromEnv(t *testing.T) {
	cases := []struct {
		v    string
		want time.Duration
	}{
		{"", mcpWelcomeDelay},
		{"0", 0},
		{"250", 250 * time.Millisecond},
		{"-1", mcpWelcomeDelay},
		{"soon", mcpWelcomeDelay},
	}
	for _, tc := range cases {
		if got := welcomeDelayFromEnv(mapGetenv(map[string]string{"CLAUDEMESH_WELCOME_DELAY_MS": tc.v})); got != tc.want {
			t.Errorf("welcomeDelayFromEnv(%q) = %v, want %v", tc.v, got, tc.want)
		}
	}
}

// unknownUntil is a daemon that does not know the server's session until
// told: a plain claude whose first hook has not run yet.
type unknownUntil struct {
	*fakeDaemon
	known atomic.Bool
}

func (d *unknownUntil) Me(ctx context.Context) (mcpSelf, bool, error) {
	return mcpSelf{DisplayName: "ana-1234", Mesh: "team"}, d.known.Load(), nil
}

// A server in a plain claude session subscribes only once the daemon
// knows the session: before that it would see every session's messages.
func TestMCPSessionWaitsForItsSession(t *testing.T) {
	d := &unknownUntil{fakeDaemon: newFakeDaemon()}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	go io.Copy(io.Discard, outR)
	sess := NewMCPSession(d, mcpConfig{Version: version}, outW, mcpSessionOptions{WelcomeDelay: noWelcome, RequireSession: true})
	sess.reconnectAfterError = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sess.Run(ctx, inR) }()
	t.Cleanup(func() { cancel(); inW.Close(); outW.Close(); <-done })
	select {
	case <-d.opened:
		t.Fatal("subscribed before the daemon knew the session")
	case <-time.After(50 * time.Millisecond):
	}
	d.known.Store(true)
	mcpRecv(t, d.opened, "the subscription once the session is known")
}

// A server Claude Code was not asked to load as a channel claims and emits
// no messages (the hooks show them); presence news still goes out.
func TestMCPSessionWithoutChannelLeavesMessagesToHooks(t *testing.T) {
	d := newFakeDaemon()
	h := startMCPSession(t, d, nil, noWelcome)
	h.sess.channelOff = true // before the pump reads it: it waits for a stream
	h.handshake()
	events := d.stream()
	io.WriteString(events, messageSSE(1, "r1", "for the hooks"))
	io.WriteString(events, "id: 2\nevent: peer_join\ndata: {\"mesh\":\"team\",\"event\":\"peer_joined\",\"name\":\"carol\",\"pubkey\":\"c4r01\"}\n\n")
	if n := channelParams(t, h.next()); n.Meta["kind"] != "system" {
		t.Errorf("first notification = %+v, want carol joining, not the message", n)
	}
	if got := d.claimsTaken(); len(got) != 0 {
		t.Errorf("claimed %q without a channel", got)
	}
}
