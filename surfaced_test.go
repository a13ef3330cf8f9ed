// Tests of the surfaced record: the claim rules of each path, exactly one
// winner when paths race, confirmation by transcript and reply, claims
// given back, and rows read before the record existed.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func insertTestRow(t *testing.T, ib *Inbox, id, recipient string, received time.Time) {
	t.Helper()
	if _, err := ib.Insert(context.Background(), &inboxRow{ID: id, ClientMessageID: "c-" + id, BrokerMessageID: "b-" + id, Mesh: "alpha",
		SenderPubkey: "s", SenderName: "bob", Body: textPtr("hi " + id), ReceivedAt: received.UnixMilli(),
		RecipientPubkey: recipient, RecipientKind: recipientSession}); err != nil {
		t.Fatal(err)
	}
}

func rowState(t *testing.T, ib *Inbox, id string) surfacedState {
	t.Helper()
	rows, err := ib.List(context.Background(), inboxScope{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.ID == id {
			return r.Surfaced
		}
	}
	t.Fatalf("no row %s", id)
	return surfacedState{}
}

// Which path may take a row in which state: the claim rules.
func TestSurfaceClaimRules(t *testing.T) {
	now := time.Now()
	old := now.Add(-2 * surfacingFallbackDelay)
	type state struct {
		name  string
		setup func(ib *Inbox, id string)
	}
	claim := func(via string, at time.Time) func(ib *Inbox, id string) {
		return func(ib *Inbox, id string) {
			if _, err := ib.Surface(context.Background(), inboxScope{}, surfaceClaim{Via: via, IDs: []string{id}}, at); err != nil {
				panic(err)
			}
		}
	}
	states := []state{
		{"not shown", func(*Inbox, string) {}},
		{"channel, unconfirmed, just now", claim(surfacedViaChannel, now)},
		{"channel, unconfirmed, long ago", claim(surfacedViaChannel, old)},
		{"channel, confirmed", func(ib *Inbox, id string) {
			claim(surfacedViaChannel, old)(ib, id)
			ib.Confirm(context.Background(), inboxScope{}, []string{id}, evidenceTranscript, now)
		}},
		{"hooks", claim(surfacedViaHooks, old)},
		{"pull", claim(surfacedViaPull, old)},
	}
	// want[via][state]: may the path take the row?
	want := map[string][]bool{
		surfacedViaChannel: {true, false, false, false, false, false},
		surfacedViaHooks:   {true, false, true, false, false, false},
		surfacedViaPull:    {true, false, true, false, false, false}, // as hooks: a live channel is not shown twice
	}
	for via, row := range want {
		for i, st := range states {
			t.Run(via+"/"+st.name, func(t *testing.T) {
				ib := openTestInbox(t)
				insertTestRow(t, ib, "r1", "A", old)
				st.setup(ib, "r1")
				got, err := ib.Surface(context.Background(), inboxScope{}, surfaceClaim{Via: via, IDs: []string{"r1"},
					FallbackBefore: now.Add(-surfacingFallbackDelay).UnixMilli()}, now)
				if err != nil {
					t.Fatal(err)
				}
				if (len(got) == 1) != row[i] {
					t.Fatalf("%s took %d rows of a row %s, want taken=%v", via, len(got), st.name, row[i])
				}
				if len(got) == 1 {
					s := got[0].Surfaced
					confirmed := s.ConfirmedAt != 0
					if s.Via != via || s.At != now.UnixMilli() || confirmed != (via != surfacedViaChannel) {
						t.Errorf("after the claim: %+v, want via %s at now, confirmed=%v", s, via, via != surfacedViaChannel)
					}
					if confirmed && got[0].SeenAt == 0 {
						t.Errorf("a confirmed showing left the row unseen")
					}
				}
			})
		}
	}
}

// One message, three paths racing for it, many times over: exactly one
// wins each round.
func TestSurfaceRaceHasOneWinner(t *testing.T) {
	ib := openTestInbox(t)
	ctx := context.Background()
	for round := range 50 {
		id := "r" + string(rune('a'+round%26)) + strings.Repeat("x", round/26)
		insertTestRow(t, ib, id, "A", time.Now())
		var wg sync.WaitGroup
		var mu sync.Mutex
		winners := 0
		for _, via := range []string{surfacedViaChannel, surfacedViaHooks, surfacedViaPull} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sc := inboxScope{}
				if via == surfacedViaPull {
					sc.Unsurfaced = true // `inbox --unread` from the session
				}
				got, err := ib.Surface(ctx, sc, surfaceClaim{Via: via, IDs: []string{id}, FallbackBefore: time.Now().Add(-surfacingFallbackDelay).UnixMilli()}, time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				winners += len(got)
				mu.Unlock()
			}()
		}
		wg.Wait()
		if winners != 1 {
			t.Fatalf("round %d: %d paths showed the row, want exactly 1", round, winners)
		}
	}
}

