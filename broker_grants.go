// The broker's side of per-peer grants (grants.go): the member-signed
// route POST /cli/mesh/<slug>/grants that lists and changes a member's
// grants, and the cache routing reads them from.
//
// Policy: a member changes only its own grants, and never for its own
// member or sessions (they always reach it). A peer is named by a member
// key, a session key, a display name or a key prefix; a name or prefix
// that matches several is refused. `grant` adds capabilities to the
// sender's entry (an entry that does not exist yet starts from the
// defaults), `revoke` takes them away (with none named, all of them: the
// sender is blocked), `reset` removes the entry so the defaults apply
// again. A change is stored before it is cached, and routing reads the
// cache, so a send that follows the answer is routed by the new grants.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"
)

// Grant operations.
const (
	grantOpList   = "list"
	grantOpGrant  = "grant"
	grantOpRevoke = "revoke"
	grantOpReset  = "reset"
)

// Kinds of grant entry.
const (
	grantKindMember  = "member"
	grantKindSession = "session"
)

// GrantsRequest is the body of POST /cli/mesh/<slug>/grants.
type GrantsRequest struct {
	MemberRequest
	Op   string   `json:"op"`             // list | grant | revoke | reset
	Peer string   `json:"peer,omitempty"` // who the entry is for: a name, a key or a key prefix
	Caps []string `json:"caps,omitempty"` // for grant and revoke
}

// GrantsResponse is the member's grants after the request.
type GrantsResponse struct {
	OK       bool         `json:"ok"`
	Changed  *GrantEntry  `json:"changed,omitempty"` // the entry the request changed
	Grants   []GrantEntry `json:"grants"`
	Defaults []string     `json:"defaults"` // what every sender without an entry has
}

// GrantEntry is one sender's entry.
type GrantEntry struct {
	Key  string   `json:"key"`
	Kind string   `json:"kind"` // member | session
	Name string   `json:"name,omitempty"`
	Caps []string `json:"caps"`
	// Default: the entry was removed and the defaults apply (a reset).
	Default bool `json:"default,omitempty"`
}

// grantsKey names a member's entry in Broker.grants.
func grantsKey(meshID, memberID string) string { return meshID + "/" + memberID }

// noteGrants caches the grants a handshake read for its member, unless the
// cache holds them already: a change made since the handshake's read is
// newer than what it read. Caller holds b.mu.
func (b *Broker) noteGrants(meshID string, m storedMember) {
	k := grantsKey(meshID, m.ID)
	if _, ok := b.grants[k]; !ok {
		b.grants[k] = m.Grants
	}
}

func (b *Broker) handleGrants(w http.ResponseWriter, r *http.Request) {
	var req GrantsRequest
	call, ok := b.memberRequest(w, r, &req)
	if !ok {
		return
	}
	bad := func(format string, a ...any) {
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, fmt.Sprintf(format, a...))
	}
	caps, err := normalizeCaps(req.Caps)
	switch {
	case err != nil:
		bad("%v", err)
		return
	case !slices.Contains([]string{grantOpList, grantOpGrant, grantOpRevoke, grantOpReset}, req.Op):
		bad("op must be list, grant, revoke or reset, not %q", req.Op)
		return
	case req.Op == grantOpGrant && len(caps) == 0:
		bad("grant needs at least one capability (%s)", strings.Join(allCapabilities, ", "))
		return
	case (req.Op == grantOpList || req.Op == grantOpReset) && len(req.Caps) > 0:
		bad("%s takes no capabilities", req.Op)
		return
	case req.Op == grantOpList && req.Peer != "":
		bad("list takes no peer")
		return
	case req.Op != grantOpList && req.Peer == "":
		bad("%s needs a peer", req.Op)
		return
	}

	b.grantsMu.Lock()
	defer b.grantsMu.Unlock()
	ctx := r.Context()
	me, err := b.store.MemberByPubkey(ctx, call.mesh.ID, call.member.Pubkey) // fresh, under the lock
	if err != nil {
		writeStoreUnavailable(w)
		return
	}
	grants := maps.Clone(me.Grants)
	if grants == nil {
		grants = grantMap{}
	}
	var changed *GrantEntry
	if req.Op != grantOpList {
		to, code, problem := b.resolveGrantPeer(ctx, call.mesh.ID, me, req.Peer)
		if code != "" {
			writeLookupError(w, code, problem)
			return
		}
		base, has := grants[to.Key]
		if !has {
			base = defaultCapabilities
		}
		switch req.Op {
		case grantOpGrant:
			grants[to.Key] = withCaps(base, caps)
		case grantOpRevoke:
			if len(caps) == 0 {
				grants[to.Key] = []string{}
			} else {
				grants[to.Key] = withoutCaps(base, caps)
			}
		case grantOpReset:
			delete(grants, to.Key)
		}
		var caps any = grants[to.Key]
		if req.Op == grantOpReset {
			caps = nil
		}
		changedAudit := auditEvent{MeshID: call.mesh.ID, Type: auditGrantChanged, Actor: me.Pubkey, CreatedAt: time.Now(),
			Payload: map[string]any{"op": req.Op, "peer": to.Key, "kind": to.Kind, "caps": caps}}
		if err := b.store.SetGrants(ctx, call.mesh.ID, me.ID, grants, changedAudit); err != nil {
			b.log.Error("set grants", "err", err)
			writeStoreUnavailable(w)
			return
		}
		b.mu.Lock()
		b.grants[grantsKey(call.mesh.ID, me.ID)] = grants
		b.publishLater(replicaEvent{Kind: replicaEventMember, Mesh: call.mesh.ID, Member: me.ID})
		b.mu.Unlock()
		to.Caps = grants.capsFor(to.Key, to.Key)
		to.Default = req.Op == grantOpReset
		changed = &to
	}
	entries, err := b.grantEntries(ctx, call.mesh.ID, grants)
	if err != nil {
		writeStoreUnavailable(w)
		return
	}
	writeJSON(w, http.StatusOK, GrantsResponse{OK: true, Changed: changed, Grants: entries, Defaults: defaultCapabilities})
}

