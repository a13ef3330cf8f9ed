// Tests of finding Claude Code among a process's parents and of reading
// whether its command line loads our channel.
package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestIsClaudeProcess(t *testing.T) {
	cases := []struct {
		argv []string
		want bool
	}{
		{[]string{"claude"}, true},
		{[]string{"/home/u/.local/bin/claude", "--resume", "x"}, true},
		{[]string{"/usr/lib/node_modules/@anthropic-ai/claude-code/bin/claude.exe"}, true},
		{[]string{"node", "/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js"}, true},
		{[]string{"/usr/bin/node", "--no-warnings", "/opt/@anthropic-ai/claude-code/cli.js"}, true},
		{[]string{"node", "server.js"}, false},
		{[]string{"bash", "-c", "claude"}, false},
		{[]string{"claudemesh", "hook", "stop"}, false},
		{nil, false},
	}
	for _, tc := range cases {
		if got := isClaudeProcess(tc.argv); got != tc.want {
			t.Errorf("isClaudeProcess(%q) = %v, want %v", tc.argv, got, tc.want)
		}
	}
}

// The walk: through shells to Claude Code; without one, a hook's stand-in
// is the first parent that is not a shell, and a CLI call has none.
func TestClaudeAncestor(t *testing.T) {
	table := map[int]procEntry{
		10: {ppid: 9, argv: []string{"claudemesh", "hook", "stop"}},
		9:  {ppid: 8, argv: []string{"/bin/sh", "-c", "claudemesh hook stop"}},
		8:  {ppid: 7, argv: []string{"bash"}},
		7:  {ppid: 1, argv: []string{"/home/u/.local/bin/claude"}},
		20: {ppid: 19, argv: []string{"claudemesh", "send"}},
		19: {ppid: 18, argv: []string{"sh", "-c", "x"}},
		18: {ppid: 17, argv: []string{"make"}},
		17: {ppid: 1, argv: []string{"tmux"}},
	}
	lookup := func(pid int) (procEntry, bool) { e, ok := table[pid]; return e, ok }
	for _, tc := range []struct {
		pid      int
		fallback bool
		want     int
	}{{10, false, 7}, {10, true, 7}, {20, false, 0}, {20, true, 18}, {99, true, 0}} {
		if got := claudeAncestor(tc.pid, lookup, tc.fallback); got != tc.want {
			t.Errorf("claudeAncestor(%d, fallback %v) = %d, want %d", tc.pid, tc.fallback, got, tc.want)
		}
	}
}

// Against real processes: a shell named claude, running a shell, running
// this test binary's sleep stand-in.
func TestClaudeProcessOfRealChain(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh:", err)
	}
	dir := t.TempDir()
	claude := filepath.Join(dir, "claude")
	if err := os.Symlink(sh, claude); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "pid")
	// The innermost sh reports its own pid, then the walk runs from it.
	cmd := exec.Command(claude, "-c", `sh -c 'echo $$ > `+out+`; sleep 30'; true`)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var inner int
	waitFor(t, "the inner shell", func() bool {
		data, _ := os.ReadFile(out)
		inner, _ = strconv.Atoi(strings.TrimSpace(string(data)))
		return inner > 0
	})
	if got := claudeProcessOf(inner, false); got != cmd.Process.Pid {
		t.Errorf("claudeProcessOf(inner shell) = %d, want the process named claude, %d", got, cmd.Process.Pid)
	}
	if args := processArgs(cmd.Process.Pid); len(args) == 0 || filepath.Base(args[0]) != "claude" {
		t.Errorf("processArgs = %q", args)
	}
}

func TestChannelRequested(t *testing.T) {
	cases := []struct {
		argv []string
		want bool
	}{
		{[]string{"claude", "--dangerously-load-development-channels", "server:claudemesh", "--session-id", "x"}, true},
		{[]string{"claude", "--dangerously-load-development-channels=server:claudemesh"}, true},
		{[]string{"claude", "--channels", "plugin:x@y,server:claudemesh"}, true},
		{[]string{"claude", "--dangerously-load-development-channels", "server:other"}, false},
		{[]string{"claude"}, false},
		{[]string{"claude", "-p", "--dangerously-load-development-channels", "server:claudemesh", "hi"}, false},
		{[]string{"claude", "--dangerously-load-development-channels", "server:claudemesh", "--print", "hi"}, false},
	}
	for _, tc := range cases {
		if got := channelRequested(tc.argv, "claudemesh"); got != tc.want {
			t.Errorf("channelRequested(%q) = %v, want %v", tc.argv, got, tc.want)
		}
	}
}
