// Finding the Claude Code process a hook, an MCP server or a CLI call runs
// under, from the process's chain of parents: Claude Code runs its hooks
// and its Bash tool's commands through a shell, and its MCP servers
// directly, so the claude process is an ancestor of each.
//
// Policy: an ancestor is Claude Code when its program is named claude (the
// native build, or a launcher of that name), or when it is Node running
// Claude Code's npm package. The walk stops at the first one, at pid 1, or
// after claudeWalkLimit parents. A hook, which Claude Code always runs
// itself, may fall back to the first ancestor that is not a shell: Claude
// Code under another name still ends when its session does.
package main

import (
	"path/filepath"
	"strings"
)

// claudeWalkLimit bounds the parent chain walked.
const claudeWalkLimit = 32

// procEntry is what the walk needs of one process.
type procEntry struct {
	ppid int
	argv []string
}

// isClaudeProcess reports whether argv is Claude Code's.
func isClaudeProcess(argv []string) bool {
	if len(argv) == 0 {
		return false
	}
	switch strings.TrimSuffix(filepath.Base(argv[0]), ".exe") {
	case "claude":
		return true
	case "node", "nodejs", "bun":
		for _, a := range argv[1:min(len(argv), 4)] {
			if strings.Contains(a, "@anthropic-ai/claude-code") {
				return true
			}
		}
	}
	return false
}

// shellNames are the programs Claude Code may run a command through.
var shellNames = map[string]bool{"sh": true, "bash": true, "dash": true, "zsh": true, "fish": true, "ksh": true, "env": true}

func isShell(argv []string) bool {
	if len(argv) == 0 {
		return false
	}
	return shellNames[strings.TrimPrefix(filepath.Base(argv[0]), "-")]
}

// claudeAncestor walks from pid's parent up; lookup reads one process.
// With fallback, the first ancestor that is not a shell stands in when no
// Claude Code is found.
func claudeAncestor(pid int, lookup func(pid int) (procEntry, bool), fallback bool) int {
	cur, ok := lookup(pid)
	if !ok {
		return 0
	}
	stand := 0
	for range claudeWalkLimit {
		ppid := cur.ppid
		if ppid <= 1 {
			break
		}
		if cur, ok = lookup(ppid); !ok {
			break
		}
		if isClaudeProcess(cur.argv) {
			return ppid
		}
		if stand == 0 && !isShell(cur.argv) {
			stand = ppid
		}
	}
	if fallback {
		return stand
	}
	return 0
}

// claudeProcessOf is the Claude Code process pid runs under (0: none
// found); with fallback, a hook's stand-in.
func claudeProcessOf(pid int, fallback bool) int {
	return claudeAncestor(pid, newProcLookup(), fallback)
}

// processArgs is a process's command line (nil when it cannot be read).
func processArgs(pid int) []string {
	e, ok := newProcLookup()(pid)
	if !ok {
		return nil
	}
	return e.argv
}

// Claude Code's flags that load a channel server for the session.
var claudeChannelFlags = []string{"--dangerously-load-development-channels", "--channels"}

// channelRequested reports whether a claude command line asks to load
// server:<name> as a channel in a session that can show it: print mode
// (-p) runs no channels.
func channelRequested(argv []string, name string) bool {
	asked := false
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if a == "-p" || a == "--print" {
			return false
		}
		for _, flag := range claudeChannelFlags {
			var values []string
			switch {
			case strings.HasPrefix(a, flag+"="):
				values = []string{strings.TrimPrefix(a, flag+"=")}
			case a == flag:
				for j := i + 1; j < len(argv) && !strings.HasPrefix(argv[j], "-"); j++ {
					values = append(values, argv[j])
				}
			}
			for _, v := range values {
				for _, item := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
					if item == "server:"+name {
						asked = true
					}
				}
			}
		}
	}
	return asked
}
