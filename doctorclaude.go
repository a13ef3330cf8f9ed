// `doctor`'s checks of the Claude Code side: our hooks in settings.json,
// what a live channel needs, each session's way of being shown messages
// and the MCP revision its server negotiated, and what Claude Code's own
// debug log says about our channel.
//
// Policy: like every doctor check these only look. A missing hook is a
// problem (a plain `claude` is then no peer, and a session without a live
// channel sees messages only with `claudemesh inbox`); a channel that is
// not live is a warning, since the hooks deliver instead.
package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// channelConditions is what a live channel needs, as doctor and launch say.
const channelConditions = "a live channel needs an interactive claude started with --dangerously-load-development-channels server:claudemesh " +
	"(claudemesh launch passes it; Claude Code asks to confirm it at each launch), an account and provider that have channels " +
	"(not Bedrock, Vertex or Foundry) and an organisation that allows them"

func doctorClaudeCode(ctx context.Context, c *cli, rep *doctorReport, home, bin string) {
	doctorHooks(ctx, c, rep, home, bin)
	rep.add("channel", checkOK, channelConditions+"; without one, the hooks bring messages with the next prompt", "")
	if cl := c.runningDaemon(ctx); cl != nil {
		defer cl.http.CloseIdleConnections()
		if sessions, err := callIPC(ctx, cl, apiSessions, noRequest{}); err == nil {
			doctorSessions(rep, sessions.Sessions)
		}
	}
	doctorDebugLog(rep, home, time.Now())
}

// doctorHooks checks our hooks in ~/.claude/settings.json.
func doctorHooks(ctx context.Context, c *cli, rep *doctorReport, home, bin string) {
	path := claudeSettingsPath(home)
	hooks, err := ourHooksInSettings(home)
	if err != nil {
		rep.add("hooks", checkFail, err.Error(), "fix "+path+", then: claudemesh install")
		return
	}
	wake := false
	for _, h := range hooks["wake"] {
		wake = wake || h.AsyncRewake
	}
	var missing, foreign []string
	for _, e := range claudeHookEvents {
		cmds := hooks[e.ours]
		if len(cmds) == 0 {
			missing = append(missing, e.claude)
			continue
		}
		prog, _, _ := strings.Cut(cmds[0].Command, " hook ")
		if bin != "" && !sameExecutable(strings.Trim(prog, `'"`), bin) {
			foreign = append(foreign, e.claude)
		}
	}
	switch {
	case len(missing) > 0:
		rep.add("hooks", checkFail, fmt.Sprintf("no claudemesh hook at %s in %s: a plain claude is no peer, and a session without a live channel sees messages only with 'claudemesh inbox'",
			strings.Join(missing, ", "), path), "claudemesh install")
		return
	case len(foreign) > 0:
		rep.add("hooks", checkFail, fmt.Sprintf("the hooks at %s run another claudemesh binary, not %s", strings.Join(foreign, ", "), bin), "claudemesh install")
		return
	}
	detail := "session-start, user-prompt-submit, post-tool-use and stop in " + path
	if claude, err := findClaude(c.env.Getenv, home); err == nil && !wake {
		if v := claudeVersion(ctx, claude); versionAtLeast(v, rewakeSince) {
			rep.add("hooks", checkWarn, detail+"; no wake-up hook, though Claude Code "+v+" runs one: a session at rest waits for its next prompt", "claudemesh install")
			return
		}
	}
	if wake {
		detail += ", and the wake-up for a session at rest"
	}
	rep.add("hooks", checkOK, detail, "")
}

