// The daemon's side of Claude Code's hooks (POST /v1/hook, POST
// /v1/hook/wait): a plain `claude` session becomes a peer at its first
// hook, and each hook takes the messages its model has not been shown.
//
// Policy:
//   - A hook from a session the daemon does not know registers it, keyed by
//     Claude Code's session id: its keypair is made once in the sessions
//     dir and found again on --resume or --continue (same pubkey, so DMs
//     queued meanwhile still decrypt); its process is the claude process
//     the hook runs under, so the reaper drops it when claude ends; its
//     name is the configured display name and the start of the session id.
//     A session id registered under another claude process is registered
//     again (a resume while the old registration waits for the reaper).
//   - Before it takes messages, a hook confirms the session's unconfirmed
//     channel claims that its transcript shows; then it claims, for the
//     hooks path, what no path has shown and what a channel claimed too
//     long ago without evidence (surfaced.go), oldest first, within a
//     budget of text a hook may add to the model's context.
//   - Hooks of a subagent take nothing: the subagent is not the session's
//     model.
//   - stop keeps the session going with new messages at most once per
//     turn: Claude Code says when a stop follows one that blocked
//     (stop_hook_active), and then nothing is claimed, so a stop never
//     blocks twice in a row.
//   - A session whose message mode holds messages in the inbox (inbox,
//     off) is shown none by its hooks.
//   - A wait ends with "pending" as soon as something is there to claim,
//     "superseded" when a newer wait or a new turn of the session takes
//     over, "gone" when the session is, and "timeout" otherwise.
package main

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// What started a session, as Claude Code's session-start hook says.
const (
	sessionSourceClear   = "clear"
	sessionSourceCompact = "compact"
)

// Hook limits.
const (
	// hookMessageLimit bounds the messages one hook shows.
	hookMessageLimit = 20
	// hookContextBudget bounds the text one hook adds, in runes: Claude Code
	// shows a hook's larger output only as a preview.
	hookContextBudget = 9000
	// hookBodyLimit bounds one message's body as a hook shows it; the rest
	// is in `claudemesh inbox`.
	hookBodyLimit = 4000
	// hookFrameOverhead is what a message's frame adds to its body.
	hookFrameOverhead = 320
	// hookWelcomePeersTimeout bounds the broker's peer list for a welcome.
	hookWelcomePeersTimeout = 1500 * time.Millisecond
	// hookWaitMax bounds one wait; the waiter asks again.
	hookWaitMax = 5 * time.Minute
)

func (d *Daemon) handleHook(req *ipcRequest, in HookRequest) (HookReply, error) {
	switch in.Event {
	case hookSessionStart, hookUserPromptSubmit, hookPostToolUse, hookStop, hookWake:
	default:
		return HookReply{}, badRequest("invalid_event", "event must be session-start, user-prompt-submit, post-tool-use, stop or wake")
	}
	ctx := req.Context()
	s, registered, err := d.hookSession(req.session, in)
	if err != nil {
		return HookReply{}, err
	}
	now := time.Now()
	d.states.hookRan(s, in.TranscriptPath, now)
	out := HookReply{Session: hookSessionOf(s), Registered: registered, Messages: []inboxItem{}}
	if in.Event == hookUserPromptSubmit {
		// A new turn: a wait from the last stop has nothing left to do.
		d.states.endWait(s, waitSuperseded)
	}
	d.confirmFromTranscript(ctx, s, d.states.get(s).transcript)
	if in.Event == hookSessionStart {
		// The MCP server may have welcomed the model already: a model is
		// welcomed once, by whichever path came first, unless its context
		// began anew.
		fresh := in.Source == sessionSourceClear || in.Source == sessionSourceCompact
		if _, ok := d.states.claimWelcome(s, surfacedViaHooks, fresh); ok {
			out.Welcome = d.hookWelcome(ctx, s)
		}
		d.setHookStatus(s, statusIdle)
		return out, nil
	}
	if !in.Hold && !(in.Event == hookStop && in.StopHookActive) {
		rows, more, err := d.claimForHook(ctx, s, now)
		if err != nil {
			return HookReply{}, err
		}
		for _, r := range rows {
			out.Messages = append(out.Messages, r.item())
		}
		out.More = more
		out.Block = in.Event == hookStop && len(rows) > 0
	}
	if in.Event == hookUserPromptSubmit || in.Event == hookPostToolUse {
		out.Unsurfaced = d.claimUnsurfaced(ctx, s, now)
	}
	status := statusWorking
	if in.Event == hookStop && !out.Block {
		status = statusIdle
	}
	d.setHookStatus(s, status)
	return out, nil
}

