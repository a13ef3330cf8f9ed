// What ties `claudemesh mcp` to the daemon: the event pump that turns the
// daemon's /v1/events stream into channel notifications, and the welcome
// sent once Claude Code has initialized the server.
//
// Policy:
//   - A message goes out only after the daemon let this server claim its
//     row for the channel path (surfaced.go): a row another path (a hook,
//     `claudemesh inbox`) showed first is not emitted again, and two
//     servers never emit the same row. The claim stays unconfirmed: an emit
//     is no proof the model saw it. An emit that fails gives the claim back.
//   - Nothing is emitted before notifications/initialized: Claude Code
//     registers its channel handler only then, and drops anything earlier
//     without a trace (claudemesh 1.34.4). Events that arrive sooner wait.
//   - The stream is reopened forever, 1 s after it ends and 2 s after an
//     error, until the server stops.
//   - The welcome always goes out once, even when some daemon queries fail:
//     it is how the user learns the pipe is live (claudemesh 1.34.3). Its
//     previews show no message in full, so it claims nothing.
//   - A message that reached the inbox while no stream was open (the
//     daemon restarted, or was not up yet) is not lost for the session:
//     after the welcome, and on every (re)connect after it, the rows no
//     path has shown yet are claimed and emitted, oldest first (claudemesh
//     1.34.2 left that gap to the next launch).
//   - The session's message mode decides what else goes out: push (the
//     default) everything, inbox only system events (messages stay unread),
//     off nothing but the welcome. A server Claude Code was not asked to
//     load as a channel emits no messages: they would be dropped unseen,
//     and the session's hooks show them.
package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// mcpDaemon is the daemon as the MCP server uses it. The daemon's IPC client
// implements it, sending the session token (CLAUDEMESH_IPC_TOKEN, else the
// file named by CLAUDEMESH_IPC_TOKEN_FILE) with every request so that the
// daemon scopes events, peers and inbox to this session.
type mcpDaemon interface {
	mcpBackend
	// Events opens GET /v1/events; the body is the SSE stream. Closing it
	// ends the subscription.
	Events(ctx context.Context) (io.ReadCloser, error)
	// Me is the session registered under the token (GET /v1/sessions/me);
	// ok is false when there is no token or no such session.
	Me(ctx context.Context) (self mcpSelf, ok bool, err error)
	// Surface claims inbox rows for the channel path before they are
	// emitted (POST /v1/inbox/surface): ids, or with nil the oldest rows no
	// path has shown, up to limit. Only the rows returned may be emitted.
	Surface(ctx context.Context, ids []string, limit int) ([]inboxItem, error)
	// Unsurface gives back claims whose emit failed (POST /v1/inbox/unsurface).
	Unsurface(ctx context.Context, ids []string) error
	// ReportMCP tells the daemon what this server negotiated and whether it
	// is a live channel (POST /v1/sessions/me/mcp).
	ReportMCP(ctx context.Context, r MCPReport) error
	// ClaimWelcome takes the session's welcome for the channel, or gives
	// back one whose emit failed (POST /v1/sessions/me/welcome).
	ClaimWelcome(ctx context.Context, release bool) (WelcomeClaimReply, error)
}

// Timing of the session.
const (
	mcpWelcomeDelay        = 3 * time.Second // after notifications/initialized
	mcpReconnectAfterEnd   = 1 * time.Second
	mcpReconnectAfterError = 2 * time.Second
	// mcpWelcomeUnreadLimit bounds the unread rows the welcome counts.
	mcpWelcomeUnreadLimit = 50
	// mcpCatchUpLimit bounds the unread rows a catch-up emits; the rest
	// stay in `claudemesh inbox`.
	mcpCatchUpLimit = 100
)

// welcomeDelayFromEnv reads CLAUDEMESH_WELCOME_DELAY_MS (tests shorten the
// grace with it); anything but a non-negative integer keeps the default.
func welcomeDelayFromEnv(getenv func(string) string) time.Duration {
	if v := getenv("CLAUDEMESH_WELCOME_DELAY_MS"); v != "" {
		if ms, err := strconv.Atoi(v); err == nil && ms >= 0 {
			return time.Duration(ms) * time.Millisecond
		}
	}
	return mcpWelcomeDelay
}

