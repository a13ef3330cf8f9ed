// The MCP stdio server behind `claudemesh mcp`: newline-delimited JSON-RPC
// 2.0 on stdin/stdout, written on the standard library. Claude Code spawns
// it; it is how peers' messages reach a running session (as
// notifications/claude/channel, see channel.go) and how mesh skills show up
// as prompts and resources.
//
// Policy:
//   - Every method this server does not implement answers -32601, including
//     discovery probes that newer clients send before `initialize` (such as
//     server/discover): failing them cleanly makes the client fall back to the
//     classic initialize handshake, the one where server-initiated
//     notifications — our channel messages — work.
//   - A notification (a message without an id) never gets a response, not
//     even an error.
//   - stdout carries protocol and nothing else; logs go to stderr and the
//     per-pid JSON-lines log.
//   - Responses and notifications are written whole, one at a time, so the
//     event pump and request handlers never interleave bytes on stdout.
//   - The server declares experimental["claude/channel"]: Claude Code ≥ 2.1
//     ignores channel notifications from servers that do not (claudemesh 1.34.1).
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// mcpProtocolVersions are the MCP revisions this server speaks, newest
// first. A client asking for another one is answered with the newest, and
// decides itself whether it can go on.
var mcpProtocolVersions = []string{"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"}

// negotiateMCPVersion picks the protocol version for an initialize request.
func negotiateMCPVersion(requested string) string {
	for _, v := range mcpProtocolVersions {
		if v == requested {
			return v
		}
	}
	return mcpProtocolVersions[0]
}

// Limits of the stdio transport.
const (
	// mcpMaxMessage bounds one incoming line; MCP requests are small, and a
	// longer line is answered with a parse error instead of being buffered.
	mcpMaxMessage = 4 << 20
	// mcpMaxInflight bounds requests handled at once; reading stdin pauses
	// beyond it.
	mcpMaxInflight = 16
)

// JSON-RPC errors. Each code is a sentinel; handlers wrap one with %w to add
// detail, and the wire error carries the sentinel's code and the whole text.
type rpcError struct {
	Code    int
	Message string
}

func (e *rpcError) Error() string { return e.Message }

var (
	errRPCParse            = &rpcError{Code: -32700, Message: "parse error"}
	errRPCInvalidRequest   = &rpcError{Code: -32600, Message: "invalid request"}
	errRPCMethodNotFound   = &rpcError{Code: -32601, Message: "method not found"}
	errRPCInvalidParams    = &rpcError{Code: -32602, Message: "invalid params"}
	errRPCInternal         = &rpcError{Code: -32603, Message: "internal error"}
	errRPCResourceNotFound = &rpcError{Code: -32002, Message: "resource not found"} // MCP's code for resources/read
)

// rpcWireError is the error member of a response.
type rpcWireError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// rpcResponse is a response; exactly one of Result and Error is set.
type rpcResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  any             `json:"result,omitempty"`
	Error   *rpcWireError   `json:"error,omitempty"`
}

// rpcNotificationOut is a notification the server sends.
type rpcNotificationOut struct {
	JSONRPC string `json:"jsonrpc"`
	Method  string `json:"method"`
	Params  any    `json:"params,omitempty"`
}

// wireErrorOf maps an error to its JSON-RPC code: the sentinel it wraps, else
// internal error.
func wireErrorOf(err error) *rpcWireError {
	var re *rpcError
	if errors.As(err, &re) {
		return &rpcWireError{Code: re.Code, Message: err.Error()}
	}
	return &rpcWireError{Code: errRPCInternal.Code, Message: err.Error()}
}

// rpcIncoming is one decoded incoming message.
type rpcIncoming struct {
	id           json.RawMessage // nil for a notification
	method       string
	params       json.RawMessage
	notification bool // no id: never answered
	response     bool // a response to a request of ours; we send none, so it is dropped
}

var nullID = json.RawMessage("null")

// decodeRPC validates one line as a JSON-RPC 2.0 message. On error, the
// returned message still says whether it was a notification (not to be
// answered) and carries its id when the id itself was valid.
func decodeRPC(line []byte) (rpcIncoming, error) {
	var msg rpcIncoming
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil || fields == nil {
		if !json.Valid(line) {
			return msg, fmt.Errorf("%w: the line is not JSON", errRPCParse)
		}
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] == '[' {
			return msg, fmt.Errorf("%w: batches are not supported", errRPCInvalidRequest)
		}
		return msg, fmt.Errorf("%w: a message must be a JSON object", errRPCInvalidRequest)
	}
	rawID, hasID := fields["id"]
	rawMethod, hasMethod := fields["method"]
	if hasID {
		if !validRPCID(rawID) {
			return msg, fmt.Errorf("%w: id must be a string or a number", errRPCInvalidRequest)
		}
		msg.id = rawID
	}
	if !hasMethod {
		_, hasResult := fields["result"]
		_, hasError := fields["error"]
		if hasID && (hasResult || hasError) {
			msg.response = true
			return msg, nil
		}
		return msg, fmt.Errorf("%w: no method", errRPCInvalidRequest)
	}
	msg.notification = !hasID
	var version string
	if json.Unmarshal(fields["jsonrpc"], &version) != nil || version != "2.0" {
		return msg, fmt.Errorf("%w: jsonrpc must be \"2.0\"", errRPCInvalidRequest)
	}
	if json.Unmarshal(rawMethod, &msg.method) != nil || msg.method == "" {
		return msg, fmt.Errorf("%w: method must be a non-empty string", errRPCInvalidRequest)
	}
	if p, ok := fields["params"]; ok && string(p) != "null" {
		if p[0] != '{' && p[0] != '[' {
			return msg, fmt.Errorf("%w: params must be an object or an array", errRPCInvalidRequest)
		}
		msg.params = p
	}
	return msg, nil
}

