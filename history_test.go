// Tests of the message history and its full-text search: GET /v1/history
// and GET /v1/search against real daemons and a real broker, the stores'
// FTS5 indexes (including rows older than them), paging, and the `search`
// and `export` verbs.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// history reads GET /v1/history as the client's caller.
func history(t *testing.T, cl *DaemonClient, q HistoryQuery) HistoryReply {
	t.Helper()
	out, err := callIPC(context.Background(), cl, apiHistory, q)
	if err != nil {
		t.Fatalf("history %+v: %v", q, err)
	}
	return out
}

func search(t *testing.T, cl *DaemonClient, q SearchQuery) []historyMessage {
	t.Helper()
	out, err := callIPC(context.Background(), cl, apiSearch, q)
	if err != nil {
		t.Fatalf("search %+v: %v", q, err)
	}
	return out.Messages
}

func bodiesOf(msgs []historyMessage) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.Direction+":"+deref(m.Body))
	}
	return out
}

// historyFixture: alice and alice-2 are sessions of d1, bert of d2; alice
// DMs her sibling and bert, bert answers alice.
type historyFixture struct {
	*msgFixture
	a, a2, b testSession
	sibling  SendReply
}

func newHistoryFixture(t *testing.T) *historyFixture {
	f := &historyFixture{msgFixture: newMsgFixture(t, nil)}
	f.a = registerTestSession(t, f.d1, f.me, "alice")
	f.a2 = registerTestSession(t, f.d1, f.me, "alice-2")
	f.b = registerTestSession(t, f.d2, f.bob, "bert")
	streamA, streamA2 := subscribe(t, f.d1, f.a.reg.Token), subscribe(t, f.d1, f.a2.reg.Token)
	f.sibling = sendAndSettle(t, f.a.cl, f.a2.pub(), "to my sibling about the parser")
	streamA2.next(t, "the sibling DM", messageWith("to my sibling about the parser"))
	sendAndSettle(t, f.a.cl, f.b.pub(), "hello bert, the parser is ready")
	sendAndSettle(t, f.b.cl, f.a.pub(), "hi alice, reviewing the parsers now")
	streamA.next(t, "bert's answer", messageWith("hi alice, reviewing the parsers now"))
	return f
}