// MCPSession is an MCPServer wired to the daemon.
type MCPSession struct {
	Server *MCPServer

	daemon              mcpDaemon
	log                 *slog.Logger
	welcomeDelay        time.Duration
	reconnectAfterEnd   time.Duration
	reconnectAfterError time.Duration
	location            *time.Location // for the welcome's preview times
	messageMode         string
	sessionID           string
	requireSession      bool
	channelOff          bool

	welcomed  atomic.Bool   // the welcome has gone out (or failed): gaps are the pump's to fill
	connected chan struct{} // a stream (re)connected: the daemon may have restarted and forgotten the report
}

// mcpSessionOptions are the session's settings that come from its
// environment.
type mcpSessionOptions struct {
	WelcomeDelay time.Duration  // welcomeDelayFromEnv: the default or CLAUDEMESH_WELCOME_DELAY_MS
	Location     *time.Location // for the welcome's preview times; nil means UTC
	// SessionID is the launched session's id (CLAUDEMESH_SESSION_ID), so
	// that the server can tell the session its own link was kicked.
	SessionID string
	// MessageMode is the session's --message-mode: "push" (or "") emits
	// messages and system events, "inbox" holds messages in the inbox and
	// emits only system events, "off" emits neither. The welcome goes out
	// in every mode: it is how the user learns the pipe is live, and it
	// counts what waits in the inbox.
	MessageMode string
	// RequireSession: the server runs in a Claude Code session the daemon
	// learns of from that session's hooks (a plain `claude`): it subscribes
	// only once the daemon knows the session, so that it never takes
	// another session's messages.
	RequireSession bool
	// ChannelOff: Claude Code was not started to load this server's channel
	// (or cannot show it: print mode), so messages are not emitted; the
	// session's hooks show them.
	ChannelOff bool
}

// NewMCPSession builds the server for cfg (its Backend and OnInitialized are
// set here) writing to out, on top of daemon.
func NewMCPSession(daemon mcpDaemon, cfg mcpConfig, out io.Writer, opts mcpSessionOptions) *MCPSession {
	s := &MCPSession{
		daemon:              daemon,
		log:                 cfg.Log,
		welcomeDelay:        opts.WelcomeDelay,
		reconnectAfterEnd:   mcpReconnectAfterEnd,
		reconnectAfterError: mcpReconnectAfterError,
		location:            opts.Location,
		messageMode:         opts.MessageMode,
		sessionID:           opts.SessionID,
		requireSession:      opts.RequireSession,
		channelOff:          opts.ChannelOff,
		connected:           make(chan struct{}, 1),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	cfg.Backend = daemon
	cfg.OnInitialized = s.sendWelcome
	s.Server = NewMCPServer(cfg, out)
	return s
}

// Run serves the client on in while pumping events, until in ends or ctx
// ends. It returns what Serve returns.
func (s *MCPSession) Run(ctx context.Context, in io.Reader) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.pumpEvents(ctx)
	}()
	go func() {
		defer wg.Done()
		s.reportLoop(ctx)
	}()
	err := s.Server.Serve(ctx, in)
	cancel()
	wg.Wait()
	return err
}

// pumpEvents subscribes to the daemon's events until ctx ends.
func (s *MCPSession) pumpEvents(ctx context.Context) {
	waiting := false
	for ctx.Err() == nil {
		delay := s.reconnectAfterError
		if s.requireSession {
			if _, ok, _ := s.daemon.Me(ctx); !ok {
				if !waiting {
					s.log.Info("waiting_for_session", "why", "the daemon learns of this session from its first hook")
					waiting = true
				}
				if sleepCtx(ctx, delay) != nil {
					return
				}
				continue
			}
			waiting = false
		}
		body, err := s.daemon.Events(ctx)
		if err != nil {
			s.log.Warn("sse_connect_failed", "err", err.Error())
		} else {
			s.log.Info("sse_connected")
			select {
			case s.connected <- struct{}{}:
			default:
			}
			s.catchUp(ctx)
			// Closing the body is what interrupts a read blocked on it.
			stop := context.AfterFunc(ctx, func() { body.Close() })
			err = readSSEStream(ctx, body, func(ev sseClientEvent) error { return s.deliver(ctx, ev) })
			stop()
			body.Close()
			switch {
			case ctx.Err() != nil:
				return
			case errors.Is(err, errSSEStreamEnded):
				s.log.Info("sse_stream_ended")
				delay = s.reconnectAfterEnd
			default:
				s.log.Warn("sse_stream_failed", "err", err.Error())
			}
		}
		if sleepCtx(ctx, delay) != nil {
			return
		}
	}
}

