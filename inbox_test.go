// Tests of the inbox store and sink: one row per recipient, decryption,
// per-session scoping, seen marks, flush and delete.
package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func openTestInbox(t *testing.T) *Inbox {
	t.Helper()
	ib, err := openInbox(filepath.Join(t.TempDir(), "inbox.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ib.Close() })
	return ib
}

func textPtr(s string) *string { return &s }

// One row per (recipient, client_message_id): two recipients of one daemon
// each get theirs, and a redelivery adds nothing.
func TestInboxDedupePerRecipient(t *testing.T) {
	ib := openTestInbox(t)
	ctx := context.Background()
	row := func(recipient string) *inboxRow {
		return &inboxRow{ID: newUUID(), ClientMessageID: "c1", BrokerMessageID: "b1", Mesh: "alpha", SenderPubkey: "s",
			SenderName: "s", Body: textPtr("hi"), ReceivedAt: time.Now().UnixMilli(), RecipientPubkey: recipient, RecipientKind: recipientSession}
	}
	for i, tc := range []struct {
		recipient string
		isNew     bool
	}{{"A", true}, {"B", true}, {"A", false}, {"B", false}} {
		got, err := ib.Insert(ctx, row(tc.recipient))
		if err != nil || got != tc.isNew {
			t.Fatalf("insert %d for %s = %v, %v, want new=%v", i, tc.recipient, got, err, tc.isNew)
		}
	}
	rows, _ := ib.List(ctx, inboxScope{}, 10)
	if len(rows) != 2 {
		t.Fatalf("rows = %d, want 2", len(rows))
	}
}

// What a push's body becomes: decrypted text, base64 text for multicast,
// and NULL + decrypt_failed for anything unreadable — never garbage.
func TestDecryptPushBody(t *testing.T) {
	sender, session, member, stranger := mustNewKeypair(), mustNewKeypair(), mustNewKeypair(), mustNewKeypair()
	seal := func(to Keypair, text string) (string, string) {
		n, c, err := sealDM([]byte(text), to.PublicHex(), sender)
		if err != nil {
			t.Fatal(err)
		}
		return n, c
	}
	keys := []Keypair{session, member}
	n1, c1 := seal(session, "to the session")
	n2, c2 := seal(member, "to the member")
	n3, c3 := seal(stranger, "to someone else")
	pn, pc := plainBody([]byte("to everyone"))
	_, binary := plainBody([]byte{0x01, 0x02, 0xff, 0xfe, 0x00, 0x10})
	cases := []struct {
		name     string
		push     PushFrame
		body     string
		failed   bool
		openedBy string // the key that opened a DM
	}{
		{"DM to the session key", PushFrame{SenderPubkey: sender.PublicHex(), TargetSpec: session.PublicHex(), Nonce: n1, Ciphertext: c1}, "to the session", false, session.PublicHex()},
		{"DM to the member key", PushFrame{SenderPubkey: sender.PublicHex(), TargetSpec: member.PublicHex(), Nonce: n2, Ciphertext: c2}, "to the member", false, member.PublicHex()},
		{"DM sealed for someone else", PushFrame{SenderPubkey: sender.PublicHex(), TargetSpec: member.PublicHex(), Nonce: n3, Ciphertext: c3}, "", true, ""},
		{"DM with the wrong sender", PushFrame{SenderPubkey: stranger.PublicHex(), TargetSpec: session.PublicHex(), Nonce: n1, Ciphertext: c1}, "", true, ""},
		{"DM without a target, sealed for us", PushFrame{SenderPubkey: sender.PublicHex(), Nonce: n2, Ciphertext: c2}, "to the member", false, member.PublicHex()},
		{"DM without a target, not for us", PushFrame{SenderPubkey: sender.PublicHex(), Nonce: n3, Ciphertext: c3}, "", true, ""},
		{"broadcast", PushFrame{SenderPubkey: sender.PublicHex(), TargetSpec: "*", Nonce: pn, Ciphertext: pc}, "to everyone", false, ""},
		{"broadcast without a target", PushFrame{SenderPubkey: sender.PublicHex(), Nonce: pn, Ciphertext: pc}, "to everyone", false, ""},
		{"binary without a target", PushFrame{SenderPubkey: sender.PublicHex(), Nonce: pn, Ciphertext: binary}, "", true, ""},
		{"not base64", PushFrame{SenderPubkey: sender.PublicHex(), TargetSpec: "@ops", Nonce: pn, Ciphertext: "!!!"}, "", true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body, failed, openedBy := decryptPushBody(tc.push, keys)
			got := ""
			if body != nil {
				got = *body
			}
			if got != tc.body || failed != tc.failed || (tc.failed && body != nil) || openedBy != tc.openedBy {
				t.Fatalf("decryptPushBody = %q (nil %v), failed %v, opened by %.8s; want %q, failed %v, opened by %.8s",
					got, body == nil, failed, openedBy, tc.body, tc.failed, tc.openedBy)
			}
		})
	}
}

// inboxFixture is one daemon on mesh alpha (plus beta) with sessions A and
// A2 (same member) and rows addressed to every kind of recipient.
type inboxFixture struct {
	td       *testDaemon
	a, a2    testSession
	bare     *DaemonClient // a session registered without presence
	alphaKey string        // alpha's member key
	ids      map[string]string
	base     time.Time // the oldest row's received_at; each later row is 1 s newer
}

func newInboxFixture(t *testing.T) *inboxFixture {
	t.Helper()
	b, url := startTestBrokerWith(t, msgBrokerOptions())
	alpha := newTestMesh(t, b, url, "alpha", "me")
	beta := newTestMesh(t, b, url, "beta", "me")
	h := newTestHome(t)
	h.writeConfig(t, alpha, beta)
	td := startTestDaemon(t, h, nil)
	td.waitLink(t, "alpha", LinkOpen)
	fx := &inboxFixture{td: td, alphaKey: alpha.Pubkey, ids: map[string]string{}}
	fx.a = registerTestSession(t, td, alpha, "A")
	fx.a2 = registerTestSession(t, td, alpha, "A2")
	bare, _ := registration(t, alpha, "bare", fx.a.reg.Pid)
	bare.Presence = nil
	if err := td.client("").RegisterSession(context.Background(), bare); err != nil {
		t.Fatal(err)
	}
	fx.bare = td.client(bare.Token)
	fx.base = time.Now().Add(-time.Hour).Truncate(time.Second)
	base := fx.base.UnixMilli()
	for i, r := range []struct{ label, mesh, recipient string }{
		{"legacy", "alpha", ""},
		{"to A", "alpha", fx.a.pub()},
		{"to A2", "alpha", fx.a2.pub()},
		{"to member", "alpha", alpha.Pubkey},
		{"to beta member", "beta", beta.Pubkey},
	} {
		id := newUUID()
		fx.ids[r.label] = id
		kind := recipientSession
		if r.recipient == alpha.Pubkey || r.recipient == beta.Pubkey {
			kind = recipientMember
		}
		if r.recipient == "" {
			kind = ""
		}
		if _, err := td.inbox.Insert(context.Background(), &inboxRow{ID: id, ClientMessageID: "c-" + r.label, Mesh: r.mesh,
			SenderPubkey: "sender", SenderName: "sender", Body: textPtr(r.label), ReceivedAt: base + int64(i)*1000,
			RecipientPubkey: r.recipient, RecipientKind: kind}); err != nil {
			t.Fatal(err)
		}
	}
	return fx
}

func bodies(items []inboxItem) string {
	var out []string
	for _, it := range items {
		if it.Body != nil {
			out = append(out, *it.Body)
		}
	}
	return strings.Join(out, ",")
}

// Who sees which rows (claudemesh 1.34.11): a session its own key's rows, its member's
// rows and legacy rows, on its own mesh unless it names another; a caller
// without a session sees every row.
func TestInboxScoping(t *testing.T) {
	fx := newInboxFixture(t)
	cases := []struct {
		name  string
		cl    *DaemonClient
		query []string
		want  string
	}{
		{"no session: everything, newest first", fx.td.client(""), nil, "to beta member,to member,to A2,to A,legacy"},
		{"no session, one mesh", fx.td.client(""), []string{"mesh", "alpha"}, "to member,to A2,to A,legacy"},
		{"session A", fx.a.cl, nil, "to member,to A,legacy"},
		{"session A2", fx.a2.cl, nil, "to member,to A2,legacy"},
		{"session without presence", fx.bare, nil, "to member,legacy"},
		{"session A asking for beta", fx.a.cl, []string{"mesh", "beta"}, ""},
		{"session A, limit 1", fx.a.cl, []string{"limit", "1"}, "to member"},
		{"session A, since", fx.a.cl, []string{"since", isoTime(fx.base.Add(500 * time.Millisecond))}, "to member,to A"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := bodies(inboxItems(t, tc.cl, tc.query...)); got != tc.want {
				t.Fatalf("inbox = %q, want %q", got, tc.want)
			}
		})
	}
	if status, body := rawIPC(t, fx.a.cl, "GET", "/v1/inbox?since=yesterday", nil, nil); status != 400 {
		t.Fatalf("bad since = %d %v", status, body)
	}
}

