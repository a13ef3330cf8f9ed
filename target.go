// Turning what a user types after `send` into a broker target: the daemon's
// POST /v1/send and the CLI's `send` share these rules, so a name or key
// prefix means the same thing on both paths.
//
// Policy:
//   - `*`, `@group` and `#topic` pass through; a 64-hex key passes through
//     (lowercased).
//   - A display name matches launched sessions, case-insensitively, live
//     ones first: a session waiting out its reconnect grace (one that just
//     quit and was launched again under the same name) is considered only
//     when no live session has that name. A control-plane row (a member's
//     daemon or a one-shot CLI link) is never a name's target: its name is a
//     machine's, not a person's.
//   - A hex prefix of at least minPrefix characters matches session and
//     member keys (claudemesh 1.31.6): it must name exactly one key. A
//     member key whose member has exactly one live session stands for that
//     session, where a DM is read; a one-shot link's throw-away key is never
//     a target.
//   - A row is live unless it says it is not (Connected false): a broker
//     that does not say lists every row as live.
//   - Then the mesh's members, when given: a member's display name, or a
//     prefix of its key, names someone who may be offline; a DM to a member
//     key is queued for them. A member with exactly one live session is
//     reached at that session, as with a key prefix.
//   - No match and several matches are errors that list the candidates.
package main

import (
	"fmt"
	"sort"
	"strings"
)

// Target kinds, by the form of a send's `to`.
const (
	targetFormDirect    = "direct"    // a 64-hex key
	targetFormMulticast = "multicast" // *, @group, #topic
	targetFormPeer      = "peer"      // a display name or key prefix, resolved against the peer list
)

// targetForm classifies a raw `to`; an empty form means it cannot be a
// target at all (a bare "@" or "#").
func targetForm(to string) string {
	switch {
	case to == "":
		return ""
	case to == "*":
		return targetFormMulticast
	case strings.HasPrefix(to, "@") || strings.HasPrefix(to, "#"):
		if len(to) < 2 {
			return ""
		}
		return targetFormMulticast
	case isHexKey(strings.ToLower(to)):
		return targetFormDirect
	}
	return targetFormPeer
}

// TargetError says a name or prefix matched no peer or several.
type TargetError struct {
	Code       string // "no_peer_matches" or "ambiguous_target"
	To         string
	Mesh       string
	Candidates []string // "name (key16…)" of what matched (ambiguous) or of who is online (no match)
}

func (e *TargetError) Error() string {
	where := ""
	if e.Mesh != "" {
		where = " on " + e.Mesh
	}
	if e.Code == "ambiguous_target" {
		return fmt.Sprintf("%q is ambiguous%s: it matches %s; use the full key or a longer prefix",
			e.To, where, strings.Join(e.Candidates, ", "))
	}
	online := "nobody is online"
	if len(e.Candidates) > 0 {
		online = "online: " + strings.Join(e.Candidates, ", ")
	}
	return fmt.Sprintf("no peer matches %q%s (%s)", e.To, where, online)
}

// rowLive reports whether a peer row has its socket: false only when the
// broker says the row waits out its reconnect grace.
func rowLive(r PeerRow) bool { return r.Connected == nil || *r.Connected }

// peerTargetKey is the key a DM to this row goes to: a session's own key,
// a control-plane row's member key.
func peerTargetKey(r PeerRow) string {
	if r.PeerRole == peerRoleControlPlane {
		return r.MemberPubkey
	}
	return r.Pubkey
}

func peerLabel(name, key string) string {
	if name == "" {
		name = "(unnamed)"
	}
	return name + " (" + shortKey(key) + ")"
}

// resolvePeerTarget finds the one key a display name or hex prefix names
// among rows (the peer list) and members (the mesh's member list, nil when
// not asked for).
func resolvePeerTarget(to string, rows []PeerRow, members []MemberRow, minPrefix int, mesh string) (string, error) {
	want := strings.ToLower(strings.TrimSpace(to))
	for _, wantLive := range []bool{true, false} {
		names := map[string]string{}
		for _, r := range rows {
			if r.PeerRole != peerRoleControlPlane && r.Pubkey != "" && rowLive(r) == wantLive && strings.ToLower(r.DisplayName) == want {
				names[r.Pubkey] = r.DisplayName
			}
		}
		if key, err := oneKey(to, mesh, names); key != "" || err != nil {
			return key, err
		}
	}
	sessionsOf := map[string][]PeerRow{} // member key → its live session rows
	for _, r := range rows {
		if r.PeerRole != peerRoleControlPlane && rowLive(r) {
			sessionsOf[r.MemberPubkey] = append(sessionsOf[r.MemberPubkey], r)
		}
	}
	// addMember puts a member key in keys, or its one live session instead.
	addMember := func(keys map[string]string, memberKey, name string, labelWins bool) {
		if only := sessionsOf[memberKey]; len(only) == 1 {
			keys[only[0].Pubkey] = only[0].DisplayName
		} else if _, seen := keys[memberKey]; !seen || labelWins {
			keys[memberKey] = name
		}
	}
	names := map[string]string{}
	for _, m := range members {
		if m.Pubkey != "" && strings.ToLower(m.DisplayName) == want {
			addMember(names, m.Pubkey, m.DisplayName, true)
		}
	}
	if key, err := oneKey(to, mesh, names); key != "" || err != nil {
		return key, err
	}
	if len(want) >= minPrefix && len(want) < 64 && isLowerHex(want) {
		keys := map[string]string{}
		for _, r := range rows {
			if r.PeerRole != peerRoleControlPlane && strings.HasPrefix(r.Pubkey, want) {
				keys[r.Pubkey] = r.DisplayName
			}
			if strings.HasPrefix(r.MemberPubkey, want) {
				addMember(keys, r.MemberPubkey, r.DisplayName, r.PeerRole == peerRoleControlPlane)
			}
		}
		for _, m := range members {
			if strings.HasPrefix(m.Pubkey, want) {
				addMember(keys, m.Pubkey, m.DisplayName, true)
			}
		}
		if key, err := oneKey(to, mesh, keys); key != "" || err != nil {
			return key, err
		}
	}
	var online []string
	seen := map[string]bool{}
	for _, r := range rows {
		k := peerTargetKey(r)
		if r.PeerRole == peerRoleControlPlane || k == "" || seen[k] {
			continue
		}
		seen[k] = true
		online = append(online, peerLabel(r.DisplayName, k))
	}
	sort.Strings(online)
	return "", &TargetError{Code: "no_peer_matches", To: to, Mesh: mesh, Candidates: online}
}

// oneKey is the key when keys holds exactly one, an ambiguity error when it
// holds several, and ("", nil) when it is empty.
func oneKey(to, mesh string, keys map[string]string) (string, error) {
	switch len(keys) {
	case 0:
		return "", nil
	case 1:
		for k := range keys {
			return k, nil
		}
	}
	var cands []string
	for k, name := range keys {
		cands = append(cands, peerLabel(name, k))
	}
	sort.Strings(cands)
	return "", &TargetError{Code: "ambiguous_target", To: to, Mesh: mesh, Candidates: cands}
}