// A catch-up claim takes the oldest rows no path showed, in scope.
func TestSurfaceOldestInScope(t *testing.T) {
	ib := openTestInbox(t)
	base := time.Now().Add(-time.Minute)
	insertTestRow(t, ib, "r1", "A", base)
	insertTestRow(t, ib, "r2", "A", base.Add(time.Second))
	insertTestRow(t, ib, "r3", "A", base.Add(2*time.Second))
	insertTestRow(t, ib, "other", "B", base)
	ctx := context.Background()
	ib.Surface(ctx, inboxScope{}, surfaceClaim{Via: surfacedViaHooks, IDs: []string{"r1"}}, time.Now())
	got, err := ib.Surface(ctx, inboxScope{Recipients: []string{"A"}}, surfaceClaim{Via: surfacedViaChannel, Limit: 1}, time.Now())
	if err != nil || len(got) != 1 || got[0].ID != "r2" {
		t.Fatalf("first catch-up = %v, %v; want r2 (r1 was shown, B's row is out of scope)", ids(got), err)
	}
	got, _ = ib.Surface(ctx, inboxScope{Recipients: []string{"A"}}, surfaceClaim{Via: surfacedViaChannel, Limit: 10}, time.Now())
	if len(got) != 1 || got[0].ID != "r3" {
		t.Fatalf("second catch-up = %v, want r3", ids(got))
	}
}

func ids(rows []*inboxRow) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r.ID)
	}
	return out
}

// A failed emit gives back its claim; a confirmed one, or another path's,
// is never given back.
func TestUnsurface(t *testing.T) {
	ib := openTestInbox(t)
	ctx := context.Background()
	for _, id := range []string{"r1", "r2", "r3"} {
		insertTestRow(t, ib, id, "A", time.Now())
	}
	ib.Surface(ctx, inboxScope{}, surfaceClaim{Via: surfacedViaChannel, IDs: []string{"r1", "r2"}}, time.Now())
	ib.Confirm(ctx, inboxScope{}, []string{"r2"}, evidenceTranscript, time.Now())
	ib.Surface(ctx, inboxScope{}, surfaceClaim{Via: surfacedViaHooks, IDs: []string{"r3"}}, time.Now())
	n, err := ib.Unsurface(ctx, inboxScope{}, []string{"r1", "r2", "r3"})
	if err != nil || n != 1 {
		t.Fatalf("unsurface = %d, %v; want only r1 given back", n, err)
	}
	if s := rowState(t, ib, "r1"); s.At != 0 || s.Via != "" {
		t.Errorf("r1 after the give-back = %+v, want not shown", s)
	}
	if s := rowState(t, ib, "r2"); s.Via != surfacedViaChannel || s.Evidence != evidenceTranscript {
		t.Errorf("r2 = %+v, want its confirmed channel claim kept", s)
	}
}

// Evidence in the transcript: only the message ids written there confirm.
func TestTranscriptMentions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.jsonl")
	os.WriteFile(path, []byte(`{"type":"queue-operation","operation":"enqueue","content":"<channel source=\"claudemesh\" message_id=\"b-r1\">hi</channel>"}`+"\n"), 0o600)
	found, err := transcriptMentions(path, []string{"b-r1", "b-r2", ""})
	if err != nil || !found["b-r1"] || found["b-r2"] || found[""] {
		t.Fatalf("found = %v, %v; want b-r1 only", found, err)
	}
	if _, err := transcriptMentions(filepath.Join(dir, "notes.txt"), []string{"x"}); err == nil {
		t.Errorf("a file that is not a .jsonl transcript was read")
	}
	// Only the tail is read: an id before it is not found.
	big := filepath.Join(dir, "big.jsonl")
	f, _ := os.Create(big)
	f.WriteString("early-id\n")
	f.Write(make([]byte, transcriptTail))
	f.WriteString("late-id\n")
	f.Close()
	found, _ = transcriptMentions(big, []string{"early-id", "late-id"})
	if found["early-id"] || !found["late-id"] {
		t.Errorf("found = %v, want only the id in the last %d bytes", found, transcriptTail)
	}
}