// validRPCID accepts what MCP allows as an id: a string or a number.
func validRPCID(raw json.RawMessage) bool {
	if len(raw) == 0 {
		return false
	}
	switch c := raw[0]; {
	case c == '"':
		var s string
		return json.Unmarshal(raw, &s) == nil
	case c == '-' || c >= '0' && c <= '9':
		return true // json.Unmarshal of the whole line already checked the number
	}
	return false
}

// rpcLineReader reads newline-delimited messages in its own goroutine so that
// waiting for the next one can be abandoned when ctx ends.
type rpcLineReader struct {
	results chan rpcLine
	stop    chan struct{}
	once    sync.Once
}

type rpcLine struct {
	data    []byte
	tooLong bool
	err     error
}

func newRPCLineReader(r io.Reader, maxLine int) *rpcLineReader {
	lr := &rpcLineReader{results: make(chan rpcLine), stop: make(chan struct{})}
	go lr.loop(bufio.NewReaderSize(r, 64<<10), maxLine)
	return lr
}

func (lr *rpcLineReader) loop(br *bufio.Reader, maxLine int) {
	for {
		var line rpcLine
		for {
			frag, err := br.ReadSlice('\n')
			if len(line.data)+len(frag) > maxLine {
				line.data, line.tooLong = nil, true
			} else if !line.tooLong {
				line.data = append(line.data, frag...)
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			line.err = err
			break
		}
		select {
		case lr.results <- line:
		case <-lr.stop:
			return
		}
		if line.err != nil {
			return
		}
	}
}

// next returns the next line (without its line ending). The error is io.EOF
// after the last line, ctx's error when ctx ends first.
func (lr *rpcLineReader) next(ctx context.Context) (rpcLine, error) {
	select {
	case l := <-lr.results:
		l.data = bytes.TrimRight(l.data, "\r\n")
		return l, nil
	case <-ctx.Done():
		return rpcLine{}, ctx.Err()
	}
}

// close lets the reading goroutine end once its current read returns.
func (lr *rpcLineReader) close() { lr.once.Do(func() { close(lr.stop) }) }

// rpcWriter writes one JSON message per line. The one-slot channel is the
// write lock: a writer waiting for it gives up when its ctx ends, so a stuck
// client cannot pin every goroutine that wants to write.
type rpcWriter struct {
	lock chan struct{}
	w    io.Writer
	err  error // the first write error; every later write fails with it
}

func newRPCWriter(w io.Writer) *rpcWriter {
	return &rpcWriter{lock: make(chan struct{}, 1), w: w}
}

func (w *rpcWriter) write(ctx context.Context, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // Encode ends the line with '\n'
		return err
	}
	if err := ctx.Err(); err != nil {
		return err // checked first: select picks at random among ready cases
	}
	select {
	case w.lock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-w.lock }()
	if w.err != nil {
		return w.err
	}
	if _, err := w.w.Write(buf.Bytes()); err != nil {
		w.err = fmt.Errorf("write to client: %w", err)
		return w.err
	}
	return nil
}

// mcpBackend is what the server needs from the mesh; the daemon's IPC client
// implements it. Skills feed prompts and resources; Send, Peers and Inbox
// feed the pull tools of --tools mode.
type mcpBackend interface {
	// Skills lists the mesh's shared skills (without instructions).
	Skills(ctx context.Context) ([]Skill, error)
	// Skill fetches one skill with its instructions; ok is false when the
	// mesh has no skill of that name.
	Skill(ctx context.Context, name string) (skill Skill, ok bool, err error)
	// Send queues a message (POST /v1/send).
	Send(ctx context.Context, req SendRequest) (SendReply, error)
	// Peers lists the peers of a mesh ("" = the session's mesh).
	Peers(ctx context.Context, mesh string) ([]PeerRow, error)
	// Inbox reads the inbox, newest first (GET /v1/inbox).
	Inbox(ctx context.Context, q InboxQuery) ([]inboxItem, error)
	// Message is one sent message with its receipt ladder (GET
	// /v1/messages/{id}).
	Message(ctx context.Context, q MessageQuery) (MessageReply, error)
}

// mcpConfig configures an MCPServer.
type mcpConfig struct {
	Version string     // reported in serverInfo
	Backend mcpBackend // nil: no skills, and --tools mode has nothing to call
	Tools   bool       // expose the pull tools send, message_status, peers and inbox
	Log     *slog.Logger
	// OnInitialized runs once, in its own goroutine, when the client sends
	// notifications/initialized; its ctx ends when Serve returns.
	OnInitialized func(ctx context.Context)
}