// seen_at (claudemesh 1.34.8): a read stamps what it returned, after the read; a peek
// does not; a stamp is never moved; unread_only filters.
func TestInboxSeenAt(t *testing.T) {
	fx := newInboxFixture(t)
	ctx := context.Background()
	type listing struct {
		Items      []inboxItem `json:"items"`
		MarkedSeen int         `json:"marked_seen"`
	}
	get := func(cl *DaemonClient, q ...string) listing {
		var out listing
		if err := cl.Do(ctx, "GET", ipcPath("/v1/inbox", q...), nil, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	peek := get(fx.a.cl, "mark_seen", "false")
	if peek.MarkedSeen != 0 || len(peek.Items) != 3 {
		t.Fatalf("peek = %+v", peek)
	}
	first := get(fx.a.cl, "limit", "2")
	if first.MarkedSeen != 2 || first.Items[0].SeenAt != "" {
		t.Fatalf("first read = marked %d, seen_at %v; want 2 marked, shown as unread", first.MarkedSeen, first.Items[0].SeenAt)
	}
	unread := get(fx.a.cl, "unread_only", "true", "mark_seen", "false")
	if bodies(unread.Items) != "legacy" {
		t.Fatalf("unread after the read = %q, want legacy", bodies(unread.Items))
	}
	second := get(fx.a.cl)
	if second.MarkedSeen != 1 || second.Items[0].SeenAt == "" {
		t.Fatalf("second read = %+v, want the one unread row marked", second)
	}
	stamp := second.Items[0].SeenAt
	// POST /v1/inbox/seen counts only rows that were unread, and never
	// moves a stamp.
	var seen map[string]int
	ids := []string{fx.ids["to member"], fx.ids["to A2"]}
	if err := fx.a2.cl.Do(ctx, "POST", "/v1/inbox/seen", map[string]any{"ids": ids}, &seen); err != nil || seen["marked_seen"] != 1 {
		t.Fatalf("A2 marks its row and the (already seen) member row = %v, %v; want 1", seen, err)
	}
	if again := get(fx.a.cl, "mark_seen", "false"); again.Items[0].SeenAt != stamp {
		t.Fatalf("seen_at moved from %s to %s", stamp, again.Items[0].SeenAt)
	}
	if status, _ := rawIPC(t, fx.a.cl, "POST", "/v1/inbox/seen", map[string]any{"ids": []any{1, ""}}, nil); status != 400 {
		t.Fatalf("seen without string ids = %d, want 400", status)
	}
}

// With a session token, mark-seen, flush and delete touch only that
// session's rows; another session's rows are out of reach.
func TestInboxSessionIsolation(t *testing.T) {
	fx := newInboxFixture(t)
	ctx := context.Background()
	a2Row := fx.ids["to A2"]
	var seen map[string]int
	if err := fx.a.cl.Do(ctx, "POST", "/v1/inbox/seen", map[string]any{"ids": []string{a2Row}}, &seen); err != nil || seen["marked_seen"] != 0 {
		t.Fatalf("A marking A2's row = %v, %v; want 0", seen, err)
	}
	if status, body := rawIPC(t, fx.a.cl, "DELETE", "/v1/inbox/"+a2Row, nil, nil); status != 404 || body["error"] != "not_found" {
		t.Fatalf("A deleting A2's row = %d %v, want 404", status, body)
	}
	var flushed map[string]int
	if err := fx.a.cl.Do(ctx, "DELETE", "/v1/inbox", nil, &flushed); err != nil || flushed["removed"] != 3 {
		t.Fatalf("A's flush = %v, %v; want its 3 rows (its own, the member's, the legacy one)", flushed, err)
	}
	if got := bodies(inboxItems(t, fx.td.client(""))); got != "to beta member,to A2" {
		t.Fatalf("after A's flush the inbox holds %q", got)
	}
	if got := bodies(inboxItems(t, fx.a2.cl)); got != "to A2" || inboxItems(t, fx.a2.cl)[0].SeenAt != "" {
		t.Fatalf("A2's rows after A's actions = %q, want its own row, unread", got)
	}
	var del map[string]any
	if err := fx.a2.cl.Do(ctx, "DELETE", "/v1/inbox/"+a2Row, nil, &del); err != nil || del["id"] != a2Row {
		t.Fatalf("A2 deleting its row = %v, %v", del, err)
	}
}

// Flushing without a session needs a filter: mesh, before, or all=true.
func TestInboxFlushGuard(t *testing.T) {
	fx := newInboxFixture(t)
	cl := fx.td.client("")
	if status, body := rawIPC(t, cl, "DELETE", "/v1/inbox", nil, nil); status != 400 || body["error"] != "missing_filter" {
		t.Fatalf("unfiltered flush = %d %v, want 400 missing_filter", status, body)
	}
	if got := len(inboxItems(t, cl)); got != 5 {
		t.Fatalf("a refused flush removed rows: %d left", got)
	}
	var out map[string]int
	before := isoTime(fx.base.Add(1500 * time.Millisecond)) // after "legacy" and "to A"
	if err := cl.Do(context.Background(), "DELETE", ipcPath("/v1/inbox", "before", before), nil, &out); err != nil || out["removed"] != 2 {
		t.Fatalf("flush before = %v, %v; want 2", out, err)
	}
	if err := cl.Do(context.Background(), "DELETE", ipcPath("/v1/inbox", "mesh", "beta"), nil, &out); err != nil || out["removed"] != 1 {
		t.Fatalf("flush beta = %v, %v; want 1", out, err)
	}
	// A mesh never joined: the filter matching nothing is an error (a typo),
	// for a read and a flush alike. Rows a mesh left behind still match.
	for _, method := range []string{"GET", "DELETE"} {
		if status, body := rawIPC(t, cl, method, ipcPath("/v1/inbox", "mesh", "gamma"), nil, nil); status != 404 || body["error"] != "mesh_not_attached" {
			t.Fatalf("%s mesh=gamma = %d %v, want 404 mesh_not_attached", method, status, body)
		}
	}
	if _, err := fx.td.inbox.Insert(context.Background(), &inboxRow{ID: newUUID(), ClientMessageID: "c-left", Mesh: "gamma",
		SenderPubkey: "sender", SenderName: "sender", Body: textPtr("from a left mesh"), ReceivedAt: time.Now().UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	if rows := inboxItems(t, cl, "mesh", "gamma"); len(rows) != 1 {
		t.Fatalf("rows of a left mesh = %d, want 1", len(rows))
	}
	if err := cl.Do(context.Background(), "DELETE", ipcPath("/v1/inbox", "mesh", "gamma"), nil, &out); err != nil || out["removed"] != 1 {
		t.Fatalf("flush gamma = %v, %v; want 1", out, err)
	}
	if err := cl.Do(context.Background(), "DELETE", ipcPath("/v1/inbox", "all", "true"), nil, &out); err != nil || out["removed"] != 2 {
		t.Fatalf("flush all = %v, %v; want 2", out, err)
	}
}

// An undecryptable DM is stored as NULL with decrypt_failed, announced with
// a null body, and acknowledged so that the broker stops redelivering it.
func TestUndecryptableDMIsStoredAndAcked(t *testing.T) {
	f := newMsgFixture(t, nil)
	all := subscribe(t, f.d2, "")
	sender := connectMember(t, f.url, f.me)
	wrong := mustNewKeypair()
	nonce, ct, _ := sealDM([]byte("secret"), wrong.PublicHex(), mustNewKeypair())
	sender.sendJSON(SendFrame{Type: frameSend, ID: "bad-1", ClientMessageID: "bad-1", TargetSpec: f.bob.Pubkey, Priority: priorityNext, Nonce: nonce, Ciphertext: ct})
	sender.expect(frameAck, func(fr frame) bool { return fr.str("id") == "bad-1" })
	ev := eventData(all.next(t, "the undecryptable message", func(ev DaemonEvent) bool {
		return ev.Kind == eventMessage && eventData(ev)["client_message_id"] == "bad-1"
	}))
	if ev["body"] != nil {
		t.Fatalf("event body = %v, want null", ev["body"])
	}
	items := inboxItems(t, f.d2.client(""))
	if len(items) != 1 || items[0].Body != nil || !items[0].DecryptFailed {
		t.Fatalf("inbox = %+v, want one row with a NULL body and decrypt_failed", items)
	}
	waitFor(t, "the broker to mark it delivered", func() bool {
		pending, err := f.broker.store.PendingFor(context.Background(), f.me.MeshID, f.bob.Pubkey, 0, time.Now(), 10)
		return err == nil && len(pending) == 0
	})
}

// The sink stores a push once per recipient, acks every copy (new and
// duplicate alike) on the connection it came from, and publishes an event
// only for a new row.
func TestInboxSinkAcksEveryCopyAndPublishesOnce(t *testing.T) {
	acks := make(chan ClientAckFrame, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		for {
			_, data, err := ws.Read(r.Context())
			if err != nil {
				return
			}
			var a ClientAckFrame
			_ = json.Unmarshal(data, &a)
			acks <- a
		}
	}))
	defer srv.Close()
	ws, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	bus := newBus(16)
	sub := bus.Subscribe(EventFilter{})
	sink := &inboxSink{ib: openTestInbox(t), bus: bus, log: testLogger(t)}
	sender, me := mustNewKeypair(), mustNewKeypair()
	nonce, ct, _ := sealDM([]byte("once"), me.PublicHex(), sender)
	push := PushFrame{Type: framePush, MessageID: "m1", SenderPubkey: sender.PublicHex(), TargetSpec: me.PublicHex(),
		Nonce: nonce, Ciphertext: ct, ClientMessageID: "c1", Priority: priorityNow}
	msg := InboundMessage{Mesh: "alpha", Push: push, RecipientKind: recipientMember, RecipientPubkey: me.PublicHex(),
		Keys: []Keypair{me}, Frame: Inbound{conn: &rpcConn{ws: ws}}}
	ctx := context.Background()
	sink.HandleMessage(ctx, msg)
	sink.HandleMessage(ctx, msg) // the broker's redelivery
	if n := len(sub.C); n != 1 {
		t.Fatalf("%d events for one message, want 1", n)
	}
	ev := <-sub.C
	data := ev.Data.(*MessageEvent)
	if data.Body == nil || *data.Body != "once" || data.Priority != priorityNow || ev.RecipientPubkey != me.PublicHex() {
		t.Fatalf("event = %+v", ev)
	}
	for i := 0; i < 2; i++ {
		select {
		case a := <-acks:
			if a.ClientMessageID != "c1" || a.BrokerMessageID != "m1" || a.Type != frameClientAck {
				t.Fatalf("ack %d = %+v", i, a)
			}
		case <-time.After(testWait):
			t.Fatalf("got %d acks, want 2", i)
		}
	}
}