// Rows read before the surfaced record existed count as shown, so no path
// shows them again; unread ones are left for the paths.
func TestSurfacedMigrationCountsReadRowsAsShown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inbox.db")
	db, err := openSQLite(path, inboxMigrations[:2])
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		id   string
		seen any
	}{{"read", int64(1700000000000)}, {"unread", nil}} {
		if _, err := db.Exec(`INSERT INTO inbox (id, client_message_id, mesh, sender_pubkey, sender_name, body, received_at, seen_at, recipient_pubkey)
VALUES (?, ?, 'alpha', 's', 'bob', 'hi', 1, ?, 'A')`, r.id, "c-"+r.id, r.seen); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	ib, err := openInbox(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ib.Close()
	if s := rowState(t, ib, "read"); s.At != 1700000000000 || s.ConfirmedAt != 1700000000000 || s.Via != "" {
		t.Errorf("read row = %+v, want shown when it was read, by no recorded path", s)
	}
	got, _ := ib.Surface(context.Background(), inboxScope{}, surfaceClaim{Via: surfacedViaHooks, Limit: 10}, time.Now())
	if len(got) != 1 || got[0].ID != "unread" {
		t.Errorf("a hook after the migration takes %v, want only the unread row", ids(got))
	}
	var version int
	raw, _ := sql.Open("sqlite", "file:"+path)
	defer raw.Close()
	raw.QueryRow("PRAGMA user_version").Scan(&version)
	if version != len(inboxMigrations) {
		t.Errorf("user_version = %d, want %d", version, len(inboxMigrations))
	}
}

// Over IPC: a session's channel claim, its `inbox --unread` (the pull
// path), a reply as evidence, and the surfaced events its stream carries.
func TestSurfacingOverIPC(t *testing.T) {
	fx := newInboxFixture(t)
	ctx := context.Background()
	events, _, err := fx.a.cl.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	toA := fx.ids["to A"]
	got, err := callIPC(ctx, fx.a.cl, apiSurface, SurfaceRequest{Via: surfacedViaChannel, IDs: []string{toA, fx.ids["to A2"]}})
	if err != nil || len(got.Items) != 1 || got.Items[0].ID != toA {
		t.Fatalf("A's channel claim = %+v, %v; want its own row only (A2's is out of its scope)", got, err)
	}
	if it := got.Items[0]; it.SurfacedVia != surfacedViaChannel || it.SurfacedConfirmed || it.SurfacedSession != nullString(fx.a.reg.SessionID) {
		t.Errorf("claimed row = %+v, want via channel, unconfirmed, by A", it.surfacedFields)
	}
	if _, err := callIPC(ctx, fx.a.cl, apiSurface, SurfaceRequest{Via: surfacedViaHooks}); ipcStatus(err) != 400 {
		t.Errorf("a claim via hooks on the surface route = %v, want 400", err)
	}
	// `inbox --unread` from A: what no path showed A's model (the channel
	// claim counts), and reading it shows it.
	unread, err := callIPC(ctx, fx.a.cl, apiInbox, InboxQuery{UnreadOnly: true})
	if err != nil || bodies(unread.Items) != "to member,legacy" {
		t.Fatalf("A's unread = %q, %v; want its member's row and the legacy row", bodies(unread.Items), err)
	}
	again, _ := callIPC(ctx, fx.a.cl, apiInbox, InboxQuery{UnreadOnly: true})
	if len(again.Items) != 0 {
		t.Errorf("A's unread after reading it = %q, want none", bodies(again.Items))
	}
	// Outside a session, unread is still "not read by anyone".
	if all, _ := callIPC(ctx, fx.td.client(""), apiInbox, InboxQuery{UnreadOnly: true, Mesh: "alpha", MarkSeen: ptr(false)}); bodies(all.Items) != "to A2,to A" {
		t.Errorf("unread outside a session = %q, want the rows nobody read (A's channel claim is unconfirmed)", bodies(all.Items))
	}
	// A reply from A to its row confirms the channel claim.
	fx.td.confirmReply(ctx, fx.td.sessions.Resolve(fx.a.reg.Token), toA)
	rows, _ := callIPC(ctx, fx.td.client(""), apiInbox, InboxQuery{Mesh: "alpha", MarkSeen: ptr(false)})
	for _, it := range rows.Items {
		if it.ID == toA && (!it.SurfacedConfirmed || it.SurfacedEvidence != evidenceReply || it.SeenAt == "") {
			t.Errorf("A's row after its reply = %+v, want confirmed by the reply and seen", it.surfacedFields)
		}
	}
	// A's stream: the claim, the two pulls, the confirmation; nothing of A2.
	var seen []string
	for len(seen) < 4 {
		select {
		case ev := <-events:
			if ev.Kind != eventSurfaced {
				continue
			}
			var s SurfacedEvent
			if err := json.Unmarshal(ev.Data, &s); err != nil {
				t.Fatal(err)
			}
			seen = append(seen, string(s.SurfacedVia)+":"+string(s.SurfacedEvidence))
		case <-time.After(testWait):
			t.Fatalf("surfaced events = %q, want 4", seen)
		}
	}
	if strings.Join(seen, " ") != "channel: pull:shown pull:shown channel:reply" {
		t.Errorf("surfaced events = %q", seen)
	}
}
