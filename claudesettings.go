// claudemesh's hooks in Claude Code's ~/.claude/settings.json, which
// belongs to Claude Code and to the user.
//
// Policy:
//   - Ours are the command hooks that run `claudemesh hook …` (any
//     claudemesh binary, and the `hook idle|working|dnd` of the TypeScript
//     claudemesh). install puts one group of ours under SessionStart,
//     UserPromptSubmit, PostToolUse and Stop, after whatever is there, and
//     drops ours from anywhere else; uninstall drops ours and nothing else.
//     A matcher group that held only ours goes with them; an event left
//     empty by that goes too.
//   - Every other key, hook, group and event keeps its place and its text.
//   - The file is backed up before a write, nothing is written when nothing
//     changes, and a file that is not a JSON object is never rewritten
//     (install.go's claudeConfig does both).
//   - The wake-up hook (`stop --wake`, asyncRewake) is installed only for
//     a Claude Code known to run it in the background: an older one would
//     run it in the foreground and hold the session's stop until it ends.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// claudeSettingsPath is Claude Code's user settings file.
func claudeSettingsPath(home string) string { return filepath.Join(home, ".claude", "settings.json") }

// Hook timeouts, in seconds, as Claude Code reads them.
const (
	hookCommandTimeout = 10
	// wakeHookTimeout is how long a session at rest stays wakeable after a
	// stop; its next prompt does not need it.
	wakeHookTimeout = 24 * 60 * 60
)

// rewakeSince is the oldest Claude Code checked to run asyncRewake hooks
// in the background and wake the model on their exit code 2.
var rewakeSince = [3]int{2, 1, 197}

// claudeHookCommand is one command hook in settings.json.
type claudeHookCommand struct {
	Type        string `json:"type"`
	Command     string `json:"command"`
	Timeout     int    `json:"timeout,omitempty"`
	AsyncRewake bool   `json:"asyncRewake,omitempty"`
}

// claudeHookEvents are the Claude Code events install hooks, with the
// event of `claudemesh hook` each runs.
var claudeHookEvents = []struct{ claude, ours string }{
	{"SessionStart", hookSessionStart},
	{"UserPromptSubmit", hookUserPromptSubmit},
	{"PostToolUse", hookPostToolUse},
	{"Stop", hookStop},
}

// ourHookGroup is the matcher group install adds under one event.
func ourHookGroup(bin, event string, wake bool) json.RawMessage {
	cmd := shellQuote(bin) + " hook " + event
	hooks := []claudeHookCommand{{Type: "command", Command: cmd, Timeout: hookCommandTimeout}}
	if event == hookStop && wake {
		hooks = append(hooks, claudeHookCommand{Type: "command", Command: cmd + " --wake", Timeout: wakeHookTimeout, AsyncRewake: true})
	}
	return jsonStringNoEscapeHTML(map[string]any{"hooks": hooks})
}

// isOurHookCommand reports whether a hook command runs `claudemesh hook`.
func isOurHookCommand(cmd string) bool {
	prog, rest, ok := strings.Cut(strings.TrimSpace(cmd), " hook ")
	if !ok {
		return false
	}
	prog = strings.Trim(prog, `'"`)
	if filepath.Base(prog) != "claudemesh" {
		return false
	}
	switch strings.TrimSuffix(strings.TrimSpace(rest), " --wake") {
	case hookSessionStart, hookUserPromptSubmit, hookPostToolUse, hookStop, "idle", "working", "dnd":
		return true
	}
	return false
}

