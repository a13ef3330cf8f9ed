// Tests of the MCP server's protocol core: initialize, errors, framing,
// skills as prompts and resources, tools mode.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeMCPBackend is an in-memory mesh for the MCP server.
type fakeMCPBackend struct {
	mu           sync.Mutex
	skills       []Skill
	listErr      error
	getErr       error
	panicOnList  bool
	blockGet     bool // Skill waits for its ctx to end
	sent         []SendRequest
	sendErr      error
	peers        []PeerRow
	peersErr     error
	peersMesh    []string
	inbox        []inboxItem
	inboxErr     error
	inboxQueries []InboxQuery
	message      MessageReply
	messageErr   error
	messageAsked []MessageQuery
}

func (f *fakeMCPBackend) Skills(ctx context.Context) ([]Skill, error) {
	if f.panicOnList {
		panic("backend exploded")
	}
	if f.listErr != nil {
		return nil, f.listErr
	}
	var out []Skill
	for _, s := range f.skills {
		s.Instructions = "" // the list carries no instructions, as the daemon's
		out = append(out, s)
	}
	return out, nil
}

func (f *fakeMCPBackend) Skill(ctx context.Context, name string) (Skill, bool, error) {
	if f.blockGet {
		<-ctx.Done()
		return Skill{}, false, ctx.Err()
	}
	if f.getErr != nil {
		return Skill{}, false, f.getErr
	}
	for _, s := range f.skills {
		if s.Name == name {
			return s, true, nil
		}
	}
	return Skill{}, false, nil
}

func (f *fakeMCPBackend) Send(ctx context.Context, sr SendRequest) (SendReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sendErr != nil {
		return SendReply{}, f.sendErr
	}
	f.sent = append(f.sent, sr)
	return SendReply{ClientMessageID: fmt.Sprintf("c%d", len(f.sent)), Status: "queued"}, nil
}

func (f *fakeMCPBackend) Peers(ctx context.Context, mesh string) ([]PeerRow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peersMesh = append(f.peersMesh, mesh)
	return f.peers, f.peersErr
}

func (f *fakeMCPBackend) Inbox(ctx context.Context, q InboxQuery) ([]inboxItem, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inboxQueries = append(f.inboxQueries, q)
	return f.inbox, f.inboxErr
}

func (f *fakeMCPBackend) Message(ctx context.Context, q MessageQuery) (MessageReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.messageAsked = append(f.messageAsked, q)
	return f.message, f.messageErr
}

// mcpOutBuffer is an output stream that a test reads while the server writes.
type mcpOutBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *mcpOutBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *mcpOutBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// rpcOut is one message the server wrote.
type rpcOut struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   *rpcWireError   `json:"error"`
}

// parseRPCOutput splits the server's output into messages, failing on any line
// that is not one JSON object.
func parseRPCOutput(t *testing.T, out string) []rpcOut {
	t.Helper()
	var msgs []rpcOut
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		var m rpcOut
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("output line %q is not JSON: %v", line, err)
		}
		if m.JSONRPC != "2.0" {
			t.Fatalf("output line %q: jsonrpc = %q", line, m.JSONRPC)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// runMCPScript feeds lines to a server, closes its input and returns what it
// wrote once Serve has returned.
func runMCPScript(t *testing.T, cfg mcpConfig, lines ...string) []rpcOut {
	t.Helper()
	var out mcpOutBuffer
	srv := NewMCPServer(cfg, &out)
	in := strings.NewReader(strings.Join(lines, "\n") + "\n")
	if err := srv.Serve(context.Background(), in); err != nil {
		t.Fatalf("Serve = %v, want nil at end of input", err)
	}
	return parseRPCOutput(t, out.String())
}

func responsesByID(t *testing.T, msgs []rpcOut) map[string]rpcOut {
	t.Helper()
	m := map[string]rpcOut{}
	for _, msg := range msgs {
		if msg.Method != "" {
			continue
		}
		key := string(msg.ID)
		if _, dup := m[key]; dup {
			t.Fatalf("two responses for id %s", key)
		}
		m[key] = msg
	}
	return m
}

func rpcReq(id any, method string, params any) string {
	m := map[string]any{"jsonrpc": "2.0", "id": id, "method": method}
	if params != nil {
		m["params"] = params
	}
	data, _ := json.Marshal(m)
	return string(data)
}

func rpcNote(method string, params any) string {
	m := map[string]any{"jsonrpc": "2.0", "method": method}
	if params != nil {
		m["params"] = params
	}
	data, _ := json.Marshal(m)
	return string(data)
}

func mcpInitParams(version string) map[string]any {
	return map[string]any{"protocolVersion": version, "capabilities": map[string]any{},
		"clientInfo": map[string]any{"name": "test", "version": "1"}}
}

func TestMCPInitializeNegotiatesVersion(t *testing.T) {
	cases := []struct {
		name, requested, want string
	}{
		{"2025-11-25 echoed", "2025-11-25", "2025-11-25"},
		{"2025-06-18 echoed", "2025-06-18", "2025-06-18"},
		{"2025-03-26 echoed", "2025-03-26", "2025-03-26"},
		{"2024-11-05 echoed", "2024-11-05", "2024-11-05"},
		{"older unknown gets newest", "2024-10-07", "2025-11-25"},
		{"future unknown gets newest", "2099-01-01", "2025-11-25"},
		{"empty gets newest", "", "2025-11-25"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msgs := runMCPScript(t, mcpConfig{Version: "9.9.9"}, rpcReq(1, "initialize", mcpInitParams(tc.requested)))
			if len(msgs) != 1 || msgs[0].Error != nil {
				t.Fatalf("initialize(%q) = %+v, want one result", tc.requested, msgs)
			}
			var res struct {
				ProtocolVersion string                     `json:"protocolVersion"`
				Capabilities    map[string]json.RawMessage `json:"capabilities"`
				ServerInfo      map[string]string          `json:"serverInfo"`
				Instructions    string                     `json:"instructions"`
			}
			if err := json.Unmarshal(msgs[0].Result, &res); err != nil {
				t.Fatal(err)
			}
			if res.ProtocolVersion != tc.want {
				t.Errorf("initialize(%q).protocolVersion = %q, want %q", tc.requested, res.ProtocolVersion, tc.want)
			}
			if want := map[string]string{"name": "claudemesh", "version": "9.9.9"}; !reflect.DeepEqual(res.ServerInfo, want) {
				t.Errorf("serverInfo = %v, want %v", res.ServerInfo, want)
			}
			if res.Instructions == "" {
				t.Error("instructions are empty")
			}
		})
	}
}