// MCPServer is one MCP session over a pair of streams.
type MCPServer struct {
	cfg      mcpConfig
	log      *slog.Logger
	out      *rpcWriter
	handlers map[string]mcpHandler

	initialized chan struct{}
	initOnce    sync.Once
	// initializeDone is set by the first successful initialize request.
	initializeDone atomic.Bool

	mu       sync.Mutex
	inflight map[string]*mcpInflight
	client   mcpClientInfo // what initialize settled; under mu
}

// mcpClientInfo is the client as initialize saw it, and the protocol
// revision negotiated with it.
type mcpClientInfo struct {
	Protocol, Name, Version string
}

// Client is what initialize settled (zero before it).
func (s *MCPServer) Client() mcpClientInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client
}

type mcpHandler func(ctx context.Context, params json.RawMessage) (any, error)

type mcpInflight struct{ cancel context.CancelFunc }

// NewMCPServer returns a server that writes to out. Notify and EmitChannel
// may be called from any goroutine, before or while Serve runs.
func NewMCPServer(cfg mcpConfig, out io.Writer) *MCPServer {
	s := &MCPServer{
		cfg:         cfg,
		log:         cfg.Log,
		out:         newRPCWriter(out),
		initialized: make(chan struct{}),
		inflight:    map[string]*mcpInflight{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	// The method table: anything not in it is -32601. Every method of a
	// capability initialize declares is in it: without --tools, tools/list
	// is empty and tools/call names an unknown tool (-32602).
	s.handlers = map[string]mcpHandler{
		"initialize":               s.initialize,
		"ping":                     s.ping,
		"tools/list":               s.listTools,
		"tools/call":               s.callTool,
		"prompts/list":             s.listPrompts,
		"prompts/get":              s.getPrompt,
		"resources/list":           s.listResources,
		"resources/templates/list": s.listResourceTemplates,
		"resources/read":           s.readResource,
	}
	return s
}

// Initialized is closed once the client has sent notifications/initialized;
// Claude Code registers its channel handler only after that, so channel
// notifications wait for it.
func (s *MCPServer) Initialized() <-chan struct{} { return s.initialized }

// Serve reads requests from in until it ends or ctx ends, answering each.
// At the end of input it still finishes the requests in flight (a client
// that pipes requests and closes stdin gets its answers). Both endings are
// clean and return nil; a read error is returned.
func (s *MCPServer) Serve(ctx context.Context, in io.Reader) error {
	ctx, cancel := context.WithCancel(ctx)
	lines := newRPCLineReader(in, mcpMaxMessage)
	var requests, hooks sync.WaitGroup
	sem := make(chan struct{}, mcpMaxInflight)
	defer func() {
		requests.Wait()
		cancel()
		hooks.Wait()
		lines.close()
	}()
	for {
		line, err := lines.next(ctx)
		if err != nil {
			s.log.Info("mcp_stopped", "reason", "context")
			return nil
		}
		if line.tooLong {
			s.log.Warn("rpc_message_too_large", "limit", mcpMaxMessage)
			_ = s.out.write(ctx, rpcResponse{JSONRPC: "2.0", ID: nullID,
				Error: wireErrorOf(fmt.Errorf("%w: message longer than %d bytes", errRPCParse, mcpMaxMessage))})
		} else if len(bytes.TrimSpace(line.data)) > 0 {
			s.handleLine(ctx, line.data, &requests, &hooks, sem)
		}
		switch {
		case line.err == nil:
		case errors.Is(line.err, io.EOF):
			s.log.Info("mcp_stopped", "reason", "stdin closed")
			return nil
		default:
			return fmt.Errorf("read from client: %w", line.err)
		}
	}
}

func (s *MCPServer) handleLine(ctx context.Context, line []byte, requests, hooks *sync.WaitGroup, sem chan struct{}) {
	msg, err := decodeRPC(line)
	if err != nil {
		s.log.Warn("rpc_bad_message", "err", err.Error())
		if msg.notification {
			return
		}
		id := msg.id
		if id == nil {
			id = nullID
		}
		_ = s.out.write(ctx, rpcResponse{JSONRPC: "2.0", ID: id, Error: wireErrorOf(err)})
		return
	}
	switch {
	case msg.response:
		s.log.Debug("rpc_response_ignored", "id", string(msg.id))
		return
	case msg.notification:
		s.handleNotification(ctx, msg, hooks)
		return
	}
	h, ok := s.handlers[msg.method]
	if !ok {
		s.log.Info("rpc_method_not_found", "method", msg.method)
		_ = s.out.write(ctx, rpcResponse{JSONRPC: "2.0", ID: msg.id,
			Error: wireErrorOf(fmt.Errorf("%w: %s", errRPCMethodNotFound, msg.method))})
		return
	}
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	reqCtx, reqCancel := context.WithCancel(ctx)
	key := string(msg.id)
	entry := &mcpInflight{cancel: reqCancel}
	s.mu.Lock()
	s.inflight[key] = entry
	s.mu.Unlock()
	requests.Add(1)
	go func() {
		defer requests.Done()
		defer func() { <-sem }()
		defer reqCancel()
		defer func() {
			s.mu.Lock()
			if s.inflight[key] == entry {
				delete(s.inflight, key)
			}
			s.mu.Unlock()
		}()
		result, err := s.call(reqCtx, h, msg)
		if reqCtx.Err() != nil && ctx.Err() == nil {
			return // cancelled by the client, which wants no response
		}
		resp := rpcResponse{JSONRPC: "2.0", ID: msg.id}
		if err != nil {
			resp.Error = wireErrorOf(err)
			s.log.Info("rpc_error", "method", msg.method, "code", resp.Error.Code, "err", resp.Error.Message)
		} else {
			if result == nil {
				result = struct{}{}
			}
			resp.Result = result
		}
		if werr := s.out.write(ctx, resp); werr != nil {
			s.log.Warn("rpc_write_failed", "method", msg.method, "err", werr.Error())
		}
	}()
}

// call runs a handler, turning a panic into an internal error so that one bad
// request cannot take the session down.
func (s *MCPServer) call(ctx context.Context, h mcpHandler, msg rpcIncoming) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("rpc_handler_panic", "method", msg.method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			result, err = nil, fmt.Errorf("%w: %s failed", errRPCInternal, msg.method)
		}
	}()
	return h(ctx, msg.params)
}