// deliver emits one event, once the client is initialized, and marks its
// inbox row seen after a successful emit. Only ctx ending is an error: a
// bad event or a failed emit is logged and the stream goes on.
func (s *MCPSession) deliver(ctx context.Context, ev sseClientEvent) error {
	s.log.Debug("sse_event_received", "kind", ev.Event, "id", ev.ID)
	if ev.Event == eventBrokerStatus {
		n, ok := linkEndedChannel(ev, s.sessionID)
		if !ok || !s.emits(false) {
			return nil
		}
		select {
		case <-s.Server.Initialized():
		case <-ctx.Done():
			return ctx.Err()
		}
		return s.emitRow(ctx, n, "")
	}
	n, rowID, ok, err := channelFromEvent(ev)
	if err != nil {
		s.log.Warn("sse_event_invalid", "kind", ev.Event, "err", err.Error())
		return nil
	}
	if !ok || !s.emits(rowID != "") {
		return nil
	}
	select {
	case <-s.Server.Initialized():
	case <-ctx.Done():
		return ctx.Err()
	}
	if rowID == "" {
		return s.emitRow(ctx, n, "")
	}
	claimed, err := s.daemon.Surface(ctx, []string{rowID}, 1)
	if err != nil {
		s.log.Warn("surface_failed", "id", rowID, "err", err.Error())
		return nil
	}
	if len(claimed) == 0 {
		s.log.Debug("already_surfaced", "id", rowID)
		return nil
	}
	return s.emitRow(ctx, n, rowID)
}

// emitRow emits n; for a message whose emit failed, it gives the row's
// claim back, so that another path shows it. Only ctx ending is an error.
func (s *MCPSession) emitRow(ctx context.Context, n channelNotification, rowID string) error {
	if err := s.Server.EmitChannel(ctx, n); err != nil {
		if rowID != "" {
			s.unsurface(context.WithoutCancel(ctx), []string{rowID})
		}
		return ctx.Err() // logged by EmitChannel
	}
	return nil
}

// catchUp claims and emits the session's messages no path has shown yet,
// oldest first, once the welcome has gone out: the daemon announces a
// message only to the streams open when it arrives, so whatever came in
// while this server had none would otherwise wait for the next launch.
func (s *MCPSession) catchUp(ctx context.Context) {
	if !s.welcomed.Load() || !s.emits(true) {
		return
	}
	rows, err := s.daemon.Surface(ctx, nil, mcpCatchUpLimit)
	if err != nil {
		s.log.Warn("catch_up_failed", "err", err.Error())
		return
	}
	for i, r := range rows {
		if err := s.Server.EmitChannel(ctx, channelFromMessage(r.messageEvent())); err != nil {
			var rest []string
			for _, left := range rows[i:] {
				rest = append(rest, left.ID)
			}
			s.unsurface(context.WithoutCancel(ctx), rest)
			return
		}
	}
	if len(rows) > 0 {
		s.log.Info("caught_up", "messages", len(rows))
	}
}

// mcpReportRetry bounds the wait between attempts to report to a daemon
// that does not take the report yet (no session, daemon down).
const mcpReportRetry = 30 * time.Second

// reportLoop tells the daemon, once Claude Code has initialized the
// server, what was negotiated and whether this server is a live channel;
// again after every reconnect of the event stream, since a restarted
// daemon knows nothing of it.
func (s *MCPSession) reportLoop(ctx context.Context) {
	select {
	case <-s.Server.Initialized():
	case <-ctx.Done():
		return
	}
	wait := s.reconnectAfterError
	for ctx.Err() == nil {
		c := s.Server.Client()
		err := s.daemon.ReportMCP(ctx, MCPReport{ProtocolVersion: c.Protocol, ClientName: c.Name, ClientVersion: c.Version, Channel: !s.channelOff})
		if err == nil {
			s.log.Info("mcp_reported", "protocol", c.Protocol, "channel", !s.channelOff)
			wait = s.reconnectAfterError
			select {
			case <-s.connected:
				continue
			case <-ctx.Done():
				return
			}
		}
		s.log.Debug("mcp_report_failed", "err", err.Error())
		if sleepCtx(ctx, wait) != nil {
			return
		}
		wait = min(max(2*wait, time.Second), mcpReportRetry)
	}
}

