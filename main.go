// claudemesh: one binary that lets Claude Code sessions on one machine or
// many find each other and talk — a broker, a per-machine daemon, the CLI,
// an MCP stdio server and `launch`.
//
// This file holds the entry point and the verb table; help is generated
// from the table.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// version is the product version, reported by --version, the daemon's
// /v1/version and the broker's /health.
const version = "0.1.0"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], processEnv())
	stop()
	os.Exit(code)
}

// Help sections, in the order help prints them.
const (
	groupStart   = "Start here"
	groupMesh    = "Meshes"
	groupMessage = "Messages"
	groupPeers   = "Peers and moderation"
	groupShared  = "Shared state, memory and skills"
	groupSession = "Claude Code"
	groupDaemon  = "Daemon and broker"
	groupOther   = "Other"
)

var helpGroups = []string{groupStart, groupMesh, groupMessage, groupPeers, groupShared, groupSession, groupDaemon, groupOther}

// commands is the verb table. A verb's flags live in a struct set up by its
// setup func, which returns the function that runs it.
var commands = []*command{
	{
		name:    "help",
		args:    "[verb]",
		summary: "show help for claudemesh or for one verb",
		group:   groupOther,
		setup: func(fs *flagSet) runFunc {
			return runHelp
		},
	},
	{
		name:    "completions",
		args:    "bash|zsh|fish",
		summary: "print a shell completion script",
		detail: `Load the script for the current shell session:
  bash:  source <(claudemesh completions bash)
  zsh:   source <(claudemesh completions zsh)     (after compinit)
  fish:  claudemesh completions fish | source
or save it where the shell loads completions: bash-completion's completions
directory, a directory on zsh's $fpath as _claudemesh, or
~/.config/fish/completions/claudemesh.fish. The script is generated from the
verb table, so regenerate it after upgrading claudemesh.`,
		group: groupOther,
		setup: func(fs *flagSet) runFunc {
			return runCompletions
		},
	},
}
