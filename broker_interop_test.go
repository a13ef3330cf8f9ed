// Interop with the reference stack: a Node peer (ws + libsodium-wrappers)
// talks to our broker; skipped without Node.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// nodeModules finds a node_modules directory holding every package named,
// the way sodiumOracle does; it skips the test (or fails it when
// CLAUDEMESH_REQUIRE_SODIUM=1, as in CI) when node or a package is missing.
func nodeModules(t *testing.T, packages ...string) (node, dir string) {
	t.Helper()
	unavailable := func(reason string) {
		if os.Getenv("CLAUDEMESH_REQUIRE_SODIUM") == "1" {
			t.Fatalf("node interop required but unavailable: %s", reason)
		}
		t.Skipf("node interop skipped: %s (install with: npm install --prefix ~/.cache/claudemesh-test libsodium-wrappers ws@8)", reason)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable("node is not on PATH")
	}
	candidates := filepath.SplitList(os.Getenv("NODE_PATH"))
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, ".cache", "claudemesh-test", "node_modules"))
	}
	for _, d := range candidates {
		ok := true
		for _, p := range packages {
			if _, err := os.Stat(filepath.Join(d, p)); err != nil {
				ok = false
			}
		}
		if ok {
			return node, d
		}
	}
	unavailable("node packages missing")
	return "", ""
}

// nodePeer is testdata/node_peer.js running under node, its JSON lines read
// as events.
type nodePeer struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	events chan map[string]any
}

// startNodePeer runs testdata/node_peer.js with input as its stdin; the
// process is bounded by a 30 s context and waited for at cleanup.
func startNodePeer(t *testing.T, node, modules string, input any) *nodePeer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cmd := exec.CommandContext(ctx, node, filepath.Join("testdata", "node_peer.js"))
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	in, _ := json.Marshal(input)
	cmd.Stdin = bytes.NewReader(in)
	p := &nodePeer{t: t, cmd: cmd, stderr: &bytes.Buffer{}, events: make(chan map[string]any, 16)}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				p.events <- ev
			}
		}
		close(p.events)
	}()
	return p
}

// next returns the peer's next event, failing unless it is want.
func (p *nodePeer) next(want string) map[string]any {
	p.t.Helper()
	select {
	case ev, ok := <-p.events:
		if !ok {
			p.t.Fatalf("node peer ended before %q: %s", want, p.stderr.String())
		}
		if ev["event"] != want {
			p.t.Fatalf("node peer: %v, want %q (stderr %s)", ev, want, p.stderr.String())
		}
		return ev
	case <-time.After(testWait):
		p.t.Fatalf("node peer: no %q event", want)
	}
	return nil
}

// wait waits for the peer to exit and fails on a non-zero exit.
func (p *nodePeer) wait() {
	p.t.Helper()
	if err := p.cmd.Wait(); err != nil {
		p.t.Fatalf("node peer: %v\n%s", err, p.stderr.String())
	}
}

// A peer speaking the reference protocol from Node (ws + libsodium-wrappers)
// joins through a v1 invite, says hello, and exchanges encrypted DMs with a
// Go peer through the broker.
func TestBrokerInteropNodePeer(t *testing.T) {
	node, modules := nodeModules(t, "libsodium-wrappers", "ws")
	b, url := startTestBroker(t)
	owner := newTestMesh(t, b, url, "team", "alice")

	// The Go side makes the invite with the CLI, as a user would.
	alice := newMachine(t)
	if err := updateConfig(filepath.Join(alice.vars["CLAUDEMESH_CONFIG_DIR"], "config.json"), func(c *Config) error {
		c.SetMesh(owner)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	code, out, errs := alice.run("invite", "--json")
	if code != 0 {
		t.Fatalf("invite: %s", errs)
	}
	var inv struct {
		URL string `json:"url"`
	}
	json.Unmarshal([]byte(out), &inv)

	goPeer := connectMember(t, url, owner)
	peer := startNodePeer(t, node, modules, map[string]string{"invite": inv.URL, "to": owner.Pubkey, "text": "hello from node ✓"})

	joined := peer.next("joined")
	nodePub := joined["pubkey"].(string)
	peer.next("sent")
	push := goPeer.expect(framePush, func(f frame) bool { return f.str("subtype") == "" })
	me, _ := owner.Keypair()
	got, err := openDM(push.str("nonce"), push.str("ciphertext"), push.str("senderPubkey"), me)
	if err != nil || string(got) != "hello from node ✓" || push.str("senderName") != "node-peer" || push.str("senderPubkey") != nodePub {
		t.Fatalf("Go peer opened %q (%v) from %v", got, err, push)
	}
	goPeer.ackPush(push)

	nonce, ct, err := sealDM([]byte("hello from go ✓"), nodePub, me)
	if err != nil {
		t.Fatal(err)
	}
	goPeer.sendJSON(SendFrame{Type: frameSend, ID: "go-1", ClientMessageID: "go-1", TargetSpec: nodePub, Priority: priorityNow, Nonce: nonce, Ciphertext: ct})
	if ack := goPeer.expect(frameAck, func(f frame) bool { return f.str("id") == "go-1" }); ack["queued"] != true {
		t.Fatalf("ack = %v", ack)
	}
	recv := peer.next("received")
	if recv["text"] != "hello from go ✓" || recv["senderName"] != "alice" || recv["senderMemberPubkey"] != owner.Pubkey {
		t.Fatalf("node peer received %v", recv)
	}
	peer.wait()
	waitFor(t, "both DMs delivered", func() bool {
		n, _ := b.store.CountPendingDeliveries(context.Background(), time.Now())
		return n == 0
	})
}

// A mesh owner on the reference stack signs a v1 invite with libsodium over
// the fields' values ("1|…") and registers it with our broker; our `join`
// accepts that invite and the broker enrolls the new member.
func TestJoinAcceptsNodeSignedInvite(t *testing.T) {
	node, modules := nodeModules(t, "libsodium-wrappers", "ws")
	b, url := startTestBroker(t)
	owner := startNodePeer(t, node, modules, map[string]string{"mode": "owner", "broker_url": url, "slug": "nodeteam"})
	inv := owner.next("invite")
	owner.wait()

	bob := newMachine(t)
	code, out, errs := bob.run("join", inv["url"].(string), "--json")
	if code != 0 {
		t.Fatalf("join of a libsodium-signed invite = %d\n%s%s", code, out, errs)
	}
	m, ok := bob.config().MeshBySlug("nodeteam")
	if !ok || m.MeshID != inv["meshId"] {
		t.Fatalf("saved mesh = %+v, want mesh %v", m, inv["meshId"])
	}
	if member, err := b.store.MemberByPubkey(context.Background(), m.MeshID, m.Pubkey); err != nil || member.ID != m.MemberID {
		t.Fatalf("broker member = %+v, %v", member, err)
	}
}
