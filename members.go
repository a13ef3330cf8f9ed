// Who belongs to a mesh, online or not, for `claudemesh members` and for
// names that mean someone offline (`send bob …` while bob is away).
//
// Policy: list_members is asked only of a broker whose hello_ack named it
// (a broker that ignores a frame it does not know would leave the request
// to time out). A broker without it is answered from its peer list: the
// members online now, each named as its daemon's row shows it (a member's
// daemon link goes by the member's name) or else as its first session, and
// the answer says it is partial.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
)

// membersFromPeers is the member list a peer list shows: one row per member
// key, online when one of its rows is connected.
func membersFromPeers(rows []PeerRow) []MemberRow {
	byKey := map[string]*MemberRow{}
	var order []string
	for _, r := range rows {
		if r.MemberPubkey == "" {
			continue
		}
		m, ok := byKey[r.MemberPubkey]
		if !ok {
			m = &MemberRow{Pubkey: r.MemberPubkey}
			byKey[r.MemberPubkey] = m
			order = append(order, r.MemberPubkey)
		}
		daemonRow := r.PeerRole == peerRoleControlPlane && r.Pubkey == r.MemberPubkey
		if r.DisplayName != "" && (m.DisplayName == "" || daemonRow) {
			m.DisplayName = r.DisplayName
		}
		m.Online = m.Online || rowLive(r)
	}
	out := make([]MemberRow, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].DisplayName < out[j].DisplayName })
	return out
}

// decodeMembersList reads a members_list frame.
func decodeMembersList(raw []byte) ([]MemberRow, error) {
	var f MembersListFrame
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("bad members_list: %w", err)
	}
	return nonNil(f.Members), nil
}

// listMembers is mesh e's member list, and whether it is complete (false:
// the broker cannot list members, these are the ones online).
func (d *Daemon) listMembers(ctx context.Context, e *meshEntry) ([]MemberRow, bool, error) {
	awaitFirstConnect(ctx, e.Link)
	if !e.Link.Supports(featureListMembers) {
		peers, err := d.listPeers(ctx, e)
		return membersFromPeers(peers), false, err
	}
	raw, err := d.rpc(ctx, e, ListMembersFrame{Type: frameListMembers}, frameMembersList)
	if err != nil {
		return nil, false, err
	}
	members, err := decodeMembersList(raw)
	for _, m := range members {
		d.senders.learn(e.Mesh.Slug, m.Pubkey, knownSender{Name: m.DisplayName, MemberPubkey: m.Pubkey})
	}
	return members, true, err
}

// members lists the members of every mesh in meshes.
func (d *Daemon) members(ctx context.Context, meshes []*meshEntry) (MembersReply, error) {
	var mu sync.Mutex
	partial := []string{}
	rows, failed, err := fanOut(meshes, func(e *meshEntry) ([]MeshRow[MemberRow], error) {
		list, complete, err := d.listMembers(ctx, e)
		if err != nil {
			return nil, err
		}
		if !complete {
			mu.Lock()
			partial = append(partial, e.Mesh.Slug)
			mu.Unlock()
		}
		out := make([]MeshRow[MemberRow], 0, len(list))
		for _, m := range list {
			out = append(out, meshRowOf(m, e.Mesh.Slug))
		}
		return out, nil
	})
	sort.Strings(partial)
	return MembersReply{Members: rows, Partial: partial, Errors: failed}, err
}

func (d *Daemon) handleMembers(req *ipcRequest, in MeshQuery) (MembersReply, error) {
	meshes, err := d.meshesFor(in.Mesh, req.session)
	if err != nil {
		return MembersReply{}, err
	}
	return d.members(req.Context(), meshes)
}