func hookSessionOf(s *Session) HookSession {
	h := HookSession{SessionID: s.SessionID, DisplayName: s.DisplayName, Mesh: s.Mesh, Role: s.Role, Origin: s.Origin}
	if s.Presence != nil {
		h.SessionPubkey = s.Presence.SessionPubkey
	}
	return h
}

// hookSession is the session a hook runs in: the caller's, the one its
// Claude Code session id names, or a new registration.
func (d *Daemon) hookSession(caller *Session, in HookRequest) (*Session, bool, error) {
	if caller != nil {
		return caller, false, nil
	}
	if !isClaudeSessionID(in.ClaudeSessionID) {
		return nil, false, badRequest("invalid_session_id", "claude_session_id must be Claude Code's session id (letters, digits, '.', '_', '-')")
	}
	if in.ClaudePid <= 0 {
		return nil, false, badRequest("missing_pid", "claude_pid is required: the claude process the session runs in")
	}
	d.hookRegMu.Lock()
	defer d.hookRegMu.Unlock()
	if s := d.sessions.BySessionID(in.ClaudeSessionID); s != nil && s.Pid == in.ClaudePid {
		return s, false, nil
	}
	s, err := d.registerHookSession(in)
	if err != nil {
		return nil, false, err
	}
	return s, true, nil
}

// isClaudeSessionID: a session id safe as a file name.
func isClaudeSessionID(id string) bool { return safePathName(id) }

// registerHookSession registers a plain claude session with presence.
func (d *Daemon) registerHookSession(in HookRequest) (*Session, error) {
	cfg, err := loadConfig(d.opts.ConfigFile)
	if err != nil {
		return nil, newAPIError(http.StatusInternalServerError, "config_unreadable", err.Error())
	}
	slug := in.Mesh
	if slug == "" {
		for _, m := range cfg.Meshes {
			if _, ok := d.joinedMesh(m.Slug); ok {
				slug = m.Slug
				break
			}
		}
	}
	if slug == "" {
		return nil, newAPIError(http.StatusServiceUnavailable, "no_mesh", "no mesh joined yet").with("attached", []string{})
	}
	e, ok := d.mesh(slug)
	if !ok {
		return nil, d.errMeshNotAttached(slug)
	}
	sid := in.ClaudeSessionID
	key, _, err := loadOrCreateSessionKeypair(d.paths.SessionKeyFile(slug, sid), slug, sid)
	if err != nil {
		return nil, err
	}
	s := &Session{
		Token: randomHex(32), SessionID: sid, Mesh: slug, Pid: in.ClaudePid, Cwd: in.Cwd,
		DisplayName: cmp.Or(loadSessionName(d.paths.SessionNameFile(slug, sid)), hookSessionName(in.DisplayName, cfg, sid)),
		Role:        cfg.Role, Groups: groupSpecs(cfg.Groups),
		Origin: sessionOriginHooks,
		Presence: &SessionPresence{SessionPubkey: key.PublicHex(), keypair: key,
			Attestation: signAttestation(e.Key, key.PublicHex(), time.Now().UnixMilli()+attestationTTLMs)},
	}
	d.sessions.Register(s)
	return s, nil
}

// hookSessionName is a plain session's display name: the configured name
// (CLAUDEMESH_DISPLAY_NAME, config.json's displayName, the user, the host)
// and the first characters of its session id, so that two sessions of one
// user tell apart.
func hookSessionName(asked string, cfg *Config, sid string) string {
	base := cmp.Or(strings.TrimSpace(asked), strings.TrimSpace(cfg.DisplayName), os.Getenv("USER"), hostnameOr("claude"))
	suffix := strings.ReplaceAll(sid, "-", "")
	if utf8.RuneCountInString(suffix) > 4 {
		suffix = string([]rune(suffix)[:4])
	}
	return base + "-" + suffix
}