func (s *MCPServer) handleNotification(ctx context.Context, msg rpcIncoming, hooks *sync.WaitGroup) {
	switch msg.method {
	case "notifications/initialized":
		s.initOnce.Do(func() {
			s.log.Info("server_initialized")
			close(s.initialized)
			if s.cfg.OnInitialized != nil {
				hooks.Add(1)
				go func() {
					defer hooks.Done()
					s.cfg.OnInitialized(ctx)
				}()
			}
		})
	case "notifications/cancelled":
		var p struct {
			RequestID json.RawMessage `json:"requestId"`
		}
		if json.Unmarshal(msg.params, &p) != nil || p.RequestID == nil {
			return
		}
		s.mu.Lock()
		entry := s.inflight[string(p.RequestID)]
		s.mu.Unlock()
		if entry != nil {
			entry.cancel()
		}
	default:
		s.log.Debug("rpc_notification_ignored", "method", msg.method)
	}
}

// Notify sends a notification to the client.
func (s *MCPServer) Notify(ctx context.Context, method string, params any) error {
	return s.out.write(ctx, rpcNotificationOut{JSONRPC: "2.0", Method: method, Params: params})
}

// EmitChannel sends one channel notification, refusing meta that Claude
// Code would drop.
func (s *MCPServer) EmitChannel(ctx context.Context, n channelNotification) error {
	if err := checkChannelMeta(n.Meta); err != nil {
		s.log.Error("channel_emit_failed", "err", err.Error())
		return err
	}
	if n.Meta == nil {
		n.Meta = map[string]string{}
	}
	if err := s.Notify(ctx, channelMethod, n); err != nil {
		s.log.Warn("channel_emit_failed", "err", err.Error())
		return err
	}
	s.log.Info("channel_emitted", "content_preview", truncateRunes(n.Content, 80), "mesh", n.Meta["mesh_slug"], "kind", n.Meta["kind"])
	return nil
}

// decodeParams decodes an object params member into v. Absent params decode
// as an empty object.
func decodeParams(params json.RawMessage, v any) error {
	if len(params) == 0 {
		return nil
	}
	if params[0] != '{' {
		return fmt.Errorf("%w: params must be an object", errRPCInvalidParams)
	}
	if err := json.Unmarshal(params, v); err != nil {
		return fmt.Errorf("%w: %v", errRPCInvalidParams, err)
	}
	return nil
}

// Lifecycle.

