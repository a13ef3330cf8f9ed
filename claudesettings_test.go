// Tests of claudemesh's hooks in ~/.claude/settings.json: install merges
// ours beside the user's hooks and keys, again changes nothing, uninstall
// takes out exactly ours; what counts as ours; version checks.
package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// userSettings is a settings file with the user's own keys and hooks, in
// Claude Code's format.
const userSettings = `{
  "model": "opus",
  "permissions": {"allow": ["Bash(go test:*)"], "deny": []},
  "hooks": {
    "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "~/bin/guard.sh", "timeout": 5}]}],
    "UserPromptSubmit": [{"hooks": [{"type": "command", "command": "date +%F"}]}],
    "PostToolUse": [{"matcher": "Edit|Write", "hooks": [{"type": "command", "command": "gofmt -l ."}]}]
  },
  "statusLine": {"type": "command", "command": "echo hi", "padding": 0}
}
`

func compactText(t *testing.T, data []byte) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, data); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, data)
	}
	return b.String()
}

// settingsHooks reads the hooks object as Claude Code would.
func settingsHooks(t *testing.T, path string) map[string][]struct {
	Matcher string              `json:"matcher"`
	Hooks   []claudeHookCommand `json:"hooks"`
} {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Hooks map[string][]struct {
			Matcher string              `json:"matcher"`
			Hooks   []claudeHookCommand `json:"hooks"`
		} `json:"hooks"`
	}
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	return s.Hooks
}

