// Tests of `claudemesh mcp` as the process Claude Code runs: the handshake,
// DMs reaching the session, inbox mode, no daemon.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// mcpProc is `claudemesh mcp` as a process, driven over its pipes the way
// Claude Code drives it.
type mcpProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *syncBuffer
	exited chan struct{}
	exit   error

	mu      sync.Mutex
	msgs    []map[string]any
	taken   []bool
	bad     []string // stdout lines that are not JSON-RPC
	changed chan struct{}
	nextID  int
}

// binaryCommand is the built binary with args and exactly env (plus PATH,
// unless env has its own).
func binaryCommand(t *testing.T, env map[string]string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(claudemeshBinary(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

// startMCPProc runs the built binary's `mcp` with exactly env (plus PATH).
func startMCPProc(t *testing.T, env map[string]string, args ...string) *mcpProc {
	t.Helper()
	cmd := binaryCommand(t, env, append([]string{"mcp"}, args...)...)
	p := &mcpProc{t: t, cmd: cmd, stderr: &syncBuffer{}, exited: make(chan struct{}), changed: make(chan struct{}, 1)}
	cmd.Stderr = p.stderr
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 8<<20)
		for sc.Scan() {
			var m map[string]any
			p.mu.Lock()
			if json.Unmarshal(sc.Bytes(), &m) != nil || m["jsonrpc"] != "2.0" {
				p.bad = append(p.bad, sc.Text())
			} else {
				p.msgs = append(p.msgs, m)
				p.taken = append(p.taken, false)
			}
			p.mu.Unlock()
			select {
			case p.changed <- struct{}{}:
			default:
			}
		}
		p.exit = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-p.exited
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.bad) > 0 {
			t.Errorf("mcp wrote non-JSON-RPC to stdout: %q", p.bad)
		}
		if t.Failed() {
			t.Logf("mcp stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

func (p *mcpProc) send(v any) {
	p.t.Helper()
	data, _ := json.Marshal(v)
	if _, err := p.stdin.Write(append(data, '\n')); err != nil {
		p.t.Fatalf("write to mcp: %v", err)
	}
}

// take marks and returns the first message not taken before that matches.
func (p *mcpProc) take(match func(map[string]any) bool) (map[string]any, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, m := range p.msgs {
		if !p.taken[i] && match(m) {
			p.taken[i] = true
			return m, true
		}
	}
	return nil, false
}

// await returns the first message not returned before that matches.
func (p *mcpProc) await(what string, match func(map[string]any) bool) map[string]any {
	p.t.Helper()
	deadline := time.After(testWait)
	for {
		if m, ok := p.take(match); ok {
			return m
		}
		select {
		case <-p.changed:
		case <-p.exited:
			// One last look: the final lines may have come with the exit.
			if m, ok := p.take(match); ok {
				return m
			}
			p.t.Fatalf("mcp exited (%v) before %s", p.exit, what)
		case <-deadline:
			p.t.Fatalf("no %s from mcp within %v", what, testWait)
		}
	}
}

// count is how many messages so far match.
func (p *mcpProc) count(match func(map[string]any) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, m := range p.msgs {
		if match(m) {
			n++
		}
	}
	return n
}

// call sends a request and returns its response.
func (p *mcpProc) call(method string, params any) map[string]any {
	p.t.Helper()
	p.nextID++
	id := float64(p.nextID)
	msg := map[string]any{"jsonrpc": "2.0", "id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	p.send(msg)
	return p.await("response to "+method, func(m map[string]any) bool { return m["id"] == id && m["method"] == nil })
}

func (p *mcpProc) notify(method string) {
	p.send(map[string]any{"jsonrpc": "2.0", "method": method})
}

// waitExit waits for the process to end and returns its exit code.
func (p *mcpProc) waitExit() int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(testWait):
		p.t.Fatal("mcp still running")
	}
	if p.exit == nil {
		return 0
	}
	if ee, ok := p.exit.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	p.t.Fatalf("mcp: %v", p.exit)
	return -1
}

func isChannel(kind string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		if m["method"] != channelMethod {
			return false
		}
		meta, _ := m["params"].(map[string]any)["meta"].(map[string]any)
		return meta["kind"] == kind || (kind == "" && meta["kind"] == nil)
	}
}

// checkStringMeta fails unless every meta value is a string and every key
// an identifier: what Claude Code accepts.
func checkStringMeta(t *testing.T, n map[string]any) map[string]any {
	t.Helper()
	params, _ := n["params"].(map[string]any)
	if _, ok := params["content"].(string); !ok {
		t.Fatalf("channel content is not a string: %v", params)
	}
	meta, ok := params["meta"].(map[string]any)
	if !ok {
		t.Fatalf("channel meta missing: %v", params)
	}
	for k, v := range meta {
		if _, ok := v.(string); !ok || !channelMetaKey.MatchString(k) {
			t.Fatalf("meta %s = %#v (%T): every key must be an identifier and every value a string", k, v, v)
		}
	}
	return meta
}

// The handshake as several client generations do it: each supported
// protocol version is echoed, an unknown one gets the newest; a discovery
// probe before initialize and any unknown method get -32601; the channel
// capability is declared; notifications are never answered.
func TestMCPProcessHandshake(t *testing.T) {
	h := newTestHome(t)
	h.writeConfig(t)
	startTestDaemon(t, h, nil)
	versions := append(append([]string{}, mcpProtocolVersions...), "2099-01-01")
	for _, v := range versions {
		t.Run(v, func(t *testing.T) {
			p := startMCPProc(t, h.env())
			probe := p.call("server/discover", map[string]any{})
			if e, _ := probe["error"].(map[string]any); e == nil || e["code"] != float64(-32601) {
				t.Fatalf("server/discover before initialize = %v, want error -32601", probe)
			}
			resp := p.call("initialize", map[string]any{"protocolVersion": v, "capabilities": map[string]any{},
				"clientInfo": map[string]any{"name": "test", "version": "1"}})
			res, _ := resp["result"].(map[string]any)
			want := v
			if v == "2099-01-01" {
				want = mcpProtocolVersions[0]
			}
			if res["protocolVersion"] != want {
				t.Fatalf("initialize(%q) protocolVersion = %v, want %q", v, res["protocolVersion"], want)
			}
			caps, _ := res["capabilities"].(map[string]any)
			exp, _ := caps["experimental"].(map[string]any)
			if _, ok := exp["claude/channel"]; !ok {
				t.Fatalf("capabilities = %v, want experimental[claude/channel]", caps)
			}
			if info, _ := res["serverInfo"].(map[string]any); info["name"] != "claudemesh" || info["version"] != version {
				t.Fatalf("serverInfo = %v", res["serverInfo"])
			}
			if s, _ := res["instructions"].(string); !strings.Contains(s, "claudemesh send") {
				t.Fatalf("instructions = %q", s)
			}
			p.notify("notifications/whatever")
			for m, code := range map[string]float64{"tools/call": -32602, "logging/setLevel": -32601} {
				r := p.call(m, map[string]any{})
				if e, _ := r["error"].(map[string]any); e == nil || e["code"] != code {
					t.Fatalf("%s = %v, want %v", m, r, code)
				}
			}
			if r := p.call("resources/templates/list", nil); r["result"] == nil {
				t.Fatalf("resources/templates/list = %v", r)
			}
			if r := p.call("tools/list", nil); r["result"] == nil {
				t.Fatalf("tools/list = %v", r)
			}
			if n := p.count(func(m map[string]any) bool { return m["id"] == nil && m["method"] == nil }); n != 0 {
				t.Fatalf("%d responses without an id: a notification was answered", n)
			}
			p.stdin.Close()
			if code := p.waitExit(); code != 0 {
				t.Fatalf("exit after stdin EOF = %d, want 0", code)
			}
		})
	}
}

// The whole delivery path: a DM from another machine's daemon to a launched
// session reaches its MCP server as one channel notification with string
// meta; a message that arrives before the client is initialized waits and
// stays unread until it was emitted; the welcome comes once, with string
// meta, counting what is unread.
func TestMCPProcessDeliversDMs(t *testing.T) {
	f := newMsgFixture(t, nil)
	alice := registerTestSession(t, f.d1, f.me, "alice")
	bob := f.d2.client("")

	// A DM that arrived while no MCP server ran: the welcome previews it,
	// and it goes out in full after the welcome.
	missedID := deref(sendAndSettle(t, bob, alice.pub(), "missed while away").BrokerMessageID)
	waitFor(t, "the missed DM in alice's inbox", func() bool {
		return countBody(inboxItems(t, alice.cl, "unread_only", "true"), "missed while away") == 1
	})

	p := startMCPProc(t, f.h1.env("CLAUDEMESH_IPC_TOKEN", alice.reg.Token, "CLAUDEMESH_WELCOME_DELAY_MS", "0"))
	p.call("initialize", map[string]any{"protocolVersion": "2025-06-18", "capabilities": map[string]any{},
		"clientInfo": map[string]any{"name": "test", "version": "1"}})

	// Before notifications/initialized: stored, not emitted, still unread.
	// The server must be listening first: an event published before its
	// stream subscribed would never reach it (only the welcome would).
	waitFor(t, "the mcp server subscribed to alice's daemon", func() bool { return f.d1.bus.Subscribers() > 0 })
	early := sendAndSettle(t, bob, alice.pub(), "hello before init")
	waitFor(t, "the early DM in alice's inbox", func() bool {
		return countBody(inboxItems(t, alice.cl, "unread_only", "true"), "hello before init") == 1
	})
	if n := p.count(isChannel("")); n != 0 {
		t.Fatalf("%d channel notifications before notifications/initialized", n)
	}
	if countBody(inboxItems(t, alice.cl, "unread_only", "true"), "missed while away") != 1 {
		t.Fatal("the missed DM was marked seen before any welcome was emitted")
	}
	p.notify("notifications/initialized")

	// The welcome: once, string meta; it lists the missed DM (and the early
	// one too if it runs before the event pump has emitted that).
	w := p.await("the welcome", isChannel("welcome"))
	meta := checkStringMeta(t, w)
	if meta["self_display_name"] != "alice" || meta["self_session_pubkey"] != alice.pub() || meta["mesh_slug"] != "alpha" {
		t.Fatalf("welcome meta = %v", meta)
	}
	var ids []string
	if err := json.Unmarshal([]byte(meta["latest_message_ids"].(string)), &ids); err != nil || !slices.Contains(ids, missedID) {
		t.Fatalf("welcome latest_message_ids = %v (%v), want the missed message %s", meta["latest_message_ids"], err, missedID)
	}
	if uc := meta["unread_count"]; uc != "1" && uc != "2" {
		t.Fatalf("welcome unread_count = %v, want 1 or 2", uc)
	}
	// After the welcome the missed DM goes out in full (the welcome only
	// previewed it), and the early DM once initialized, each claimed for
	// the channel: in whichever order the catch-up and the pump get there.
	withText := func(text string) func(map[string]any) bool {
		return func(m map[string]any) bool {
			return isChannel("")(m) && strings.HasSuffix(m["params"].(map[string]any)["content"].(string), text)
		}
	}
	p.await("the missed DM, in full", withText("missed while away"))
	n := p.await("the early DM", withText("hello before init"))
	meta = checkStringMeta(t, n)
	if meta["from_name"] != "bob" || meta["mesh_slug"] != "alpha" || meta["client_message_id"] != early.ClientMessageID {
		t.Fatalf("early DM = %v", n["params"])
	}
	waitFor(t, "both claimed for the channel", func() bool {
		return countBody(inboxItems(t, alice.cl, "unread_only", "true"), "missed while away") == 0 &&
			countBody(inboxItems(t, alice.cl, "unread_only", "true"), "hello before init") == 0
	})

	// A live DM.
	live := sendAndSettle(t, bob, alice.pub(), "live one")
	n = p.await("the live DM", func(m map[string]any) bool {
		return isChannel("")(m) && strings.HasSuffix(m["params"].(map[string]any)["content"].(string), "live one")
	})
	meta = checkStringMeta(t, n)
	if meta["from_id"] != f.bob.Pubkey || meta["priority"] != "next" || meta["message_id"] != deref(live.BrokerMessageID) {
		t.Fatalf("live DM meta = %v (bob %s, broker id %s)", meta, f.bob.Pubkey, deref(live.BrokerMessageID))
	}
	waitFor(t, "the live DM claimed for the channel", func() bool {
		return countBody(inboxItems(t, alice.cl, "unread_only", "true"), "live one") == 0
	})
	if got := p.count(isChannel("welcome")); got != 1 {
		t.Fatalf("%d welcomes, want 1", got)
	}
	for _, text := range []string{"missed while away", "hello before init", "live one"} {
		if got := p.count(withText(text)); got != 1 {
			t.Errorf("%q emitted %d times, want once", text, got)
		}
	}

	// SIGTERM ends it cleanly.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.waitExit(); code != 0 {
		t.Fatalf("exit after SIGTERM = %d, want 0", code)
	}
	logs, _ := filepath.Glob(filepath.Join(f.h1.Paths.DaemonDir, "mcp-*.log"))
	if len(logs) != 1 {
		t.Fatalf("mcp logs = %v, want one", logs)
	}
	data, _ := os.ReadFile(logs[0])
	for _, ev := range []string{"mcp_started", "server_initialized", "welcome_emitted", "channel_emitted", "mcp_stopped"} {
		if !strings.Contains(string(data), `"msg":"`+ev+`"`) {
			t.Errorf("mcp log has no %s:\n%s", ev, data)
		}
	}
}

// With --message-mode inbox (the session's config), messages stay in the
// inbox: the welcome goes out, the DM does not.
func TestMCPProcessInboxMode(t *testing.T) {
	f := newMsgFixture(t, nil)
	alice := registerTestSession(t, f.d1, f.me, "alice")
	cfgDir := filepath.Join(shortTempDir(t), "cfg")
	if err := saveConfig(filepath.Join(cfgDir, "config.json"), &Config{Version: 1, Meshes: []Mesh{f.me}, MessageMode: messageModeInbox}); err != nil {
		t.Fatal(err)
	}
	p := startMCPProc(t, f.h1.env("CLAUDEMESH_IPC_TOKEN", alice.reg.Token, "CLAUDEMESH_WELCOME_DELAY_MS", "0", "CLAUDEMESH_CONFIG_DIR", cfgDir))
	p.call("initialize", map[string]any{"protocolVersion": "2025-06-18"})
	p.notify("notifications/initialized")
	p.await("the welcome", isChannel("welcome"))
	sendAndSettle(t, f.d2.client(""), alice.pub(), "held")
	waitFor(t, "the DM in the inbox", func() bool {
		return countBody(inboxItems(t, alice.cl, "unread_only", "true"), "held") == 1
	})
	// A later event that inbox mode does emit (bob's new session joining
	// the mesh): the stream is ordered, so once it is out, the DM's event
	// was handled before it.
	registerTestSession(t, f.d2, f.bob, "bob-session")
	p.await("the join notice", isChannel("system"))
	if n := p.count(isChannel("")); n != 0 {
		t.Fatalf("%d message notifications in inbox mode", n)
	}
	p.stdin.Close()
	p.waitExit()
	if got := countBody(inboxItems(t, alice.cl, "unread_only", "true"), "held"); got != 1 {
		t.Fatalf("held DM unread count = %d after the session, want 1", got)
	}
}

// No daemon, and none may be started: a clear message naming the command,
// exit 1, nothing on stdout.
func TestMCPProcessNoDaemon(t *testing.T) {
	h := newTestHome(t)
	res := runBinary(t, h.env("CLAUDEMESH_INTERNAL_NO_AUTOSPAWN", "1"), "mcp")
	if res.code != 1 || res.stdout != "" {
		t.Fatalf("mcp without a daemon = %d, stdout %q", res.code, res.stdout)
	}
	if !strings.Contains(res.stderr, "daemon is not running") || !strings.Contains(res.stderr, "claudemesh daemon up") {
		t.Fatalf("stderr = %q, want the reason and the command to start the daemon", res.stderr)
	}
}

// No daemon running: `claudemesh mcp` starts one, as every verb does, and
// serves the session (plain claude after a reboot starts it first).
func TestMCPProcessStartsTheDaemon(t *testing.T) {
	h := newTestHome(t)
	h.writeConfig(t)
	stopDaemonAt(t, h.Paths)
	p := startMCPProc(t, h.env())
	r := p.call("initialize", mcpInitParams("2025-06-18"))
	if r["result"] == nil {
		t.Fatalf("initialize = %v\n%s", r, p.stderr.String())
	}
	if !daemonLockHeld(h.Paths) {
		t.Fatal("mcp answered, but no daemon runs")
	}
	if _, err := newDaemonClient(h.Paths.SocketFile(), "").Version(context.Background()); err != nil {
		t.Fatalf("the started daemon does not answer: %v", err)
	}
	p.stdin.Close()
	p.waitExit()
}

// The MCP Inspector's CLI (the reference client, from npm) lists tools,
// prompts and resources and calls a tool against `claudemesh mcp`. It runs
// when node and @modelcontextprotocol/inspector-cli are installed (as in
// CI), and is skipped with the reason otherwise.
func TestMCPInspectorCLI(t *testing.T) {
	node, modules := nodeModules(t, filepath.Join("@modelcontextprotocol", "inspector-cli"))
	buildDir := filepath.Join(modules, "@modelcontextprotocol", "inspector-cli", "build")
	h := newTestHome(t)
	h.writeConfig(t)
	startTestDaemon(t, h, nil)
	bin := claudemeshBinary(t)
	inspect := func(args ...string) map[string]any {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, append([]string{"index.js", bin, "mcp"}, args...)...)
		// The inspector finds its own package.json relative to the cwd.
		cmd.Dir = buildDir
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		for k, v := range h.env() {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		out, err := cmd.Output()
		if err != nil {
			var stderr string
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("inspector %v: %v\n%s\n%s", args, err, out, stderr)
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("inspector %v printed %q", args, out)
		}
		return m
	}
	for _, tc := range []struct {
		args []string
		key  string
		want int
	}{
		{[]string{"--method", "tools/list"}, "tools", 0},
		{[]string{"--method", "prompts/list"}, "prompts", 0},
		{[]string{"--method", "resources/list"}, "resources", 0},
		{[]string{"--tools", "--method", "tools/list"}, "tools", len(mcpTools())},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			got := inspect(tc.args...)
			list, ok := got[tc.key].([]any)
			if !ok || len(list) != tc.want {
				t.Fatalf("%s = %v, want %d", tc.key, got, tc.want)
			}
		})
	}
	t.Run("tools/call peers", func(t *testing.T) {
		got := inspect("--tools", "--method", "tools/call", "--tool-name", "peers")
		content, _ := got["content"].([]any)
		if len(content) != 1 || got["isError"] == true {
			t.Fatalf("tools/call peers = %v", got)
		}
		text, _ := content[0].(map[string]any)["text"].(string)
		var rows []any
		if err := json.Unmarshal([]byte(text), &rows); err != nil {
			t.Fatalf("peers tool text %q: %v", text, err)
		}
	})
}