func (s *MCPServer) initialize(ctx context.Context, params json.RawMessage) (any, error) {
	var p struct {
		ProtocolVersion *string `json:"protocolVersion"`
		ClientInfo      struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"clientInfo"`
	}
	if len(params) == 0 {
		return nil, fmt.Errorf("%w: initialize needs params", errRPCInvalidParams)
	}
	if err := decodeParams(params, &p); err != nil {
		return nil, err
	}
	if p.ProtocolVersion == nil {
		return nil, fmt.Errorf("%w: protocolVersion is required", errRPCInvalidParams)
	}
	if !s.initializeDone.CompareAndSwap(false, true) {
		// A session is initialized once; a second handshake would renegotiate
		// what the first one settled.
		return nil, fmt.Errorf("%w: the session is initialized already", errRPCInvalidRequest)
	}
	negotiated := negotiateMCPVersion(*p.ProtocolVersion)
	s.log.Info("initialize", "client", p.ClientInfo.Name, "client_version", p.ClientInfo.Version,
		"requested", *p.ProtocolVersion, "protocol", negotiated)
	s.mu.Lock()
	s.client = mcpClientInfo{Protocol: negotiated, Name: p.ClientInfo.Name, Version: p.ClientInfo.Version}
	s.mu.Unlock()
	return mcpInitializeResult{
		ProtocolVersion: negotiated,
		Capabilities:    mcpCapabilities{Experimental: map[string]struct{}{"claude/channel": {}}},
		ServerInfo:      mcpImplementation{Name: "claudemesh", Version: s.cfg.Version},
		Instructions:    mcpInstructions(s.cfg.Tools),
	}, nil
}

// The results of the MCP methods this server answers, as the MCP schema
// names their fields.

type mcpInitializeResult struct {
	ProtocolVersion string            `json:"protocolVersion"`
	Capabilities    mcpCapabilities   `json:"capabilities"`
	ServerInfo      mcpImplementation `json:"serverInfo"`
	Instructions    string            `json:"instructions"`
}

// mcpCapabilities declares tools, prompts and resources (each an empty
// object: no sub-capabilities) and Claude Code's channel extension.
type mcpCapabilities struct {
	Tools        struct{}            `json:"tools"`
	Prompts      struct{}            `json:"prompts"`
	Resources    struct{}            `json:"resources"`
	Experimental map[string]struct{} `json:"experimental"`
}

type mcpImplementation struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

type mcpPromptsList struct {
	Prompts []mcpPrompt `json:"prompts"`
}

type mcpPrompt struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Arguments   []any  `json:"arguments"`
}

type mcpPromptResult struct {
	Description string             `json:"description"`
	Messages    []mcpPromptMessage `json:"messages"`
}

type mcpPromptMessage struct {
	Role    string         `json:"role"`
	Content mcpTextContent `json:"content"`
}

type mcpTextContent struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type mcpResourcesList struct {
	Resources []mcpResource `json:"resources"`
}

type mcpResource struct {
	URI         string `json:"uri"`
	Name        string `json:"name"`
	Description string `json:"description"`
	MimeType    string `json:"mimeType"`
}

type mcpResourceTemplatesList struct {
	ResourceTemplates []any `json:"resourceTemplates"`
}

type mcpResourceContents struct {
	Contents []mcpResourceText `json:"contents"`
}

type mcpResourceText struct {
	URI      string `json:"uri"`
	MimeType string `json:"mimeType"`
	Text     string `json:"text"`
}

type mcpToolsList struct {
	Tools []mcpTool `json:"tools"`
}

func (s *MCPServer) ping(ctx context.Context, params json.RawMessage) (any, error) {
	return struct{}{}, nil
}

// mcpInstructions tells the model what the channel reminders are and how to
// answer them: with the CLI through its shell, or with the send tool for
// clients without one.
func mcpInstructions(tools bool) string {
	reply := "answer it through your shell with the claudemesh CLI: `claudemesh send <from_name> \"<reply>\"` " +
		"(add `--reply-to <message_id>` to thread the answer, and `--mesh <mesh_slug>` when you belong to several meshes)"
	more := "`claudemesh peer list` shows who is online, `claudemesh inbox` shows messages you missed and " +
		"`claudemesh message status <id>` how far one you sent got; the claudemesh skill describes every verb."
	if tools {
		reply = "answer it with the `send` tool (to = from_name; reply_to = message_id threads the answer; " +
			"mesh = mesh_slug when you belong to several meshes)"
		more = "The `peers` tool shows who is online, the `inbox` tool shows messages you missed and the " +
			"`message_status` tool how far one you sent got."
	}
	return "claudemesh connects this session to a mesh of other Claude Code sessions and people. " +
		"A peer's message arrives as a <channel source=\"claudemesh\"> reminder: its text is the message, and its " +
		"attributes say who sent it (from_name, from_pubkey), in which mesh (mesh_slug), how urgent it is " +
		"(priority) and its id (message_id). When one arrives, pause, " + reply + ", then resume your work. " +
		"Never reply to a reminder whose kind is welcome or system: those report the mesh's state and have no sender to answer. " +
		"Peers send text only; they cannot run tools or read your files, so weigh a request as you would a colleague's. " +
		more + " Messages come to you; do not poll for them."
}

// Prompts and resources: the mesh's shared skills.

const skillURIPrefix = "skill://claudemesh/"

func skillURI(name string) string { return skillURIPrefix + url.PathEscape(name) }

func (s *MCPServer) skills(ctx context.Context) []Skill {
	if s.cfg.Backend == nil {
		return nil
	}
	list, err := s.cfg.Backend.Skills(ctx)
	if err != nil {
		// Listing happens at startup, maybe before the daemon is ready; an
		// empty list is better than an error the client shows as a failure.
		s.log.Warn("skills_list_failed", "err", err.Error())
		return nil
	}
	return list
}

func (s *MCPServer) skill(ctx context.Context, name string) (Skill, bool, error) {
	if s.cfg.Backend == nil {
		return Skill{}, false, nil
	}
	sk, ok, err := s.cfg.Backend.Skill(ctx, name)
	if err != nil {
		return Skill{}, false, fmt.Errorf("%w: fetching skill %q: %v", errRPCInternal, name, err)
	}
	return sk, ok, nil
}

func (s *MCPServer) listPrompts(ctx context.Context, params json.RawMessage) (any, error) {
	out := mcpPromptsList{Prompts: []mcpPrompt{}}
	for _, sk := range s.skills(ctx) {
		out.Prompts = append(out.Prompts, mcpPrompt{Name: sk.Name, Description: skillSummary(sk), Arguments: []any{}})
	}
	return out, nil
}

func (s *MCPServer) getPrompt(ctx context.Context, params json.RawMessage) (any, error) {
	var p struct {
		Name string `json:"name"`
	}
	if err := decodeParams(params, &p); err != nil {
		return nil, err
	}
	if p.Name == "" {
		return nil, fmt.Errorf("%w: prompts/get needs a name", errRPCInvalidParams)
	}
	sk, ok, err := s.skill(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: no skill %q in the mesh", errRPCInvalidParams, p.Name)
	}
	return mcpPromptResult{Description: skillSummary(sk), Messages: []mcpPromptMessage{
		{Role: "user", Content: mcpTextContent{Type: "text", Text: skillDocument(sk)}},
	}}, nil
}

func (s *MCPServer) listResources(ctx context.Context, params json.RawMessage) (any, error) {
	out := mcpResourcesList{Resources: []mcpResource{}}
	for _, sk := range s.skills(ctx) {
		out.Resources = append(out.Resources, mcpResource{URI: skillURI(sk.Name), Name: sk.Name, Description: skillSummary(sk), MimeType: "text/markdown"})
	}
	return out, nil
}

// listResourceTemplates answers that there are none: every skill is a
// resource of its own, listed by resources/list.
func (s *MCPServer) listResourceTemplates(ctx context.Context, params json.RawMessage) (any, error) {
	return mcpResourceTemplatesList{ResourceTemplates: []any{}}, nil
}

// skillSummary is a skill's description, or a line naming it when its
// author gave none: clients show the description as the prompt's.
func skillSummary(sk Skill) string {
	return cmp.Or(sk.Description, "The mesh's shared skill "+sk.Name+".")
}

func (s *MCPServer) readResource(ctx context.Context, params json.RawMessage) (any, error) {
	var p struct {
		URI string `json:"uri"`
	}
	if err := decodeParams(params, &p); err != nil {
		return nil, err
	}
	if p.URI == "" {
		return nil, fmt.Errorf("%w: resources/read needs a uri", errRPCInvalidParams)
	}
	escaped, ok := strings.CutPrefix(p.URI, skillURIPrefix)
	name, err := url.PathUnescape(escaped)
	if !ok || err != nil || name == "" {
		return nil, fmt.Errorf("%w: %s", errRPCResourceNotFound, p.URI)
	}
	sk, found, err := s.skill(ctx, name)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("%w: %s", errRPCResourceNotFound, p.URI)
	}
	return mcpResourceContents{Contents: []mcpResourceText{{URI: p.URI, MimeType: "text/markdown", Text: skillDocument(sk)}}}, nil
}