// doctorSessions says how each live session is shown messages.
func doctorSessions(rep *doctorReport, sessions []sessionView) {
	for _, s := range sessions {
		name := "session " + terminalLine(s.DisplayName)
		mcp := ""
		if s.MCP != nil {
			mcp = "MCP " + s.MCP.ProtocolVersion
			if s.MCP.ClientName != "" {
				mcp += " with " + s.MCP.ClientName + " " + s.MCP.ClientVersion
			}
		}
		switch {
		case s.MCP != nil && s.MCP.Channel && !channelRevisions[s.MCP.ProtocolVersion]:
			rep.add(name, checkFail, fmt.Sprintf("its MCP server negotiated protocol %s, on which Claude Code registers no channel", s.MCP.ProtocolVersion),
				"claudemesh install (this version's MCP server), then restart that claude")
		case s.Surfacing == surfacedViaPull:
			rep.add(name, checkFail, "no live channel and no hooks: it sees messages only when it runs 'claudemesh inbox'",
				"claudemesh install (the hooks), then restart that claude")
		case s.Origin != sessionOriginHooks && s.Surfacing != surfacedViaChannel:
			detail := "launched, but its channel is not live"
			switch {
			case s.MCP == nil:
				detail += " (its MCP server has not reported)"
			case !s.MCP.Channel:
				detail += " (its claude was started without the channel flag, or in print mode)"
			}
			rep.add(name, checkWarn, detail+": messages come through its hooks", "claudemesh launch, interactive, and confirm the development channel when Claude Code asks")
		default:
			detail := "messages by " + s.Surfacing
			if s.Origin == sessionOriginHooks {
				detail = "a plain claude; " + detail
			}
			if mcp != "" {
				detail += " (" + mcp + ")"
			}
			rep.add(name, checkOK, detail, "")
		}
	}
}

// Claude Code's debug logs (claude --debug).
const (
	debugLogAge   = 7 * 24 * time.Hour
	debugLogFiles = 20
	debugLogTail  = 1 << 20
)

// channelSkippedLine is how Claude Code logs a channel it did not load.
const channelSkippedLine = `MCP server "` + mcpServerName + `": Channel notifications skipped: `

// doctorDebugLog reports the latest "Channel notifications skipped" line
// for our server in Claude Code's recent debug logs, with what to do.
func doctorDebugLog(rep *doctorReport, home string, now time.Time) {
	files, _ := filepath.Glob(filepath.Join(home, ".claude", "debug", "*.txt"))
	type logFile struct {
		path string
		mod  time.Time
	}
	var recent []logFile
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && now.Sub(st.ModTime()) < debugLogAge {
			recent = append(recent, logFile{f, st.ModTime()})
		}
	}
	sort.Slice(recent, func(i, j int) bool { return recent[i].mod.After(recent[j].mod) })
	for _, f := range recent[:min(len(recent), debugLogFiles)] {
		if reason := lastChannelSkip(f.path); reason != "" {
			rep.add("claude debug log", checkWarn, fmt.Sprintf("Claude Code skipped claudemesh's channel: %s (%s, %s)",
				terminalLine(reason), f.path, f.mod.Format(time.DateTime)), channelSkipFix(reason))
			return
		}
	}
}

// lastChannelSkip is the reason of the last skip line in the file's tail.
func lastChannelSkip(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > debugLogTail {
		f.Seek(st.Size()-debugLogTail, io.SeekStart)
	}
	reason := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if _, after, ok := bytes.Cut(sc.Bytes(), []byte(channelSkippedLine)); ok {
			reason = string(after)
		}
	}
	return reason
}

// channelSkipFix is what to do about a channel Claude Code skipped.
func channelSkipFix(reason string) string {
	const meanwhile = "; the hooks deliver meanwhile"
	switch {
	case strings.Contains(reason, "third-party providers"):
		return "none here: channels need Anthropic's own API (not Bedrock, Vertex or Foundry)" + meanwhile
	case strings.Contains(reason, "not currently available"):
		return "none here: this account has no channels" + meanwhile
	case strings.Contains(reason, "org policy"):
		return "an administrator sets channelsEnabled: true in Claude Code's managed settings" + meanwhile
	case strings.Contains(reason, "claude/channel capability"):
		return "claudemesh install (an older claudemesh MCP server answered), then restart claude"
	}
	return "start the session with claudemesh launch, interactive, and confirm the development channel when Claude Code asks" + meanwhile
}
