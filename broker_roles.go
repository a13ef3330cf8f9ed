// Members' roles: the member-signed route POST /cli/mesh/<slug>/role that
// makes a member an admin or a plain member again.
//
// Policy: only the mesh owner changes roles. An admin moderates, but may
// not make admins or unmake them: otherwise one admin could raise an
// accomplice or strip every other admin. The owner's own member is always
// an admin, and a banned member's role is left as it was. A change is
// stored with its role_changed audit entry in one transaction, then every
// live connection of the member moderates (or stops) at once; setting the
// role a member already has changes nothing and records nothing.
package main

import (
	"fmt"
	"net/http"
	"time"
)

// RoleRequest is the body of POST /cli/mesh/<slug>/role.
type RoleRequest struct {
	MemberRequest
	Member string `json:"member"` // a display name, a member or session key, or a key prefix
	Role   string `json:"role"`   // admin | member
}

// RoleResponse is the member's role after the request.
type RoleResponse struct {
	OK          bool   `json:"ok"`
	Pubkey      string `json:"pubkey"`
	DisplayName string `json:"displayName"`
	Role        string `json:"role"`
	Previous    string `json:"previous"`
	Changed     bool   `json:"changed"`
}

func (b *Broker) handleRole(w http.ResponseWriter, r *http.Request) {
	var req RoleRequest
	call, ok := b.memberRequest(w, r, &req)
	if !ok {
		return
	}
	switch {
	case call.member.Pubkey != call.mesh.OwnerPubkey:
		writeHTTPError(w, http.StatusForbidden, codeForbidden, "only the mesh owner can change roles")
		return
	case req.Role != roleAdmin && req.Role != roleMember:
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, fmt.Sprintf("role must be admin or member, not %q", req.Role))
		return
	case req.Member == "":
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, "name the member whose role changes")
		return
	}

	b.rolesMu.Lock()
	defer b.rolesMu.Unlock()
	m, code, problem := b.resolveMember(call.mesh.ID, req.Member, false) // fresh, under the lock
	if code != "" {
		writeLookupError(w, code, problem)
		return
	}
	if m.Pubkey == call.mesh.OwnerPubkey {
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, "the mesh owner is always an admin")
		return
	}
	resp := RoleResponse{OK: true, Pubkey: m.Pubkey, DisplayName: m.DisplayName, Role: req.Role, Previous: m.Role, Changed: m.Role != req.Role}
	if !resp.Changed {
		writeJSON(w, http.StatusOK, resp)
		return
	}
	changed := auditEvent{MeshID: call.mesh.ID, Type: auditRoleChanged, Actor: call.member.Pubkey, CreatedAt: time.Now(), Payload: map[string]any{
		"memberId": m.ID, "pubkey": m.Pubkey, "displayName": m.DisplayName, "from": m.Role, "to": req.Role}}
	if err := b.store.SetMemberRole(r.Context(), call.mesh.ID, m.ID, req.Role, changed); err != nil {
		b.log.Error("set role", "err", err)
		writeStoreUnavailable(w)
		return
	}
	b.mu.Lock()
	b.roles[grantsKey(call.mesh.ID, m.ID)] = req.Role
	for _, p := range b.room(call.mesh.ID).peers {
		if p.memberID == m.ID {
			p.memberRole = req.Role
		}
	}
	b.publishLater(replicaEvent{Kind: replicaEventMember, Mesh: call.mesh.ID, Member: m.ID})
	b.mu.Unlock()
	writeJSON(w, http.StatusOK, resp)
}

// memberRoleOf is the role a connection of m has: the last change this
// broker made, when it made one (a handshake may have read the member
// before it), else the stored one. Caller holds b.mu.
func (b *Broker) memberRoleOf(meshID string, m storedMember) string {
	if role, ok := b.roles[grantsKey(meshID, m.ID)]; ok {
		return role
	}
	return m.Role
}