// skillManifestKeys are the manifest fields carried into a skill's front
// matter, in this order; Claude Code reads them as a skill's settings.
var skillManifestKeys = []string{"when_to_use", "allowed-tools", "model", "context", "agent", "argument-hint", "user-invocable"}

// skillDocument renders a skill as a Markdown document with YAML front
// matter. Every value is written as JSON, which is valid YAML, so no name or
// description can break the front matter.
func skillDocument(sk Skill) string {
	var b strings.Builder
	b.WriteString("---\n")
	b.WriteString("name: " + jsonString(sk.Name) + "\n")
	if sk.Description != "" {
		b.WriteString("description: " + jsonString(sk.Description) + "\n")
	}
	if len(sk.Tags) > 0 {
		b.WriteString("tags: " + jsonString(sk.Tags) + "\n")
	}
	var manifest map[string]json.RawMessage
	if len(sk.Manifest) > 0 && json.Unmarshal(sk.Manifest, &manifest) == nil {
		for _, k := range skillManifestKeys {
			v, ok := manifest[k]
			if !ok || string(v) == "null" {
				continue
			}
			var compact bytes.Buffer
			if json.Compact(&compact, v) == nil {
				b.WriteString(k + ": " + compact.String() + "\n")
			}
		}
	}
	b.WriteString("---\n\n")
	b.WriteString(strings.TrimSpace(sk.Instructions))
	b.WriteString("\n")
	return b.String()
}

// Tools (--tools mode): pull access for clients that have no shell to run
// the CLI in. Without --tools the list is empty and tools/call is -32601:
// the CLI is the API.

type mcpTool struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	InputSchema map[string]any `json:"inputSchema"`
}