// One entry per message: the sibling DM is alice's outbox row with
// alice-2's inbox row as its delivery; bert's answer is an inbox row.
func TestHistoryOneEntryPerMessage(t *testing.T) {
	f := newHistoryFixture(t)
	got := history(t, f.d1.client(""), HistoryQuery{})
	want := []string{"out:to my sibling about the parser", "out:hello bert, the parser is ready", "in:hi alice, reviewing the parsers now"}
	if strings.Join(bodiesOf(got.Messages), "|") != strings.Join(want, "|") || got.Next != "" {
		t.Fatalf("history = %q (next %q), want %q", bodiesOf(got.Messages), got.Next, want)
	}
	sib, toBert, fromBert := got.Messages[0], got.Messages[1], got.Messages[2]
	if sib.FromName != "alice" || sib.FromPubkey != f.a.pub() || sib.ToName != "alice-2" || sib.To != f.a2.pub() ||
		sib.Outbox == nil || sib.Outbox.Status != outboxDone || sib.Ref != deref(f.sibling.BrokerMessageID) ||
		len(sib.Deliveries) != 1 || sib.Deliveries[0].ToName != "alice-2" || sib.Deliveries[0].To != f.a2.pub() {
		t.Fatalf("the sibling DM = %+v", sib)
	}
	if toBert.ToName != "bert" || len(toBert.Deliveries) != 0 || toBert.Outbox.DeliveredAt == "" {
		t.Fatalf("the DM to bert = %+v", toBert)
	}
	if fromBert.FromName != "bert" || fromBert.FromMemberPubkey != f.bob.Pubkey || fromBert.ToName != "alice" || fromBert.Outbox != nil {
		t.Fatalf("bert's answer = %+v", fromBert)
	}

	// Once alice-2's model is shown the DM, history says how.
	if _, err := callIPC(context.Background(), f.a2.cl, apiSurface, SurfaceRequest{Via: "pull", IDs: textList{sib.Deliveries[0].InboxID}}); err != nil {
		t.Fatal(err)
	}
	got = history(t, f.d1.client(""), HistoryQuery{})
	if s := got.Messages[0].Deliveries[0].Surfaced; s == nil || s.SurfacedVia != "pull" || got.Messages[2].Surfaced != nil {
		t.Fatalf("after the pull: %+v / %+v", got.Messages[0].Deliveries, got.Messages[2])
	}

	// alice-2 sees its own inbox row, and nothing alice sent elsewhere.
	mine := history(t, f.a2.cl, HistoryQuery{})
	if strings.Join(bodiesOf(mine.Messages), "|") != "in:to my sibling about the parser" {
		t.Fatalf("alice-2's history = %q", bodiesOf(mine.Messages))
	}
	// A mesh never joined is an error, not an empty history.
	if _, err := callIPC(context.Background(), f.d1.client(""), apiHistory, HistoryQuery{Mesh: "alpah"}); ipcStatus(err) != http.StatusNotFound {
		t.Fatalf("history of an unknown mesh: %v", err)
	}
	// Latest: the newest two, still oldest first.
	latest := history(t, f.d1.client(""), HistoryQuery{Latest: true, Limit: ptr(2)})
	if strings.Join(bodiesOf(latest.Messages), "|") != strings.Join(want[1:], "|") {
		t.Fatalf("latest 2 = %q", bodiesOf(latest.Messages))
	}
}

func TestSearchFindsWordsAndPrefixes(t *testing.T) {
	f := newHistoryFixture(t)
	cl := f.d1.client("")
	cases := []struct {
		name string
		q    SearchQuery
		want []string // newest first
	}{
		{"a word in all three", SearchQuery{Q: "parser"}, []string{"in:hi alice, reviewing the parsers now", "out:hello bert, the parser is ready", "out:to my sibling about the parser"}},
		{"every word must match", SearchQuery{Q: "parser sibling"}, []string{"out:to my sibling about the parser"}},
		{"a prefix", SearchQuery{Q: "revie"}, []string{"in:hi alice, reviewing the parsers now"}},
		{"any case and accents", SearchQuery{Q: "BÉRT"}, []string{"out:hello bert, the parser is ready"}},
		{"from a peer by name", SearchQuery{Q: "parser", From: "BERT"}, []string{"in:hi alice, reviewing the parsers now"}},
		{"from a local session by name", SearchQuery{Q: "parser", From: "alice"}, []string{"out:hello bert, the parser is ready", "out:to my sibling about the parser"}},
		{"from a key prefix", SearchQuery{Q: "parser", From: f.b.pub()[:8]}, []string{"in:hi alice, reviewing the parsers now"}},
		{"since later", SearchQuery{Q: "parser", Since: time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}, nil},
		{"no match", SearchQuery{Q: "lunch"}, nil},
		{"FTS syntax is text", SearchQuery{Q: `parser" OR NEAR(x* -y`}, nil},
		{"quotes and stars around a word", SearchQuery{Q: `"sibling"*`}, []string{"out:to my sibling about the parser"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := bodiesOf(search(t, cl, tc.q))
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("search %+v = %q, want %q", tc.q, got, tc.want)
			}
		})
	}
	hits := search(t, cl, SearchQuery{Q: "sibl"})
	if len(hits) != 1 || !strings.Contains(hits[0].Snippet, snippetOpen+"sibling"+snippetClose) || len(hits[0].Deliveries) != 1 {
		t.Fatalf("the snippet = %+v", hits)
	}
	for _, q := range []string{"", "  ", `"*" - ()`} {
		if _, err := callIPC(context.Background(), cl, apiSearch, SearchQuery{Q: q}); ipcStatus(err) != http.StatusBadRequest {
			t.Fatalf("search %q: %v, want 400", q, err)
		}
	}
	// In a session, only what that session may see.
	if got := bodiesOf(search(t, f.a2.cl, SearchQuery{Q: "parser"})); strings.Join(got, "|") != "in:to my sibling about the parser" {
		t.Fatalf("alice-2's search = %q", got)
	}
}

