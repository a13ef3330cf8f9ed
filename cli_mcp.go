// `claudemesh mcp`: the MCP stdio server Claude Code spawns. This
// file is the process around the protocol core of mcp.go and mcpsession.go:
// finding the daemon, the session token, the per-pid log, signals.
//
// Policy:
//   - stdout carries JSON-RPC and nothing else; every message of ours goes
//     to stderr (which Claude Code keeps in its MCP log) and to
//     mcp-<pid>.log in the daemon dir.
//   - The server never starts a daemon: it is a child of Claude Code, and a
//     daemon it spawned would die with the session. No daemon → a clear
//     stderr message naming the command that starts one, and exit 1. A
//     service-managed daemon that is still starting is waited for.
//   - SIGPIPE is ignored, so a client that went away makes a write fail
//     (and the server stop) instead of killing the process mid-log.
//   - The server ends at stdin EOF or on SIGTERM/SIGINT, cleanly (exit 0).
//   - It speaks for the launched session of its token, else for the plain
//     `claude` session it runs in (by Claude Code's session id, or its
//     claude process), once that session's first hook has registered it.
package main

import (
	"cmp"
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// mcpLogRetention is how long other sessions' per-pid logs are kept.
const mcpLogRetention = 7 * 24 * time.Hour

type mcpFlags struct {
	tools bool
}

func setupMCP(fs *flagSet) runFunc {
	var f mcpFlags
	fs.BoolVar(&f.tools, "tools", false, "expose pull tools (send, message_status, peers, inbox) for clients without a shell")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("'mcp' takes no arguments")
		}
		return runMCP(ctx, c, f)
	}
}

// errNoDaemonForMCP is the error `mcp` exits with when no daemon answers.
func errNoDaemonForMCP(reason string) error {
	return exitError(exitFailure, errors.New("the claudemesh daemon is not running ("+reason+"); Claude Code gets no mesh messages without it"),
		"start it with: claudemesh daemon up",
		"or keep it running as a service: claudemesh daemon install-service",
		"then restart this MCP server (in Claude Code: /mcp → claudemesh → reconnect)")
}

func runMCP(ctx context.Context, c *cli, f mcpFlags) error {
	signal.Ignore(syscall.SIGPIPE)
	paths := c.Paths()
	pid := os.Getpid()
	_, _ = pruneMCPLogs(paths.DaemonDir, pid, time.Now().Add(-mcpLogRetention))
	log, closer, err := openMCPLog(paths.MCPLogFile(pid), pid, c.env.Stderr)
	if err != nil {
		return exitError(exitIO, err, "the per-session log goes to the daemon dir: "+paths.DaemonDir)
	}
	defer closer.Close()
	log.Info("mcp_started", "version", version, "tools", f.tools)

	// The daemon is found or started as every verb does: plain claude,
	// after a reboot, starts this server before anything else is running.
	r := newDaemonConnector(paths, c.env.Getenv).ensure(ctx, defaultSpawnBudget)
	if !r.usable() {
		log.Error("daemon_unreachable", "socket", paths.SocketFile(), "state", string(r.State), "reason", r.Reason)
		return errNoDaemonForMCP(r.Reason)
	}
	if r.State == daemonStarted {
		log.Info("daemon_autospawned", "took_ms", r.Duration.Milliseconds())
	}

	id := callerIdentityFromEnv(c.env.Getenv)
	mode := messageModePush
	if cfg, err := c.loadUserConfig(); err == nil && cfg.MessageMode != "" {
		mode = cfg.MessageMode
	}
	log.Info("mcp_session", "has_session_token", id.Token != "", "claude_session", id.ClaudeSessionID, "claude_pid", id.ClaudePid,
		"message_mode", mode)
	// Whether Claude Code was asked to load this server as a channel: a
	// plain `claude` drops channel notifications without a trace, so its
	// messages are left to the hooks rather than claimed for nothing.
	channel := id.Token != ""
	if args := processArgs(claudeProcessOf(os.Getpid(), false)); args != nil {
		channel = channelRequested(args, mcpServerName)
	}
	log.Info("mcp_channel", "requested", channel)
	cl := newDaemonClientAs(paths.SocketFile(), id)
	defer cl.http.CloseIdleConnections()
	session := NewMCPSession(daemonMCP{cl: cl}, mcpConfig{Version: version, Tools: f.tools, Log: log}, c.env.Stdout,
		mcpSessionOptions{WelcomeDelay: welcomeDelayFromEnv(c.env.Getenv), Location: time.Local, MessageMode: mode,
			SessionID:      cmp.Or(c.env.Getenv("CLAUDEMESH_SESSION_ID"), id.ClaudeSessionID),
			RequireSession: id.Token == "" && (id.ClaudeSessionID != "" || id.ClaudePid > 0), ChannelOff: !channel})
	if err := session.Run(ctx, c.env.Stdin); err != nil {
		log.Error("mcp_failed", "err", err.Error())
		return exitError(exitFailure, err)
	}
	return nil
}