// withoutOurHooks is one event's groups without our hooks; changed says
// whether any was ours.
func withoutOurHooks(groups []json.RawMessage) ([]json.RawMessage, bool, error) {
	var out []json.RawMessage
	changed := false
	for _, g := range groups {
		members, err := decodeObjectOrdered(g)
		if err != nil {
			out = append(out, g) // not a group we understand: not ours to touch
			continue
		}
		i := memberIndex(members, "hooks")
		var hooks []json.RawMessage
		if i < 0 || json.Unmarshal(members[i].Value, &hooks) != nil {
			out = append(out, g)
			continue
		}
		var kept []json.RawMessage
		for _, h := range hooks {
			var c claudeHookCommand
			if json.Unmarshal(h, &c) == nil && c.Type == "command" && isOurHookCommand(c.Command) {
				continue
			}
			kept = append(kept, h)
		}
		if len(kept) == len(hooks) {
			out = append(out, g)
			continue
		}
		changed = true
		if len(kept) == 0 && len(hooks) > 0 {
			continue // the group was ours alone
		}
		raw, err := json.Marshal(kept)
		if err != nil {
			return nil, false, err
		}
		members[i].Value = raw
		if g, err = encodeObjectOrdered(members); err != nil {
			return nil, false, err
		}
		out = append(out, g)
	}
	return out, changed, nil
}

// editClaudeHooks rewrites the settings' hooks: ours removed, then, with
// bin, ours added. It returns the new hooks object (nil: no hooks member
// any more) and whether ours were there before.
func editClaudeHooks(members []jsonMember, bin string, wake bool) (json.RawMessage, bool, error) {
	var events []jsonMember
	if i := memberIndex(members, "hooks"); i >= 0 && string(bytes.TrimSpace(members[i].Value)) != "null" {
		var err error
		if events, err = decodeObjectOrdered(members[i].Value); err != nil {
			return nil, false, fmt.Errorf("hooks is not an object: %v", err)
		}
	}
	had := false
	var out []jsonMember
	for _, ev := range events {
		var groups []json.RawMessage
		if err := json.Unmarshal(ev.Value, &groups); err != nil {
			out = append(out, ev) // not a list of groups: leave it be
			continue
		}
		kept, changed, err := withoutOurHooks(groups)
		if err != nil {
			return nil, false, err
		}
		had = had || changed
		if !changed {
			out = append(out, ev)
			continue
		}
		if len(kept) == 0 && bin == "" {
			continue
		}
		raw, err := json.Marshal(nonNil(kept))
		if err != nil {
			return nil, false, err
		}
		out = append(out, jsonMember{Key: ev.Key, Value: raw})
	}
	if bin != "" {
		for _, e := range claudeHookEvents {
			i := memberIndex(out, e.claude)
			var groups []json.RawMessage
			if i >= 0 {
				_ = json.Unmarshal(out[i].Value, &groups)
			}
			groups = append(groups, ourHookGroup(bin, e.ours, wake))
			raw, err := json.Marshal(groups)
			if err != nil {
				return nil, false, err
			}
			if i >= 0 {
				out[i].Value = raw
			} else {
				out = append(out, jsonMember{Key: e.claude, Value: raw})
			}
		}
	}
	if len(out) == 0 && had && bin == "" {
		return nil, had, nil
	}
	raw, err := encodeObjectOrdered(out)
	return raw, had, err
}

// setClaudeHooks installs (bin != "") or removes (bin == "") our hooks in
// the settings file. It returns added, updated, unchanged or removed (""
// when there was nothing to remove), and the backup made, if any.
func setClaudeHooks(home, bin string, wake bool, now time.Time) (result, backup string, err error) {
	cc, err := readClaudeConfig(claudeSettingsPath(home))
	if err != nil {
		return "", "", err
	}
	if bin == "" && !cc.existed {
		return "", "", nil
	}
	before, err := encodeObjectOrdered(cc.members)
	if err != nil {
		return "", "", err
	}
	hooks, had, err := editClaudeHooks(cc.members, bin, wake)
	if err != nil {
		return "", "", exitError(exitFailure, fmt.Errorf("%s: %v", cc.path, err), "the file was not changed")
	}
	i := memberIndex(cc.members, "hooks")
	switch {
	case hooks == nil && i >= 0:
		cc.members = append(cc.members[:i], cc.members[i+1:]...)
	case hooks == nil:
	case i >= 0:
		cc.members[i].Value = hooks
	default:
		cc.members = append(cc.members, jsonMember{Key: "hooks", Value: hooks})
	}
	after, err := encodeObjectOrdered(cc.members)
	if err != nil {
		return "", "", err
	}
	switch {
	case bytes.Equal(before, after) && bin != "":
		return fileUnchanged, "", nil
	case bytes.Equal(before, after):
		return "", "", nil
	}
	if backup, err = cc.write(home, now); err != nil {
		return "", backup, err
	}
	switch {
	case bin == "":
		return fileRemoved, backup, nil
	case had:
		return fileUpdated, backup, nil
	}
	return fileAdded, backup, nil
}

