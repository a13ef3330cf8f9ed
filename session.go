// The daemon's session registry: launched sessions register
// with a 64-hex token that later identifies them on IPC; a session with
// presence gets its own broker link.
//
// Policy:
//   - Re-registering a session id replaces the old entry (and its link).
//   - The reaper drops a session whose pid is dead, or whose process start
//     time changed (the pid was reused by another process), and any session
//     older than the 24 h TTL. One sweep reads every start time in one batch
//     (plain /proc reads on Linux, one `ps` elsewhere), off the IPC path.
//   - sessions.json holds no secret; session keys live in the sessions dir
//     and come back from there when the daemon restarts.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"
)

// Session is one registered session. It is immutable once registered;
// changes replace the entry.
type Session struct {
	Token        string
	SessionID    string
	Mesh         string
	DisplayName  string
	Pid          int
	Cwd          string
	Role         string
	Groups       []string
	Presence     *SessionPresence
	StartTime    string
	RegisteredAt time.Time
	// Origin is sessionOriginHooks for a plain `claude` session its first
	// hook registered (its Pid is the claude process), else "" (registered
	// by launch or another client).
	Origin string
}

// sessionOriginHooks marks a session registered by its hooks.
const sessionOriginHooks = "hooks"

// SessionPresence is a session's broker identity. The secret half of the
// keypair is unexported so that no encoder can ever emit it.
type SessionPresence struct {
	SessionPubkey string
	Attestation   Attestation
	keypair       Keypair
}

// Keypair is the session's identity, for its link and for decrypting.
func (p *SessionPresence) Keypair() Keypair { return p.keypair }

// TokenPrefix is the first 8 characters of the token, safe to show.
func (s *Session) TokenPrefix() string { return s.Token[:8] }

func (s *Session) view() sessionView {
	v := sessionView{
		SessionID: s.SessionID, Mesh: s.Mesh, DisplayName: s.DisplayName, Pid: s.Pid, Cwd: s.Cwd,
		Role: s.Role, Groups: s.Groups, StartTime: s.StartTime, RegisteredAt: s.RegisteredAt.UnixMilli(),
		TokenPrefix: s.TokenPrefix(), Origin: s.Origin,
	}
	if s.Presence != nil {
		v.Presence = &presenceView{SessionPubkey: s.Presence.SessionPubkey, ParentAttestation: s.Presence.Attestation}
		v.MemberPubkey = s.Presence.Attestation.ParentMemberPubkey
	}
	return v
}

// persistedSession is one entry of sessions.json.
type persistedSession struct {
	Token         string   `json:"token"`
	SessionID     string   `json:"sessionId"`
	Mesh          string   `json:"mesh"`
	DisplayName   string   `json:"displayName"`
	Pid           int      `json:"pid"`
	Cwd           string   `json:"cwd,omitempty"`
	Role          string   `json:"role,omitempty"`
	Groups        []string `json:"groups,omitempty"`
	StartTime     string   `json:"startTime,omitempty"`
	RegisteredAt  int64    `json:"registeredAt"`
	SessionPubkey string   `json:"sessionPubkey,omitempty"` // public only; the secret is in the sessions dir
	Origin        string   `json:"origin,omitempty"`
}

// persisted is s as sessions.json keeps it: without its secret.
func (s *Session) persisted() persistedSession {
	p := persistedSession{
		Token: s.Token, SessionID: s.SessionID, Mesh: s.Mesh, DisplayName: s.DisplayName, Pid: s.Pid,
		Cwd: s.Cwd, Role: s.Role, Groups: s.Groups, StartTime: s.StartTime, RegisteredAt: s.RegisteredAt.UnixMilli(),
		Origin: s.Origin,
	}
	if s.Presence != nil {
		p.SessionPubkey = s.Presence.SessionPubkey
	}
	return p
}

// session is the registration p kept, without its presence (whose key
// comes back from the sessions dir).
func (p persistedSession) session() *Session {
	return &Session{
		Token: p.Token, SessionID: p.SessionID, Mesh: p.Mesh, DisplayName: p.DisplayName, Pid: p.Pid,
		Cwd: p.Cwd, Role: p.Role, Groups: p.Groups, StartTime: p.StartTime, RegisteredAt: time.UnixMilli(p.RegisteredAt),
		Origin: p.Origin,
	}
}

