// A session's presence as its hooks and its MCP server make it: its status
// (working while a turn runs, idle once it stops) and its surfacing path
// (how messages reach its model), published on the session's own link.
//
// Policy:
//   - A submitted prompt, a tool use and a stop that keeps the session
//     going make it working; a stop that lets it end, and the start of a
//     session, idle. A status the hooks set holds for hookStatusDecay
//     without another hook, then the session's own choice (profile
//     --status) or idle is back. A manual dnd is never overridden by a
//     hook; a manual idle or working holds until the next hook.
//   - The surfacing path is channel when the session's MCP server is
//     subscribed to its events, was started by a Claude Code asked to load
//     it as a channel, and negotiated a protocol revision that carries
//     channel notifications; else hooks when a hook of the session has run;
//     else pull: it sees messages only when it runs `claudemesh inbox`.
//     The path goes out as the profile field surfacing, which other
//     daemons read in the peer list (a broker that does not know the field
//     drops it).
//   - What goes out is computed from the state as it is when it goes, and
//     only what changed since the last send, so syncs that race converge;
//     a link that (re)opens gets both again.
package main

import (
	"cmp"
	"context"
	"net/http"
	"time"
)

// hookStatusDecay is how long a status the hooks set holds without a hook.
const hookStatusDecay = 2 * time.Minute

// presenceSweep is how often statuses are checked for decay.
const presenceSweep = 15 * time.Second

// channelRevisions are the MCP protocol revisions on which Claude Code
// registers a server's channel notifications; on its newer runtime it
// registers none for a server that negotiated 2026-07-28.
var channelRevisions = map[string]bool{"2024-11-05": true, "2025-03-26": true, "2025-06-18": true, "2025-11-25": true}

// effectiveStatus is the status st makes the session's now, when a hook's
// status holds for decay.
func effectiveStatus(st sessionState, now time.Time, decay time.Duration) string {
	if st.manualStatus == statusDND {
		return statusDND
	}
	if st.hookStatus != "" && now.Sub(st.hookStatusAt) < decay {
		return st.hookStatus
	}
	return cmp.Or(st.manualStatus, statusIdle)
}

// surfacingOf is the session's surfacing path by st.
func surfacingOf(st sessionState) string {
	if m := st.mcp; m != nil && m.Channel && channelRevisions[m.ProtocolVersion] && st.streams > 0 {
		return surfacedViaChannel
	}
	if !st.hookSeenAt.IsZero() {
		return surfacedViaHooks
	}
	return surfacedViaPull
}

// setHookStatus records the status a hook implies and publishes what
// changed.
func (d *Daemon) setHookStatus(s *Session, status string) {
	d.states.update(s, func(st *sessionState) { st.hookStatus, st.hookStatusAt = status, time.Now() })
	go d.syncPresence(s)
}

// syncPresence sends the session's status and surfacing path where they
// differ from what its link last carried.
func (d *Daemon) syncPresence(s *Session) {
	d.mu.Lock()
	sl, ok := d.sessionLinks[s.Token]
	d.mu.Unlock()
	if !ok || sl.Link.State() != LinkOpen {
		return
	}
	d.presenceMu.Lock()
	defer d.presenceMu.Unlock()
	st := d.states.get(s)
	status, path := effectiveStatus(st, time.Now(), d.opts.HookStatusDecay), surfacingOf(st)
	ctx, cancel := context.WithTimeout(d.ctx, d.opts.RPCTimeout)
	defer cancel()
	if status != st.sentStatus {
		if err := sl.Link.Write(ctx, SetStatusFrame{Type: frameSetStatus, Status: status}); err != nil {
			d.log.Info("status_send_failed", "session_id", s.SessionID, "err", err.Error())
			return
		}
		d.states.adjust(s, func(st *sessionState) { st.sentStatus = status })
		d.log.Debug("session_status", "session_id", s.SessionID, "status", status)
	}
	if path != st.sentPath {
		if _, err := sl.Link.Request(ctx, SetProfileFrame{Type: frameSetProfile, Surfacing: &path}, frameAck); err != nil {
			d.log.Info("surfacing_send_failed", "session_id", s.SessionID, "err", err.Error())
			return
		}
		d.states.adjust(s, func(st *sessionState) { st.sentPath = path })
		d.log.Info("session_surfacing", "session_id", s.SessionID, "surfacing", path)
	}
}

// linkOpened makes a session's (re)opened link carry its presence again.
func (d *Daemon) linkOpened(s *Session) {
	d.states.update(s, func(st *sessionState) { st.sentStatus, st.sentPath = "", "" })
	go d.syncPresence(s)
}

// runPresenceSweep lets hook statuses decay until ctx ends.
func (d *Daemon) runPresenceSweep(ctx context.Context) {
	t := time.NewTicker(d.opts.PresenceSweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, s := range d.sessions.List() {
				if st := d.states.get(s); st.hookStatus != "" && effectiveStatus(st, time.Now(), d.opts.HookStatusDecay) != st.sentStatus {
					d.syncPresence(s)
				}
			}
		}
	}
}

// streamOpened counts an event stream of the session's; the returned func
// counts it closed.
func (d *Daemon) streamOpened(s *Session) func() {
	d.states.update(s, func(st *sessionState) { st.streams++ })
	go d.syncPresence(s)
	return func() {
		d.states.adjust(s, func(st *sessionState) { st.streams-- })
		go d.syncPresence(s)
	}
}

// handleWelcomeClaim is POST /v1/sessions/me/welcome: the channel path's
// claim on the session's welcome.
func (d *Daemon) handleWelcomeClaim(req *ipcRequest, in WelcomeClaimRequest) (WelcomeClaimReply, error) {
	s := req.session
	if s == nil {
		return WelcomeClaimReply{}, newAPIError(http.StatusUnauthorized, "no_session", "an MCP server claims its session's welcome: send the session token, or the Claude Code session it runs in")
	}
	if in.Release {
		d.states.releaseWelcome(s, surfacedViaChannel)
		return WelcomeClaimReply{}, nil
	}
	via, ok := d.states.claimWelcome(s, surfacedViaChannel, false)
	return WelcomeClaimReply{Claimed: ok, Via: via}, nil
}

func (d *Daemon) handleSessionMCP(req *ipcRequest, in MCPReport) (MCPReportReply, error) {
	s := req.session
	if s == nil {
		return MCPReportReply{}, newAPIError(http.StatusUnauthorized, "no_session", "an MCP server reports for its session: send the session token, or the Claude Code session it runs in")
	}
	in.ReportedAt = isoTime(time.Now())
	d.states.update(s, func(st *sessionState) { st.mcp = &in })
	go d.syncPresence(s)
	return MCPReportReply{Surfacing: surfacingOf(d.states.get(s))}, nil
}
