package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// send prints the highest rung its receipts reached within --wait, in
// words; --wait 0 returns at queued; message status and the outbox list
// show the ladder; --json has it in each document's key style.
func TestSendReportsTheLadder(t *testing.T) {
	f := newMsgFixture(t, nil)
	a := registerTestSession(t, f.d1, f.me, "alice")
	b := registerTestSession(t, f.d2, f.bob, "bert")
	env := f.h1.env("CLAUDEMESH_IPC_TOKEN", a.reg.Token)

	// bert has neither channel nor hooks: the ladder waits for no more
	// than delivered, and says why it goes no further. Alice's daemon
	// learns bert's path from the broker after bert's link opens.
	waitPeer(t, f.d1.client(""), b.pub(), "bert pull-only", func(p PeerRow) bool { return surfacing(p) == surfacedViaPull })
	r := runCLI(t, env, "send", "bert", "hello", "--wait", "10s")
	if r.code != 0 || !strings.Contains(r.stdout, "sent to bert") ||
		!strings.Contains(r.stdout, "delivered to bert") || !strings.Contains(r.stdout, "pull-only") {
		t.Fatalf("send = %d\n%q%q", r.code, r.stdout, r.stderr)
	}

	r = runCLI(t, env, "send", "bert", "json please", "--wait", "10s", "--json")
	var doc struct {
		Status    string     `json:"status"`
		MessageID string     `json:"messageId"`
		Ladder    *ladderDoc `json:"ladder"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || doc.Ladder == nil || doc.Ladder.Rung != rungDelivered ||
		len(doc.Ladder.Recipients) != 1 || doc.Ladder.Recipients[0].Pubkey != b.pub() || doc.Ladder.Recipients[0].DeliveredMs == nil {
		t.Fatalf("send --json = %v\n%s%s", err, r.stdout, r.stderr)
	}

	// bert's hook shows it; message status by the printed id sees that.
	if _, err := callIPC(context.Background(), b.cl, apiHook, HookRequest{Event: hookUserPromptSubmit}); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, env, "message", "status", shortID(doc.MessageID), "--wait", "10s")
	if r.code != 0 || !strings.Contains(r.stdout, "surfaced to bert via hook") {
		t.Fatalf("message status = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, env, "message", "status", doc.MessageID, "--json")
	var st MessageReply
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Message.Ladder == nil || st.Message.Ladder.Rung != rungSurfaced {
		t.Fatalf("message status --json = %v\n%s", err, r.stdout)
	}
	if r := runCLI(t, env, "message", "status", "no-such-message"); r.code != exitNotFound {
		t.Fatalf("message status of nothing = %d, want %d\n%s", r.code, exitNotFound, r.stderr)
	}

	r = runCLI(t, f.h1.env(), "daemon", "outbox", "list")
	// The hook showed bert both messages: each row's ladder column says so.
	if r.code != 0 || strings.Count(r.stdout, "  surfaced  ") != 2 {
		t.Fatalf("outbox list = %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	start := time.Now()
	r = runCLI(t, env, "send", "bert", "no waiting", "--wait", "0")
	if r.code != 0 || !strings.Contains(r.stdout, "queued for bert") {
		t.Fatalf("send --wait 0 = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("send --wait 0 took %s", el)
	}

	// To a key, --wait 0 asks the broker for nothing, not even who the key
	// is: the key is all it can name, and whether bert is online stays
	// unsaid.
	r = runCLI(t, env, "send", b.pub(), "no waiting, by key", "--wait", "0")
	if r.code != 0 || !strings.Contains(r.stdout, "queued for "+shortKey(b.pub())) {
		t.Fatalf("send <key> --wait 0 = %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, env, "send", b.pub(), "no waiting, by key, json", "--wait", "0", "--json")
	var queued map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &queued); err != nil || queued["status"] != "queued" {
		t.Fatalf("send <key> --wait 0 --json = %v\n%s%s", err, r.stdout, r.stderr)
	}
	if online := queued["recipientOnline"]; online != nil {
		t.Fatalf("send <key> --wait 0 --json says recipientOnline = %v: it asked the broker", online)
	}
}

// The ladder in words, rung by rung: a table of what send prints.
func TestLadderWords(t *testing.T) {
	ms := func(n int64) *int64 { return &n }
	three := 3
	cases := []struct {
		name   string
		l      messageLadder
		want   string
		ifPull bool
	}{
		{"surfaced by a hook", messageLadder{Rung: rungSurfaced, Receipts: receiptsOn, Recipients: []recipientRung{{Rung: rungSurfaced, Via: "hooks", Confirmed: true, SurfacedMs: ms(840)}}},
			"✔ surfaced to bob via hook in 840 ms", false},
		{"channel not confirmed", messageLadder{Rung: rungSurfaced, Receipts: receiptsOn, Recipients: []recipientRung{{Rung: rungSurfaced, Via: "channel", SurfacedMs: ms(1500)}}},
			"✔ surfaced to bob via channel in 1.5 s (not confirmed yet)", false},
		{"delivered, pull-only", messageLadder{Rung: rungDelivered, Receipts: receiptsOn, Recipients: []recipientRung{{Rung: rungDelivered, DeliveredMs: ms(12)}}},
			"✔ delivered to bob's daemon in 12 ms; not shown yet — bob is pull-only: it sees the message only when it runs 'claudemesh inbox'", true},
		{"delivered, shares no more", messageLadder{Rung: rungDelivered, Receipts: receiptsOn, Recipients: []recipientRung{{Rung: rungDelivered, Shares: sharesDelivered, DeliveredMs: ms(12)}}},
			"✔ delivered to bob's daemon in 12 ms; bob does not share more", false},
		{"replied", messageLadder{Rung: rungReplied, Receipts: receiptsOn, Recipients: []recipientRung{{Rung: rungReplied, RepliedMs: ms(3200)}}},
			"✔ bob replied in 3.2 s", false},
		{"no receipts", messageLadder{Rung: rungSent, Receipts: receiptsOff}, "⚠ its broker does not relay receipts: the ladder stops at sent", false},
		{"dead", messageLadder{Rung: rungDead, Reason: "unknown_target: gone"}, "✘ dead: unknown_target: gone", false},
		{"a broadcast", messageLadder{Rung: rungDelivered, Receipts: receiptsOn, Expected: &three, Summary: "2/3 surfaced",
			Recipients: []recipientRung{{Name: "x", Rung: rungSurfaced, Via: "pull", Confirmed: true, SurfacedMs: ms(5)}}}, "2/3 surfaced\n✔ surfaced to x via claudemesh inbox in 5 ms", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			surfacing := ""
			if tc.ifPull {
				surfacing = surfacedViaPull
			}
			if got := strings.Join(ladderWords(tc.l, "bob", surfacing), "\n"); got != tc.want {
				t.Fatalf("ladderWords = %q, want %q", got, tc.want)
			}
		})
	}
}
