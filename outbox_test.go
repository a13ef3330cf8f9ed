// Tests of the outbox: the duplicate-lookup table, send refusals, target
// resolution, crash recovery, requeue, the routes and the pruner.
package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The duplicate-lookup table (eleven cases), as decide sees it.
func TestDecideDuplicateTable(t *testing.T) {
	fp := []byte("0123456789abcdef0123456789abcdef")
	other := []byte("fedcba9876543210fedcba9876543210")
	row := func(status string) *outboxRow {
		return &outboxRow{Status: status, Fingerprint: fp, BrokerMessageID: "b1"}
	}
	cases := []struct {
		name     string
		existing *outboxRow
		fp       []byte
		http     int
		status   string
		conflict string
	}{
		{"none", nil, fp, 202, "queued", ""},
		{"pending, match", row(outboxPending), fp, 202, "queued", ""},
		{"pending, mismatch", row(outboxPending), other, 409, "", "outbox_pending_fingerprint_mismatch"},
		{"inflight, match", row(outboxInflight), fp, 202, "inflight", ""},
		{"inflight, mismatch", row(outboxInflight), other, 409, "", "outbox_inflight_fingerprint_mismatch"},
		{"done, match", row(outboxDone), fp, 200, "", ""},
		{"done, mismatch", row(outboxDone), other, 409, "", "outbox_done_fingerprint_mismatch"},
		{"dead, match", row(outboxDead), fp, 409, "", "outbox_dead_fingerprint_match"},
		{"dead, mismatch", row(outboxDead), other, 409, "", "outbox_dead_fingerprint_mismatch"},
		{"aborted, match", row(outboxAborted), fp, 409, "", "outbox_aborted_fingerprint_match"},
		{"aborted, mismatch", row(outboxAborted), other, 409, "", "outbox_aborted_fingerprint_mismatch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := decide(tc.existing, tc.fp)
			if r.HTTP != tc.http || r.Status != tc.status || r.Conflict != tc.conflict || r.Inserted != (tc.existing == nil) {
				t.Fatalf("decide = %+v, want %d %q %q", r, tc.http, tc.status, tc.conflict)
			}
		})
	}
}

