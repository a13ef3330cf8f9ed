// `claudemesh hook <event>`: the command Claude Code runs at its hook
// events (session-start, user-prompt-submit, post-tool-use, stop). It reads
// Claude Code's hook JSON on stdin and answers in Claude Code's format on
// stdout: the welcome, or the session's new messages, as context for the
// model; from stop, a decision to keep the session going with them.
//
// Policy:
//   - A hook never blocks or fails the user's prompt: whatever goes wrong
//     (no daemon, bad input, a slow answer) it prints nothing, exits 0, and
//     says why in the hook log (hooks.log in the daemon dir). It never
//     starts a daemon: it runs on every prompt, within a tight budget.
//   - stdout carries Claude Code's JSON and nothing else; stderr stays
//     silent, except from `stop --wake`, whose exit code 2 with the
//     messages on stderr is how Claude Code's asyncRewake hooks wake a
//     session at rest.
//   - The session is the launched one (its token) or the plain `claude`
//     session Claude Code's session id names; the claude process is found
//     among the hook's parents.
//   - A subagent's hooks (agent_id set) do nothing: messages are for the
//     session's own model.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Hook timings.
const (
	hookStdinLimit   = 1 << 20
	hookStdinTimeout = 2 * time.Second
	hookCallTimeout  = 2 * time.Second
	// hookWelcomeTimeout covers the broker's peer list the welcome asks for.
	hookWelcomeTimeout = 4 * time.Second
	// wakeGrace lets the stop hook's own check run first, so that a message
	// already there when the model stops keeps it going instead of waking it.
	wakeGrace = time.Second
	// wakeRetries bounds how often a waiter asks a daemon that does not
	// answer before it gives up.
	wakeRetries  = 5
	wakeBackoff  = 2 * time.Second
	wakeMaxRound = 600 // waits of hookWaitMax: two days at most
	// hookLogMax is where the hook log is cut: the old half is kept aside.
	hookLogMax = 1 << 20
)

// hookVerbs maps the verb's events to the IPC's and Claude Code's names.
var hookVerbs = map[string]string{
	hookSessionStart:     "SessionStart",
	hookUserPromptSubmit: "UserPromptSubmit",
	hookPostToolUse:      "PostToolUse",
	hookStop:             "Stop",
}

// claudeHookInput is the part of Claude Code's hook JSON the hooks read.
type claudeHookInput struct {
	SessionID      string `json:"session_id"`
	TranscriptPath string `json:"transcript_path"`
	Cwd            string `json:"cwd"`
	HookEventName  string `json:"hook_event_name"`
	Source         string `json:"source"`
	StopHookActive bool   `json:"stop_hook_active"`
	AgentID        string `json:"agent_id"`
}

// claudeHookOutput is a hook's answer in Claude Code's format.
type claudeHookOutput struct {
	Decision           string              `json:"decision,omitempty"`
	Reason             string              `json:"reason,omitempty"`
	HookSpecificOutput *claudeHookSpecific `json:"hookSpecificOutput,omitempty"`
}

type claudeHookSpecific struct {
	HookEventName     string `json:"hookEventName"`
	AdditionalContext string `json:"additionalContext,omitempty"`
}

type hookFlags struct {
	wake bool
}

func setupHook(fs *flagSet) runFunc {
	var f hookFlags
	fs.BoolVar(&f.wake, "wake", false, "stop only: wait in the background for the next message and wake the session with it (an asyncRewake hook)")
	return func(ctx context.Context, c *cli, args []string) error {
		return runHook(ctx, c, args, f)
	}
}

// hookRun is one hook invocation and what its log line says.
type hookRun struct {
	c       *cli
	event   string
	start   time.Time
	session string
	log     map[string]any
}

