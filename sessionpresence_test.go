// Tests of a session's presence from its hooks and its MCP server: status
// (working, idle, a kept dnd, the decay) and surfacing path (channel,
// hooks, pull) as other members see them in the peer list; a rename;
// peer list and send showing the path.
package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestEffectiveStatus(t *testing.T) {
	now := time.Now()
	fresh, stale := now.Add(-time.Minute), now.Add(-3*time.Minute)
	cases := []struct {
		name         string
		manual, hook string
		hookAt       time.Time
		want         string
	}{
		{"nothing said", "", "", time.Time{}, statusIdle},
		{"a prompt", "", statusWorking, fresh, statusWorking},
		{"a prompt long ago", "", statusWorking, stale, statusIdle},
		{"dnd, then a prompt", statusDND, statusWorking, fresh, statusDND},
		{"dnd, then a stop", statusDND, statusIdle, fresh, statusDND},
		{"working by hand, hooks long ago", statusWorking, statusIdle, stale, statusWorking},
		{"idle by hand, then a prompt", statusIdle, statusWorking, fresh, statusWorking},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := sessionState{manualStatus: tc.manual, hookStatus: tc.hook, hookStatusAt: tc.hookAt}
			if got := effectiveStatus(st, now, hookStatusDecay); got != tc.want {
				t.Errorf("effectiveStatus = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSurfacingOf(t *testing.T) {
	ran := time.Now()
	live := &MCPReport{ProtocolVersion: "2025-11-25", Channel: true}
	cases := []struct {
		name string
		st   sessionState
		want string
	}{
		{"nothing", sessionState{}, surfacedViaPull},
		{"hooks ran", sessionState{hookSeenAt: ran}, surfacedViaHooks},
		{"a live channel, subscribed", sessionState{mcp: live, streams: 1}, surfacedViaChannel},
		{"a live channel, no stream open", sessionState{mcp: live, hookSeenAt: ran}, surfacedViaHooks},
		{"an MCP server no channel was asked for", sessionState{mcp: &MCPReport{ProtocolVersion: "2025-11-25"}, streams: 1}, surfacedViaPull},
		{"a revision without channels", sessionState{mcp: &MCPReport{ProtocolVersion: "2026-07-28", Channel: true}, streams: 1, hookSeenAt: ran}, surfacedViaHooks},
	}
	for _, tc := range cases {
		if got := surfacingOf(tc.st); got != tc.want {
			t.Errorf("%s: surfacingOf = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// peerAsSeen is the row other members see for a session key.
func peerAsSeen(t *testing.T, cl *DaemonClient, key string) (PeerRow, bool) {
	t.Helper()
	resp, err := callIPC(context.Background(), cl, apiPeers, MeshQuery{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range resp.Peers {
		if p.Row.Pubkey == key {
			return p.Row, true
		}
	}
	return PeerRow{}, false
}

func waitPeer(t *testing.T, cl *DaemonClient, key, what string, ok func(PeerRow) bool) {
	t.Helper()
	waitFor(t, what, func() bool {
		p, found := peerAsSeen(t, cl, key)
		return found && ok(p)
	})
}

func surfacing(p PeerRow) string {
	if p.Profile == nil {
		return ""
	}
	return p.Profile.Surfacing
}

// What bob's daemon sees of a plain session on alice's as its hooks run:
// status with the turn, a dnd kept, the decay back to idle, the path.
func TestSessionPresenceFromHooks(t *testing.T) {
	f := newMsgFixture(t, func(o *DaemonOptions) {
		o.HookStatusDecay, o.PresenceSweep = 300*time.Millisecond, 20*time.Millisecond
	})
	bob := f.d2.client("")
	ctx := context.Background()
	sid := newUUID()
	hook := func(event string, extra ...func(*HookRequest)) HookReply {
		in := HookRequest{Event: event, ClaudeSessionID: sid, ClaudePid: os.Getpid(), Cwd: "/tmp"}
		for _, e := range extra {
			e(&in)
		}
		rep, err := callIPC(ctx, f.d1.client(""), apiHook, in)
		if err != nil {
			t.Fatalf("hook %s: %v", event, err)
		}
		return rep
	}
	key := hook(hookSessionStart).Session.SessionPubkey
	waitPeer(t, bob, key, "the plain session idle, by hooks", func(p PeerRow) bool { return p.Status == statusIdle && surfacing(p) == surfacedViaHooks })

	hook(hookUserPromptSubmit)
	waitPeer(t, bob, key, "working after a prompt", func(p PeerRow) bool { return p.Status == statusWorking })
	waitPeer(t, bob, key, "idle again once the hooks' status decays", func(p PeerRow) bool { return p.Status == statusIdle })
	hook(hookUserPromptSubmit)
	waitPeer(t, bob, key, "working after another prompt", func(p PeerRow) bool { return p.Status == statusWorking })
	hook(hookStop)
	waitPeer(t, bob, key, "idle after a stop", func(p PeerRow) bool { return p.Status == statusIdle })

	me := newDaemonClientAs(f.h1.Paths.SocketFile(), callerIdentity{ClaudeSessionID: sid})
	if _, err := callIPC(ctx, me, apiProfile, ProfileRequest{Status: ptr(statusDND)}); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, bob, key, "dnd by hand", func(p PeerRow) bool { return p.Status == statusDND })
	hook(hookUserPromptSubmit)
	hook(hookStop)
	s := f.d1.sessions.BySessionID(sid)
	f.d1.syncPresence(s) // whatever the hooks' syncs would send, in this goroutine
	if v, _ := me.SessionMe(ctx); v == nil || v.Status != statusDND || f.d1.states.get(s).sentStatus != statusDND {
		t.Fatalf("after hooks a manual dnd is %+v (sent %q), want dnd kept", v, f.d1.states.get(s).sentStatus)
	}
	if _, err := callIPC(ctx, me, apiProfile, ProfileRequest{Status: ptr(statusIdle)}); err != nil {
		t.Fatal(err)
	}
	hook(hookUserPromptSubmit)
	waitPeer(t, bob, key, "working again once dnd is lifted", func(p PeerRow) bool { return p.Status == statusWorking })

	// The MCP server of a claude started for our channel, subscribed:
	// channel; its stream gone: hooks again.
	if _, err := callIPC(ctx, me, apiSessionMCP, MCPReport{ProtocolVersion: "2025-11-25", ClientName: "claude-code", Channel: true}); err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	if _, _, err := me.Events(sctx); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, bob, key, "channel while its MCP server is subscribed", func(p PeerRow) bool { return surfacing(p) == surfacedViaChannel })
	stop()
	waitPeer(t, bob, key, "hooks once the stream is gone", func(p PeerRow) bool { return surfacing(p) == surfacedViaHooks })
}

// A session with neither hooks nor a channel is pull; a send to it says
// so; peer list shows each session's path, human and --json.
func TestPullOnlySessionShown(t *testing.T) {
	f := newMsgFixture(t, nil)
	pullOnly := registerTestSession(t, f.d1, f.me, "quiet")
	bob := f.d2.client("")
	waitPeer(t, bob, pullOnly.pub(), "the pull-only session", func(p PeerRow) bool { return surfacing(p) == surfacedViaPull })

	env := f.h2.env()
	r := runBinary(t, env, "send", pullOnly.pub(), "can you hear me?")
	if r.code != 0 || !strings.Contains(r.stdout, "sees the message only when it runs 'claudemesh inbox'") {
		t.Fatalf("send to a pull-only session = %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r := runBinary(t, env, "send", "quiet", "by name", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"recipientSurfacing": "pull"`) {
		t.Fatalf("send --json by name = %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r := runBinary(t, env, "peer", "list"); !strings.Contains(r.stdout, "messages: pull (only when it runs claudemesh inbox)") {
		t.Errorf("peer list:\n%s", r.stdout)
	}
	if r := runBinary(t, env, "peer", "list", "--json"); !strings.Contains(r.stdout, `"surfacing": "pull"`) {
		t.Errorf("peer list --json:\n%s", r.stdout)
	}
}

// profile --name renames a plain session: the new name is on the mesh
// and comes back when the session registers again (a resume).
func TestRenamePlainSession(t *testing.T) {
	f := newMsgFixture(t, nil)
	ctx := context.Background()
	sid := newUUID()
	in := HookRequest{Event: hookSessionStart, ClaudeSessionID: sid, ClaudePid: os.Getpid()}
	rep, err := callIPC(ctx, f.d1.client(""), apiHook, in)
	if err != nil {
		t.Fatal(err)
	}
	key := rep.Session.SessionPubkey
	me := newDaemonClientAs(f.h1.Paths.SocketFile(), callerIdentity{ClaudeSessionID: sid})
	if _, err := callIPC(ctx, me, apiProfile, ProfileRequest{DisplayName: ptr("reviewer"), Summary: ptr("x")}); ipcStatus(err) != 400 {
		t.Errorf("a rename with other fields = %v, want 400", err)
	}
	if _, err := callIPC(ctx, f.d1.client(""), apiProfile, ProfileRequest{DisplayName: ptr("reviewer")}); ipcStatus(err) != 400 {
		t.Errorf("a rename outside a session = %v, want 400", err)
	}
	if _, err := callIPC(ctx, me, apiProfile, ProfileRequest{DisplayName: ptr("  reviewer ")}); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, f.d2.client(""), key, "the new name on the mesh", func(p PeerRow) bool { return p.DisplayName == "reviewer" })
	// A resume: the session registered again under another claude process.
	f.d1.sessions.Deregister(f.d1.sessions.BySessionID(sid).Token, "test")
	in.ClaudePid = os.Getppid()
	rep, err = callIPC(ctx, f.d1.client(""), apiHook, in)
	if err != nil || !rep.Registered || rep.Session.DisplayName != "reviewer" || rep.Session.SessionPubkey != key {
		t.Fatalf("after a resume = %+v, %v; want the same key, named reviewer", rep.Session, err)
	}
}