// The tools of a launched session's MCP server on real daemons: send
// queues a DM, and message_status follows it up the ladder to the hook
// that showed it to the recipient's model.
func TestMCPProcessMessageStatusTool(t *testing.T) {
	f := newMsgFixture(t, nil)
	alice := registerTestSession(t, f.d1, f.me, "alice")
	bert := registerTestSession(t, f.d2, f.bob, "bert")
	p := startMCPProc(t, f.h1.env("CLAUDEMESH_IPC_TOKEN", alice.reg.Token, "CLAUDEMESH_WELCOME_DELAY_MS", "0"), "--tools")
	p.call("initialize", map[string]any{"protocolVersion": "2025-06-18", "capabilities": map[string]any{},
		"clientInfo": map[string]any{"name": "test", "version": "1"}})
	toolText := func(name string, args map[string]any) string {
		t.Helper()
		r := p.call("tools/call", map[string]any{"name": name, "arguments": args})
		var res mcpToolResult
		data, _ := json.Marshal(r["result"])
		if err := json.Unmarshal(data, &res); err != nil || res.IsError || len(res.Content) != 1 {
			t.Fatalf("tools/call %s = %v", name, r)
		}
		return res.Content[0].Text
	}
	var sent SendReply
	if err := json.Unmarshal([]byte(toolText("send", map[string]any{"to": bert.pub(), "message": "status, please"})), &sent); err != nil || sent.ID == "" {
		t.Fatalf("send = %+v %v", sent, err)
	}
	waitFor(t, "the DM in bert's inbox", func() bool { return countBody(inboxItems(t, bert.cl), "status, please") == 1 })
	if _, err := callIPC(context.Background(), bert.cl, apiHook, HookRequest{Event: hookUserPromptSubmit}); err != nil {
		t.Fatal(err)
	}
	var got outboxView
	if err := json.Unmarshal([]byte(toolText("message_status", map[string]any{"id": sent.ID, "wait_ms": 10000})), &got); err != nil {
		t.Fatal(err)
	}
	if l := got.Ladder; l == nil || l.Rung != rungSurfaced || len(l.Recipients) != 1 || l.Recipients[0].Via != surfacedViaHooks {
		t.Fatalf("message_status = %+v", got.Ladder)
	}
}