// Pages of history, read with Next, are the whole history once, in order,
// even where rows of both stores share a millisecond.
func TestHistoryPagesCoverEverythingOnce(t *testing.T) {
	h := newTestHome(t)
	td := startTestDaemon(t, h, nil)
	ctx := context.Background()
	base := time.Now().Add(-time.Hour).UnixMilli()
	var want []string
	for i := range 12 {
		at := base + int64(i/3) // three rows a millisecond
		text := fmt.Sprintf("message %02d", i)
		if i%2 == 0 {
			seedOutboxRow(t, td.outbox, outboxRow{ID: fmt.Sprintf("out-%02d", i), ClientMessageID: newUUID(), Fingerprint: []byte{1},
				Payload: []byte(text), EnqueuedAt: at, NextAttemptAt: at, Status: outboxDone, Mesh: "alpha", TargetSpec: "*"})
		} else {
			row := &inboxRow{ID: fmt.Sprintf("in-%02d", i), ClientMessageID: newUUID(), Mesh: "alpha", SenderPubkey: strings.Repeat("b", 64),
				SenderName: "bob", Body: textPtr(text), ReceivedAt: at, RecipientPubkey: strings.Repeat("a", 64), RecipientKind: recipientMember}
			if _, err := td.inbox.Insert(ctx, row); err != nil {
				t.Fatal(err)
			}
		}
		want = append(want, text)
	}
	cl := td.client("")
	var got []string
	q := HistoryQuery{Limit: ptr(5)}
	for page := 0; ; page++ {
		if page > 10 {
			t.Fatal("paging does not end")
		}
		r := history(t, cl, q)
		for _, m := range r.Messages {
			got = append(got, deref(m.Body))
		}
		if r.Next == "" {
			break
		}
		q.After = r.Next
	}
	all := history(t, cl, HistoryQuery{Limit: ptr(100)})
	var once []string
	for _, m := range all.Messages {
		once = append(once, deref(m.Body))
	}
	if strings.Join(got, "|") != strings.Join(once, "|") || len(got) != 12 {
		t.Fatalf("paged = %q\nin one read = %q", got, once)
	}
	for i := 1; i < len(all.Messages); i++ {
		a, b := all.Messages[i-1], all.Messages[i]
		if a.At > b.At || a.At == b.At && a.Direction == historyOut && b.Direction == historyIn {
			t.Fatalf("out of order: %+v before %+v", a, b)
		}
	}
	for _, bad := range []string{"x", "1:sideways:id", "1:in:", "abc:in:x"} {
		if _, err := callIPC(ctx, cl, apiHistory, HistoryQuery{After: bad}); ipcStatus(err) != http.StatusBadRequest {
			t.Fatalf("after %q: %v", bad, err)
		}
	}
	// A requeued row is listed once: as its successor.
	seedOutboxRow(t, td.outbox, outboxRow{ID: "dead-1", ClientMessageID: newUUID(), Fingerprint: []byte{1}, Payload: []byte("requeued text"),
		EnqueuedAt: base, NextAttemptAt: base, Status: outboxDead, Mesh: "alpha", TargetSpec: "*"})
	if _, err := td.outbox.Requeue(ctx, "dead-1", newUUID(), "operator", time.Now()); err != nil {
		t.Fatal(err)
	}
	if hits := search(t, cl, SearchQuery{Q: "requeued"}); len(hits) != 1 || hits[0].ID == "dead-1" {
		t.Fatalf("a requeued message's hits = %+v", hits)
	}
}

