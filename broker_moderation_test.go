// Tests of kick, disconnect, ban, unban and list_bans: who may, whom they
// reach, and what a one-shot CLI link leaves behind.
package main

import (
	"slices"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The kick truth table (claudemesh 1.34.15): kick skips control-plane connections and lists
// them; disconnect closes everything it matches.
func TestBrokerKickTruthTable(t *testing.T) { forEachStore(t, testBrokerKickTruthTable) }

func testBrokerKickTruthTable(t *testing.T) {
	cases := []struct {
		name      string
		verb      string
		session   bool
		closed    bool
		closeCode websocket.StatusCode
		reason    string
		skipped   bool
	}{
		{"kick session", frameKick, true, true, closeKicked, "kicked", false},
		{"kick control-plane", frameKick, false, false, 0, "", true},
		{"disconnect session", frameDisconnect, true, true, closeNormal, "disconnected", false},
		{"disconnect control-plane", frameDisconnect, false, true, closeNormal, "disconnected", false},
	}
	for _, tc := range cases {
		for _, by := range []string{"name", "member key prefix", "session key"} {
			if by == "session key" && !tc.session {
				continue
			}
			t.Run(tc.name+" by "+by, func(t *testing.T) {
				b, url := startTestBroker(t)
				owner := newTestMesh(t, b, url, "team", "alice")
				bob := addTestMember(t, b, owner, "bob", roleMember)
				admin := connectMember(t, url, owner)
				sess := mustNewKeypair()
				var victim *testClient
				if tc.session {
					victim = connectSession(t, url, bob, sess, "bob-s")
				} else {
					victim = connectMember(t, url, bob)
				}
				target := map[string]string{"name": "bob-s", "member key prefix": bob.Pubkey[:12], "session key": sess.PublicHex()}[by]
				if !tc.session && by == "name" {
					target = "bob"
				}
				ack := admin.roundTrip(map[string]any{"type": tc.verb, "target": target})
				wantType := frameKickAck
				if tc.verb == frameDisconnect {
					wantType = frameDisconnectAck
				}
				if ack.str("type") != wantType {
					t.Fatalf("reply = %v", ack)
				}
				kicked, _ := ack["kicked"].([]any)
				affected, _ := ack["affected"].([]any)
				skipped, hasSkipped := ack["skipped_control_plane"].([]any)
				if tc.closed != (len(kicked) == 1) || len(kicked) != len(affected) {
					t.Fatalf("kicked = %v affected = %v", kicked, affected)
				}
				if tc.skipped != hasSkipped || (tc.skipped && len(skipped) != 1) {
					t.Fatalf("skipped_control_plane = %v (present %v), want present %v", skipped, hasSkipped, tc.skipped)
				}
				if tc.closed {
					code, reason := victim.expectClose()
					if code != tc.closeCode || reason != tc.reason {
						t.Fatalf("victim closed %d %q, want %d %q", code, reason, tc.closeCode, tc.reason)
					}
					left := admin.expect(framePush, func(f frame) bool { return f.str("event") == eventPeerLeft })
					if left["eventData"].(map[string]any)["pubkey"] == "" {
						t.Fatalf("peer_left = %v", left)
					}
				} else {
					// Still connected: it still answers.
					victim.roundTrip(map[string]any{"type": frameListPeers})
				}
			})
		}
	}
}

func TestBrokerModerationNeedsOwnerOrAdmin(t *testing.T) {
	forEachStore(t, testBrokerModerationNeedsOwnerOrAdmin)
}

func testBrokerModerationNeedsOwnerOrAdmin(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	carol := addTestMember(t, b, owner, "carol", roleAdmin)
	connectMember(t, url, owner)
	bc := connectMember(t, url, bob)
	cc := connectMember(t, url, carol)
	for _, req := range []map[string]any{
		{"type": frameKick, "target": "alice"},
		{"type": frameDisconnect, "all": true},
		{"type": frameBan, "target": "alice"},
		{"type": frameUnban, "target": "alice"},
		{"type": frameListBans},
	} {
		if f := bc.roundTrip(req); f.str("code") != codeForbidden {
			t.Errorf("%v by a plain member = %v, want forbidden", req["type"], f)
		}
	}
	// An admin may moderate, but not ban the owner or itself.
	if f := cc.roundTrip(map[string]any{"type": frameBan, "target": "alice"}); f.str("code") != codeForbidden {
		t.Errorf("admin banning the owner = %v", f)
	}
	if f := cc.roundTrip(map[string]any{"type": frameBan, "target": "carol"}); f.str("code") != codeInvalid {
		t.Errorf("admin banning itself = %v", f)
	}
	if f := cc.roundTrip(map[string]any{"type": frameBan, "target": "nobody"}); f.str("code") != codeNotFound {
		t.Errorf("ban of nobody = %v", f)
	}
	if f := cc.roundTrip(map[string]any{"type": frameKick, "target": "b"}); len(f["kicked"].([]any)) != 0 {
		t.Errorf("a one-letter prefix must match nothing: %v", f)
	}
	if f := cc.roundTrip(map[string]any{"type": frameListBans}); f.str("type") != frameListBansResult {
		t.Errorf("admin list_bans = %v", f)
	}
}

func TestBrokerKickAllSkipsCaller(t *testing.T) { forEachStore(t, testBrokerKickAllSkipsCaller) }

func testBrokerKickAllSkipsCaller(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	admin := connectSession(t, url, owner, mustNewKeypair(), "alice-s")
	s1 := connectSession(t, url, bob, mustNewKeypair(), "b1")
	s2 := connectSession(t, url, bob, mustNewKeypair(), "b2")
	connectMember(t, url, bob)
	ack := admin.roundTrip(map[string]any{"type": frameKick, "all": true})
	if len(ack["kicked"].([]any)) != 2 || len(ack["skipped_control_plane"].([]any)) != 1 {
		t.Fatalf("kick all = %v", ack)
	}
	for _, s := range []*testClient{s1, s2} {
		if code, _ := s.expectClose(); code != closeKicked {
			t.Fatalf("close = %d", code)
		}
	}
	admin.roundTrip(map[string]any{"type": frameListPeers})
}

// A moderator's own connection is never among its targets: disconnecting
// or kicking by its own name reaches its other connections and still gets
// the ack, instead of closing the socket that waits for it.
func TestBrokerModerationNeverTargetsTheCaller(t *testing.T) {
	forEachStore(t, testBrokerModerationNeverTargetsTheCaller)
}

func testBrokerModerationNeverTargetsTheCaller(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	other := connectMember(t, url, owner) // alice's daemon
	cli := dialTestClient(t, url)
	// 30 s back: not the timestamp of the daemon's hello, or it is a replay.
	cli.sendJSON(signedHello(t, owner, "cli-1", mustNewKeypair().PublicHex(), time.Now().Add(-30*time.Second)))
	cli.expect(frameHelloAck, nil)

	ack := cli.roundTrip(map[string]any{"type": frameKick, "target": "alice"})
	if skipped, _ := ack["skipped_control_plane"].([]any); len(skipped) != 1 {
		t.Fatalf("kick alice = %v, want only the daemon skipped", ack)
	}
	ack = cli.roundTrip(map[string]any{"type": frameDisconnect, "target": "alice"})
	if ack.str("type") != frameDisconnectAck || len(ack["affected"].([]any)) != 1 {
		t.Fatalf("disconnect alice = %v, want the daemon's connection only", ack)
	}
	if code, _ := other.expectClose(); code != closeNormal {
		t.Fatalf("the daemon's connection closed %d", code)
	}
	cli.roundTrip(map[string]any{"type": frameListPeers}) // the caller's socket is still open
}

// A CLI's one-shot link (plain hello, channel claude-code) is not announced,
// and it leaves the presence list with its socket: no grace window, no
// peer_left, no ghost for `kick` to list.
func TestBrokerOneShotCLILinkLeavesNoTrace(t *testing.T) {
	forEachStore(t, testBrokerOneShotCLILinkLeavesNoTrace)
}

func testBrokerOneShotCLILinkLeavesNoTrace(t *testing.T) {
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")
	bob := addTestMember(t, b, owner, "bob", roleMember)
	carol := addTestMember(t, b, owner, "carol", roleMember)
	watcher := connectMember(t, url, bob)
	cli := dialTestClient(t, url)
	cli.sendJSON(signedHello(t, owner, "cli-1", mustNewKeypair().PublicHex(), time.Now()))
	cli.expect(frameHelloAck, nil)
	if !slices.Contains(peersOf(watcher), "alice") {
		t.Fatalf("the open CLI link is not listed: %v", peersOf(watcher))
	}
	cli.ws.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "the CLI link gone from the presence list", func() bool { return !slices.Contains(peersOf(watcher), "alice") })
	// The first system push bob sees is carol joining: nothing about the
	// CLI link came before it.
	connectMember(t, url, carol)
	f := watcher.expect(framePush, func(f frame) bool { return f.str("subtype") == "system" })
	if data, _ := f["eventData"].(map[string]any); f.str("event") != eventPeerJoined || data["name"] != "carol" {
		t.Fatalf("first system push = %v, want carol's peer_joined", f)
	}
}