// A model is welcomed once: by the MCP server when it comes before the
// session-start hook (the hook then says nothing), by the hook when it
// comes first (the server then skips its welcome), and by the hook again
// when the model's context begins anew.
func TestWelcomeOncePerSession(t *testing.T) {
	td, alpha, _ := hookDaemon(t)
	transcript := filepath.Join(t.TempDir(), "t.jsonl")
	startServer := func(token string) *mcpProc {
		t.Helper()
		p := startMCPProc(t, td.home.env("CLAUDEMESH_IPC_TOKEN", token, "CLAUDEMESH_WELCOME_DELAY_MS", "0"))
		p.call("initialize", map[string]any{"protocolVersion": "2025-06-18", "capabilities": map[string]any{},
			"clientInfo": map[string]any{"name": "test", "version": "1"}})
		p.notify("notifications/initialized")
		return p
	}
	sessionStart := func(token string, set map[string]any) (hookOut, bool) {
		t.Helper()
		return runHookProc(t, td.home.env("CLAUDEMESH_IPC_TOKEN", token), hookInput(t, "session-start", newUUID(), transcript, set), hookSessionStart)
	}

	t.Run("the MCP server first", func(t *testing.T) {
		s := registerTestSession(t, td, alpha, "first-mcp")
		p := startServer(s.reg.Token)
		p.await("the server's welcome", isChannel("welcome"))
		if out, ok := sessionStart(s.reg.Token, nil); ok {
			t.Fatalf("the session-start hook after the server's welcome said %+v, want nothing", out)
		}
		if out, ok := sessionStart(s.reg.Token, map[string]any{"source": "clear"}); !ok || !strings.Contains(out.HookSpecificOutput.AdditionalContext, "first-mcp") {
			t.Fatalf("session-start after /clear = %+v, want the welcome again", out)
		}
		if n := p.count(isChannel("welcome")); n != 1 {
			t.Fatalf("%d channel welcomes, want 1", n)
		}
	})

	t.Run("the session-start hook first", func(t *testing.T) {
		s := registerTestSession(t, td, alpha, "first-hook")
		if out, ok := sessionStart(s.reg.Token, nil); !ok || !strings.Contains(out.HookSpecificOutput.AdditionalContext, "first-hook") {
			t.Fatalf("session-start = %+v, want the welcome", out)
		}
		p := startServer(s.reg.Token)
		logFile := td.home.Paths.MCPLogFile(p.cmd.Process.Pid)
		waitFor(t, "the server to skip its welcome", func() bool {
			data, _ := os.ReadFile(logFile)
			return strings.Contains(string(data), "welcome_skipped")
		})
		if n := p.count(isChannel("welcome")); n != 0 {
			t.Fatalf("%d channel welcomes after the hook's, want 0", n)
		}
	})
}