func TestMCPCapabilitiesDeclareChannel(t *testing.T) {
	msgs := runMCPScript(t, mcpConfig{Version: version}, rpcReq(1, "initialize", mcpInitParams("2025-06-18")))
	var res struct {
		Capabilities json.RawMessage `json:"capabilities"`
	}
	if err := json.Unmarshal(msgs[0].Result, &res); err != nil {
		t.Fatal(err)
	}
	var got any
	if err := json.Unmarshal(res.Capabilities, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"tools": map[string]any{}, "prompts": map[string]any{}, "resources": map[string]any{},
		"experimental": map[string]any{"claude/channel": map[string]any{}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("capabilities = %s, want %v", res.Capabilities, want)
	}
}

func TestMCPInstructions(t *testing.T) {
	for _, tools := range []bool{false, true} {
		text := mcpInstructions(tools)
		for _, want := range []string{`<channel source="claudemesh">`, "from_name", "message_id", "mesh_slug", "welcome", "system", "Never reply"} {
			if !strings.Contains(text, want) {
				t.Errorf("mcpInstructions(%v) lacks %q", tools, want)
			}
		}
		cli := strings.Contains(text, "claudemesh send")
		if cli == tools {
			t.Errorf("mcpInstructions(%v) mentions the CLI send = %v, want %v", tools, cli, !tools)
		}
	}
}

func TestMCPProtocolErrors(t *testing.T) {
	skills := &fakeMCPBackend{skills: []Skill{{Name: "deploy", Description: "ship it", Instructions: "run make"}}}
	cases := []struct {
		name     string
		line     string
		wantID   string
		wantCode int
	}{
		{"discovery probe before initialize", rpcReq(1, "server/discover", map[string]any{}), "1", -32601},
		{"tools/call without --tools names an unknown tool", rpcReq(2, "tools/call", map[string]any{"name": "send"}), "2", -32602},
		{"logging/setLevel", rpcReq(4, "logging/setLevel", map[string]any{"level": "info"}), "4", -32601},
		{"completion/complete", rpcReq(5, "completion/complete", map[string]any{}), "5", -32601},
		{"string id kept", rpcReq("abc", "no/such", nil), `"abc"`, -32601},
		{"not JSON", "this is not json", "null", -32700},
		{"truncated JSON", `{"jsonrpc":"2.0","id":6,"method":`, "null", -32700},
		{"batch", `[{"jsonrpc":"2.0","id":7,"method":"ping"}]`, "null", -32600},
		{"number", `42`, "null", -32600},
		{"null", `null`, "null", -32600},
		{"wrong jsonrpc version", `{"jsonrpc":"1.0","id":8,"method":"ping"}`, "8", -32600},
		{"missing jsonrpc", `{"id":9,"method":"ping"}`, "9", -32600},
		{"null id", `{"jsonrpc":"2.0","id":null,"method":"ping"}`, "null", -32600},
		{"object id", `{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`, "null", -32600},
		{"no method", `{"jsonrpc":"2.0","id":10}`, "10", -32600},
		{"method not a string", `{"jsonrpc":"2.0","id":11,"method":5}`, "11", -32600},
		{"empty method", `{"jsonrpc":"2.0","id":12,"method":""}`, "12", -32600},
		{"scalar params", `{"jsonrpc":"2.0","id":13,"method":"ping","params":"x"}`, "13", -32600},
		{"initialize without params", rpcReq(14, "initialize", nil), "14", -32602},
		{"initialize without protocolVersion", rpcReq(15, "initialize", map[string]any{"capabilities": map[string]any{}}), "15", -32602},
		{"initialize with numeric protocolVersion", rpcReq(16, "initialize", map[string]any{"protocolVersion": 5}), "16", -32602},
		{"initialize with array params", rpcReq(17, "initialize", []any{"2025-06-18"}), "17", -32602},
		{"prompts/get without name", rpcReq(18, "prompts/get", map[string]any{}), "18", -32602},
		{"prompts/get unknown skill", rpcReq(19, "prompts/get", map[string]any{"name": "nope"}), "19", -32602},
		{"resources/read without uri", rpcReq(20, "resources/read", map[string]any{}), "20", -32602},
		{"resources/read unknown skill", rpcReq(21, "resources/read", map[string]any{"uri": "skill://claudemesh/nope"}), "21", -32002},
		{"resources/read foreign uri", rpcReq(22, "resources/read", map[string]any{"uri": "file:///etc/passwd"}), "22", -32002},
		{"resources/read bad escape", rpcReq(23, "resources/read", map[string]any{"uri": "skill://claudemesh/%zz"}), "23", -32002},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msgs := runMCPScript(t, mcpConfig{Version: version, Backend: skills}, tc.line)
			if len(msgs) != 1 {
				t.Fatalf("%s: got %d messages, want 1: %+v", tc.line, len(msgs), msgs)
			}
			m := msgs[0]
			if m.Error == nil {
				t.Fatalf("%s: result %s, want error %d", tc.line, m.Result, tc.wantCode)
			}
			if m.Error.Code != tc.wantCode || string(m.ID) != tc.wantID {
				t.Errorf("%s: error %d (%s) id %s, want %d id %s", tc.line, m.Error.Code, m.Error.Message, m.ID, tc.wantCode, tc.wantID)
			}
			if m.Result != nil {
				t.Errorf("%s: error response also has a result", tc.line)
			}
		})
	}
}