type sessionsFile struct {
	Version  int                `json:"version"`
	Sessions []persistedSession `json:"sessions"`
}

// RegistryOptions configure a registry; zero values take defaults.
type RegistryOptions struct {
	File       string // sessions.json; "" keeps nothing on disk
	TTL        time.Duration
	StartTimes func(pids []int) map[int]string
	PidAlive   func(pid int) bool
	Now        func() time.Time
	Log        *slog.Logger
	// OnRegister and OnDeregister run outside the registry's lock, after
	// the change, in the order the changes happened.
	OnRegister   func(s *Session)
	OnDeregister func(s *Session, reason string)
}

// Registry holds the registered sessions.
type Registry struct {
	opts RegistryOptions

	mu      sync.Mutex
	byToken map[string]*Session
	bySID   map[string]string
	persist bool

	hookMu sync.Mutex // serialises hook calls so links follow changes in order
}

// sessionTTL is the hard lifetime of a registration.
const sessionTTL = 24 * time.Hour

func newRegistry(opts RegistryOptions) *Registry {
	setDefault(&opts.TTL, sessionTTL)
	if opts.StartTimes == nil {
		opts.StartTimes = processStartTimes
	}
	if opts.PidAlive == nil {
		opts.PidAlive = pidAlive
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Registry{opts: opts, byToken: map[string]*Session{}, bySID: map[string]string{}}
}

// pidAlive reports whether pid is a live process of ours. EPERM means the
// pid now belongs to someone else's process, which for a session means its
// own process is gone.
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

type sessionChange struct {
	s       *Session
	added   bool
	reason  string
	removed bool
}

// Register adds s (its StartTime is captured here if empty), replacing any
// entry with the same token or the same session id.
func (r *Registry) Register(s *Session) {
	if s.StartTime == "" {
		s.StartTime = r.opts.StartTimes([]int{s.Pid})[s.Pid]
	}
	if s.RegisteredAt.IsZero() {
		s.RegisteredAt = r.opts.Now()
	}
	r.hookMu.Lock()
	defer r.hookMu.Unlock()
	var changes []sessionChange
	r.mu.Lock()
	if old, ok := r.byToken[s.Token]; ok {
		r.removeLocked(old)
		changes = append(changes, sessionChange{s: old, removed: true, reason: "replaced"})
	}
	if tok, ok := r.bySID[s.SessionID]; ok {
		if old := r.byToken[tok]; old != nil {
			r.removeLocked(old)
			changes = append(changes, sessionChange{s: old, removed: true, reason: "replaced"})
		}
	}
	r.byToken[s.Token] = s
	r.bySID[s.SessionID] = s.Token
	changes = append(changes, sessionChange{s: s, added: true})
	r.saveLocked()
	r.mu.Unlock()
	r.fire(changes)
}

// Deregister removes the session with token; false when there was none.
func (r *Registry) Deregister(token, reason string) bool {
	r.hookMu.Lock()
	defer r.hookMu.Unlock()
	r.mu.Lock()
	s, ok := r.byToken[token]
	if ok {
		r.removeLocked(s)
		r.saveLocked()
	}
	r.mu.Unlock()
	if ok {
		r.fire([]sessionChange{{s: s, removed: true, reason: reason}})
	}
	return ok
}

func (r *Registry) removeLocked(s *Session) {
	delete(r.byToken, s.Token)
	if r.bySID[s.SessionID] == s.Token {
		delete(r.bySID, s.SessionID)
	}
}

func (r *Registry) fire(changes []sessionChange) {
	for _, c := range changes {
		if c.removed {
			r.opts.Log.Info("session_deregistered", "session_id", c.s.SessionID, "mesh", c.s.Mesh, "reason", c.reason)
			if r.opts.OnDeregister != nil {
				r.opts.OnDeregister(c.s, c.reason)
			}
		}
		if c.added {
			r.opts.Log.Info("session_registered", "session_id", c.s.SessionID, "mesh", c.s.Mesh, "pid", c.s.Pid,
				"presence", c.s.Presence != nil)
			if r.opts.OnRegister != nil {
				r.opts.OnRegister(c.s)
			}
		}
	}
}

// Resolve finds a live session by token; an expired one is dropped.
func (r *Registry) Resolve(token string) *Session {
	r.mu.Lock()
	s, ok := r.byToken[token]
	expired := ok && r.opts.Now().Sub(s.RegisteredAt) > r.opts.TTL
	r.mu.Unlock()
	if !ok {
		return nil
	}
	if expired {
		r.Deregister(token, "ttl")
		return nil
	}
	return s
}

// Has reports whether a session is registered under token (expired or
// not): a lookup that never deregisters, safe from the registry's hooks.
func (r *Registry) Has(token string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.byToken[token]
	return ok
}

// BySessionID finds a live session by its session id.
func (r *Registry) BySessionID(id string) *Session {
	r.mu.Lock()
	tok, ok := r.bySID[id]
	r.mu.Unlock()
	if !ok {
		return nil
	}
	return r.Resolve(tok)
}

// ByClaudePid finds the session a hook registered for a claude process.
func (r *Registry) ByClaudePid(pid int) *Session {
	if pid <= 0 {
		return nil
	}
	var found *Session
	r.mu.Lock()
	for _, s := range r.byToken {
		if s.Origin == sessionOriginHooks && s.Pid == pid && (found == nil || s.RegisteredAt.After(found.RegisteredAt)) {
			found = s
		}
	}
	r.mu.Unlock()
	if found == nil {
		return nil
	}
	return r.Resolve(found.Token)
}

// List returns the sessions, oldest first.
func (r *Registry) List() []*Session {
	r.mu.Lock()
	out := make([]*Session, 0, len(r.byToken))
	for _, s := range r.byToken {
		out = append(out, s)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].RegisteredAt.Equal(out[j].RegisteredAt) {
			return out[i].RegisteredAt.Before(out[j].RegisteredAt)
		}
		return out[i].SessionID < out[j].SessionID
	})
	return out
}

