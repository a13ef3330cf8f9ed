package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The un-surfaced warning with a short threshold: a DM its recipient's
// model has not been shown is told to the sending session once — with its
// next hook, or as an `unsurfaced` event on its live channel's stream — and
// a DM that was shown is never mentioned.
func TestUnsurfacedWarning(t *testing.T) {
	f := newMsgFixture(t, func(o *DaemonOptions) { o.UnsurfacedSweep = 50 * time.Millisecond })
	if err := saveConfig(f.h1.Paths.MachineConfigFile(), &Config{Version: 1, Meshes: []Mesh{f.me}, UnsurfacedWarnAfter: "1s"}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := f.d1.client("").Reload(ctx); err != nil {
		t.Fatal(err)
	}
	alice := registerTestSession(t, f.d1, f.me, "alice")
	bert := registerTestSession(t, f.d2, f.bob, "bert") // neither hooks nor a channel: it is shown nothing unasked
	waitFor(t, "the sender's daemon to see bert as pull-only", func() bool {
		peers, err := callIPC(ctx, f.d1.client(""), apiPeers, MeshQuery{Mesh: "alpha"})
		for _, p := range peers.Peers {
			if err == nil && p.Row.Pubkey == bert.pub() && p.Row.Profile != nil && p.Row.Profile.Surfacing == surfacedViaPull {
				return true
			}
		}
		return false
	})
	until := func(cl *DaemonClient, id, rung string) {
		t.Helper()
		rep, err := callIPCWithin(ctx, cl, 20*time.Second, apiMessage, MessageQuery{ID: id, WaitMs: 10000, Until: rung})
		if err != nil || rep.Message.Ladder == nil || rungOrder[rep.Message.Ladder.Rung] < rungOrder[rung] {
			t.Fatalf("message %s (%s) never reached %s: %+v %v", id, rep.Message.Status, rung, rep.Message.Ladder, err)
		}
	}

	shown := ipcSend(t, alice.cl, map[string]any{"to": bert.pub(), "message": "this one bert sees", "wait_ms": 5000})
	until(alice.cl, shown.ID, rungDelivered)
	if _, err := callIPC(ctx, bert.cl, apiHook, HookRequest{Event: hookUserPromptSubmit}); err != nil {
		t.Fatal(err)
	}
	until(alice.cl, shown.ID, rungSurfaced)
	// bert's hook made it busy: what follows goes out now, not once it is
	// idle again.
	unseen := ipcSend(t, alice.cl, map[string]any{"to": bert.pub(), "message": "this one bert never sees", "priority": "now", "wait_ms": 5000})
	until(alice.cl, unseen.ID, rungDelivered)

	t.Run("with the sender's next hook, once", func(t *testing.T) {
		var told []UnsurfacedNotice
		waitFor(t, "the warning in alice's hook", func() bool {
			rep, err := callIPC(ctx, alice.cl, apiHook, HookRequest{Event: hookUserPromptSubmit})
			told = append(told, rep.Unsurfaced...)
			return err == nil && len(told) > 0
		})
		if len(told) != 1 || told[0].ID != unseen.ID || !strings.Contains(told[0].Text, "bert") ||
			!strings.Contains(told[0].Text, "has not been shown to its model") {
			t.Fatalf("warnings = %+v, want one, of the unseen DM", told)
		}
		out := hookOutput(hookUserPromptSubmit, HookReply{Unsurfaced: told}, time.UTC)
		if out == nil || !strings.Contains(out.HookSpecificOutput.AdditionalContext, "[claudemesh] "+told[0].Text) {
			t.Fatalf("hook output = %+v", out)
		}
		time.Sleep(100 * time.Millisecond) // a sweep or two
		if rep, err := callIPC(ctx, alice.cl, apiHook, HookRequest{Event: hookPostToolUse}); err != nil || len(rep.Unsurfaced) != 0 {
			t.Fatalf("the next hook = %+v %v, want no warning again", rep.Unsurfaced, err)
		}
	})

	t.Run("on a live channel's stream", func(t *testing.T) {
		carol := registerTestSession(t, f.d1, f.me, "carol")
		sctx, stop := context.WithCancel(ctx)
		defer stop()
		events, _, err := carol.cl.Events(sctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := callIPC(ctx, carol.cl, apiSessionMCP, MCPReport{ProtocolVersion: "2025-11-25", ClientName: "claude-code", Channel: true}); err != nil {
			t.Fatal(err)
		}
		sent := ipcSend(t, carol.cl, map[string]any{"to": bert.pub(), "message": "for carol's channel", "priority": "now", "wait_ms": 5000})
		until(carol.cl, sent.ID, rungDelivered)
		deadline := time.After(testWait)
		for {
			select {
			case ev := <-events:
				if ev.Kind != eventUnsurfaced {
					continue
				}
				var n UnsurfacedNotice
				if err := json.Unmarshal(ev.Data, &n); err != nil || n.ID != sent.ID || !strings.Contains(n.Text, "bert") {
					t.Fatalf("unsurfaced event = %s (%v)", ev.Data, err)
				}
				if rep, err := callIPC(ctx, carol.cl, apiHook, HookRequest{Event: hookUserPromptSubmit}); err != nil || len(rep.Unsurfaced) != 0 {
					t.Fatalf("carol's hook after the event = %+v %v, want no warning again", rep.Unsurfaced, err)
				}
				return
			case <-deadline:
				t.Fatal("no unsurfaced event on carol's stream")
			}
		}
	})
}

// The threshold as the config says it.
func TestParseUnsurfacedAfter(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"", defaultUnsurfacedAfter, false},
		{"off", 0, false},
		{"0", 0, false},
		{"90s", 90 * time.Second, false},
		{" 1h ", time.Hour, false},
		{"10", 0, true},
		{"500ms", 0, true},
		{"soon", 0, true},
	} {
		got, err := parseUnsurfacedAfter(tc.in)
		if (err != nil) != tc.bad || !tc.bad && got != tc.want {
			t.Errorf("parseUnsurfacedAfter(%q) = %v, %v; want %v (error: %v)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}