// seedOutboxRow writes a row in a given state straight into the store.
func seedOutboxRow(t *testing.T, ob *Outbox, r outboxRow) {
	t.Helper()
	_, err := ob.db.Exec(`INSERT INTO outbox (`+outboxColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL, NULL, NULL, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL)`,
		r.ID, r.ClientMessageID, r.Fingerprint, r.Payload, r.EnqueuedAt, r.Attempts, r.NextAttemptAt, r.Status,
		nullable(r.LastError), nullable(r.BrokerMessageID), nullable(r.Mesh), nullable(r.TargetSpec), nullable(r.Nonce),
		nullable(r.Ciphertext), nullable(r.Priority), nullable(r.SenderSessionPubkey), nullable(r.ReplyToID))
	if err != nil {
		t.Fatal(err)
	}
}

// The same table through POST /v1/send: a replay of each state, with the
// same message and with another one, answers exactly as the table says.
func TestSendDuplicateLookupThroughIPC(t *testing.T) {
	f := newMsgFixture(t, nil)
	cl := f.d1.client("")
	to, text := f.bob.Pubkey, "the message"
	fp, _ := requestFingerprint(to, "", priorityNext, nil, []byte(text))
	later := time.Now().Add(time.Hour).UnixMilli() // seeded pending rows are not due: the drain leaves them
	for _, st := range []string{outboxPending, outboxInflight, outboxDone, outboxDead, outboxAborted} {
		seedOutboxRow(t, f.d1.outbox, outboxRow{ID: newUUID(), ClientMessageID: "dup-" + st, Fingerprint: fp[:], Payload: []byte(text),
			EnqueuedAt: time.Now().UnixMilli(), NextAttemptAt: later, Status: st, BrokerMessageID: "bm-" + st,
			Mesh: "alpha", TargetSpec: to, Nonce: "bm9uY2U=", Ciphertext: "Y3Q=", Priority: priorityNext})
	}
	cases := []struct {
		cmid, message string
		http          int
		status        string
		conflict      string
	}{
		{"fresh-id", text, 202, "queued", ""},
		{"dup-pending", text, 202, "queued", ""},
		{"dup-pending", "other", 409, "", "outbox_pending_fingerprint_mismatch"},
		{"dup-inflight", text, 202, "inflight", ""},
		{"dup-inflight", "other", 409, "", "outbox_inflight_fingerprint_mismatch"},
		{"dup-done", text, 200, "done", ""},
		{"dup-done", "other", 409, "", "outbox_done_fingerprint_mismatch"},
		{"dup-dead", text, 409, "", "outbox_dead_fingerprint_match"},
		{"dup-dead", "other", 409, "", "outbox_dead_fingerprint_mismatch"},
		{"dup-aborted", text, 409, "", "outbox_aborted_fingerprint_match"},
		{"dup-aborted", "other", 409, "", "outbox_aborted_fingerprint_mismatch"},
	}
	for _, tc := range cases {
		t.Run(tc.cmid+"/"+tc.message, func(t *testing.T) {
			status, body := rawIPC(t, cl, "POST", "/v1/send", map[string]any{"to": to, "message": tc.message, "client_message_id": tc.cmid}, nil)
			if status != tc.http {
				t.Fatalf("status = %d (%v), want %d", status, body, tc.http)
			}
			if tc.http == 409 {
				want := hex.EncodeToString(mustFingerprint(t, to, tc.message))[:16]
				if body["error"] != "idempotency_key_reused" || body["conflict"] != tc.conflict || body["daemon_fingerprint_prefix"] != want {
					t.Fatalf("409 body = %v, want conflict %s and prefix %s", body, tc.conflict, want)
				}
				return
			}
			if body["status"] != tc.status || body["client_message_id"] != tc.cmid {
				t.Fatalf("body = %v, want status %s", body, tc.status)
			}
			if tc.http == 200 && (body["duplicate"] != true || body["broker_message_id"] != "bm-done") {
				t.Fatalf("done replay = %v, want duplicate with the broker id", body)
			}
		})
	}
	var n int
	f.d1.outbox.db.QueryRow(`SELECT COUNT(*) FROM outbox`).Scan(&n)
	if n != 6 {
		t.Fatalf("outbox holds %d rows, want the 5 seeded and 1 new", n)
	}
}

func mustFingerprint(t *testing.T, to, text string) []byte {
	fp, err := requestFingerprint(to, "", priorityNext, nil, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return fp[:]
}

// rawIPC calls a route and returns its status and decoded body, whatever
// the status.
func rawIPC(t *testing.T, cl *DaemonClient, method, path string, body any, header map[string]string) (int, map[string]any) {
	t.Helper()
	req, err := cl.newRequest(context.Background(), method, path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := cl.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// The idempotency lookup comes before target resolution: once the peer is
// gone, a replay of a finished send still succeeds, while a new send to the
// same name fails with the candidates.
func TestReplayAfterPeerLeft(t *testing.T) {
	f := newMsgFixture(t, nil)
	b := registerTestSession(t, f.d2, f.bob, "bert")
	cl := f.d1.client("")
	first := ipcSend(t, cl, map[string]any{"to": "Bert", "message": "once", "client_message_id": "k1", "wait_ms": 10_000})
	if first.Status != "done" || first.Target != b.pub() {
		t.Fatalf("send by name = %+v, want done to %s", first, b.pub())
	}
	// The owner kicks bert's session off the mesh.
	owner := connectMember(t, f.url, f.me)
	if ack := owner.roundTrip(map[string]any{"type": frameKick, "target": b.pub()}); ack.str("type") != frameKickAck {
		t.Fatalf("kick = %v", ack)
	}
	waitFor(t, "bert gone from the peer list", func() bool {
		_, body := rawIPC(t, cl, "POST", "/v1/send", map[string]any{"to": "bert", "message": "probe"}, nil)
		return body["error"] == "no_peer_matches"
	})
	status, body := rawIPC(t, cl, "POST", "/v1/send", map[string]any{"to": "Bert", "message": "once"}, map[string]string{"Idempotency-Key": "k1"})
	if status != 200 || body["duplicate"] != true || body["broker_message_id"] != deref(first.BrokerMessageID) {
		t.Fatalf("replay = %d %v, want 200 duplicate", status, body)
	}
}

// Bad sends are refused with clear errors and change nothing.
func TestSendRefusals(t *testing.T) {
	b, url := startTestBrokerWith(t, msgBrokerOptions())
	alpha := newTestMesh(t, b, url, "alpha", "me")
	beta := newTestMesh(t, b, url, "beta", "me")
	addTestMember(t, b, alpha, "bob", "member")
	h := newTestHome(t)
	h.writeConfig(t, alpha, beta)
	td := startTestDaemon(t, h, nil)
	td.waitLink(t, "alpha", LinkOpen)
	twin1 := connectSession(t, url, alpha, mustNewKeypair(), "twin")
	twin2 := connectSession(t, url, alpha, mustNewKeypair(), "Twin")
	_, _ = twin1, twin2
	cl := td.client("")
	key := mustNewKeypair().PublicHex()
	cases := []struct {
		name   string
		body   map[string]any
		status int
		code   string
	}{
		{"no to", map[string]any{"message": "x", "mesh": "alpha"}, 400, "missing_to"},
		{"no message", map[string]any{"to": key, "message": "  ", "mesh": "alpha"}, 400, "missing_message"},
		{"bad priority", map[string]any{"to": key, "message": "x", "priority": "urgent", "mesh": "alpha"}, 400, "invalid_priority"},
		{"meta not an object", map[string]any{"to": key, "message": "x", "meta": []int{1}, "mesh": "alpha"}, 400, "invalid_meta"},
		{"bare @", map[string]any{"to": "@", "message": "x", "mesh": "alpha"}, 400, "invalid_target"},
		{"two meshes, none named", map[string]any{"to": key, "message": "x"}, 400, "mesh_required"},
		{"unknown mesh", map[string]any{"to": key, "message": "x", "mesh": "gamma"}, 404, "mesh_not_attached"},
		{"nobody by that name", map[string]any{"to": "zed", "message": "x", "mesh": "alpha"}, 404, "no_peer_matches"},
		{"two by that name", map[string]any{"to": "TWIN", "message": "x", "mesh": "alpha"}, 409, "ambiguous_target"},
		{"too big once encrypted", map[string]any{"to": key, "message": strings.Repeat("x", 60_000), "mesh": "alpha"}, 413, "payload_too_large"},
		{"over the IPC body cap", map[string]any{"to": key, "message": strings.Repeat("x", 300_000), "mesh": "alpha"}, 413, "payload_too_large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := rawIPC(t, cl, "POST", "/v1/send", tc.body, nil)
			if status != tc.status || body["error"] != tc.code {
				t.Fatalf("send = %d %v, want %d %s", status, body, tc.status, tc.code)
			}
			switch tc.code {
			case "mesh_required":
				if att, _ := body["attached"].([]any); len(att) != 2 {
					t.Fatalf("mesh_required lists %v, want both meshes", body["attached"])
				}
			case "ambiguous_target", "no_peer_matches":
				if c, _ := body["candidates"].([]any); len(c) < 2 {
					t.Fatalf("%s lists candidates %v", tc.code, body["candidates"])
				}
			}
		})
	}
	status, body := rawIPC(t, cl, "POST", "/v1/send", "not an object", nil)
	if status != 400 || body["error"] != "invalid_json" {
		t.Fatalf("a JSON string body = %d %v", status, body)
	}
	var n int
	td.outbox.db.QueryRow(`SELECT COUNT(*) FROM outbox`).Scan(&n)
	if n != 0 {
		t.Fatalf("refused sends left %d rows", n)
	}
}

// Target resolution shared by the daemon and the CLI.
func TestResolvePeerTarget(t *testing.T) {
	sess1 := strings.Repeat("a", 16) + strings.Repeat("1", 48)
	sess2 := strings.Repeat("a", 15) + "b" + strings.Repeat("2", 48)
	member := strings.Repeat("c", 64)
	bobMember := strings.Repeat("d", 64)
	cold := strings.Repeat("e", 64)
	carolMember, carolSession := strings.Repeat("7", 64), strings.Repeat("8", 64)
	quinnMember, quinnGhost, quinnLive, yuriGhost := strings.Repeat("3", 64), strings.Repeat("5", 64), strings.Repeat("6", 64), strings.Repeat("4", 64)
	gone, here := false, true
	rows := []PeerRow{
		{Pubkey: quinnGhost, MemberPubkey: quinnMember, DisplayName: "quinn", PeerRole: peerRoleSession, Connected: &gone},
		{Pubkey: quinnLive, MemberPubkey: quinnMember, DisplayName: "Quinn", PeerRole: peerRoleSession, Connected: &here},
		{Pubkey: yuriGhost, MemberPubkey: quinnMember, DisplayName: "yuri", PeerRole: peerRoleSession, Connected: &gone},
		{Pubkey: carolMember, MemberPubkey: carolMember, DisplayName: "carol-laptop", PeerRole: peerRoleControlPlane},
		{Pubkey: carolSession, MemberPubkey: carolMember, DisplayName: "carol", PeerRole: peerRoleSession},
		{Pubkey: sess1, MemberPubkey: member, DisplayName: "Alice", PeerRole: peerRoleSession},
		{Pubkey: sess2, MemberPubkey: member, DisplayName: "alice-2", PeerRole: peerRoleSession},
		{Pubkey: member, MemberPubkey: member, DisplayName: "alice", PeerRole: peerRoleControlPlane},
		{Pubkey: bobMember, MemberPubkey: bobMember, DisplayName: "bob", PeerRole: peerRoleControlPlane},
		{Pubkey: cold, MemberPubkey: bobMember, DisplayName: "bob", PeerRole: peerRoleControlPlane},
		{Pubkey: strings.Repeat("f", 64), MemberPubkey: bobMember, DisplayName: "twin", PeerRole: peerRoleSession},
		{Pubkey: strings.Repeat("9", 64), MemberPubkey: bobMember, DisplayName: "Twin", PeerRole: peerRoleSession},
	}
	cases := []struct {
		name, to string
		min      int
		want     string
		code     string
	}{
		{"name, any case, sessions first", "ALICE", 16, sess1, ""},
		{"a control-plane row's name is never a target", "bob", 16, "", "no_peer_matches"},
		{"a daemon's name is never a target, even with a session", "carol-laptop", 16, "", "no_peer_matches"},
		{"session key prefix", sess1[:17], 16, sess1, ""},
		{"member key prefix, member with two sessions", member[:16], 16, member, ""},
		{"member key prefix, member with one session", carolMember[:16], 16, carolSession, ""},
		{"member key prefix, one live session and two in their grace", quinnMember[:16], 16, quinnLive, ""},
		{"a live session before one in its grace", "quinn", 16, quinnLive, ""},
		{"a session in its grace when no live one has the name", "yuri", 16, yuriGhost, ""},
		{"prefix naming two sessions", sess1[:15], 8, "", "ambiguous_target"},
		{"prefix shorter than the minimum", sess1[:12], 16, "", "no_peer_matches"},
		{"a cold link's key is never a target", cold[:20], 16, "", "no_peer_matches"},
		{"two sessions share a name", "twin", 16, "", "ambiguous_target"},
		{"nobody", "zed", 16, "", "no_peer_matches"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolvePeerTarget(tc.to, rows, nil, tc.min, "alpha")
			if tc.code == "" {
				if err != nil || got != tc.want {
					t.Fatalf("resolve(%q) = %q, %v, want %q", tc.to, got, err, tc.want)
				}
				return
			}
			te, ok := err.(*TargetError)
			if !ok || te.Code != tc.code {
				t.Fatalf("resolve(%q) = %q, %v, want %s", tc.to, got, err, tc.code)
			}
			if tc.code == "no_peer_matches" && (strings.Contains(te.Error(), "bob (") || !strings.Contains(te.Error(), "Alice (")) {
				t.Fatalf("no-match error lists %q: want sessions, not control-plane rows", te.Error())
			}
		})
	}
}

// Rows a crash left inflight are pending, and due, again when the outbox
// opens.
func TestOutboxRecoversInflightRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	ob, _, err := openOutbox(path)
	if err != nil {
		t.Fatal(err)
	}
	seedOutboxRow(t, ob, outboxRow{ID: "r1", ClientMessageID: "c1", Fingerprint: []byte{1}, Payload: []byte("x"), Status: outboxInflight, Attempts: 1,
		NextAttemptAt: time.Now().Add(time.Hour).UnixMilli()}) // claimed: due when its ack wait ends
	seedOutboxRow(t, ob, outboxRow{ID: "r2", ClientMessageID: "c2", Fingerprint: []byte{1}, Payload: []byte("x"), Status: outboxDone})
	ob.Close()
	ob, recovered, err := openOutbox(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	r1, _ := ob.get(context.Background(), "r1")
	r2, _ := ob.get(context.Background(), "r2")
	if recovered != 1 || r1.Status != outboxPending || r1.Attempts != 1 || r1.NextAttemptAt > time.Now().UnixMilli() || r2.Status != outboxDone {
		t.Fatalf("after reopen: recovered %d, r1 %s/%d, r2 %s", recovered, r1.Status, r1.Attempts, r2.Status)
	}
}

// Requeue aborts the old row and inserts a successor with the same routing,
// in one transaction: a clash on the new id changes nothing.
func TestOutboxRequeueKeepsRouting(t *testing.T) {
	ob, _, err := openOutbox(filepath.Join(t.TempDir(), "outbox.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	ctx := context.Background()
	dead := outboxRow{ID: "r1", ClientMessageID: "c1", Fingerprint: []byte{7}, Payload: []byte("hi"), Status: outboxDead, Attempts: 25,
		LastError: "max_attempts", Mesh: "alpha", TargetSpec: "@ops", Nonce: "n", Ciphertext: "aGk=", Priority: priorityNow,
		SenderSessionPubkey: strings.Repeat("5", 64), ReplyToID: "m0"}
	seedOutboxRow(t, ob, dead)
	seedOutboxRow(t, ob, outboxRow{ID: "r2", ClientMessageID: "c2", Fingerprint: []byte{7}, Payload: []byte("x"), Status: outboxDone})
	if _, err := ob.Requeue(ctx, "r1", "c2", "operator", time.Now()); err != errClientIDTaken {
		t.Fatalf("requeue onto a taken id = %v, want errClientIDTaken", err)
	}
	if r, _ := ob.get(ctx, "r1"); r.Status != outboxDead {
		t.Fatalf("a failed requeue left r1 %s", r.Status)
	}
	fresh, err := ob.Requeue(ctx, "r1", "c3", "operator", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	got, _ := ob.get(ctx, fresh.ID)
	old, _ := ob.get(ctx, "r1")
	if got.Status != outboxPending || got.Attempts != 0 || got.Mesh != dead.Mesh || got.TargetSpec != dead.TargetSpec ||
		got.Nonce != dead.Nonce || got.Ciphertext != dead.Ciphertext || got.Priority != dead.Priority ||
		got.SenderSessionPubkey != dead.SenderSessionPubkey || got.ReplyToID != dead.ReplyToID || string(got.Fingerprint) != string(dead.Fingerprint) {
		t.Fatalf("successor = %+v, want the routing of %+v", got, dead)
	}
	if old.Status != outboxAborted || old.SupersededBy != fresh.ID || old.AbortedBy != "operator" || old.AbortedAt == 0 {
		t.Fatalf("old row = %+v, want aborted and superseded", old)
	}
	for _, id := range []string{"r1", "r2", "missing"} {
		if _, err := ob.Requeue(ctx, id, newUUID(), "", time.Now()); err != errNotRequeueable {
			t.Fatalf("requeue %s = %v, want errNotRequeueable", id, err)
		}
	}
}

// GET /v1/outbox and POST /v1/outbox/requeue over IPC.
func TestOutboxRoutes(t *testing.T) {
	f := newMsgFixture(t, nil)
	cl := f.d1.client("")
	gone := mustNewKeypair().PublicHex() // never in the mesh: the broker refuses it
	out := ipcSend(t, cl, map[string]any{"to": gone, "message": "lost", "wait_ms": 10_000})
	if out.Status != "dead" || !strings.HasPrefix(deref(out.LastError), codeUnknownTarget) {
		t.Fatalf("send to an unknown key = %+v, want dead with unknown_target", out)
	}
	var list struct {
		Items []outboxView `json:"items"`
	}
	if err := cl.Do(context.Background(), "GET", "/v1/outbox?status=failed", nil, &list); err != nil || len(list.Items) != 1 {
		t.Fatalf("outbox list = %+v, %v", list, err)
	}
	if it := list.Items[0]; it.Target != gone || it.Attempts != 1 || it.LastError == nil {
		t.Fatalf("dead row = %+v", it)
	}
	if status, body := rawIPC(t, cl, "GET", "/v1/outbox?status=weird", nil, nil); status != 400 {
		t.Fatalf("bad status filter = %d %v", status, body)
	}
	var rq map[string]string
	if err := cl.Do(context.Background(), "POST", "/v1/outbox/requeue", map[string]any{"id": out.ID, "new_client_message_id": "again"}, &rq); err != nil {
		t.Fatal(err)
	}
	if rq["aborted_row_id"] != out.ID || rq["new_client_message_id"] != "again" {
		t.Fatalf("requeue = %v", rq)
	}
	waitFor(t, "the requeued row to die again", func() bool {
		r, err := f.d1.outbox.get(context.Background(), rq["new_row_id"])
		return err == nil && r.Status == outboxDead
	})
	status, body := rawIPC(t, cl, "POST", "/v1/outbox/requeue", map[string]any{"id": out.ID}, nil)
	if status != http.StatusConflict {
		t.Fatalf("requeue of an aborted row = %d %v, want 409", status, body)
	}
}

// parseSendBody decodes a send body as the route does, then validates it.
func parseSendBody(data []byte, idempotencyKey string) (*sendInput, error) {
	var body SendRequest
	if err := decodeJSONObject(data, &body); err != nil {
		return nil, err
	}
	return validateSend(body, idempotencyKey)
}

// Every body POST /v1/send can get either parses into a valid send or is
// refused with a 4xx apiError; nothing panics.
func FuzzSendBody(f *testing.F) {
	f.Add([]byte(`{"to":"bob","message":"hi"}`), "")
	f.Add([]byte(`{"to":"*","message":"hi","priority":"now","meta":{"b":[1,{"a":2}]},"reply_to_id":"m1"}`), "key-1")
	f.Add([]byte(`{"to":"@ops","message":"x","client_message_id":"c","wait_ms":500}`), "")
	f.Add([]byte(`{"to":"","message":""}`), "")
	f.Add([]byte(`[1,2]`), "")
	f.Add([]byte(`{"meta":"x"}{}`), "")
	f.Fuzz(func(t *testing.T, data []byte, header string) {
		in, err := parseSendBody(data, header)
		if err != nil {
			ae, ok := err.(*apiError)
			if !ok || ae.status < 400 || ae.status > 499 {
				t.Fatalf("parseSendBody error %v is not a 4xx apiError", err)
			}
			return
		}
		if strings.TrimSpace(in.To) == "" || targetForm(in.To) == "" || !validPriority(in.Priority) || len(in.Fingerprint) != 32 ||
			in.ClientMessageID == "" || len(in.ClientMessageID) > maxIDLen || strings.TrimSpace(in.Message) == "" {
			t.Fatalf("accepted an invalid send: %+v", in)
		}
	})
}

// POST /v1/send with "presence" and wait_ms says whether a DM's recipient
// is online and what it is called; without "presence" it says nothing.
func TestSendAnswersRecipientPresence(t *testing.T) {
	f := newMsgFixture(t, nil)
	carol := addTestMember(t, f.broker, f.me, "carol", "member") // known, never online
	cl := f.d1.client("")
	wait := int(testWait / time.Millisecond)
	for _, tc := range []struct {
		name, to string
		presence bool
		want     string
	}{
		{"online member", f.bob.Pubkey, true, `{"online":true,"display_name":"bob"}`},
		{"offline member", carol.Pubkey, true, `{"online":false}`},
		{"not asked", f.bob.Pubkey, false, `null`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out map[string]json.RawMessage
			body := map[string]any{"to": tc.to, "message": "presence " + tc.name, "wait_ms": wait, "presence": tc.presence}
			if err := cl.Do(context.Background(), "POST", "/v1/send", body, &out); err != nil {
				t.Fatal(err)
			}
			got := "null"
			if r, ok := out["recipient"]; ok {
				got = string(r)
			}
			if got != tc.want {
				t.Fatalf("recipient = %s, want %s", got, tc.want)
			}
		})
	}
}

// The daemon's pruner deletes, at start, inbox rows and settled outbox rows
// (done, aborted, dead) older than the retention, and says so; younger
// rows stay.
func TestPrunerDropsOldRows(t *testing.T) {
	h := newTestHome(t)
	if err := ensurePrivateDir(h.Paths.DaemonDir); err != nil {
		t.Fatal(err)
	}
	ib, err := openInbox(h.Paths.InboxDB())
	if err != nil {
		t.Fatal(err)
	}
	ob, _, err := openOutbox(h.Paths.OutboxDB())
	if err != nil {
		t.Fatal(err)
	}
	ago := func(days int) int64 {
		return time.Now().Add(-time.Duration(days)*24*time.Hour - time.Minute).UnixMilli()
	}
	for id, days := range map[string]int{"old": 31, "young": 29} {
		if _, err := ib.Insert(context.Background(), &inboxRow{ID: id, ClientMessageID: id, Mesh: "m", SenderPubkey: "s", SenderName: "s",
			ReceivedAt: ago(days), RecipientPubkey: "r"}); err != nil {
			t.Fatal(err)
		}
	}
	outbox := []struct {
		id, status string
		days       int
		kept       bool
	}{
		{"done-old", outboxDone, 31, false}, {"aborted-old", outboxAborted, 31, false}, {"dead-old", outboxDead, 31, false},
		{"done-young", outboxDone, 29, true}, {"aborted-young", outboxAborted, 29, true}, {"dead-young", outboxDead, 1, true},
	}
	for _, r := range outbox {
		seedOutboxRow(t, ob, outboxRow{ID: r.id, ClientMessageID: r.id, Fingerprint: []byte{1}, Payload: []byte("x"),
			EnqueuedAt: ago(r.days + 1), NextAttemptAt: ago(r.days), Status: r.status, Mesh: "gone", TargetSpec: "*"})
		switch r.status {
		case outboxDone:
			_, err = ob.db.Exec(`UPDATE outbox SET delivered_at = ? WHERE id = ?`, ago(r.days), r.id)
		case outboxAborted:
			_, err = ob.db.Exec(`UPDATE outbox SET aborted_at = ? WHERE id = ?`, ago(r.days), r.id)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	ib.Close()
	ob.Close()

	var log syncBuffer
	td := startTestDaemon(t, h, func(o *DaemonOptions) { o.Log = slog.New(slog.NewJSONHandler(&log, nil)) })
	waitFor(t, "both prune lines", func() bool {
		return strings.Contains(log.String(), `"msg":"inbox_prune_completed","removed":1,"retention_days":30`) &&
			strings.Contains(log.String(), `"msg":"outbox_prune_completed","removed":3,"retention_days":30`)
	})
	for id, kept := range map[string]bool{"old": false, "young": true} {
		rows, _ := td.inbox.List(context.Background(), inboxScope{}, 10)
		found := false
		for _, r := range rows {
			found = found || r.ID == id
		}
		if found != kept {
			t.Errorf("inbox row %s kept = %v, want %v", id, found, kept)
		}
	}
	for _, r := range outbox {
		_, err := td.outbox.get(context.Background(), r.id)
		if kept := err == nil; kept != r.kept {
			t.Errorf("outbox row %s kept = %v (%v), want %v", r.id, kept, err, r.kept)
		}
	}
}

// The daemon directory on a small volume that fills up during sends: a
// send that cannot be stored answers 507 disk_full naming the directory;
// once some space is back — all of it, or only a sliver — sends are
// accepted again without a restart, and every accepted message arrives.
func TestSendsOnAFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a tmpfs")
	}
	for _, tc := range []struct {
		name, size string
		free       int64 // bytes given back; 0 = all of the filler
	}{
		{"16 MB volume, all space back", "16m", 0},
		{"4 MB volume, 512 KB back", "4m", 512 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := t.TempDir()
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+tc.size, "tmpfs", mnt).CombinedOutput(); err != nil {
				t.Skipf("cannot mount a tmpfs here (%v: %s); the disk-full test needs root and mount rights", err, bytes.TrimSpace(out))
			}
			t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
			b, url := startTestBrokerWith(t, msgBrokerOptions())
			me := newTestMesh(t, b, url, "alpha", "me")
			bob := addTestMember(t, b, me, "bob", "member")
			h1, h2 := newTestHome(t), newTestHome(t)
			h1.Paths.DaemonDir = filepath.Join(mnt, "d")
			h1.writeConfig(t, me)
			h2.writeConfig(t, bob)
			d1, d2 := startTestDaemon(t, h1, nil), startTestDaemon(t, h2, nil)
			d1.waitLink(t, "alpha", LinkOpen)
			d2.waitLink(t, "alpha", LinkOpen)

			filler := filepath.Join(mnt, "filler")
			fill(t, filler)
			var accepted []string
			full := false
			for i := 0; i < 500 && !full; i++ {
				text := fmt.Sprintf("before %d", i)
				var out SendReply
				err := d1.client("").Do(context.Background(), "POST", "/v1/send", map[string]any{"to": bob.Pubkey, "message": text}, &out)
				var ie *IPCError
				switch {
				case err == nil:
					accepted = append(accepted, text)
				case errors.As(err, &ie) && ie.Status == http.StatusInsufficientStorage && ie.Code == "disk_full":
					if !strings.Contains(ie.Message, h1.Paths.DaemonDir) {
						t.Fatalf("disk_full message %q does not name %s", ie.Message, h1.Paths.DaemonDir)
					}
					full = true
				default:
					t.Fatalf("send %d on a full disk: %v", i, err)
				}
			}
			if !full {
				t.Fatal("500 sends on a full volume and none refused")
			}
			if tc.free == 0 {
				os.Remove(filler)
			} else if st, err := os.Stat(filler); err != nil || os.Truncate(filler, st.Size()-tc.free) != nil {
				t.Fatalf("free space: %v", err)
			}
			// With only a sliver back a send may still find the disk full,
			// but the WAL gives back what it held: a retry goes through.
			for i := range 20 {
				text := fmt.Sprintf("after %d", i)
				var err error
				for range 3 {
					if err = d1.client("").Do(context.Background(), "POST", "/v1/send", map[string]any{"to": bob.Pubkey, "message": text}, nil); err == nil {
						break
					}
				}
				if err != nil {
					t.Fatalf("send %d once space is back, three tries: %v", i, err)
				}
				accepted = append(accepted, text)
			}
			waitFor(t, "every accepted message in bob's inbox", func() bool {
				items := inboxItems(t, d2.client(""), "limit", "1000")
				for _, text := range accepted {
					if countBody(items, text) != 1 {
						return false
					}
				}
				return true
			})
		})
	}
}

// fill writes path until the volume has no space left.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}

// Names and prefixes that match no one online are looked up among the
// mesh's members: someone offline is reached at their member key, a member
// with one live session at that session.
func TestResolvePeerTargetWithMembers(t *testing.T) {
	robert, carol, carolSession := strings.Repeat("b", 64), strings.Repeat("c", 64), strings.Repeat("1", 64)
	dave, daveSession := strings.Repeat("d", 64), strings.Repeat("2", 64)
	rows := []PeerRow{
		{Pubkey: carolSession, MemberPubkey: carol, DisplayName: "carol's laptop", PeerRole: peerRoleSession},
		{Pubkey: daveSession, MemberPubkey: dave, DisplayName: "bob", PeerRole: peerRoleSession},
	}
	members := []MemberRow{
		{Pubkey: robert, DisplayName: "Robert"},
		{Pubkey: carol, DisplayName: "carol", Online: true},
		{Pubkey: dave, DisplayName: "dave", Online: true},
		{Pubkey: strings.Repeat("e", 64), DisplayName: "twin"},
		{Pubkey: strings.Repeat("f", 64), DisplayName: "Twin"},
	}
	cases := []struct {
		name, to string
		members  []MemberRow
		want     string
		code     string
	}{
		{"an offline member by name, any case", "ROBERT", members, robert, ""},
		{"an offline member by key prefix", robert[:8], members, robert, ""},
		{"a session's name before a member's", "bob", members, daveSession, ""},
		{"a member with one live session is reached there", "carol", members, carolSession, ""},
		{"two members of one name", "twin", members, "", "ambiguous_target"},
		{"without the member list, nobody", "robert", nil, "", "no_peer_matches"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolvePeerTarget(tc.to, rows, tc.members, 4, "alpha")
			if tc.code == "" {
				if err != nil || got != tc.want {
					t.Fatalf("resolve(%q) = %.8s, %v; want %.8s", tc.to, got, err, tc.want)
				}
				return
			}
			if te, ok := err.(*TargetError); !ok || te.Code != tc.code {
				t.Fatalf("resolve(%q) = %.8s, %v; want %s", tc.to, got, err, tc.code)
			}
		})
	}
}