func TestMCPMethodNotFoundNamesTheMethod(t *testing.T) {
	msgs := runMCPScript(t, mcpConfig{}, rpcReq(1, "server/discover", nil))
	if got := msgs[0].Error.Message; got != "method not found: server/discover" {
		t.Errorf("message = %q", got)
	}
	if !errors.Is(fmt.Errorf("%w: x", errRPCMethodNotFound), errRPCMethodNotFound) {
		t.Error("wrapped sentinel is not recognised")
	}
}

func TestMCPDiscoveryProbeThenClassicHandshake(t *testing.T) {
	msgs := runMCPScript(t, mcpConfig{Version: version},
		rpcReq(1, "server/discover", map[string]any{}),
		rpcReq(2, "initialize", mcpInitParams("2025-11-25")),
		rpcNote("notifications/initialized", nil),
		rpcReq(3, "tools/list", nil),
		rpcReq(4, "ping", nil),
	)
	got := responsesByID(t, msgs)
	if len(msgs) != 4 {
		t.Fatalf("got %d messages, want 4 responses", len(msgs))
	}
	if got["1"].Error == nil || got["1"].Error.Code != -32601 {
		t.Errorf("probe = %+v, want -32601", got["1"])
	}
	if got["2"].Error != nil {
		t.Errorf("initialize after the probe failed: %+v", got["2"].Error)
	}
	if string(got["3"].Result) != `{"tools":[]}` {
		t.Errorf("tools/list = %s, want empty list", got["3"].Result)
	}
	if string(got["4"].Result) != `{}` {
		t.Errorf("ping = %s, want {}", got["4"].Result)
	}
}

func TestMCPNotificationsAreNeverAnswered(t *testing.T) {
	msgs := runMCPScript(t, mcpConfig{},
		rpcNote("notifications/initialized", nil),
		rpcNote("notifications/initialized", nil),
		rpcNote("notifications/roots/list_changed", nil),
		rpcNote("no/such/method", map[string]any{}),
		rpcNote("notifications/cancelled", map[string]any{"requestId": 99}),
		`{"jsonrpc":"1.0","method":"bad/version"}`,
		`{"jsonrpc":"2.0","method":"bad/params","params":7}`,
		`{"jsonrpc":"2.0","id":5,"result":{}}`,
		`{"jsonrpc":"2.0","id":6,"error":{"code":-1,"message":"x"}}`,
		"",
		"   ",
		rpcReq(7, "ping", nil),
	)
	if len(msgs) != 1 || string(msgs[0].ID) != "7" {
		t.Fatalf("output = %+v, want only the ping response", msgs)
	}
}

func TestMCPLastLineWithoutNewline(t *testing.T) {
	var out mcpOutBuffer
	srv := NewMCPServer(mcpConfig{}, &out)
	if err := srv.Serve(context.Background(), strings.NewReader(rpcReq(1, "ping", nil))); err != nil {
		t.Fatal(err)
	}
	msgs := parseRPCOutput(t, out.String())
	if len(msgs) != 1 || string(msgs[0].ID) != "1" {
		t.Fatalf("output = %q, want the ping response", out.String())
	}
}

func TestMCPCRLFInput(t *testing.T) {
	var out mcpOutBuffer
	srv := NewMCPServer(mcpConfig{}, &out)
	in := rpcReq(1, "ping", nil) + "\r\n" + rpcReq(2, "ping", nil) + "\r\n"
	if err := srv.Serve(context.Background(), strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	if msgs := parseRPCOutput(t, out.String()); len(msgs) != 2 || msgs[0].Error != nil || msgs[1].Error != nil {
		t.Fatalf("output = %q", out.String())
	}
}

func TestMCPOversizedLine(t *testing.T) {
	big := `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"` + strings.Repeat("a", mcpMaxMessage) + `"}}`
	msgs := runMCPScript(t, mcpConfig{}, big, rpcReq(2, "ping", nil))
	got := responsesByID(t, msgs)
	if e := got["null"].Error; e == nil || e.Code != -32700 {
		t.Errorf("oversized line = %+v, want -32700", got["null"])
	}
	if got["2"].Error != nil || got["2"].Result == nil {
		t.Errorf("ping after the oversized line = %+v", got["2"])
	}
}

func TestMCPStopsOnContextCancel(t *testing.T) {
	inR, inW := io.Pipe()
	defer inW.Close()
	var out mcpOutBuffer
	srv := NewMCPServer(mcpConfig{}, &out)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, inR) }()
	// The pipe hands the line over only once the server reads it, so the
	// server is running when the write returns.
	if _, err := io.WriteString(inW, rpcReq(1, "ping", nil)+"\n"); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel = %v, want nil", err)
	}
}