func TestClaudeHooksRoundTrip(t *testing.T) {
	home := t.TempDir()
	path := claudeSettingsPath(home)
	os.MkdirAll(filepath.Dir(path), 0o700)
	if err := os.WriteFile(path, []byte(userSettings), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := "/opt/claude mesh/bin/claudemesh"
	now := time.Now()
	res, backup, err := setClaudeHooks(home, bin, true, now)
	if err != nil || res != fileAdded || backup == "" {
		t.Fatalf("install = %q, %q, %v; want added with a backup", res, backup, err)
	}
	if old, _ := os.ReadFile(backup); string(old) != userSettings {
		t.Errorf("the backup is not the file as it was")
	}
	hooks := settingsHooks(t, path)
	for _, e := range claudeHookEvents {
		groups := hooks[e.claude]
		last := groups[len(groups)-1]
		want := `'/opt/claude mesh/bin/claudemesh' hook ` + e.ours
		if last.Hooks[0].Command != want || last.Hooks[0].Timeout != hookCommandTimeout || last.Matcher != "" {
			t.Errorf("%s: last group = %+v, want ours running %q", e.claude, last, want)
		}
		if e.ours == hookStop && (len(last.Hooks) != 2 || !last.Hooks[1].AsyncRewake || last.Hooks[1].Command != want+" --wake") {
			t.Errorf("Stop: our group = %+v, want the stop hook and the asyncRewake wake-up", last)
		}
	}
	if g := hooks["UserPromptSubmit"]; len(g) != 2 || g[0].Hooks[0].Command != "date +%F" {
		t.Errorf("UserPromptSubmit = %+v, want the user's group first, then ours", g)
	}
	if g := hooks["PreToolUse"]; len(g) != 1 || g[0].Hooks[0].Command != "~/bin/guard.sh" {
		t.Errorf("PreToolUse = %+v, want the user's hook untouched", g)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(compactText(t, data), `{"model":"opus","permissions":{"allow":["Bash(go test:*)"],"deny":[]},"hooks":{"PreToolUse"`) ||
		!strings.HasSuffix(compactText(t, data), `"statusLine":{"type":"command","command":"echo hi","padding":0}}`) {
		t.Errorf("the other keys moved or changed:\n%s", data)
	}

	if res, backup, err := setClaudeHooks(home, bin, true, now); err != nil || res != fileUnchanged || backup != "" {
		t.Errorf("install again = %q, %q, %v; want unchanged, no backup", res, backup, err)
	}
	if res, _, err := setClaudeHooks(home, "/usr/local/bin/claudemesh", false, now.Add(time.Millisecond)); err != nil || res != fileUpdated {
		t.Errorf("install from another binary = %q, %v; want updated", res, err)
	}
	if hooks := settingsHooks(t, path); len(hooks["Stop"]) != 1 || len(hooks["Stop"][0].Hooks) != 1 || len(hooks["UserPromptSubmit"]) != 2 {
		t.Errorf("after the update: Stop %+v, UserPromptSubmit %+v; want ours once each, no wake-up", hooks["Stop"], hooks["UserPromptSubmit"])
	}

	res, backup, err = setClaudeHooks(home, "", false, now.Add(2*time.Millisecond))
	if err != nil || res != fileRemoved || backup == "" {
		t.Fatalf("uninstall = %q, %q, %v", res, backup, err)
	}
	data, _ = os.ReadFile(path)
	if got, want := compactText(t, data), compactText(t, []byte(userSettings)); got != want {
		t.Errorf("after install and uninstall:\n%s\nwant the user's file as it was:\n%s", got, want)
	}
	if res, _, err := setClaudeHooks(home, "", false, now); err != nil || res != "" {
		t.Errorf("uninstall again = %q, %v; want nothing to do", res, err)
	}
}

// Hooks of the TypeScript claudemesh, and ours beside a user's hook in one
// group: install replaces them; uninstall leaves the user's hook.
func TestClaudeHooksLegacyAndSharedGroups(t *testing.T) {
	home := t.TempDir()
	path := claudeSettingsPath(home)
	os.MkdirAll(filepath.Dir(path), 0o700)
	os.WriteFile(path, []byte(`{"hooks":{
 "Stop":[{"hooks":[{"type":"command","command":"claudemesh hook idle"}]}],
 "UserPromptSubmit":[{"hooks":[{"type":"command","command":"notify-send hi"},{"type":"command","command":"claudemesh hook working"}]}]}}`), 0o600)
	if res, _, err := setClaudeHooks(home, "/bin/claudemesh", false, time.Now()); err != nil || res != fileUpdated {
		t.Fatalf("install over the TypeScript hooks = %q, %v; want updated", res, err)
	}
	hooks := settingsHooks(t, path)
	if g := hooks["Stop"]; len(g) != 1 || g[0].Hooks[0].Command != "/bin/claudemesh hook stop" {
		t.Errorf("Stop = %+v, want only ours", g)
	}
	if g := hooks["UserPromptSubmit"]; len(g) != 2 || len(g[0].Hooks) != 1 || g[0].Hooks[0].Command != "notify-send hi" {
		t.Errorf("UserPromptSubmit = %+v, want the user's hook kept in its group, then ours", g)
	}
	if _, _, err := setClaudeHooks(home, "", false, time.Now()); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if got := compactText(t, data); got != `{"hooks":{"UserPromptSubmit":[{"hooks":[{"type":"command","command":"notify-send hi"}]}]}}` {
		t.Errorf("after uninstall: %s", got)
	}
}

// A settings file Claude Code could not read is never rewritten.
func TestClaudeHooksRefuseBrokenSettings(t *testing.T) {
	for _, body := range []string{`[1,2]`, `{"hooks": [1]}`, `{"model": "x",`} {
		home := t.TempDir()
		path := claudeSettingsPath(home)
		os.MkdirAll(filepath.Dir(path), 0o700)
		os.WriteFile(path, []byte(body), 0o600)
		if _, _, err := setClaudeHooks(home, "/bin/claudemesh", false, time.Now()); err == nil {
			t.Errorf("install over %q succeeded", body)
		}
		if data, _ := os.ReadFile(path); string(data) != body {
			t.Errorf("%q was rewritten as %q", body, data)
		}
	}
}

func TestIsOurHookCommand(t *testing.T) {
	cases := []struct {
		cmd  string
		ours bool
	}{
		{"/usr/local/bin/claudemesh hook session-start", true},
		{"'/opt/claude mesh/claudemesh' hook stop --wake", true},
		{"claudemesh hook idle", true},
		{"claudemesh hook working", true},
		{"  claudemesh hook post-tool-use ", true},
		{"claudemesh hook unknown-event", false},
		{"claudemesh send bob hook stop", false},
		{"/bin/other hook stop", false},
		{"echo claudemesh hook stop", false},
		{"", false},
	}
	for _, tc := range cases {
		if got := isOurHookCommand(tc.cmd); got != tc.ours {
			t.Errorf("isOurHookCommand(%q) = %v, want %v", tc.cmd, got, tc.ours)
		}
	}
}

func TestVersionAtLeast(t *testing.T) {
	cases := []struct {
		v    string
		want bool
	}{
		{"2.1.197", true}, {"2.1.332", true}, {"2.2.0", true}, {"3.0.0", true}, {"v2.1.197", true},
		{"2.1.196", false}, {"2.0.999", false}, {"1.9.9", false}, {"", false}, {"2.1", false}, {"two", false},
		{"2.1.197-beta", true},
	}
	for _, tc := range cases {
		if got := versionAtLeast(tc.v, rewakeSince); got != tc.want {
			t.Errorf("versionAtLeast(%q, 2.1.197) = %v, want %v", tc.v, got, tc.want)
		}
	}
}
