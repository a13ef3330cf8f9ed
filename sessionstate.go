// What the daemon learns of a registered session while it runs: from its
// hooks (when one last ran, where its transcript is, whether its model was
// welcomed, the status they imply, the wait that will wake it when a
// message comes) and from its MCP server (what it negotiated, whether its
// event stream is open).
//
// Policy: the state lives in memory beside the registration and goes with
// it; a daemon restart starts it afresh, and the session's next hook and
// its MCP server's next report fill it in again. A session has at most one
// wait: a newer one, or the start of a new turn, ends the one before.
package main

import (
	"sync"
	"time"
)

// sessionState is one session's state.
type sessionState struct {
	hookSeenAt time.Time // the last hook of this session
	transcript string    // Claude Code's transcript of the session
	// welcomedVia is the path that welcomed the session's model (hooks
	// or channel): one welcome per context the model starts.
	welcomedVia string

	wait *sessionWait

	// Status: the session's own choice (profile --status), the hooks'
	// (working or idle, with when they said it), and what was sent to the
	// broker last.
	manualStatus string
	hookStatus   string
	hookStatusAt time.Time
	sentStatus   string

	mcp      *MCPReport // the session's MCP server, as it reported itself
	streams  int        // event streams open with the session's identity
	sentPath string     // the surfacing path last published
}

// sessionWait is a session's pending wait; end is closed when it is over
// for a reason other than a message: why says which.
type sessionWait struct {
	end chan struct{}
	why string
}

// sessionStates holds every registered session's state, by token.
type sessionStates struct {
	mu      sync.Mutex
	byToken map[string]*sessionState
}

func newSessionStates() *sessionStates {
	return &sessionStates{byToken: map[string]*sessionState{}}
}

// update runs f on s's state, creating it.
func (ss *sessionStates) update(s *Session, f func(st *sessionState)) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	st := ss.byToken[s.Token]
	if st == nil {
		st = &sessionState{}
		ss.byToken[s.Token] = st
	}
	f(st)
}

// adjust runs f on s's state if it has one (a session forgotten meanwhile
// gets none back).
func (ss *sessionStates) adjust(s *Session, f func(st *sessionState)) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if st := ss.byToken[s.Token]; st != nil {
		f(st)
	}
}

// get is a copy of s's state (the zero state when there is none).
func (ss *sessionStates) get(s *Session) sessionState {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if st := ss.byToken[s.Token]; st != nil {
		return *st
	}
	return sessionState{}
}

// hookRan records a hook of s.
func (ss *sessionStates) hookRan(s *Session, transcript string, now time.Time) {
	ss.update(s, func(st *sessionState) {
		st.hookSeenAt = now
		if transcript != "" {
			st.transcript = transcript
		}
	})
}

// claimWelcome takes s's welcome for a path: the first path to ask shows
// it, and every later one hears which path did (via, false). fresh — the
// model's context began anew (cleared or compacted) — takes it again.
func (ss *sessionStates) claimWelcome(s *Session, via string, fresh bool) (string, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	st := ss.byToken[s.Token]
	if st == nil {
		st = &sessionState{}
		ss.byToken[s.Token] = st
	}
	if st.welcomedVia != "" && !fresh {
		return st.welcomedVia, false
	}
	st.welcomedVia = via
	return via, true
}

// releaseWelcome gives back a welcome via claimed but could not show.
func (ss *sessionStates) releaseWelcome(s *Session, via string) {
	ss.adjust(s, func(st *sessionState) {
		if st.welcomedVia == via {
			st.welcomedVia = ""
		}
	})
}

// startWait makes a new wait the session's only one, ending the one before
// as superseded.
func (ss *sessionStates) startWait(s *Session) *sessionWait {
	w := &sessionWait{end: make(chan struct{})}
	ss.update(s, func(st *sessionState) {
		st.endWaitLocked(waitSuperseded)
		st.wait = w
	})
	return w
}

// finishWait lets go of w when it is still the session's wait.
func (ss *sessionStates) finishWait(s *Session, w *sessionWait) {
	ss.update(s, func(st *sessionState) {
		if st.wait == w {
			st.endWaitLocked(waitSuperseded)
		}
	})
}

// endWait ends the session's wait, if any, for why.
func (ss *sessionStates) endWait(s *Session, why string) {
	ss.update(s, func(st *sessionState) { st.endWaitLocked(why) })
}

func (st *sessionState) endWaitLocked(why string) {
	if st.wait != nil {
		st.wait.why = why
		close(st.wait.end)
		st.wait = nil
	}
}

// forget drops s's state; its wait ends as gone. A session replaced under
// the same token (a new name) keeps its state.
func (ss *sessionStates) forget(s *Session) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if st := ss.byToken[s.Token]; st != nil {
		st.endWaitLocked(waitGone)
		delete(ss.byToken, s.Token)
	}
}