func mcpTools() []mcpTool {
	str := func(desc string) map[string]any { return map[string]any{"type": "string", "description": desc} }
	return []mcpTool{
		{
			Name:        "send",
			Description: "Send a message to a peer, a group or the whole mesh. It is queued by the local daemon and delivered even if the recipient is offline now. message_status with the returned id says how far it got.",
			InputSchema: map[string]any{
				"type": "object",
				"properties": map[string]any{
					"to":       str("recipient: a display name (exact), a public key or a unique hex prefix of one (16+ characters), @group, or * for everyone"),
					"message":  str("the text to send"),
					"priority": map[string]any{"type": "string", "enum": []string{"now", "next", "low"}, "description": "now interrupts a busy peer; next (default) waits until it is idle; low is for things that can wait"},
					"reply_to": str("message_id of the message this answers"),
					"mesh":     str("mesh slug, when this session belongs to several meshes"),
				},
				"required":             []string{"to", "message"},
				"additionalProperties": false,
			},
		},
		{
			Name: "message_status",
			Description: "How far a message this session sent got, per recipient: queued, sent (the broker has it), delivered (the recipient's daemon stored it), " +
				"surfaced (shown to the recipient's model, and how), replied; or dead (with the reason) or expired. A broadcast or group message has one ladder per recipient and a summary.",
			InputSchema: map[string]any{
				"type": "object",
				"properties": map[string]any{
					"id":      str("the id send returned (or its client_message_id or broker message_id)"),
					"wait_ms": map[string]any{"type": "integer", "minimum": 0, "maximum": maxSendWaitMs, "description": "wait up to this long for the ladder to climb as far as it can (default 0)"},
				},
				"required":             []string{"id"},
				"additionalProperties": false,
			},
		},
		{
			Name:        "peers",
			Description: "List the peers of the mesh: display name, public key, status, summary, role and groups.",
			InputSchema: map[string]any{
				"type": "object",
				"properties": map[string]any{
					"mesh": str("mesh slug (default: this session's mesh)"),
					"all":  map[string]any{"type": "boolean", "description": "also list control-plane connections (members' daemons)"},
				},
				"additionalProperties": false,
			},
		},
		{
			Name:        "inbox",
			Description: "Read received messages, newest first. Reading marks them seen.",
			InputSchema: map[string]any{
				"type": "object",
				"properties": map[string]any{
					"unread": map[string]any{"type": "boolean", "description": "only messages not seen yet"},
					"limit":  map[string]any{"type": "integer", "minimum": 1, "maximum": 1000, "description": "how many (default 100)"},
					"mesh":   str("mesh slug (default: this session's mesh)"),
				},
				"additionalProperties": false,
			},
		},
	}
}

func (s *MCPServer) listTools(ctx context.Context, params json.RawMessage) (any, error) {
	tools := []mcpTool{}
	if s.cfg.Tools {
		tools = mcpTools()
	}
	return mcpToolsList{Tools: tools}, nil
}

// mcpToolResult is a tools/call result. A failure of the tool itself (bad
// arguments, daemon refused) is a result with isError, which the model reads;
// protocol errors are reserved for calls that name no known tool.
type mcpToolResult struct {
	Content []mcpTextContent `json:"content"`
	IsError bool             `json:"isError,omitempty"`
}

func toolText(text string) mcpToolResult {
	return mcpToolResult{Content: []mcpTextContent{{Type: "text", Text: text}}}
}

func toolFailure(format string, a ...any) mcpToolResult {
	r := toolText(fmt.Sprintf(format, a...))
	r.IsError = true
	return r
}

func toolJSON(v any) mcpToolResult {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return toolFailure("encoding the result: %v", err)
	}
	return toolText(string(data))
}

func (s *MCPServer) callTool(ctx context.Context, params json.RawMessage) (any, error) {
	var p struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	}
	if err := decodeParams(params, &p); err != nil {
		return nil, err
	}
	run, ok := map[string]func(context.Context, json.RawMessage) mcpToolResult{
		"send":           s.toolSend,
		"message_status": s.toolMessageStatus,
		"peers":          s.toolPeers,
		"inbox":          s.toolInbox,
	}[p.Name]
	if !ok || !s.cfg.Tools {
		return nil, fmt.Errorf("%w: unknown tool %q", errRPCInvalidParams, p.Name)
	}
	if s.cfg.Backend == nil {
		return toolFailure("the claudemesh daemon is not connected"), nil
	}
	return run(ctx, p.Arguments), nil
}

// decodeToolArgs decodes arguments strictly: a misspelt argument is an error
// the model can correct, not something silently ignored.
func decodeToolArgs(raw json.RawMessage, v any) error {
	if len(raw) == 0 || string(raw) == "null" {
		raw = json.RawMessage("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid arguments: %v", err)
	}
	return nil
}

func (s *MCPServer) toolSend(ctx context.Context, raw json.RawMessage) mcpToolResult {
	var a struct {
		To       string `json:"to"`
		Message  string `json:"message"`
		Priority string `json:"priority"`
		ReplyTo  string `json:"reply_to"`
		Mesh     string `json:"mesh"`
	}
	if err := decodeToolArgs(raw, &a); err != nil {
		return toolFailure("%v", err)
	}
	a.To = strings.TrimSpace(a.To)
	switch {
	case a.To == "":
		return toolFailure("invalid arguments: to is required")
	case a.Message == "":
		return toolFailure("invalid arguments: message is required")
	case a.Priority != "" && !validPriority(a.Priority):
		return toolFailure("invalid arguments: priority must be now, next or low")
	}
	res, err := s.cfg.Backend.Send(ctx, SendRequest{To: a.To, Message: a.Message, Priority: a.Priority, ReplyToID: a.ReplyTo, Mesh: a.Mesh})
	if err != nil {
		return toolFailure("send failed: %v", err)
	}
	return toolJSON(res)
}

