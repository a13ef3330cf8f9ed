// Tests of send, inbox and moderation verbs against real daemons and a
// real broker, warm and cold.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// send through the daemon: names, prefixes and keys resolve, the output
// says online or offline, and resolution errors list candidates.
func TestSendVerb(t *testing.T) {
	f := newMsgFixture(t, nil)
	carol := addTestMember(t, f.broker, f.me, "carol", "member") // known to the mesh, never online
	a := registerTestSession(t, f.d1, f.me, "alice")
	b := registerTestSession(t, f.d2, f.bob, "bert")
	streamB := subscribe(t, f.d2, b.reg.Token)
	env := f.h1.env("CLAUDEMESH_IPC_TOKEN", a.reg.Token)

	r := runCLI(t, env, "send", "Bert", "hello", "there")
	if r.code != 0 || !strings.Contains(r.stdout, "sent to bert ("+b.pub()[:16]) || !strings.Contains(r.stdout, "online") {
		t.Fatalf("send by name = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	ev := eventData(streamB.next(t, "the CLI's DM", messageWith("hello there")))
	if ev["sender_pubkey"] != a.pub() {
		t.Fatalf("CLI DM from %v, want alice's session", ev["sender_pubkey"])
	}
	firstID, _ := ev["broker_message_id"].(string)

	r = runCLI(t, env, "message", "send", b.pub()[:6], "by prefix", "--json", "--priority", "now")
	var doc map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != 0 || doc["ok"] != true ||
		doc["target"] != b.pub() || doc["recipientOnline"] != true || doc["via"] != "daemon" || doc["status"] != "sent" {
		t.Fatalf("send by prefix --json = %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	streamB.next(t, "the prefix DM", messageWith("by prefix"))

	r = runCLI(t, env, "send", b.pub(), "by key")
	if r.code != 0 || !strings.Contains(r.stdout, "sent to bert ("+b.pub()[:16]) || !strings.Contains(r.stdout, "online") {
		t.Fatalf("send by full key = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	streamB.next(t, "the key DM", messageWith("by key"))

	// This session itself: its own link would drop the message as an echo.
	if r := runCLI(t, env, "send", "alice", "note to self"); r.code != exitUsage || !strings.Contains(r.stderr, "this session's own key") ||
		!strings.Contains(r.stderr, "--self") {
		t.Fatalf("send to this session = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Bad input is refused, saying what to do.
	if r := runCLI(t, env, "send", "", "hi"); r.code != exitUsage || !strings.Contains(r.stderr, "is not a target") {
		t.Fatalf("send to an empty name = %d\n%s", r.code, r.stderr)
	}
	if r := runCLI(t, env, "send", "bert", strings.Repeat("x", 70_000)); r.code != exitFailure || !strings.Contains(r.stderr, "hint: make it smaller") {
		t.Fatalf("send of a huge message = %d\n%s", r.code, r.stderr)
	}

	r = runCLI(t, env, "send", carol.Pubkey, "for later")
	if r.code != 0 || !strings.Contains(r.stdout, "not connected now") {
		t.Fatalf("send to an offline member = %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	r = runCLI(t, env, "send", "nobody", "x")
	if r.code != exitNotFound || !strings.Contains(r.stderr, `no peer matches "nobody"`) || !strings.Contains(r.stderr, "bert (") {
		t.Fatalf("send to nobody = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	registerTestSession(t, f.d2, f.bob, "Bert")
	r = runCLI(t, env, "send", "bert", "x")
	if r.code != exitFailure || !strings.Contains(r.stderr, "ambiguous") || strings.Count(r.stderr, "ert (") != 2 {
		t.Fatalf("send to a shared name = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, env, "send", "*", "to all", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"recipientOnline": null`) {
		t.Fatalf("broadcast = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	streamB.next(t, "the broadcast", messageWith("to all"))
	if r := runCLI(t, env, "send", "#ops", "on topic", "--reply-to", firstID); r.code != 0 {
		t.Fatalf("topic send = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	ev = eventData(streamB.next(t, "the topic message", messageWith("on topic")))
	if ev["topic"] != "ops" || ev["reply_to_id"] != firstID {
		t.Fatalf("topic message = %v, want topic ops replying to %s", ev, firstID)
	}
	if r := runCLI(t, env, "send", "bert"); r.code != exitUsage {
		t.Fatalf("send without a message = %d", r.code)
	}
	if r := runCLI(t, env, "send", "bert", "x", "--priority", "asap"); r.code != exitUsage {
		t.Fatalf("bad priority = %d", r.code)
	}
	// A message that cannot reach anyone is a failure, not "sent".
	r = runCLI(t, env, "send", mustNewKeypair().PublicHex(), "into the void")
	if r.code != exitFailure || !strings.Contains(r.stderr, codeUnknownTarget) {
		t.Fatalf("send to an unknown key = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// --self (claudemesh 1.32.0): your own member key is refused without it; with it, one
// copy goes to each of your other live sessions, never to the caller.
func TestSendSelf(t *testing.T) {
	f := newMsgFixture(t, nil)
	a := registerTestSession(t, f.d1, f.me, "alice")
	a2 := registerTestSession(t, f.d1, f.me, "alice-2")
	a3 := registerTestSession(t, f.d1, f.me, "alice-3")
	streams := map[string]*sseCollector{a2.pub(): subscribe(t, f.d1, a2.reg.Token), a3.pub(): subscribe(t, f.d1, a3.reg.Token)}
	env := f.h1.env("CLAUDEMESH_IPC_TOKEN", a.reg.Token)
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"own member key without --self", []string{"send", f.me.Pubkey, "x"}, exitUsage, "", "add --self"},
		{"own member key by prefix without --self", []string{"send", f.me.Pubkey[:10], "x"}, exitUsage, "", "your own member key"},
		{"--self on someone else", []string{"send", f.bob.Pubkey, "hi bob", "--self"}, 0, "sent to", "--self had no effect"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, env, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stdout, tc.stdout) || !strings.Contains(r.stderr, tc.stderr) {
				t.Fatalf("%v = %d\n%s%s", tc.args, r.code, r.stdout, r.stderr)
			}
		})
	}
	r := runCLI(t, env, "send", "--self", f.me.Pubkey, "to my other sessions", "--json")
	var doc struct {
		OK     bool `json:"ok"`
		Fanout []struct {
			Pubkey string `json:"pubkey"`
			OK     bool   `json:"ok"`
		} `json:"fanout"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != 0 || !doc.OK || len(doc.Fanout) != 2 {
		t.Fatalf("send --self = %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	for _, res := range doc.Fanout {
		s, ok := streams[res.Pubkey]
		if !ok || !res.OK {
			t.Fatalf("fan-out result %+v is not one of the siblings", res)
		}
		ev := eventData(s.next(t, "the fanned-out copy", messageWith("to my other sessions")))
		if ev["sender_pubkey"] != a.pub() {
			t.Fatalf("copy from %v", ev["sender_pubkey"])
		}
	}
	// A session alone on its member has nobody to fan out to.
	lone := registerTestSession(t, f.d2, f.bob, "bert")
	r = runCLI(t, f.h2.env("CLAUDEMESH_IPC_TOKEN", lone.reg.Token), "send", "--self", f.bob.Pubkey, "x")
	if r.code != exitNotFound || !strings.Contains(r.stderr, "no other live session") {
		t.Fatalf("--self alone = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// Without the daemon the message goes over a one-shot broker connection,
// sealed with that connection's key, and still decrypts at the recipient.
func TestSendColdPath(t *testing.T) {
	f := newMsgFixture(t, nil)
	b := registerTestSession(t, f.d2, f.bob, "bert")
	streamB := subscribe(t, f.d2, b.reg.Token)
	r := runCLI(t, f.h1.env(), "send", "bert", "the cold way", "--no-daemon", "--json")
	var doc map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != 0 || doc["via"] != "broker" || doc["status"] != "sent" {
		t.Fatalf("cold send = %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	ev := eventData(streamB.next(t, "the cold DM", messageWith("the cold way")))
	if ev["sender_member_pubkey"] != f.me.Pubkey {
		t.Fatalf("cold DM = %v", ev)
	}
}

// A send whose link is down is reported as queued, not as sent.
func TestSendReportsQueued(t *testing.T) {
	h := newTestHome(t)
	down := fakeMesh("down", "ws://127.0.0.1:1/ws")
	h.writeConfig(t, down)
	startTestDaemon(t, h, nil)
	r := runCLI(t, h.env(), "send", mustNewKeypair().PublicHex(), "later")
	if r.code != 0 || !strings.Contains(r.stdout, "queued for") || !strings.Contains(r.stdout, "daemon outbox list") {
		t.Fatalf("send with the link down = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, h.env(), "daemon", "outbox", "list", "--status", "pending")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "pending") {
		t.Fatalf("outbox list = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	id := strings.Fields(r.stdout)[1]
	r = runCLI(t, h.env(), "daemon", "outbox", "requeue", id, "--new-client-id", "second")
	if r.code != 0 || !strings.Contains(r.stdout, "client_message_id=second") {
		t.Fatalf("requeue = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, h.env(), "daemon", "outbox", "requeue", id); r.code != exitFailure || !strings.Contains(r.stderr, "cannot requeue") {
		t.Fatalf("requeue of an aborted row = %d\n%s", r.code, r.stderr)
	}
	if r := runCLI(t, h.env(), "daemon", "outbox", "--json"); r.code != 0 || strings.Count(r.stdout, `"status"`) != 2 {
		t.Fatalf("outbox --json = %d\n%s", r.code, r.stdout)
	}
}

// inbox, inbox flush, inbox delete.
func TestInboxVerbs(t *testing.T) {
	f := newMsgFixture(t, nil)
	a := registerTestSession(t, f.d1, f.me, "alice")
	b := registerTestSession(t, f.d2, f.bob, "bert")
	streamB := subscribe(t, f.d2, b.reg.Token)
	sendAndSettle(t, a.cl, b.pub(), "first")
	sendAndSettle(t, a.cl, b.pub(), "second\nline")
	streamB.next(t, "second", messageWith("second\nline"))
	env := f.h2.env("CLAUDEMESH_IPC_TOKEN", b.reg.Token)

	r := runCLI(t, env, "inbox", "--unread", "--json")
	var items []inboxItem
	if err := json.Unmarshal([]byte(r.stdout), &items); err != nil || r.code != 0 || len(items) != 2 || *items[0].Body != "second\nline" {
		t.Fatalf("inbox --unread --json = %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	if r := runCLI(t, env, "inbox", "--unread"); r.code != 0 || !strings.Contains(r.stdout, "no unread messages") {
		t.Fatalf("the listing did not mark rows seen:\n%s", r.stdout)
	}
	r = runCLI(t, env, "message", "inbox", "--limit", "1")
	if r.code != 0 || !strings.Contains(r.stdout, "alice (") || !strings.Contains(r.stdout, "    second\n    line") || strings.Contains(r.stdout, "    first") {
		t.Fatalf("inbox --limit 1 = %d\n%s", r.code, r.stdout)
	}
	if r := runCLI(t, env, "inbox", "flush"); r.code != exitUsage || !strings.Contains(r.stderr, "--all") {
		t.Fatalf("flush without a filter = %d\n%s", r.code, r.stderr)
	}
	if r := runCLI(t, env, "inbox", "flush", "--before", "yesterday"); r.code != exitUsage {
		t.Fatalf("flush --before yesterday = %d", r.code)
	}
	// A mesh that was never joined is an error, not an empty inbox: the
	// user mistyped it, and "no messages" would hide that.
	for _, argv := range [][]string{{"inbox", "--mesh", "alpah"}, {"inbox", "flush", "--mesh", "alpah"}} {
		if r := runCLI(t, env, argv...); r.code != exitNotFound || !strings.Contains(r.stderr, "not joined mesh alpah") ||
			!strings.Contains(r.stderr, "hint: joined: alpha") {
			t.Fatalf("%q = %d\n%s%s", argv, r.code, r.stdout, r.stderr)
		}
	}
	r = runCLI(t, env, "inbox", "rm", items[1].ID)
	if r.code != 0 || !strings.Contains(r.stdout, "deleted inbox row") {
		t.Fatalf("inbox rm = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, env, "inbox", "delete", items[1].ID); r.code != exitNotFound {
		t.Fatalf("deleting it again = %d", r.code)
	}
	r = runCLI(t, env, "inbox", "flush", "--all", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"removed": 1`) {
		t.Fatalf("flush --all = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, f.h2.env(), "inbox", "--no-daemon"); r.code != exitFailure || !strings.Contains(r.stderr, "daemon up") {
		t.Fatalf("inbox without the daemon = %d\n%s", r.code, r.stderr)
	}
}

// kick, disconnect, ban, unban, bans against a real broker.
func TestModerationVerbs(t *testing.T) {
	f := newMsgFixture(t, nil)
	b := registerTestSession(t, f.d2, f.bob, "bert")
	streamB := subscribe(t, f.d2, b.reg.Token)
	env := f.h1.env() // "me" owns the mesh

	r := runCLI(t, env, "kick", "bert")
	if r.code != 0 || !strings.Contains(r.stdout, "kicked 1 peer(s) on alpha: bert") {
		t.Fatalf("kick bert = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	waitFor(t, "bert's link kicked", func() bool { return f.d2.sessionLinkState(f.d2.sessions.Resolve(b.reg.Token)) == LinkKicked })
	// bert's own event stream names the kicked session, for its MCP server.
	streamB.next(t, "bert's kicked status", func(ev DaemonEvent) bool {
		d := eventData(ev)
		return ev.Kind == eventBrokerStatus && d["status"] == string(LinkKicked) && d["session_id"] == b.reg.SessionID
	})
	// Kicking bob's daemon is refused, with the way out.
	r = runCLI(t, env, "peer", "kick", "bob")
	if r.code != 0 || !strings.Contains(r.stdout, "not kicked: bob") || !strings.Contains(r.stdout, "claudemesh ban <peer>") ||
		!strings.Contains(r.stdout, "claudemesh daemon down") {
		t.Fatalf("kick a daemon = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Your own member: your daemon is refused, and the CLI's own link is not
	// a target at all. (The earlier CLI links go with their sockets, which
	// the broker may see close a moment after the verb returned.)
	waitFor(t, "earlier CLI links gone", func() bool {
		f.broker.mu.Lock()
		defer f.broker.mu.Unlock()
		for _, p := range f.broker.room(f.me.MeshID).peers {
			if p.oneShot() {
				return false
			}
		}
		return true
	})
	if r := runCLI(t, env, "kick", "me"); r.code != 0 || !strings.Contains(r.stdout, "not kicked: me —") {
		t.Fatalf("kick me = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, env, "kick", "ghost"); r.code != exitNotFound {
		t.Fatalf("kick nobody = %d\n%s", r.code, r.stdout)
	}
	if r := runCLI(t, env, "kick", "ghost", "--json"); r.code != exitNotFound || !strings.Contains(r.stdout, `"ok": false`) {
		t.Fatalf("kick nobody --json = %d\n%s", r.code, r.stdout)
	}
	if r := runCLI(t, env, "kick"); r.code != exitUsage {
		t.Fatalf("kick with no target = %d", r.code)
	}
	if r := runCLI(t, env, "peer", "disconnect", "--stale", "1h", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"affected": []`) {
		t.Fatalf("disconnect --stale 1h = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, f.h2.env(), "ban", "me"); r.code != exitPermission {
		t.Fatalf("a plain member banning = %d\n%s", r.code, r.stderr)
	}
	r = runCLI(t, env, "ban", "bob")
	if r.code != 0 || !strings.Contains(r.stdout, "banned bob from alpha") || !strings.Contains(r.stdout, "claudemesh unban bob --mesh alpha") {
		t.Fatalf("ban bob = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	f.d2.waitLink(t, "alpha", LinkBanned)
	// The banned side is told so, not "queued" for a link that never opens.
	for _, argv := range [][]string{{"send", f.me.Pubkey, "let me in"}, {"peers"}} {
		if r := runCLI(t, f.h2.env(), argv...); r.code != exitAuth || !strings.Contains(r.stderr, "banned from mesh alpha") ||
			!strings.Contains(r.stderr, "claudemesh unban") {
			t.Fatalf("%q while banned = %d\n%s%s", argv[0], r.code, r.stdout, r.stderr)
		}
	}
	r = runCLI(t, env, "bans", "--json")
	var bans []BanEntry
	if err := json.Unmarshal([]byte(r.stdout), &bans); err != nil || len(bans) != 1 || bans[0].Pubkey != f.bob.Pubkey {
		t.Fatalf("bans = %v\n%s%s", err, r.stdout, r.stderr)
	}
	if r := runCLI(t, env, "unban", "bob"); r.code != 0 || !strings.Contains(r.stdout, "unbanned bob") {
		t.Fatalf("unban = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, env, "peer", "bans"); r.code != 0 || !strings.Contains(r.stdout, "no banned members on alpha") {
		t.Fatalf("bans after unban = %d\n%s", r.code, r.stdout)
	}
}

// A banned member's daemon is told how to come back, and after an unban a
// config reload restarts its banned links — the member's and its sessions'
// — without a daemon restart.
func TestUnbannedMemberReconnectsOnReload(t *testing.T) {
	var log syncBuffer
	f := newMsgFixture(t, func(o *DaemonOptions) { o.Log = slog.New(slog.NewJSONHandler(&log, nil)) })
	b := registerTestSession(t, f.d2, f.bob, "bert")
	bert := func() LinkState { return f.d2.sessionLinkState(f.d2.sessions.Resolve(b.reg.Token)) }
	owner := f.h1.env()
	if r := runCLI(t, owner, "ban", "bob"); r.code != 0 {
		t.Fatalf("ban bob = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	f.d2.waitLink(t, "alpha", LinkBanned)
	waitFor(t, "bert's link banned", func() bool { return bert() == LinkBanned })
	r := runCLI(t, f.h2.env(), "send", f.me.Pubkey, "let me in")
	if r.code != exitAuth || !strings.Contains(r.stderr, "claudemesh unban") || !strings.Contains(r.stderr, "claudemesh daemon down && claudemesh daemon up") {
		t.Fatalf("send while banned = %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	if r := runCLI(t, owner, "unban", "bob"); r.code != 0 {
		t.Fatalf("unban bob = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if err := f.d2.client("").Do(context.Background(), "POST", "/v1/reload", nil, nil); err != nil {
		t.Fatal(err)
	}
	f.d2.waitLink(t, "alpha", LinkOpen)
	waitFor(t, "bert's link open again", func() bool { return bert() == LinkOpen })
	if !strings.Contains(log.String(), `"msg":"member_link_restarted","mesh":"alpha","was":"banned"`) {
		t.Fatalf("no member_link_restarted line in the log:\n%s", log.String())
	}
	sendAndSettle(t, f.d2.client(""), f.me.Pubkey, "back in")
}

// A send retried with the client_message_id of the first attempt is
// delivered once, through the daemon and over the one-shot path alike.
func TestSendClientIDRetryIsDeduplicated(t *testing.T) {
	f := newMsgFixture(t, nil)
	b := registerTestSession(t, f.d2, f.bob, "bert")
	for _, path := range [][]string{nil, {"--no-daemon"}} {
		id := "retry-" + newUUID()
		text := "once " + id
		for range 2 {
			args := append([]string{"send", "bert", text, "--client-id", id}, path...)
			if r := runCLI(t, f.h1.env(), args...); r.code != 0 {
				t.Fatalf("%v = %d\n%s%s", args, r.code, r.stdout, r.stderr)
			}
		}
		waitFor(t, "the message in bert's inbox", func() bool { return countBody(inboxItems(t, b.cl), text) > 0 })
		if n := countBody(inboxItems(t, b.cl), text); n != 1 {
			t.Fatalf("%v: %d copies in the inbox, want 1", path, n)
		}
	}
	if r := runCLI(t, f.h1.env(), "send", "--self", f.me.Pubkey, "x", "--client-id", "a"); r.code != exitUsage {
		t.Fatalf("--self with --client-id = %d\n%s", r.code, r.stderr)
	}
}

// The message can come from stdin (a lone -) or a file (--file), whole,
// newlines and all; a text over the broker's limit is refused saying the
// limit and what to do; input that is no text is refused before anything
// is sent.
func TestSendBodyFromStdinAndFile(t *testing.T) {
	f := newMsgFixture(t, nil)
	b := registerTestSession(t, f.d2, f.bob, "bert")
	streamB := subscribe(t, f.d2, b.reg.Token)
	env := f.h1.env()
	env["CLAUDEMESH_INTERNAL_NO_AUTOSPAWN"] = "1"
	runWith := func(stdin string, args ...string) procResult {
		var out, errb bytes.Buffer
		code := run(context.Background(), args, Env{Getenv: mapEnv(env), Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb})
		return procResult{code: code, stdout: out.String(), stderr: errb.String()}
	}
	piped := "line one\nline two from stdin\n"
	if r := runWith(piped, "send", "bert", "-"); r.code != 0 {
		t.Fatalf("send - = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	streamB.next(t, "the stdin body", messageWith(piped))

	file := filepath.Join(t.TempDir(), "notes.md")
	long := strings.Repeat("a line of notes\n", 2000) // 32 KB: past any argv comfort, under the limit
	if err := os.WriteFile(file, []byte(long), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runWith("", "send", "bert", "--file", file); r.code != 0 {
		t.Fatalf("send --file = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	streamB.next(t, "the file body", messageWith(long))

	huge := filepath.Join(t.TempDir(), "huge.txt")
	if err := os.WriteFile(huge, []byte(strings.Repeat("x", 60_000)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  []string
	}{
		{"over the broker's limit", "", []string{"send", "bert", "--file", huge}, exitFailure, []string{"about 4", "bytes of text", "hint: make it smaller", "skill share"}},
		{"over the read cap", strings.Repeat("y", maxSendInput+1), []string{"send", "bert", "-"}, exitUsage, []string{"over 1048576 bytes", "hint: make it smaller"}},
		{"not text", "caf\xe9", []string{"send", "bert", "-"}, exitUsage, []string{"not valid UTF-8"}},
		{"empty stdin", "", []string{"send", "bert", "-"}, exitUsage, []string{"usage: claudemesh send"}},
		{"words and a file", "", []string{"send", "bert", "hi", "--file", file}, exitUsage, []string{"not both"}},
		{"a file that is not there", "", []string{"send", "bert", "--file", file + ".gone"}, exitIO, []string{"reading the message from"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runWith(tc.stdin, tc.args...)
			for _, w := range tc.want {
				if r.code != tc.code || !strings.Contains(r.stderr, w) {
					t.Fatalf("%q = %d\n%s%s\nwant exit %d with %q", tc.args, r.code, r.stdout, r.stderr, tc.code, w)
				}
			}
		})
	}
}

// The daemon takes the message and the answer never comes back (it died
// mid-request): the CLI reports the failure with the client_message_id it
// chose, and the retry it suggests is delivered once.
func TestSendLostAnswerPrintsClientID(t *testing.T) {
	f := newMsgFixture(t, nil)
	b := registerTestSession(t, f.d2, f.bob, "bert")
	// A daemon socket in front of d1 that forwards every request, and hangs
	// up on a send once d1 has accepted it.
	front := shortTempDir(t)
	l, err := net.Listen("unix", filepath.Join(front, "daemon.sock"))
	if err != nil {
		t.Fatal(err)
	}
	real := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", f.h1.Paths.SocketFile())
	}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.Scheme, r.URL.Host, r.RequestURI = "http", "daemon", ""
		resp, err := real.RoundTrip(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		if r.URL.Path == "/v1/send" {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	env := f.h1.env("CLAUDEMESH_DAEMON_DIR", front)
	r := runCLI(t, env, "send", "bert", "accepted, answer lost")
	m := regexp.MustCompile(`retry with --client-id (\S+) `).FindStringSubmatch(r.stderr)
	if r.code == 0 || m == nil || !strings.Contains(r.stderr, "client_message_id is "+m[1]) {
		t.Fatalf("send with the answer lost = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	waitFor(t, "the accepted message in bert's inbox", func() bool { return countBody(inboxItems(t, b.cl), "accepted, answer lost") == 1 })
	if r := runCLI(t, f.h1.env(), "send", "bert", "accepted, answer lost", "--client-id", m[1]); r.code != 0 {
		t.Fatalf("retry = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if n := countBody(inboxItems(t, b.cl), "accepted, answer lost"); n != 1 {
		t.Fatalf("%d copies after the retry, want 1", n)
	}
}

// A member who is offline is listed by `members` and reached by name: the
// DM is queued for them and arrives when they come online. Warm and cold.
func TestSendToAnOfflineMemberByName(t *testing.T) {
	f := newMsgFixture(t, nil)
	carol := addTestMember(t, f.broker, f.me, "carol", "member") // known to the mesh, not online yet
	a := registerTestSession(t, f.d1, f.me, "alice")
	env := f.h1.env("CLAUDEMESH_IPC_TOKEN", a.reg.Token)

	r := runCLI(t, env, "members")
	if r.code != 0 || !strings.Contains(r.stdout, "members of alpha (3, 2 online)") || !strings.Contains(r.stdout, "carol  member  "+carol.Pubkey[:16]) ||
		!strings.Contains(r.stdout, "offline") {
		t.Fatalf("members = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, env, "members", "--json")
	var doc struct {
		Members []map[string]any `json:"members"`
		Partial []string         `json:"partial"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != 0 || len(doc.Members) != 3 || len(doc.Partial) != 0 {
		t.Fatalf("members --json = %d %v\n%s", r.code, err, r.stdout)
	}
	for _, m := range doc.Members {
		if m["displayName"] == "carol" && (m["online"] != false || m["pubkey"] != carol.Pubkey || m["mesh"] != "alpha") {
			t.Fatalf("carol's row = %v", m)
		}
	}

	r = runCLI(t, env, "send", "carol", "while you were away")
	if r.code != 0 || !strings.Contains(r.stdout, "carol ("+carol.Pubkey[:16]) || !strings.Contains(r.stdout, "not connected now") {
		t.Fatalf("send to an offline member by name = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, f.h1.env("CLAUDEMESH_NO_DAEMON", "1"), "send", "CAROL", "and from the cold path")
	if r.code != 0 {
		t.Fatalf("cold send to an offline member by name = %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	h := newTestHome(t)
	h.writeConfig(t, carol)
	d := startTestDaemon(t, h, nil)
	waitFor(t, "both messages in carol's inbox", func() bool {
		items := inboxItems(t, d.client(""))
		return countBody(items, "while you were away") == 1 && countBody(items, "and from the cold path") == 1
	})
}

func TestAnyRecipientShownUnasked(t *testing.T) {
	row := func(key, mesh, surfacing, role string, groups ...string) meshPeerRow {
		p := meshPeerRow{PeerRow: PeerRow{Pubkey: key, PeerRole: role}, Mesh: mesh}
		if surfacing != "" {
			p.Profile = &Profile{Surfacing: surfacing}
		}
		for _, g := range groups {
			p.Groups = append(p.Groups, GroupRef{Name: g})
		}
		return p
	}
	cases := []struct {
		name  string
		peers []meshPeerRow
		to    string
		want  bool
	}{
		{"broadcast, everyone pulls", []meshPeerRow{row("a", "m", surfacedViaPull, ""), row("b", "m", surfacedViaPull, "")}, "*", false},
		{"broadcast, one hooks session", []meshPeerRow{row("a", "m", surfacedViaPull, ""), row("b", "m", surfacedViaHooks, "")}, "*", true},
		{"broadcast, only the sender has a channel", []meshPeerRow{row("self", "m", surfacedViaChannel, ""), row("b", "m", surfacedViaPull, "")}, "*", false},
		{"broadcast, a channel on another mesh", []meshPeerRow{row("b", "other", surfacedViaChannel, "")}, "*", false},
		{"broadcast, a control-plane row", []meshPeerRow{row("d", "m", surfacedViaChannel, peerRoleControlPlane)}, "*", false},
		{"broadcast, no profile", []meshPeerRow{row("b", "m", "", "")}, "*", false},
		{"group, its member has a channel", []meshPeerRow{row("b", "m", surfacedViaChannel, "", "reviewers")}, "@reviewers", true},
		{"group, a channel outside it", []meshPeerRow{row("b", "m", surfacedViaChannel, "", "ops"), row("c", "m", surfacedViaPull, "", "reviewers")}, "@reviewers", false},
	}
	for _, tc := range cases {
		if got := anyRecipientShownUnasked(tc.peers, tc.to, "m", "self"); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}