// fileRemoved reports hooks uninstall took out.
const fileRemoved = "removed"

// claudeVersion asks the claude executable its version ("" when it cannot
// tell).
func claudeVersion(ctx context.Context, bin string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return ""
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// versionAtLeast compares a dotted version with want; a version that does
// not parse is not at least anything.
func versionAtLeast(v string, want [3]int) bool {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) != 3 {
		return false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(strings.SplitN(p, "-", 2)[0])
		if err != nil {
			return false
		}
		if n != want[i] {
			return n > want[i]
		}
	}
	return true
}

// hooksReport is the hooks part of `install --json`.
type hooksReport struct {
	Result        string `json:"result"`
	Settings      string `json:"settings"`
	Backup        string `json:"backup,omitempty"`
	Wake          bool   `json:"wake"`
	ClaudeVersion string `json:"claude_version,omitempty"`
}

// installClaudeHooks registers our hooks, with the wake-up hook when the
// installed Claude Code runs it.
func installClaudeHooks(ctx context.Context, c *cli, home, bin string) (hooksReport, error) {
	rep := hooksReport{Settings: claudeSettingsPath(home)}
	if claude, err := findClaude(c.env.Getenv, home); err == nil {
		rep.ClaudeVersion = claudeVersion(ctx, claude)
	}
	rep.Wake = versionAtLeast(rep.ClaudeVersion, rewakeSince)
	var err error
	rep.Result, rep.Backup, err = setClaudeHooks(home, bin, rep.Wake, time.Now())
	return rep, err
}

func printHooksInstall(c *cli, rep hooksReport) {
	c.printf("%s hooks %s in %s (session-start, user-prompt-submit, post-tool-use, stop)\n", c.paint(colorGreen, "✓"), rep.Result, rep.Settings)
	if rep.Backup != "" {
		c.printf("  backup   %s\n", rep.Backup)
	}
	switch {
	case rep.Wake:
		c.printf("  a session at rest is woken when a message comes (Claude Code %s)\n", rep.ClaudeVersion)
	case rep.ClaudeVersion == "":
		c.printf("  no wake-up hook: Claude Code was not found; run 'claudemesh install' again once it is installed\n")
	default:
		c.printf("  no wake-up hook: Claude Code %s is older than %d.%d.%d; messages wait for the session's next prompt\n",
			rep.ClaudeVersion, rewakeSince[0], rewakeSince[1], rewakeSince[2])
	}
}

// ourHooksInSettings reads our command hooks from the settings file, by
// the event of `claudemesh hook` they run (the wake-up under "wake").
func ourHooksInSettings(home string) (map[string][]claudeHookCommand, error) {
	cc, err := readClaudeConfig(claudeSettingsPath(home))
	if err != nil {
		return nil, err
	}
	out := map[string][]claudeHookCommand{}
	i := memberIndex(cc.members, "hooks")
	if i < 0 {
		return out, nil
	}
	var events map[string][]struct {
		Hooks []claudeHookCommand `json:"hooks"`
	}
	_ = json.Unmarshal(cc.members[i].Value, &events)
	for _, e := range claudeHookEvents {
		for _, g := range events[e.claude] {
			for _, h := range g.Hooks {
				switch {
				case h.Type != "command" || !isOurHookCommand(h.Command):
				case strings.HasSuffix(strings.TrimSpace(h.Command), " --wake"):
					out["wake"] = append(out["wake"], h)
				default:
					out[e.ours] = append(out[e.ours], h)
				}
			}
		}
	}
	return out, nil
}

// claudeHooksInstalled reports whether the settings file runs our prompt
// hook: what delivers messages when no channel is live.
func claudeHooksInstalled(home string) bool {
	hooks, err := ourHooksInSettings(home)
	return err == nil && len(hooks[hookUserPromptSubmit]) > 0
}
