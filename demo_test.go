// Tests of `claudemesh demo`: exactly once, nothing left behind, in-process
// and as the built binary.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// childPids lists the live child processes of this process (Linux: by the
// ppid in /proc/<pid>/stat); nil elsewhere.
func childPids(t *testing.T) []int {
	t.Helper()
	if runtime.GOOS != "linux" {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	me := os.Getpid()
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces, so split after ')'.
		rest := string(stat[bytes.LastIndexByte(stat, ')')+1:])
		fields := strings.Fields(rest)
		if len(fields) > 1 && fields[1] == strconv.Itoa(me) && fields[0] != "Z" {
			out = append(out, pid)
		}
	}
	return out
}

// checkDemoSummary asserts exactly-once delivery of every demo message.
func checkDemoSummary(t *testing.T, raw []byte) demoSummary {
	t.Helper()
	var sum demoSummary
	if err := json.Unmarshal(raw, &sum); err != nil {
		t.Fatalf("demo --json: %v\n%s", err, raw)
	}
	if !sum.OK || len(sum.Problems) > 0 {
		t.Fatalf("demo not ok: %v", sum.Problems)
	}
	if sum.Total != 4 || sum.Delivered != 4 || len(sum.Messages) != 4 {
		t.Fatalf("delivered %d/%d of %d messages, want 4/4", sum.Delivered, sum.Total, len(sum.Messages))
	}
	kinds := map[string]int{}
	for _, m := range sum.Messages {
		kinds[m.Kind]++
		if m.Echoes != 0 || m.SendStatus != "sent" || m.ClientMessageID == "" || m.MessageID == "" || len(m.Recipients) != 1 {
			t.Fatalf("message %+v", m)
		}
		for _, a := range m.Recipients {
			if !a.Arrived || a.Events != 1 || a.InboxRows != 1 {
				t.Fatalf("%s → %s at %s: %+v, want one event and one inbox row", m.From, m.To, a.Name, a)
			}
		}
	}
	if kinds["dm"] != 2 || kinds["group"] != 1 || kinds["broadcast"] != 1 {
		t.Fatalf("message kinds = %v", kinds)
	}
	if len(sum.Members) != 2 || sum.Members[0].SessionPubkey == "" || sum.Members[1].MemberPubkey == sum.Members[0].MemberPubkey {
		t.Fatalf("members = %+v", sum.Members)
	}
	t.Logf("demo latency p50 %.1f ms, p99 %.1f ms, %d ms in all", sum.LatencyMs.P50, sum.LatencyMs.P99, sum.DurationMs)
	return sum
}

// The demo, run as a verb in this process: every message exactly once, and
// afterwards no child process, no broker listening, no temp dir.
func TestDemoExactlyOnceLeavesNothing(t *testing.T) {
	before := childPids(t)
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := run(ctx, []string{"demo", "--json"}, Env{Getenv: func(string) string { return "" }, Stdout: &out, Stderr: &errb})
	if code != 0 {
		t.Fatalf("demo exited %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
	sum := checkDemoSummary(t, out.Bytes())
	if sum.Kept {
		t.Fatal("kept without --keep")
	}
	if _, err := os.Stat(sum.Dir); !os.IsNotExist(err) {
		t.Fatalf("demo dir %s still there: %v", sum.Dir, err)
	}
	host := strings.TrimSuffix(strings.TrimPrefix(sum.Broker, "ws://"), "/ws")
	if conn, err := net.DialTimeout("tcp", host, time.Second); err == nil {
		conn.Close()
		t.Fatalf("the demo's broker still listens on %s", host)
	}
	for _, pid := range childPids(t) {
		if !slices.Contains(before, pid) {
			t.Fatalf("the demo left child process %d", pid)
		}
	}
}

// The demo as the built binary with a fresh HOME: exit 0, the transcript a
// newcomer reads, and HOME untouched; --keep keeps and names the dir.
func TestDemoBinary(t *testing.T) {
	home := shortTempDir(t)
	res := runBinary(t, map[string]string{"HOME": home, "NO_COLOR": "1"}, "demo")
	if res.code != 0 {
		t.Fatalf("demo exited %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}
	for _, want := range []string{"alice", "bob", "peer list", "DM", "broadcast", "@reviewers", "4/4 messages delivered exactly once", "removed"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("transcript lacks %q:\n%s", want, res.stdout)
		}
	}
	if entries, _ := os.ReadDir(home); len(entries) != 0 {
		t.Fatalf("demo wrote into HOME: %v", entries)
	}

	res = runBinary(t, map[string]string{"HOME": home, "NO_COLOR": "1"}, "demo", "--keep", "--json")
	if res.code != 0 {
		t.Fatalf("demo --keep exited %d: %s %s", res.code, res.stdout, res.stderr)
	}
	sum := checkDemoSummary(t, []byte(res.stdout))
	t.Cleanup(func() { os.RemoveAll(sum.Dir) })
	if !sum.Kept {
		t.Fatal("--keep not reported")
	}
	for _, f := range []string{"broker.log", "alice/daemon/daemon.log", "bob/daemon/inbox.db", "bob/.claudemesh/config.json"} {
		if _, err := os.Stat(filepath.Join(sum.Dir, f)); err != nil {
			t.Errorf("kept dir lacks %s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(sum.Dir, "alice", "daemon", "daemon.sock")); !os.IsNotExist(err) {
		t.Errorf("a daemon socket is left in the kept dir: %v", err)
	}
}

// cancelOnWrite is stdout that cancels the run once a line holding mark is
// written: a Ctrl-C at a known point of the demo.
type cancelOnWrite struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	mark   string
	cancel context.CancelFunc
}

func (w *cancelOnWrite) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.mark) {
		w.cancel()
	}
	return len(p), nil
}

func (w *cancelOnWrite) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// An interrupted demo says it was interrupted, how far it got, cleans up,
// and exits 130: no "✘ 0/0", no "context canceled".
func TestDemoInterrupted(t *testing.T) {
	for _, mark := range []string{"claudemesh demo", "registered with presence"} {
		t.Run(mark, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out := &cancelOnWrite{mark: mark, cancel: cancel}
			var errb bytes.Buffer
			code := run(ctx, []string{"demo"}, Env{Getenv: func(string) string { return "" }, Stdout: out, Stderr: &errb})
			text := out.String() + errb.String()
			if code != exitInterrupted || !strings.Contains(text, "interrupted after") || strings.Contains(text, "0/0") ||
				strings.Contains(text, "context canceled") || !strings.Contains(text, "removed") {
				t.Fatalf("interrupted demo = exit %d\n%s", code, text)
			}
		})
	}
}