// Len counts sessions.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byToken)
}

// Sweep is one reaper pass: TTL, dead pids, then one batched start-time
// read for the survivors. A pid missing from the batch is left for the next
// sweep (liveness already covers a process that is gone).
func (r *Registry) Sweep() {
	now := r.opts.Now()
	type verdict struct{ token, reason string }
	var drop []verdict
	var check []*Session
	for _, s := range r.List() {
		switch {
		case now.Sub(s.RegisteredAt) > r.opts.TTL:
			drop = append(drop, verdict{s.Token, "ttl"})
		case !r.opts.PidAlive(s.Pid):
			drop = append(drop, verdict{s.Token, "pid_dead"})
		case s.StartTime != "":
			check = append(check, s)
		}
	}
	if len(check) > 0 {
		pids := make([]int, 0, len(check))
		seen := map[int]bool{}
		for _, s := range check {
			if !seen[s.Pid] {
				seen[s.Pid] = true
				pids = append(pids, s.Pid)
			}
		}
		times := r.opts.StartTimes(pids)
		for _, s := range check {
			if st, ok := times[s.Pid]; ok && st != s.StartTime {
				drop = append(drop, verdict{s.Token, "pid_reused"})
			}
		}
	}
	for _, v := range drop {
		r.Deregister(v.token, v.reason)
	}
}

// RunReaper sweeps every interval until ctx ends.
func (r *Registry) RunReaper(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.Sweep()
		}
	}
}

// EnablePersistence starts writing sessions.json on every change (after
// restore, so that restoring does not rewrite the file entry by entry).
func (r *Registry) EnablePersistence() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.persist = true
	r.saveLocked()
}

func (r *Registry) saveLocked() {
	if !r.persist || r.opts.File == "" {
		return
	}
	f := sessionsFile{Version: 1, Sessions: []persistedSession{}}
	for _, s := range r.byToken {
		f.Sessions = append(f.Sessions, s.persisted())
	}
	sort.Slice(f.Sessions, func(i, j int) bool { return f.Sessions[i].RegisteredAt < f.Sessions[j].RegisteredAt })
	data, err := json.MarshalIndent(f, "", "  ")
	if err == nil {
		err = writeFileAtomic(r.opts.File, append(data, '\n'), 0o600)
	}
	if err != nil {
		r.opts.Log.Warn("sessions_persist_failed", "err", err.Error())
	}
}

// loadPersistedSessions reads sessions.json; a missing file is empty.
func loadPersistedSessions(path string) ([]persistedSession, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f sessionsFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	return f.Sessions, nil
}
