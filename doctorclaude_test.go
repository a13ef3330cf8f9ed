// Tests of doctor's Claude Code checks: our hooks, each session's way of
// being shown messages, and Claude Code's debug log on our channel.
package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func checkNamed(rep doctorReport, name string) (doctorCheck, bool) {
	for _, c := range rep.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return doctorCheck{}, false
}

func TestDoctorHooks(t *testing.T) {
	home := t.TempDir()
	c := newCLI(Env{Getenv: func(k string) string {
		if k == "HOME" {
			return home
		}
		return ""
	}}, commands)
	bin := "/usr/local/bin/claudemesh"
	check := func() doctorCheck {
		var rep doctorReport
		doctorHooks(context.Background(), c, &rep, home, bin)
		ch, _ := checkNamed(rep, "hooks")
		return ch
	}
	if ch := check(); ch.Status != checkFail || ch.Fix != "claudemesh install" || !strings.Contains(ch.Detail, "SessionStart") {
		t.Errorf("without hooks: %+v, want a problem naming the missing events, fixed by install", ch)
	}
	setClaudeHooks(home, "/opt/old/claudemesh", false, time.Now())
	if ch := check(); ch.Status != checkFail || !strings.Contains(ch.Detail, "another claudemesh binary") {
		t.Errorf("hooks of another binary: %+v", ch)
	}
	setClaudeHooks(home, bin, true, time.Now())
	if ch := check(); ch.Status != checkOK || !strings.Contains(ch.Detail, "wake-up") {
		t.Errorf("our hooks with the wake-up: %+v", ch)
	}
}

func TestDoctorSessions(t *testing.T) {
	cases := []struct {
		name   string
		s      sessionView
		status string
		words  string
	}{
		{"launched, channel live", sessionView{DisplayName: "a", Surfacing: surfacedViaChannel,
			MCP: &mcpView{ProtocolVersion: "2025-11-25", ClientName: "claude-code", ClientVersion: "2.1.332", Channel: true}}, checkOK, "MCP 2025-11-25 with claude-code 2.1.332"},
		{"launched without the channel flag", sessionView{DisplayName: "b", Surfacing: surfacedViaHooks, MCP: &mcpView{ProtocolVersion: "2025-11-25"}}, checkWarn, "without the channel flag"},
		{"launched, MCP silent", sessionView{DisplayName: "c", Surfacing: surfacedViaHooks}, checkWarn, "has not reported"},
		{"a revision without channels", sessionView{DisplayName: "d", Surfacing: surfacedViaHooks, MCP: &mcpView{ProtocolVersion: "2026-07-28", Channel: true}}, checkFail, "2026-07-28"},
		{"pull only", sessionView{DisplayName: "e", Surfacing: surfacedViaPull}, checkFail, "only when it runs 'claudemesh inbox'"},
		{"a plain claude", sessionView{DisplayName: "f", Surfacing: surfacedViaHooks, Origin: sessionOriginHooks}, checkOK, "a plain claude; messages by hooks"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var rep doctorReport
			doctorSessions(&rep, []sessionView{tc.s})
			ch := rep.Checks[0]
			if ch.Status != tc.status || !strings.Contains(ch.Detail, tc.words) || ch.Name != "session "+tc.s.DisplayName {
				t.Errorf("check = %+v, want %s mentioning %q", ch, tc.status, tc.words)
			}
		})
	}
}

// A skip line as Claude Code writes it with --debug; an older log and
// other servers' lines are not reported.
func TestDoctorDebugLog(t *testing.T) {
	home := t.TempDir()
	dir := filepath.Join(home, ".claude", "debug")
	os.MkdirAll(dir, 0o700)
	now := time.Now()
	old := filepath.Join(dir, "old.txt")
	os.WriteFile(old, []byte(`2026-01-01T00:00:00.000Z [DEBUG] MCP server "claudemesh": Channel notifications skipped: channels not enabled by org policy (set channelsEnabled: true in managed settings)`+"\n"), 0o600)
	os.Chtimes(old, now.Add(-8*24*time.Hour), now.Add(-8*24*time.Hour))
	var rep doctorReport
	doctorDebugLog(&rep, home, now)
	if len(rep.Checks) != 0 {
		t.Fatalf("a week-old log reported: %+v", rep.Checks)
	}
	recent := filepath.Join(dir, "d7c2b998.txt")
	os.WriteFile(recent, []byte(strings.Join([]string{
		`2026-12-02T00:23:51.060Z [DEBUG] MCP server "claudemesh": Starting connection with timeout of 30000ms`,
		`2026-12-02T00:23:51.309Z [DEBUG] MCP server "other": Channel notifications skipped: server other not in --channels list for this session`,
		`2026-12-02T00:23:51.310Z [DEBUG] MCP server "claudemesh": Channel notifications skipped: server claudemesh not in --channels list for this session`,
	}, "\n")+"\n"), 0o600)
	doctorDebugLog(&rep, home, now)
	ch, ok := checkNamed(rep, "claude debug log")
	if !ok || ch.Status != checkWarn || !strings.Contains(ch.Detail, "not in --channels list") || !strings.Contains(ch.Fix, "claudemesh launch") {
		t.Fatalf("debug log check = %+v", rep.Checks)
	}
	for reason, fix := range map[string]string{
		"channels are not available on third-party providers":                                "Bedrock",
		"channels feature is not currently available":                                        "no channels",
		"channels not enabled by org policy (set channelsEnabled: true in managed settings)": "channelsEnabled",
		"server did not declare claude/channel capability":                                   "claudemesh install",
	} {
		if got := channelSkipFix(reason); !strings.Contains(got, fix) {
			t.Errorf("channelSkipFix(%q) = %q, want it to mention %q", reason, got, fix)
		}
	}
}