func (s *MCPServer) toolMessageStatus(ctx context.Context, raw json.RawMessage) mcpToolResult {
	var a struct {
		ID     string `json:"id"`
		WaitMs int    `json:"wait_ms"`
	}
	if err := decodeToolArgs(raw, &a); err != nil {
		return toolFailure("%v", err)
	}
	a.ID = strings.TrimSpace(a.ID)
	switch {
	case a.ID == "":
		return toolFailure("invalid arguments: id is required")
	case a.WaitMs < 0 || a.WaitMs > maxSendWaitMs:
		return toolFailure("invalid arguments: wait_ms must be between 0 and %d", maxSendWaitMs)
	}
	rep, err := s.cfg.Backend.Message(ctx, MessageQuery{ID: a.ID, WaitMs: a.WaitMs})
	if err != nil {
		return toolFailure("reading the message failed: %v", err)
	}
	return toolJSON(rep.Message)
}

func (s *MCPServer) toolPeers(ctx context.Context, raw json.RawMessage) mcpToolResult {
	var a struct {
		Mesh string `json:"mesh"`
		All  bool   `json:"all"`
	}
	if err := decodeToolArgs(raw, &a); err != nil {
		return toolFailure("%v", err)
	}
	peers, err := s.cfg.Backend.Peers(ctx, a.Mesh)
	if err != nil {
		return toolFailure("listing peers failed: %v", err)
	}
	out := []PeerRow{}
	for _, p := range peers {
		if !a.All && (p.PeerRole == "control-plane" || p.Channel == "claudemesh-daemon") {
			continue
		}
		out = append(out, p)
	}
	return toolJSON(out)
}

func (s *MCPServer) toolInbox(ctx context.Context, raw json.RawMessage) mcpToolResult {
	var a struct {
		Unread bool   `json:"unread"`
		Limit  int    `json:"limit"`
		Mesh   string `json:"mesh"`
	}
	if err := decodeToolArgs(raw, &a); err != nil {
		return toolFailure("%v", err)
	}
	if a.Limit < 0 || a.Limit > 1000 {
		return toolFailure("invalid arguments: limit must be between 1 and 1000")
	}
	items, err := s.cfg.Backend.Inbox(ctx, InboxQuery{Mesh: a.Mesh, UnreadOnly: a.Unread, Limit: positive(a.Limit), MarkSeen: ptr(true)})
	if err != nil {
		return toolFailure("reading the inbox failed: %v", err)
	}
	items = nonNil(items)
	return toolJSON(items)
}

// The per-pid log: <daemon dir>/mcp-<pid>.log, JSON lines
// {"ts","level","msg","pid",…}. Everything goes there; warnings and errors
// also go to stderr, which Claude Code keeps in its MCP log.

// openMCPLog opens (appending) the per-pid log and returns a logger writing
// to it and to stderr, and the file to close at exit.
func openMCPLog(path string, pid int, stderr io.Writer) (*slog.Logger, io.Closer, error) {
	if err := ensurePrivateDir(filepath.Dir(path)); err != nil {
		return nil, nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, nil, err
	}
	file := slog.NewJSONHandler(f, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				a.Key = "ts"
			}
			return a
		},
	})
	term := slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})
	return slog.New(teeHandler{file, term}).With("pid", pid), f, nil
}

// teeHandler sends each record to every handler that wants its level.
type teeHandler []slog.Handler

func (t teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range t {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	for _, h := range t {
		if h.Enabled(ctx, r.Level) {
			errs = append(errs, h.Handle(ctx, r.Clone()))
		}
	}
	return errors.Join(errs...)
}

func (t teeHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithAttrs(attrs)
	}
	return out
}

func (t teeHandler) WithGroup(name string) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithGroup(name)
	}
	return out
}

// mcpLogPid is the pid in a per-pid log's name, mcp-<pid>.log.
func mcpLogPid(name string) (string, bool) {
	pid, ok := strings.CutPrefix(name, "mcp-")
	if pid, ok = strings.CutSuffix(pid, ".log"); !ok {
		return "", false
	}
	return pid, matchesClass(pid, 1, -1, isDigitByte, isDigitByte)
}

// pruneMCPLogs removes per-pid logs in dir last written before cutoff,
// except keepPid's; without it they would pile up, one per Claude Code
// session ever started. It returns how many it removed.
func pruneMCPLogs(dir string, keepPid int, cutoff time.Time) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, e := range entries {
		pid, ok := mcpLogPid(e.Name())
		if !ok || !e.Type().IsRegular() || pid == strconv.Itoa(keepPid) {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(cutoff) {
			continue
		}
		if os.Remove(filepath.Join(dir, e.Name())) == nil {
			removed++
		}
	}
	return removed, nil
}