// resolveGrantPeer finds the one sender key a grant request names, trying
// in turn: a member's whole key; a session key (live, whole or a prefix of
// at least minTargetPrefix characters, or remembered and whole); a key the
// grants already hold (so an entry for a key gone away can still be
// changed); a member's display name or key prefix; a live session's
// display name. The first of these that matches decides; when it matches
// several keys, or the key is the caller's own, code and problem are the
// error.
func (b *Broker) resolveGrantPeer(ctx context.Context, meshID string, me storedMember, target string) (e GrantEntry, code, problem string) {
	members, err := b.store.Members(ctx, meshID)
	if err != nil {
		return e, codeInternal, "store unavailable"
	}
	isMemberKey := func(k string) bool {
		return slices.ContainsFunc(members, func(m storedMember) bool { return m.Pubkey == k })
	}
	// Each rule adds the keys it matches, with their member's id.
	type candidate struct {
		entry    GrantEntry
		memberID string
	}
	rules := []func(add func(GrantEntry, string)){
		func(add func(GrantEntry, string)) {
			for _, m := range members {
				if m.Pubkey == target {
					add(GrantEntry{Key: m.Pubkey, Kind: grantKindMember, Name: m.DisplayName}, m.ID)
				}
			}
		},
		func(add func(GrantEntry, string)) {
			matched := false
			b.mu.Lock()
			for _, p := range b.room(meshID).peers {
				if p.role == peerRoleSession && keyMatches(p.sessionPubkey, target) {
					add(GrantEntry{Key: p.sessionPubkey, Kind: grantKindSession, Name: p.displayName}, p.memberID)
					matched = true
				}
			}
			b.mu.Unlock()
			if !matched && isHexKey(target) {
				if m, err := b.store.KeyOwner(ctx, meshID, target); err == nil && m.Pubkey != target {
					add(GrantEntry{Key: target, Kind: grantKindSession, Name: "session of " + m.DisplayName}, m.ID)
				}
			}
		},
		func(add func(GrantEntry, string)) {
			for k := range me.Grants {
				if keyMatches(k, target) {
					kind := grantKindSession
					if isMemberKey(k) {
						kind = grantKindMember
					}
					add(GrantEntry{Key: k, Kind: kind}, "")
				}
			}
		},
		func(add func(GrantEntry, string)) {
			for _, m := range members {
				if m.RevokedAt == nil && (m.DisplayName == target || keyMatches(m.Pubkey, target)) {
					add(GrantEntry{Key: m.Pubkey, Kind: grantKindMember, Name: m.DisplayName}, m.ID)
				}
			}
		},
		func(add func(GrantEntry, string)) {
			b.mu.Lock()
			for _, p := range b.room(meshID).peers {
				if p.role == peerRoleSession && p.displayName == target {
					add(GrantEntry{Key: p.sessionPubkey, Kind: grantKindSession, Name: p.displayName}, p.memberID)
				}
			}
			b.mu.Unlock()
		},
	}
	for _, rule := range rules {
		found := map[string]candidate{}
		rule(func(e GrantEntry, memberID string) { found[e.Key] = candidate{e, memberID} })
		switch len(found) {
		case 0:
			continue
		case 1:
			for _, c := range found {
				if c.memberID == me.ID || c.entry.Key == me.Pubkey {
					return e, codeInvalid, "your own member and sessions always reach you: grants are for other members"
				}
				return c.entry, "", ""
			}
		}
		return e, codeInvalid, target + " matches several peers; use a longer key prefix or the whole key"
	}
	return e, codeNotFound, "no member or session matches " + target
}

// grantEntries lists grants with the names the mesh knows their keys by:
// members first, then sessions, each by name.
func (b *Broker) grantEntries(ctx context.Context, meshID string, grants grantMap) ([]GrantEntry, error) {
	entries := []GrantEntry{}
	if len(grants) == 0 {
		return entries, nil
	}
	members, err := b.store.Members(ctx, meshID)
	if err != nil {
		return nil, err
	}
	memberName := map[string]string{}
	for _, m := range members {
		memberName[m.Pubkey] = m.DisplayName
	}
	sessionName := map[string]string{}
	b.mu.Lock()
	for _, p := range b.room(meshID).peers {
		if p.role == peerRoleSession {
			sessionName[p.sessionPubkey] = p.displayName
		}
	}
	b.mu.Unlock()
	for k, caps := range grants {
		e := GrantEntry{Key: k, Kind: grantKindMember, Caps: nonNil(caps)}
		if name, ok := memberName[k]; ok {
			e.Name = name
		} else {
			e.Kind = grantKindSession
			e.Name = sessionName[k]
			if e.Name == "" {
				if m, err := b.store.KeyOwner(ctx, meshID, k); err == nil {
					e.Name = "session of " + m.DisplayName
				} else if !errors.Is(err, errNotFound) {
					return nil, err
				}
			}
		}
		entries = append(entries, e)
	}
	sort.Slice(entries, func(i, j int) bool {
		a, c := entries[i], entries[j]
		if a.Kind != c.Kind {
			return a.Kind == grantKindMember
		}
		return cmp.Or(cmp.Compare(a.Name, c.Name), cmp.Compare(a.Key, c.Key)) < 0
	})
	return entries, nil
}