func runHook(ctx context.Context, c *cli, args []string, f hookFlags) error {
	h := &hookRun{c: c, start: time.Now(), log: map[string]any{}}
	defer h.writeLog()
	if len(args) != 1 || hookVerbs[args[0]] == "" || f.wake && args[0] != hookStop {
		h.event = strings.Join(args, " ")
		h.outcome("bad_usage", errors.New("usage: claudemesh hook session-start|user-prompt-submit|post-tool-use|stop [--wake]"))
		return nil
	}
	h.event = args[0]
	if f.wake {
		h.event = hookStop + " --wake"
	}
	in, err := readHookInput(c.env.Stdin, c.env.StdinTTY)
	if err != nil {
		h.outcome("bad_input", err)
		return nil
	}
	h.session = in.SessionID
	if in.AgentID != "" {
		h.outcome("subagent", nil)
		return nil
	}
	cl, req := h.client(in)
	defer cl.http.CloseIdleConnections()
	if f.wake {
		return h.wake(ctx, cl, req)
	}
	req.Event = args[0]
	timeout := hookCallTimeout
	if req.Event == hookSessionStart {
		timeout = hookWelcomeTimeout
	}
	rep, err := callIPCWithin(ctx, cl, timeout, apiHook, req)
	if err != nil {
		h.outcome(hookFailure(err), err)
		return nil
	}
	out := hookOutput(req.Event, rep, time.Local)
	if out == nil {
		h.outcome("nothing_new", nil)
		return nil
	}
	data, err := json.Marshal(out)
	if err != nil {
		h.outcome("encode_failed", err)
		return nil
	}
	if _, err := c.env.Stdout.Write(append(data, '\n')); err != nil {
		h.outcome("write_failed", err)
		return nil
	}
	h.log["messages"] = len(rep.Messages)
	h.outcome("answered", nil)
	return nil
}

// client is the daemon client for the session the hook runs in, and the
// request that names it.
func (h *hookRun) client(in claudeHookInput) (*DaemonClient, HookRequest) {
	getenv := h.c.env.Getenv
	req := HookRequest{TranscriptPath: in.TranscriptPath, Cwd: in.Cwd, Source: in.Source, StopHookActive: in.StopHookActive,
		Mesh: strings.TrimSpace(getenv("CLAUDEMESH_MESH")), DisplayName: strings.TrimSpace(getenv("CLAUDEMESH_DISPLAY_NAME"))}
	if cfg, err := h.c.loadUserConfig(); err == nil {
		req.Hold = cfg.MessageMode == messageModeInbox || cfg.MessageMode == messageModeOff
	}
	token := sessionTokenFromEnv(getenv)
	if token == "" {
		req.ClaudeSessionID = in.SessionID
		req.ClaudePid = claudeProcessOf(os.Getpid(), true)
		h.log["claude_pid"] = req.ClaudePid
	}
	return newDaemonClient(h.c.Paths().SocketFile(), token), req
}

// hookOutput is a hook's answer for Claude Code; nil when there is nothing
// to say.
func hookOutput(event string, rep HookReply, loc *time.Location) *claudeHookOutput {
	name := hookVerbs[event]
	switch event {
	case hookSessionStart:
		if rep.Welcome == nil {
			return nil // the session's MCP server welcomed the model
		}
		return &claudeHookOutput{HookSpecificOutput: &claudeHookSpecific{HookEventName: name,
			AdditionalContext: hookWelcomeText(rep.Session, rep.Welcome, loc)}}
	case hookStop:
		if !rep.Block || len(rep.Messages) == 0 {
			return nil
		}
		return &claudeHookOutput{Decision: "block",
			Reason: "New messages from peers arrived while you were finishing. Read them and answer those that need it, then finish.\n" +
				frameMessagesText(rep.Messages, rep.More, loc)}
	}
	text := frameMessagesText(rep.Messages, rep.More, loc)
	for _, n := range rep.Unsurfaced {
		text += "[claudemesh] " + n.Text + "\n"
	}
	if text == "" {
		return nil
	}
	return &claudeHookOutput{HookSpecificOutput: &claudeHookSpecific{HookEventName: name, AdditionalContext: text}}
}