// Rows stored before the stores had a search index are found too: the
// migration indexes them.
func TestSearchIndexesOlderRows(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	ibPath, obPath := filepath.Join(dir, "inbox.db"), filepath.Join(dir, "outbox.db")
	old, err := openSQLite(ibPath, inboxMigrations[:3])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Exec(`INSERT INTO inbox (id, client_message_id, mesh, sender_pubkey, sender_name, body, received_at)
VALUES ('r1', 'c1', 'alpha', 'k', 'bob', 'an old message about lunch', 1)`); err != nil {
		t.Fatal(err)
	}
	old.Close()
	oldOut, err := openSQLite(obPath, outboxMigrations[:1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oldOut.Exec(`INSERT INTO outbox (id, client_message_id, request_fingerprint, payload, enqueued_at, next_attempt_at, status, mesh, target_spec)
VALUES ('o1', 'c2', x'01', CAST('an old lunch reply' AS BLOB), 1, 1, 'done', 'alpha', '*')`); err != nil {
		t.Fatal(err)
	}
	oldOut.Close()
	ib, err := openInbox(ibPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ib.Close()
	ob, _, err := openOutbox(obPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	// Rows stored since are indexed by the next search.
	if _, err := ib.Insert(ctx, &inboxRow{ID: "r2", ClientMessageID: "c3", Mesh: "alpha", SenderPubkey: "k", SenderName: "bob",
		Body: textPtr("a newer lunch plan"), ReceivedAt: 2, RecipientPubkey: "me"}); err != nil {
		t.Fatal(err)
	}
	if err := ib.indexForSearch(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ib.indexForSearch(ctx); err != nil { // twice indexes nothing twice
		t.Fatal(err)
	}
	ins, _, err := ib.searchRows(ctx, inboxScope{}, searchMatch("lunch"), 10)
	if err != nil || len(ins) != 2 || ins[0].ID != "r2" || ins[1].ID != "r1" {
		t.Fatalf("inbox search = %v, %v", ins, err)
	}
	outs, _, err := ob.searchRows(ctx, outboxScope{}, searchMatch("lunch"), 10)
	if err != nil || len(outs) != 1 || outs[0].ID != "o1" {
		t.Fatalf("outbox search = %v, %v", outs, err)
	}
	// Deleted rows leave the index with them.
	if _, err := ib.Prune(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := ib.db.QueryRow(`SELECT count(*) FROM inbox_fts`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the index holds %d rows after a prune (%v)", n, err)
	}
	// A row stored after the prune reuses no rowid the index still holds.
	if _, err := ib.Insert(ctx, &inboxRow{ID: "r3", ClientMessageID: "c4", Mesh: "alpha", SenderPubkey: "k", SenderName: "bob",
		Body: textPtr("lunch again"), ReceivedAt: time.Now().UnixMilli(), RecipientPubkey: "me"}); err != nil {
		t.Fatal(err)
	}
	if err := ib.indexForSearch(ctx); err != nil {
		t.Fatal(err)
	}
	if ins, _, err := ib.searchRows(ctx, inboxScope{}, searchMatch("lunch"), 10); err != nil || len(ins) != 1 || ins[0].ID != "r3" {
		t.Fatalf("after the prune: %v, %v", ins, err)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 5, 4, 18, 0, 0, 0, time.UTC)
	cases := []struct{ in, want string }{
		{"", ""},
		{"2026-05-01T10:00:00Z", "2026-05-01T10:00:00Z"},
		{"2026-05-01T12:00:00+02:00", "2026-05-01T10:00:00Z"},
		{"90m", "2026-05-04T16:30:00Z"},
		{"12h", "2026-05-04T06:00:00Z"},
		{"7d", "2026-04-27T18:00:00Z"},
	}
	for _, tc := range cases {
		if got, err := parseSince(tc.in, now); err != nil || got != tc.want {
			t.Errorf("parseSince(%q) = %q, %v, want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"yesterday", "-5m", "3x", "d", "-1d"} {
		if _, err := parseSince(bad, now); err == nil {
			t.Errorf("parseSince(%q) succeeded", bad)
		}
	}
}

// The verbs: search prints hits with their text, export writes a
// transcript in md and jsonl, peers' control characters escaped in md.
func TestSearchAndExportVerbs(t *testing.T) {
	f := newHistoryFixture(t)
	streamA := subscribe(t, f.d1, f.a.reg.Token)
	sendAndSettle(t, f.b.cl, f.a.pub(), "evil \x1b]0;title\x07 text *bold*")
	streamA.next(t, "the hostile body", messageWith("evil \x1b]0;title\x07 text *bold*"))
	env := f.h1.env()

	r := runCLI(t, env, "search", "parser", "--from", "bert")
	if r.code != 0 || !strings.Contains(r.stdout, "1 message(s) match") || !strings.Contains(r.stdout, "bert → alice") ||
		!strings.Contains(r.stdout, "reviewing the parsers now") {
		t.Fatalf("search = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, env, "search", "nothing-like-it"); r.code != 0 || !strings.Contains(r.stdout, "no message matches") {
		t.Fatalf("search without hits = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, env, "search"); r.code != exitUsage {
		t.Fatalf("search without a query = %d", r.code)
	}
	if r := runCLI(t, env, "search", "x", "--since", "yesterday"); r.code != exitUsage || !strings.Contains(r.stderr, "90m") {
		t.Fatalf("search --since yesterday = %d\n%s", r.code, r.stderr)
	}

	r = runCLI(t, env, "export", "--format", "md")
	if r.code != 0 || !strings.Contains(r.stdout, "# claudemesh transcript") || !strings.Contains(r.stdout, "alice → alice-2 · alpha") ||
		!strings.Contains(r.stdout, "> hello bert, the parser is ready") || strings.Contains(r.stdout, "\x1b") ||
		!strings.Contains(r.stdout, `> evil \x1b]0;title\x07 text *bold*`) {
		t.Fatalf("export md = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if n := strings.Count(r.stdout, "to my sibling about the parser"); n != 1 {
		t.Fatalf("the sibling DM is in the transcript %d times", n)
	}
	out := filepath.Join(t.TempDir(), "history.jsonl")
	r = runCLI(t, env, "export", "--format", "jsonl", "--since", "1h", "-o", out)
	if r.code != 0 || !strings.Contains(r.stderr, "wrote 4 message(s)") {
		t.Fatalf("export jsonl = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var last historyMessage
	if len(lines) != 4 || json.Unmarshal([]byte(lines[3]), &last) != nil || deref(last.Body) != "evil \x1b]0;title\x07 text *bold*" {
		t.Fatalf("jsonl = %q", lines)
	}
	if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the export file: %v %v", st.Mode(), err)
	}
	if r := runCLI(t, env, "export", "--format", "pdf"); r.code != exitUsage {
		t.Fatalf("export --format pdf = %d", r.code)
	}
	if r := runCLI(t, env, "export", "--since", "1m", "--mesh", "alpha", "--format", "md"); r.code != 0 {
		t.Fatalf("export of the last minute = %d\n%s", r.code, r.stderr)
	}
}

// The machine's event stream tells what the UI shows live: an outbox row
// as it is accepted and settled, a requeue, sessions coming and going, and
// shared state changed here or by another member.
func TestEventStreamTellsOutboxSessionsAndState(t *testing.T) {
	f := newMsgFixture(t, nil)
	machine := subscribe(t, f.d1, "")
	a := registerTestSession(t, f.d1, f.me, "alice")
	sessionStream := subscribe(t, f.d1, a.reg.Token)
	kind := func(k string, match func(map[string]any) bool) func(DaemonEvent) bool {
		return func(ev DaemonEvent) bool { return ev.Kind == k && match(eventData(ev)) }
	}
	machine.next(t, "alice registered", kind(eventSession, func(d map[string]any) bool {
		return d["display_name"] == "alice" && d["state"] == "registered"
	}))

	sent := sendAndSettle(t, a.cl, f.bob.Pubkey, "watch me go")
	rowOf := func(d map[string]any) map[string]any { r, _ := d["row"].(map[string]any); return r }
	msgOf := func(d map[string]any) map[string]any { m, _ := d["message"].(map[string]any); return m }
	machine.next(t, "the row accepted", kind(eventOutbox, func(d map[string]any) bool {
		return rowOf(d)["id"] == sent.ID && rowOf(d)["status"] == outboxPending && msgOf(d)["body"] == "watch me go" && msgOf(d)["from_name"] == "alice"
	}))
	machine.next(t, "the row done", kind(eventOutbox, func(d map[string]any) bool {
		return rowOf(d)["id"] == sent.ID && rowOf(d)["status"] == outboxDone && msgOf(d)["ref"] == deref(sent.BrokerMessageID)
	}))

	dead := ipcSend(t, f.d1.client(""), map[string]any{"to": mustNewKeypair().PublicHex(), "message": "to nobody", "wait_ms": int(testWait / time.Millisecond)})
	if dead.Status != "dead" {
		t.Fatalf("send to an unknown key = %+v", dead)
	}
	req, err := callIPC(context.Background(), f.d1.client(""), apiOutboxRequeue, RequeueRequest{ID: dead.ID})
	if err != nil {
		t.Fatal(err)
	}
	machine.next(t, "the dead row aborted", kind(eventOutbox, func(d map[string]any) bool {
		return rowOf(d)["id"] == dead.ID && rowOf(d)["status"] == outboxAborted
	}))
	machine.next(t, "its successor", kind(eventOutbox, func(d map[string]any) bool { return rowOf(d)["id"] == req.NewRowID }))

	if _, err := callIPC(context.Background(), f.d1.client(""), apiStateSet, StateSetRequest{Key: "build", Value: json.RawMessage(`"green"`), Mesh: "alpha"}); err != nil {
		t.Fatal(err)
	}
	machine.next(t, "state set here", kind(eventState, func(d map[string]any) bool { return d["key"] == "build" && d["value"] == "green" }))
	if _, err := callIPC(context.Background(), f.d2.client(""), apiStateSet, StateSetRequest{Key: "deploy", Value: json.RawMessage(`{"at":1}`), Mesh: "alpha"}); err != nil {
		t.Fatal(err)
	}
	machine.next(t, "state set by bob", kind(eventState, func(d map[string]any) bool { return d["key"] == "deploy" && d["updatedBy"] == "bob" }))
	// alice's own stream heard of the state changes, never of the outbox.
	sessionStream.next(t, "state on the session's stream", kind(eventState, func(d map[string]any) bool { return d["key"] == "deploy" }))

	if _, err := callIPC(context.Background(), a.cl, apiProfile, ProfileRequest{Status: ptr(statusWorking), Summary: ptr("on the parser")}); err != nil {
		t.Fatal(err)
	}
	sessionStream.next(t, "alice's profile change", kind(eventProfile, func(d map[string]any) bool {
		return d["mesh"] == "alpha" && d["via"] == linkSession && fmt.Sprint(d["applied"]) == "[summary status]"
	}))

	if _, err := callIPC(context.Background(), f.d1.client(""), apiDeregister, DeregisterRequest{Token: a.reg.Token}); err != nil {
		t.Fatal(err)
	}
	machine.next(t, "alice left", kind(eventSession, func(d map[string]any) bool { return d["state"] == "deregistered" }))
	for _, ev := range sessionStream.seen() {
		if machineEvent(ev.Kind) {
			t.Fatalf("a session's stream carried %s %s", ev.Kind, ev.Data)
		}
	}
}