func TestMCPReadErrorIsReturned(t *testing.T) {
	srv := NewMCPServer(mcpConfig{}, io.Discard)
	boom := errors.New("boom")
	err := srv.Serve(context.Background(), io.MultiReader(strings.NewReader(rpcReq(1, "ping", nil)+"\n"), failingReader{boom}))
	if !errors.Is(err, boom) {
		t.Fatalf("Serve = %v, want %v", err, boom)
	}
}

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

func TestMCPInitializedHookRunsOnce(t *testing.T) {
	var calls int
	var mu sync.Mutex
	var out mcpOutBuffer
	var srv *MCPServer
	srv = NewMCPServer(mcpConfig{OnInitialized: func(ctx context.Context) {
		select {
		case <-srv.Initialized():
		default:
			t.Error("hook ran before Initialized() was closed")
		}
		<-ctx.Done() // the hook's ctx ends when Serve returns
		mu.Lock()
		calls++
		mu.Unlock()
	}}, &out)
	select {
	case <-srv.Initialized():
		t.Fatal("Initialized() closed before the client said so")
	default:
	}
	in := strings.Join([]string{
		rpcReq(1, "initialize", mcpInitParams("2025-06-18")),
		rpcNote("notifications/initialized", nil),
		rpcNote("notifications/initialized", nil),
	}, "\n") + "\n"
	if err := srv.Serve(context.Background(), strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Errorf("hook ran %d times, want 1", calls)
	}
}

func TestMCPWelcomeHookCanEmit(t *testing.T) {
	// The hook is where the welcome goes out: a notification it sends while
	// Serve runs reaches the client.
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	var srv *MCPServer
	srv = NewMCPServer(mcpConfig{OnInitialized: func(ctx context.Context) {
		n := welcomeChannel(welcomeInput{Self: &mcpSelf{DisplayName: "alice", Mesh: "team"}})
		if err := srv.EmitChannel(ctx, n); err != nil {
			t.Errorf("EmitChannel = %v", err)
		}
	}}, outW)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), inR) }()
	lines := bufio.NewReader(outR)
	readMsg := func() rpcOut {
		t.Helper()
		line, err := lines.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return parseRPCOutput(t, line)[0]
	}
	io.WriteString(inW, rpcReq(1, "initialize", mcpInitParams("2025-06-18"))+"\n")
	if m := readMsg(); string(m.ID) != "1" {
		t.Fatalf("first message = %+v, want the initialize response", m)
	}
	io.WriteString(inW, rpcNote("notifications/initialized", nil)+"\n")
	m := readMsg()
	if m.Method != channelMethod {
		t.Fatalf("message after initialized = %+v, want %s", m, channelMethod)
	}
	var n channelNotification
	if err := json.Unmarshal(m.Params, &n); err != nil {
		t.Fatal(err)
	}
	if n.Meta["kind"] != "welcome" || n.Meta["self_display_name"] != "alice" {
		t.Errorf("welcome meta = %v", n.Meta)
	}
	inW.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	outW.Close()
}

func TestMCPEmitChannelRefusesBadMeta(t *testing.T) {
	var out mcpOutBuffer
	srv := NewMCPServer(mcpConfig{}, &out)
	err := srv.EmitChannel(context.Background(), channelNotification{Content: "x", Meta: map[string]string{"from-name": "bob"}})
	if err == nil {
		t.Fatal("EmitChannel with key from-name succeeded")
	}
	if out.String() != "" {
		t.Errorf("refused notification was written: %q", out.String())
	}
	if err := srv.EmitChannel(context.Background(), channelNotification{Content: "hi"}); err != nil {
		t.Fatal(err)
	}
	msgs := parseRPCOutput(t, out.String())
	if len(msgs) != 1 || msgs[0].Method != channelMethod || string(msgs[0].Params) != `{"content":"hi","meta":{}}` {
		t.Errorf("output = %q, want one notification with empty meta", out.String())
	}
	if msgs[0].ID != nil {
		t.Errorf("a notification carries id %s", msgs[0].ID)
	}
}