// wake is `stop --wake`: wait for a message while the session is at rest,
// then hand it to Claude Code through exit code 2, which wakes the model.
func (h *hookRun) wake(ctx context.Context, cl *DaemonClient, req HookRequest) error {
	if sleepCtx(ctx, wakeGrace) != nil {
		return nil
	}
	wait := HookWaitRequest{ClaudeSessionID: req.ClaudeSessionID, ClaudePid: req.ClaudePid, TimeoutMs: int(hookWaitMax.Milliseconds())}
	failures := 0
	for range wakeMaxRound {
		rep, err := callIPCWithin(ctx, cl, hookWaitMax+hookCallTimeout, apiHookWait, wait)
		if err != nil {
			if failures++; failures > wakeRetries || ctx.Err() != nil {
				h.outcome(hookFailure(err), err)
				return nil
			}
			if sleepCtx(ctx, wakeBackoff) != nil {
				return nil
			}
			continue
		}
		failures = 0
		switch rep.Outcome {
		case waitTimeout:
			continue
		case waitPending:
		default:
			h.outcome("wait_"+rep.Outcome, nil)
			return nil
		}
		req.Event = hookWake
		got, err := callIPCWithin(ctx, cl, hookCallTimeout, apiHook, req)
		if err != nil {
			h.outcome(hookFailure(err), err)
			return nil
		}
		if len(got.Messages) == 0 {
			continue // another path showed it first
		}
		text := "\n" + frameMessagesText(got.Messages, got.More, time.Local)
		if _, err := io.WriteString(h.c.env.Stderr, text+"\n"); err != nil {
			h.outcome("write_failed", err)
			return nil
		}
		h.log["messages"] = len(got.Messages)
		h.outcome("woke", nil)
		return silentExit(2)
	}
	h.outcome("wait_rounds_exhausted", nil)
	return nil
}

// readHookInput reads Claude Code's hook JSON. A terminal on stdin means
// no hook input at all: a person ran the hook by hand.
func readHookInput(r io.Reader, tty bool) (claudeHookInput, error) {
	var in claudeHookInput
	if tty {
		return in, errors.New("stdin is a terminal: Claude Code writes the hook's JSON there")
	}
	type result struct {
		data []byte
		err  error
	}
	got := make(chan result, 1)
	go func() {
		data, err := io.ReadAll(io.LimitReader(r, hookStdinLimit+1))
		got <- result{data, err}
	}()
	var res result
	select {
	case res = <-got:
	case <-time.After(hookStdinTimeout):
		return in, fmt.Errorf("no hook input within %s", hookStdinTimeout)
	}
	switch {
	case res.err != nil:
		return in, res.err
	case len(res.data) > hookStdinLimit:
		return in, fmt.Errorf("hook input over %d bytes", hookStdinLimit)
	}
	if err := json.Unmarshal(res.data, &in); err != nil {
		return in, fmt.Errorf("hook input is not Claude Code's JSON: %w", err)
	}
	if in.SessionID == "" {
		return in, errors.New("hook input has no session_id")
	}
	return in, nil
}

// hookFailure names a failed daemon call for the log.
func hookFailure(err error) string {
	var ie *IPCError
	if errors.As(err, &ie) {
		return "daemon_refused"
	}
	return "daemon_unreachable"
}

func (h *hookRun) outcome(what string, err error) {
	h.log["outcome"] = what
	if err != nil {
		h.log["err"] = err.Error()
	}
}

// writeLog appends the run's line to the hook log. The log never grows
// past hookLogMax: the older lines move to hooks.log.1.
func (h *hookRun) writeLog() {
	h.log["time"] = h.start.UTC().Format(time.RFC3339Nano)
	h.log["event"] = h.event
	if h.session != "" {
		h.log["session"] = h.session
	}
	h.log["ms"] = float64(time.Since(h.start).Microseconds()) / 1000
	line, err := json.Marshal(h.log)
	if err != nil {
		return
	}
	path := h.c.Paths().HookLogFile()
	if st, err := os.Stat(path); err == nil && st.Size() > hookLogMax {
		_ = os.Rename(path, path+".1")
	}
	if err := ensurePrivateDir(h.c.Paths().DaemonDir); err != nil {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	f.Write(append(line, '\n'))
	f.Close()
}