// claimForHook claims, for the hooks path, the session's messages within a
// hook's budget; more is how many claimable rows are left.
func (d *Daemon) claimForHook(ctx context.Context, s *Session, now time.Time) ([]*inboxRow, int, error) {
	sc := d.callerScope(s, "")
	cutoff := now.Add(-surfacingFallbackDelay).UnixMilli()
	candidates, err := d.inbox.Claimable(ctx, sc, surfacedViaHooks, cutoff, hookMessageLimit+1)
	if err != nil {
		return nil, 0, err
	}
	var pick []string
	budget := hookContextBudget
	for _, r := range candidates {
		size := hookFrameOverhead
		if r.Body != nil {
			size += min(utf8.RuneCountInString(*r.Body), hookBodyLimit)
		}
		if len(pick) == hookMessageLimit || len(pick) > 0 && size > budget {
			break
		}
		pick = append(pick, r.ID)
		budget -= size
	}
	rows, err := d.surface(ctx, s, surfaceClaim{Via: surfacedViaHooks, IDs: pick, FallbackBefore: cutoff})
	if err != nil {
		return nil, 0, err
	}
	left, err := d.inbox.CountClaimable(ctx, sc, surfacedViaHooks, cutoff)
	return rows, left, err
}

// hookWelcome is what the session-start hook tells the model: who is
// online and what waits for it.
func (d *Daemon) hookWelcome(ctx context.Context, s *Session) *HookWelcome {
	w := &HookWelcome{Peers: []PeerRow{}, Unread: []inboxItem{}}
	if e, ok := d.joinedMesh(s.Mesh); ok {
		pctx, cancel := context.WithTimeout(ctx, hookWelcomePeersTimeout)
		peers, err := d.listPeers(pctx, e)
		cancel()
		if err != nil {
			w.PeersError = err.Error()
		} else {
			w.Peers = peers
		}
	} else {
		w.PeersError = "mesh " + s.Mesh + " is not joined"
	}
	sc := d.callerScope(s, "")
	sc.Unsurfaced = true
	if rows, err := d.inbox.List(ctx, sc, 50); err == nil {
		for _, r := range rows {
			w.Unread = append(w.Unread, r.item())
		}
		w.UnreadCount = len(rows)
	}
	return w
}

// handleHookWait holds a session's wait until there is something to claim
// for it, or the wait is over.
func (d *Daemon) handleHookWait(req *ipcRequest, in HookWaitRequest) (HookWaitReply, error) {
	s := req.session
	if s == nil {
		if s = d.sessions.BySessionID(in.ClaudeSessionID); s == nil || in.ClaudePid > 0 && s.Pid != in.ClaudePid {
			return HookWaitReply{Outcome: waitGone}, nil
		}
	}
	timeout := min(time.Duration(max(in.TimeoutMs, 0))*time.Millisecond, hookWaitMax)
	if timeout == 0 {
		timeout = hookWaitMax
	}
	ctx, cancel := context.WithTimeout(req.Context(), timeout)
	defer cancel()
	// Subscribed before the first look, so that nothing arrives unseen.
	f := EventFilter{MeshSlug: s.Mesh, MemberPubkey: d.memberKeyOf(s)}
	if s.Presence != nil {
		f.SessionPubkey = s.Presence.SessionPubkey
	}
	sub := d.bus.Subscribe(f)
	defer sub.Close()
	w := d.states.startWait(s)
	defer d.states.finishWait(s, w)
	sc := d.callerScope(s, "")
	for {
		now := time.Now()
		n, err := d.inbox.CountClaimable(ctx, sc, surfacedViaHooks, now.Add(-surfacingFallbackDelay).UnixMilli())
		if err != nil && ctx.Err() == nil {
			return HookWaitReply{}, err
		}
		if n > 0 {
			return HookWaitReply{Outcome: waitPending}, nil
		}
		// A channel claim that stays unconfirmed becomes the hooks' to show
		// after the fallback delay: look again then.
		recheck := surfacingFallbackDelay
		if next, ok, err := d.inbox.NextFallback(ctx, sc); err == nil && ok {
			recheck = max(time.Until(time.UnixMilli(next).Add(surfacingFallbackDelay)), time.Millisecond)
		}
		timer := time.NewTimer(recheck)
		select {
		case _, open := <-sub.C:
			if !open {
				// Dropped as a slow subscriber, or the daemon stops: the
				// waiter asks again.
				timer.Stop()
				return HookWaitReply{Outcome: waitTimeout}, nil
			}
		case <-w.end:
			timer.Stop()
			return HookWaitReply{Outcome: w.why}, nil
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return HookWaitReply{Outcome: waitTimeout}, nil
			}
			return HookWaitReply{}, ctx.Err()
		}
		timer.Stop()
	}
}
