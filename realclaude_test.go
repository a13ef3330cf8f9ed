// Tests against the real Claude Code from npm (@anthropic-ai/claude-code,
// installed by .ci/run into the test cache): `claudemesh install` writes
// settings that Claude Code loads, its MCP server connects, and a plain
// `claude -p` runs our hooks — registering the session and putting a
// peer's DM into the transcript as hook context — all offline and without
// an account (Claude Code runs SessionStart and UserPromptSubmit hooks
// before it asks for a login). It skips with the reason when Claude Code
// is missing, or fails when CLAUDEMESH_REQUIRE_CLAUDE=1 (as in CI).
package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// realClaude is the claude executable of the test cache, checked to run.
func realClaude(t *testing.T) (bin, version string) {
	t.Helper()
	skip := func(reason string) {
		if os.Getenv("CLAUDEMESH_REQUIRE_CLAUDE") == "1" {
			t.Fatalf("Claude Code is required here (CLAUDEMESH_REQUIRE_CLAUDE=1): %s", reason)
		}
		t.Skipf("real Claude Code skipped: %s (install with: npm install --prefix ~/.cache/claudemesh-test @anthropic-ai/claude-code)", reason)
	}
	candidates := filepath.SplitList(os.Getenv("NODE_PATH"))
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, ".cache", "claudemesh-test", "node_modules"))
	}
	for _, dir := range candidates {
		for _, p := range []string{filepath.Join(dir, ".bin", "claude"), filepath.Join(dir, "@anthropic-ai", "claude-code", "bin", "claude.exe")} {
			if !isExecutableFile(p) {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			v := claudeVersion(ctx, p)
			cancel()
			if v == "" {
				skip(p + " does not run (its postinstall may not have put the native binary in place)")
			}
			return p, v
		}
	}
	skip("no @anthropic-ai/claude-code in NODE_PATH or ~/.cache/claudemesh-test")
	return "", ""
}

// offlineClaudeEnv keeps Claude Code off the network.
var offlineClaudeEnv = map[string]string{
	"DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1",
	"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "ANTHROPIC_API_KEY": "",
}

func runClaudeCode(t *testing.T, bin, dir string, env map[string]string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "TERM=dumb"}
	for k, v := range offlineClaudeEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("claude %v: %v", args, err)
	}
	return string(out), code
}

func TestRealClaudeCodeRunsOurHooks(t *testing.T) {
	claude, version := realClaude(t)
	t.Logf("Claude Code %s at %s", version, claude)
	f := newMsgFixture(t, nil)
	env := f.h1.env()
	env["PATH"] = filepath.Dir(claude) + string(os.PathListSeparator) + os.Getenv("PATH")
	if r := runBinary(t, env, "install", "--no-service", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"wake": true`) && versionAtLeast(version, rewakeSince) {
		t.Fatalf("install = %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	// Claude Code loads our MCP entry and the server connects.
	work := t.TempDir()
	out, code := runClaudeCode(t, claude, work, env, "mcp", "list")
	if code != 0 || !strings.Contains(out, "claudemesh:") || !strings.Contains(out, "Connected") {
		t.Fatalf("claude mcp list = %d\n%s", code, out)
	}

	// A DM for this machine's member, which every session of it sees.
	bob := registerTestSession(t, f.d2, f.bob, "bob")
	sendAndSettle(t, bob.cl, f.me.Pubkey, "hello from bob, via the hooks")
	waitFor(t, "the DM in the inbox", func() bool {
		rows, _ := f.d1.inbox.List(context.Background(), inboxScope{}, 10)
		return len(rows) == 1
	})

	debug := filepath.Join(t.TempDir(), "debug.log")
	out, _ = runClaudeCode(t, claude, work, env, "-p", "--debug-file", debug, "what is new?")
	t.Logf("claude -p: %s", strings.TrimSpace(out))
	log, err := os.ReadFile(debug)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(log), "Hook JSON output validation failed") || strings.Count(string(log), "Successfully parsed and validated hook JSON output") < 2 ||
		!strings.Contains(string(log), "hook session-start) provided additionalContext") ||
		!strings.Contains(string(log), "hook user-prompt-submit) provided additionalContext") {
		t.Fatalf("Claude Code's debug log does not show both hooks' output accepted:\n%s", grepLines(string(log), "hook", "Hook"))
	}
	transcripts, _ := filepath.Glob(filepath.Join(f.h1.Home, ".claude", "projects", "*", "*.jsonl"))
	if len(transcripts) != 1 {
		t.Fatalf("transcripts = %v, want one", transcripts)
	}
	data, _ := os.ReadFile(transcripts[0])
	if !strings.Contains(string(data), "hello from bob, via the hooks") || !strings.Contains(string(data), "<claudemesh-message ") {
		t.Fatalf("the transcript has no framed DM:\n%s", data)
	}
	sid := strings.TrimSuffix(filepath.Base(transcripts[0]), ".jsonl")
	rows, _ := f.d1.inbox.List(context.Background(), inboxScope{}, 10)
	if st := rows[0].Surfaced; st.Via != surfacedViaHooks || st.SessionID != sid {
		t.Errorf("the DM's record = %+v, want shown via hooks in session %s", st, sid)
	}
	keyFile := f.h1.Paths.SessionKeyFile("alpha", sid)
	key, err := loadSessionKeypair(keyFile)
	if err != nil {
		t.Fatalf("the plain session's key: %v", err)
	}
	t.Logf("our MCP server in Claude Code's log:\n%s", grepLines(string(log), `MCP server "claudemesh"`, "hannel"))
	if strings.Contains(string(log), "Channel notifications skipped") {
		t.Logf("as expected in print mode: %s", grepLines(string(log), "Channel notifications skipped"))
	}

	// --resume: the same session id, hence the same key.
	out, _ = runClaudeCode(t, claude, work, env, "-p", "--resume", sid, "and now?")
	t.Logf("claude -p --resume: %s", strings.TrimSpace(out))
	again, err := loadSessionKeypair(keyFile)
	if err != nil || again.PublicHex() != key.PublicHex() {
		t.Fatalf("after --resume the key is %v (%v), want %s", again.PublicHex(), err, key.PublicHex())
	}
	hookLog, _ := os.ReadFile(f.h1.Paths.HookLogFile())
	if n := strings.Count(string(hookLog), `"session":"`+sid+`"`); n < 4 {
		t.Errorf("hooks.log has %d runs for the session, want at least 4 (two session-starts, two prompts):\n%s", n, hookLog)
	}
}

// grepLines is the lines of text that hold any of words.
func grepLines(text string, words ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
