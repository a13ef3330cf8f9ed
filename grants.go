// Per-peer grants: what each member lets other members and sessions do to
// it. A member holds a map from a sender's key (a member key or a session
// key) to the capabilities it grants that sender; the broker reads it when
// it routes a message to that member.
//
// Policy, for a message from a sender to a recipient member:
//   - the recipient's entry for the sender's member key wins;
//   - else, when the sender sent with a session key, the entry for that
//     session key applies;
//   - else the defaults apply: read, dm, broadcast, state-read;
//   - an entry with no capabilities blocks that sender entirely.
//
// A member's own sessions always reach it: its grants are about others.
package main

import (
	"fmt"
	"slices"
	"strings"
)

// The capabilities a grant can hold.
const (
	capRead       = "read"
	capDM         = "dm"
	capBroadcast  = "broadcast"
	capStateRead  = "state-read"
	capStateWrite = "state-write"
	capMemory     = "memory"
	capSkills     = "skills"
)

// allCapabilities is every capability, in the order lists show them.
var allCapabilities = []string{capRead, capDM, capBroadcast, capStateRead, capStateWrite, capMemory, capSkills}

// defaultCapabilities is what a sender has when no entry applies to it.
var defaultCapabilities = []string{capRead, capDM, capBroadcast, capStateRead}

// capAll names every capability at once on the command line and in
// requests.
const capAll = "all"

// grantMap is one member's grants: sender key → capabilities.
type grantMap map[string][]string

// capsFor returns the capabilities the grants give a sender whose member
// key is senderMember and which sent with key senderKey (its session key,
// or its member key on a member connection).
func (g grantMap) capsFor(senderMember, senderKey string) []string {
	if caps, ok := g[senderMember]; ok {
		return caps
	}
	if senderKey != senderMember {
		if caps, ok := g[senderKey]; ok {
			return caps
		}
	}
	return defaultCapabilities
}

// allows reports whether the grants let that sender use capability c.
func (g grantMap) allows(senderMember, senderKey, c string) bool {
	return slices.Contains(g.capsFor(senderMember, senderKey), c)
}

// normalizeCaps checks a list of capability names and returns it sorted in
// the canonical order without repeats; "all" stands for every capability.
func normalizeCaps(caps []string) ([]string, error) {
	want := map[string]bool{}
	for _, c := range caps {
		c = strings.ToLower(strings.TrimSpace(c))
		switch {
		case c == capAll:
			for _, a := range allCapabilities {
				want[a] = true
			}
		case slices.Contains(allCapabilities, c):
			want[c] = true
		default:
			return nil, fmt.Errorf("unknown capability %q (capabilities: %s, or %s)", c, strings.Join(allCapabilities, ", "), capAll)
		}
	}
	out := []string{}
	for _, a := range allCapabilities {
		if want[a] {
			out = append(out, a)
		}
	}
	return out, nil
}

// withCaps returns base plus add, in the canonical order.
func withCaps(base, add []string) []string {
	out, _ := normalizeCaps(append(slices.Clone(base), add...))
	return out
}

// withoutCaps returns base less drop, in the canonical order.
func withoutCaps(base, drop []string) []string {
	out := []string{}
	for _, c := range allCapabilities {
		if slices.Contains(base, c) && !slices.Contains(drop, c) {
			out = append(out, c)
		}
	}
	return out
}

// capsLabel is a capability list for people: "read, dm", or "none".
func capsLabel(caps []string) string {
	if len(caps) == 0 {
		return "none"
	}
	return strings.Join(caps, ", ")
}