func TestMCPWritesNeverInterleave(t *testing.T) {
	// Notifications from several goroutines and responses to many requests,
	// all at once: every output line must still be one whole message.
	const writers, perWriter, requests = 4, 50, 100
	var out mcpOutBuffer
	srv := NewMCPServer(mcpConfig{}, &out)
	var lines []string
	for i := 0; i < requests; i++ {
		lines = append(lines, rpcReq(i, "ping", nil))
	}
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				body := strings.Repeat("x", 1000+i)
				if err := srv.EmitChannel(context.Background(), channelNotification{Content: body, Meta: map[string]string{"kind": "system"}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	if err := srv.Serve(context.Background(), strings.NewReader(strings.Join(lines, "\n")+"\n")); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	msgs := parseRPCOutput(t, out.String())
	var notes, resps int
	for _, m := range msgs {
		if m.Method == channelMethod {
			notes++
		} else {
			resps++
		}
	}
	if notes != writers*perWriter || resps != requests {
		t.Errorf("got %d notifications and %d responses, want %d and %d", notes, resps, writers*perWriter, requests)
	}
}

func TestMCPCancelledRequestGetsNoResponse(t *testing.T) {
	backend := &fakeMCPBackend{blockGet: true}
	msgs := runMCPScript(t, mcpConfig{Backend: backend},
		rpcReq(1, "prompts/get", map[string]any{"name": "slow"}),
		rpcNote("notifications/cancelled", map[string]any{"requestId": 1, "reason": "user"}),
		rpcReq(2, "ping", nil),
	)
	if len(msgs) != 1 || string(msgs[0].ID) != "2" {
		t.Fatalf("output = %+v, want only the ping response", msgs)
	}
}

func TestMCPHandlerPanicIsInternalError(t *testing.T) {
	msgs := runMCPScript(t, mcpConfig{Backend: &fakeMCPBackend{panicOnList: true}},
		rpcReq(1, "prompts/list", nil), rpcReq(2, "ping", nil))
	got := responsesByID(t, msgs)
	if e := got["1"].Error; e == nil || e.Code != -32603 {
		t.Errorf("panicking handler = %+v, want -32603", got["1"])
	}
	if got["2"].Error != nil {
		t.Errorf("server did not survive the panic: %+v", got["2"])
	}
}

func TestMCPSkillsAsPromptsAndResources(t *testing.T) {
	backend := &fakeMCPBackend{skills: []Skill{
		{Name: "deploy", Description: "Ship: to prod", Instructions: "  Run `make deploy`.\n", Tags: []string{"ops"},
			Manifest: json.RawMessage(`{"when_to_use":"on release","allowed-tools":["Bash","Read"],"context":"fork","agent":"ops","user-invocable":false,"ignored":1}`)},
		{Name: "code review", Description: "review diffs", Instructions: "Look closely."},
	}}
	msgs := runMCPScript(t, mcpConfig{Backend: backend},
		rpcReq(1, "prompts/list", nil),
		rpcReq(2, "prompts/get", map[string]any{"name": "deploy"}),
		rpcReq(3, "resources/list", nil),
		rpcReq(4, "resources/read", map[string]any{"uri": "skill://claudemesh/code%20review"}),
	)
	got := responsesByID(t, msgs)
	for id, m := range got {
		if m.Error != nil {
			t.Fatalf("request %s failed: %+v", id, m.Error)
		}
	}
	wantList := `{"prompts":[{"name":"deploy","description":"Ship: to prod","arguments":[]},{"name":"code review","description":"review diffs","arguments":[]}]}`
	if string(got["1"].Result) != wantList {
		t.Errorf("prompts/list = %s\nwant %s", got["1"].Result, wantList)
	}
	var prompt struct {
		Description string `json:"description"`
		Messages    []struct {
			Role    string            `json:"role"`
			Content map[string]string `json:"content"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(got["2"].Result, &prompt); err != nil {
		t.Fatal(err)
	}
	wantDoc := "---\nname: \"deploy\"\ndescription: \"Ship: to prod\"\ntags: [\"ops\"]\nwhen_to_use: \"on release\"\n" +
		"allowed-tools: [\"Bash\",\"Read\"]\ncontext: \"fork\"\nagent: \"ops\"\nuser-invocable: false\n---\n\nRun `make deploy`.\n"
	if len(prompt.Messages) != 1 || prompt.Messages[0].Role != "user" || prompt.Messages[0].Content["type"] != "text" ||
		prompt.Messages[0].Content["text"] != wantDoc || prompt.Description != "Ship: to prod" {
		t.Errorf("prompts/get = %s\nwant text %q", got["2"].Result, wantDoc)
	}
	wantResources := `{"resources":[{"uri":"skill://claudemesh/deploy","name":"deploy","description":"Ship: to prod","mimeType":"text/markdown"},` +
		`{"uri":"skill://claudemesh/code%20review","name":"code review","description":"review diffs","mimeType":"text/markdown"}]}`
	if string(got["3"].Result) != wantResources {
		t.Errorf("resources/list = %s\nwant %s", got["3"].Result, wantResources)
	}
	wantRead := `{"contents":[{"uri":"skill://claudemesh/code%20review","mimeType":"text/markdown","text":"---\nname: \"code review\"\ndescription: \"review diffs\"\n---\n\nLook closely.\n"}]}`
	if string(got["4"].Result) != wantRead {
		t.Errorf("resources/read = %s\nwant %s", got["4"].Result, wantRead)
	}
}

func TestMCPSkillsDegrade(t *testing.T) {
	cases := []struct {
		name    string
		backend mcpBackend
		method  string
		params  any
		want    string // result JSON, or "error:<code>"
	}{
		{"no backend: no prompts", nil, "prompts/list", nil, `{"prompts":[]}`},
		{"no backend: no resources", nil, "resources/list", nil, `{"resources":[]}`},
		{"no backend: prompts/get unknown", nil, "prompts/get", map[string]any{"name": "x"}, "error:-32602"},
		{"list failure: empty list", &fakeMCPBackend{listErr: errors.New("daemon down")}, "prompts/list", nil, `{"prompts":[]}`},
		{"list failure: empty resources", &fakeMCPBackend{listErr: errors.New("daemon down")}, "resources/list", nil, `{"resources":[]}`},
		{"get failure: internal error", &fakeMCPBackend{getErr: errors.New("daemon down")}, "prompts/get", map[string]any{"name": "x"}, "error:-32603"},
		{"read failure: internal error", &fakeMCPBackend{getErr: errors.New("daemon down")}, "resources/read", map[string]any{"uri": skillURI("x")}, "error:-32603"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msgs := runMCPScript(t, mcpConfig{Backend: tc.backend}, rpcReq(1, tc.method, tc.params))
			m := msgs[0]
			got := string(m.Result)
			if m.Error != nil {
				got = fmt.Sprintf("error:%d", m.Error.Code)
			}
			if got != tc.want {
				t.Errorf("%s = %s, want %s", tc.method, got, tc.want)
			}
		})
	}
}

func TestMCPToolsList(t *testing.T) {
	msgs := runMCPScript(t, mcpConfig{Tools: true, Backend: &fakeMCPBackend{}}, rpcReq(1, "tools/list", nil))
	var res struct {
		Tools []struct {
			Name        string `json:"name"`
			Description string `json:"description"`
			InputSchema struct {
				Type       string                     `json:"type"`
				Properties map[string]json.RawMessage `json:"properties"`
				Required   []string                   `json:"required"`
			} `json:"inputSchema"`
		} `json:"tools"`
	}
	if err := json.Unmarshal(msgs[0].Result, &res); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"send": {"to", "message"}, "message_status": {"id"}, "peers": nil, "inbox": nil}
	if len(res.Tools) != len(want) {
		t.Fatalf("tools = %s", msgs[0].Result)
	}
	for _, tool := range res.Tools {
		required, ok := want[tool.Name]
		if !ok {
			t.Errorf("unexpected tool %q", tool.Name)
			continue
		}
		if tool.InputSchema.Type != "object" || tool.Description == "" {
			t.Errorf("tool %q: schema type %q, description %q", tool.Name, tool.InputSchema.Type, tool.Description)
		}
		if !reflect.DeepEqual(tool.InputSchema.Required, required) {
			t.Errorf("tool %q required = %v, want %v", tool.Name, tool.InputSchema.Required, required)
		}
		for _, r := range required {
			if _, ok := tool.InputSchema.Properties[r]; !ok {
				t.Errorf("tool %q requires %q without describing it", tool.Name, r)
			}
		}
	}
}

func TestMCPToolCalls(t *testing.T) {
	peers := []PeerRow{
		{Pubkey: "aa", DisplayName: "bob", PeerRole: "session"},
		{Pubkey: "bb", DisplayName: "alice-daemon", PeerRole: "control-plane"},
		{Pubkey: "cc", DisplayName: "old-daemon", Channel: "claudemesh-daemon"},
	}
	body := "hello"
	inbox := []inboxItem{{ID: "r1", SenderName: "bob", Body: &body}}
	type call struct {
		name string
		args any
	}
	cases := []struct {
		name      string
		call      call
		backend   *fakeMCPBackend
		wantError bool   // isError result
		wantText  string // substring of the text
		check     func(t *testing.T, b *fakeMCPBackend)
	}{
		{"send queues", call{"send", map[string]any{"to": " bob ", "message": "hi", "priority": "now", "reply_to": "m1", "mesh": "team"}},
			&fakeMCPBackend{}, false, `"client_message_id": "c1"`, func(t *testing.T, b *fakeMCPBackend) {
				want := []SendRequest{{To: "bob", Message: "hi", Priority: "now", ReplyToID: "m1", Mesh: "team"}}
				if !reflect.DeepEqual(b.sent, want) {
					t.Errorf("sent = %+v, want %+v", b.sent, want)
				}
			}},
		{"send without to", call{"send", map[string]any{"message": "hi"}}, &fakeMCPBackend{}, true, "to is required", nil},
		{"send without message", call{"send", map[string]any{"to": "bob"}}, &fakeMCPBackend{}, true, "message is required", nil},
		{"send bad priority", call{"send", map[string]any{"to": "bob", "message": "x", "priority": "urgent"}}, &fakeMCPBackend{}, true, "priority", nil},
		{"send misspelt argument", call{"send", map[string]any{"to": "bob", "mesage": "x"}}, &fakeMCPBackend{}, true, "mesage", nil},
		{"send wrong type", call{"send", map[string]any{"to": 5, "message": "x"}}, &fakeMCPBackend{}, true, "invalid arguments", nil},
		{"send refused by daemon", call{"send", map[string]any{"to": "bob", "message": "x"}},
			&fakeMCPBackend{sendErr: errors.New(`peer "bob" not found`)}, true, `send failed: peer "bob" not found`, nil},
		{"message status", call{"message_status", map[string]any{"id": " m1 ", "wait_ms": 500}}, &fakeMCPBackend{message: MessageReply{Message: outboxView{ID: "m1",
			Ladder: &messageLadder{Rung: rungSurfaced, Recipients: []recipientRung{{Name: "bob", Rung: rungSurfaced, Via: surfacedViaHooks}}}}}},
			false, `"via": "hooks"`, func(t *testing.T, b *fakeMCPBackend) {
				if want := []MessageQuery{{ID: "m1", WaitMs: 500}}; !reflect.DeepEqual(b.messageAsked, want) {
					t.Errorf("message queries = %+v, want %+v", b.messageAsked, want)
				}
			}},
		{"message status without id", call{"message_status", nil}, &fakeMCPBackend{}, true, "id is required", nil},
		{"message status wait out of range", call{"message_status", map[string]any{"id": "m1", "wait_ms": 60000}}, &fakeMCPBackend{}, true, "wait_ms", nil},
		{"message status of nothing", call{"message_status", map[string]any{"id": "m9"}}, &fakeMCPBackend{messageErr: errors.New("no message m9")}, true, "no message m9", nil},
		{"peers hides control-plane", call{"peers", nil}, &fakeMCPBackend{peers: peers}, false, `"displayName": "bob"`,
			func(t *testing.T, b *fakeMCPBackend) {
				if !reflect.DeepEqual(b.peersMesh, []string{""}) {
					t.Errorf("peers mesh = %q", b.peersMesh)
				}
			}},
		{"peers all", call{"peers", map[string]any{"all": true, "mesh": "team"}}, &fakeMCPBackend{peers: peers}, false, "old-daemon",
			func(t *testing.T, b *fakeMCPBackend) {
				if !reflect.DeepEqual(b.peersMesh, []string{"team"}) {
					t.Errorf("peers mesh = %q", b.peersMesh)
				}
			}},
		{"inbox reads and marks seen", call{"inbox", map[string]any{"unread": true, "limit": 5}}, &fakeMCPBackend{inbox: inbox}, false, `"body": "hello"`,
			func(t *testing.T, b *fakeMCPBackend) {
				want := []InboxQuery{{UnreadOnly: true, Limit: ptr(5), MarkSeen: ptr(true)}}
				if !reflect.DeepEqual(b.inboxQueries, want) {
					t.Errorf("inbox queries = %+v, want %+v", b.inboxQueries, want)
				}
			}},
		{"inbox empty is a list", call{"inbox", nil}, &fakeMCPBackend{}, false, "[]", nil},
		{"inbox limit out of range", call{"inbox", map[string]any{"limit": 5000}}, &fakeMCPBackend{}, true, "limit", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			params := map[string]any{"name": tc.call.name}
			if tc.call.args != nil {
				params["arguments"] = tc.call.args
			}
			msgs := runMCPScript(t, mcpConfig{Tools: true, Backend: tc.backend}, rpcReq(1, "tools/call", params))
			if msgs[0].Error != nil {
				t.Fatalf("tools/call %s = protocol error %+v, want a result", tc.call.name, msgs[0].Error)
			}
			var res mcpToolResult
			if err := json.Unmarshal(msgs[0].Result, &res); err != nil {
				t.Fatal(err)
			}
			if len(res.Content) != 1 || res.Content[0].Type != "text" {
				t.Fatalf("content = %+v", res.Content)
			}
			if res.IsError != tc.wantError || !strings.Contains(res.Content[0].Text, tc.wantText) {
				t.Errorf("tools/call %s = isError %v %q, want isError %v containing %q",
					tc.call.name, res.IsError, res.Content[0].Text, tc.wantError, tc.wantText)
			}
			if tc.check != nil {
				tc.check(t, tc.backend)
			}
		})
	}
}

func TestMCPToolCallProtocolErrors(t *testing.T) {
	cases := []struct {
		name     string
		cfg      mcpConfig
		params   any
		wantCode int
	}{
		{"unknown tool", mcpConfig{Tools: true, Backend: &fakeMCPBackend{}}, map[string]any{"name": "vault"}, -32602},
		{"no name", mcpConfig{Tools: true, Backend: &fakeMCPBackend{}}, map[string]any{}, -32602},
		{"params not an object", mcpConfig{Tools: true, Backend: &fakeMCPBackend{}}, []any{"send"}, -32602},
		{"tools mode off: no tool is known", mcpConfig{Backend: &fakeMCPBackend{}}, map[string]any{"name": "send"}, -32602},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msgs := runMCPScript(t, tc.cfg, rpcReq(1, "tools/call", tc.params))
			if e := msgs[0].Error; e == nil || e.Code != tc.wantCode {
				t.Errorf("tools/call %v = %+v, want error %d", tc.params, msgs[0], tc.wantCode)
			}
		})
	}
}

func TestMCPToolCallWithoutBackend(t *testing.T) {
	msgs := runMCPScript(t, mcpConfig{Tools: true}, rpcReq(1, "tools/call", map[string]any{"name": "peers"}))
	var res mcpToolResult
	if err := json.Unmarshal(msgs[0].Result, &res); err != nil {
		t.Fatal(err)
	}
	if !res.IsError {
		t.Errorf("tools/call without a backend = %s, want isError", msgs[0].Result)
	}
}

func TestDecodeRPCKinds(t *testing.T) {
	cases := []struct {
		name                   string
		line                   string
		notification, response bool
		method, id, params     string
	}{
		{"request", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, false, false, "ping", "1", ""},
		{"request with params", `{"jsonrpc":"2.0","id":"x","method":"a","params":{"k":1}}`, false, false, "a", `"x"`, `{"k":1}`},
		{"null params are absent", `{"jsonrpc":"2.0","id":2,"method":"a","params":null}`, false, false, "a", "2", ""},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, true, false, "notifications/initialized", "", ""},
		{"response", `{"jsonrpc":"2.0","id":3,"result":{}}`, false, true, "", "3", ""},
		{"negative id", `{"jsonrpc":"2.0","id":-4,"method":"a"}`, false, false, "a", "-4", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := decodeRPC([]byte(tc.line))
			if err != nil {
				t.Fatalf("decodeRPC(%q) = %v", tc.line, err)
			}
			if msg.notification != tc.notification || msg.response != tc.response || msg.method != tc.method ||
				string(msg.id) != tc.id || string(msg.params) != tc.params {
				t.Errorf("decodeRPC(%q) = %+v", tc.line, msg)
			}
		})
	}
}

func FuzzDecodeRPC(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"ping"}`, `{"jsonrpc":"2.0","method":"x"}`, `[1]`, `null`, `{"id":null}`,
		`{"jsonrpc":"2.0","id":"a","method":"b","params":[1]}`, `{"jsonrpc":"2.0","id":1,"result":1}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		msg, err := decodeRPC(line)
		if err != nil {
			var re *rpcError
			if !errors.As(err, &re) {
				t.Fatalf("decodeRPC(%q) error %v is not a JSON-RPC error", line, err)
			}
			if msg.id != nil && !validRPCID(msg.id) {
				t.Fatalf("decodeRPC(%q) kept invalid id %s", line, msg.id)
			}
			return
		}
		if !msg.response && msg.method == "" {
			t.Fatalf("decodeRPC(%q) accepted a message without method", line)
		}
		if msg.notification == (msg.id != nil) && !msg.response {
			t.Fatalf("decodeRPC(%q): notification %v with id %s", line, msg.notification, msg.id)
		}
		if msg.params != nil && !json.Valid(msg.params) {
			t.Fatalf("decodeRPC(%q) params %q are not JSON", line, msg.params)
		}
	})
}

func TestMCPLogFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "daemon", "mcp-4242.log")
	var stderr bytes.Buffer
	log, closer, err := openMCPLog(path, 4242, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("mcp_started", "version", "1.2.3")
	log.Debug("sse_event_received", "kind", "message")
	log.Warn("channel_emit_failed", "err", "broken pipe")
	if err := closer.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("log mode = %v, want 0600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 3 {
		t.Fatalf("log has %d lines, want 3:\n%s", len(lines), data)
	}
	for i, wantMsg := range []string{"mcp_started", "sse_event_received", "channel_emit_failed"} {
		var rec map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &rec); err != nil {
			t.Fatalf("line %d %q: %v", i, lines[i], err)
		}
		if rec["msg"] != wantMsg || rec["pid"] != float64(4242) || rec["ts"] == nil {
			t.Errorf("line %d = %v, want msg %s, pid 4242 and ts", i, rec, wantMsg)
		}
	}
	if s := stderr.String(); !strings.Contains(s, "channel_emit_failed") || strings.Contains(s, "mcp_started") {
		t.Errorf("stderr = %q, want only the warning", s)
	}
}

func TestMCPServerLogsToGivenLogger(t *testing.T) {
	var buf mcpOutBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	runMCPScript(t, mcpConfig{Log: log}, rpcReq(1, "server/discover", nil), rpcNote("notifications/initialized", nil))
	for _, want := range []string{"rpc_method_not_found", "server_initialized", "mcp_stopped"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, buf.String())
		}
	}
}

func TestPruneMCPLogs(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)
	old := now.Add(-10 * 24 * time.Hour)
	files := map[string]time.Time{
		"mcp-1.log":   old, // removed
		"mcp-2.log":   now, // recent: kept
		"mcp-3.log":   old, // our own: kept
		"mcp-x.log":   old, // not a per-pid log: kept
		"daemon.log":  old,
		"mcp-4.log.1": old,
	}
	for name, mtime := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("{}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	n, err := pruneMCPLogs(dir, 3, now.Add(-7*24*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("pruneMCPLogs = %d, %v, want 1, nil", n, err)
	}
	for name := range files {
		_, err := os.Stat(filepath.Join(dir, name))
		if gone := os.IsNotExist(err); gone != (name == "mcp-1.log") {
			t.Errorf("%s removed = %v", name, gone)
		}
	}
}

// Every method of a capability initialize declares answers as the MCP
// specification says: resource templates (none), tools/call of a tool this
// server does not have (invalid params), prompts and resources with a
// description even when the skill's author gave none; and a session is
// initialized once.
func TestMCPDeclaredCapabilitiesAnswer(t *testing.T) {
	backend := &fakeMCPBackend{skills: []Skill{{Name: "deploy", Instructions: "run make"}}}
	msgs := responsesByID(t, runMCPScript(t, mcpConfig{Version: version, Backend: backend},
		rpcReq(1, "resources/templates/list", nil),
		rpcReq(2, "tools/call", map[string]any{"name": "send", "arguments": map[string]any{"to": "bob", "message": "x"}}),
		rpcReq(3, "prompts/list", nil),
		rpcReq(4, "resources/list", nil),
		rpcReq(5, "prompts/get", map[string]any{"name": "deploy"})))
	if m := msgs["1"]; m.Error != nil || string(m.Result) != `{"resourceTemplates":[]}` {
		t.Errorf("resources/templates/list = %+v %s", m.Error, m.Result)
	}
	if m := msgs["2"]; m.Error == nil || m.Error.Code != -32602 || !strings.Contains(m.Error.Message, "unknown tool") {
		t.Errorf("tools/call without --tools = %+v, want -32602 unknown tool", m.Error)
	}
	if len(backend.sent) != 0 {
		t.Errorf("a tool ran without --tools: %+v", backend.sent)
	}
	for _, id := range []string{"3", "4", "5"} {
		if m := msgs[id]; m.Error != nil || strings.Contains(string(m.Result), `"description":""`) || !strings.Contains(string(m.Result), "skill deploy") {
			t.Errorf("response %s = %+v %s, want a description naming the skill", id, m.Error, m.Result)
		}
	}
	twice := runMCPScript(t, mcpConfig{Version: version},
		rpcReq(1, "initialize", mcpInitParams("2025-06-18")), rpcReq(2, "initialize", mcpInitParams("2025-06-18")))
	results, refused := 0, 0
	for _, m := range twice {
		switch {
		case m.Error == nil:
			results++
		case m.Error.Code == -32600:
			refused++
		}
	}
	if results != 1 || refused != 1 {
		t.Errorf("two initialize requests = %+v, want one result and one -32600", twice)
	}
}