// emits reports whether the message mode lets an event through: a message
// (isMessage) only in push mode, a system event in push and inbox mode. A
// message held back stays unread in the inbox.
func (s *MCPSession) emits(isMessage bool) bool {
	if isMessage && s.channelOff {
		return false
	}
	switch s.messageMode {
	case messageModeOff:
		return false
	case messageModeInbox:
		return !isMessage
	}
	return true
}

// Message modes (launch --message-mode, config.json messageMode).
const (
	messageModePush  = "push"
	messageModeInbox = "inbox"
	messageModeOff   = "off"
)

func (s *MCPSession) unsurface(ctx context.Context, ids []string) {
	if err := s.daemon.Unsurface(ctx, ids); err != nil {
		s.log.Warn("unsurface_failed", "ids", len(ids), "err", err.Error())
	}
}

// sendWelcome is the OnInitialized hook: after the grace, it composes the
// welcome from what the daemon can tell and emits it, then catches up on
// the messages no path has shown yet.
func (s *MCPSession) sendWelcome(ctx context.Context) {
	if sleepCtx(ctx, s.welcomeDelay) != nil {
		return
	}
	defer s.catchUp(ctx)
	defer s.welcomed.Store(true)
	if s.channelOff {
		s.log.Info("welcome_skipped", "why", "no channel: Claude Code would drop it")
		return
	}
	in := welcomeInput{Location: s.location}
	self, ok, err := s.daemon.Me(ctx)
	for s.requireSession && err == nil && !ok {
		// The session's first hook registers it, and its session-start
		// hook may welcome it: wait for the session before claiming.
		if sleepCtx(ctx, s.reconnectAfterError) != nil {
			return
		}
		self, ok, err = s.daemon.Me(ctx)
	}
	switch {
	case err != nil:
		s.log.Warn("welcome_self_lookup_failed", "err", err.Error())
	case ok:
		in.Self = &self
	}
	mesh := ""
	if in.Self != nil {
		mesh = in.Self.Mesh
	}
	// One welcome per session: the first of this server and the
	// session-start hook to claim it shows it.
	claim, err := s.daemon.ClaimWelcome(ctx, false)
	switch {
	case err == nil && !claim.Claimed:
		s.log.Info("welcome_skipped", "why", "the session was welcomed already", "via", claim.Via)
		return
	case err != nil && in.Self != nil && in.Self.HookWelcomed:
		s.log.Info("welcome_skipped", "why", "the session-start hook welcomed the session")
		return
	case err != nil:
		// A daemon that cannot say: the welcome still goes out once.
		s.log.Warn("welcome_claim_failed", "err", err.Error())
	}
	peers, err := s.daemon.Peers(ctx, mesh)
	if err != nil {
		s.log.Warn("welcome_peers_lookup_failed", "err", err.Error())
		in.PeersFailed = true
	} else {
		in.Peers = peers
		s.log.Info("welcome_peers_resolved", "total", len(peers), "real", len(welcomePeers(peers, in.Self)))
	}
	unread, err := s.daemon.Inbox(ctx, InboxQuery{Mesh: mesh, UnreadOnly: true, Limit: ptr(mcpWelcomeUnreadLimit), MarkSeen: ptr(false)})
	if err != nil {
		s.log.Warn("welcome_inbox_lookup_failed", "err", err.Error())
		in.UnreadFailed = true
	} else {
		in.Unread = unread
	}
	n := welcomeChannel(in)
	if err := s.Server.EmitChannel(ctx, n); err != nil {
		s.log.Warn("welcome_emit_failed", "err", err.Error())
		if claim.Claimed {
			if _, err := s.daemon.ClaimWelcome(context.WithoutCancel(ctx), true); err != nil {
				s.log.Warn("welcome_release_failed", "err", err.Error())
			}
		}
		return
	}
	s.log.Info("welcome_emitted", "mesh", mesh, "peer_count", n.Meta["peer_count"], "unread_count", n.Meta["unread_count"])
}

// sleepCtx waits for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
