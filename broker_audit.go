// The audit log's read route: POST /cli/mesh/<slug>/audit, signed by a
// member who is the mesh's owner or an admin, pages through the mesh's
// chain oldest first. The entries are appended where their events happen
// (mesh creation, joins, invites, moderation, grants), in the same store
// transaction as the change they record.
package main

import (
	"fmt"
	"net/http"
)

// AuditRequest asks for the entries after After, at most Limit of them.
type AuditRequest struct {
	MemberRequest
	After int64 `json:"after,omitempty"`
	Limit int   `json:"limit,omitempty"`
}

// AuditResponse is one page of a mesh's audit log.
type AuditResponse struct {
	OK      bool         `json:"ok"`
	MeshID  string       `json:"meshId"`
	Entries []AuditEntry `json:"entries"`
	More    bool         `json:"more"` // entries follow the last of this page
}

// auditPage bounds one page of the audit log.
const auditPage = 1000

func (b *Broker) handleAudit(w http.ResponseWriter, r *http.Request) {
	var req AuditRequest
	call, ok := b.moderatorRequest(w, r, &req, "read the audit log")
	if !ok {
		return
	}
	if req.After < 0 || req.Limit < 0 || req.Limit > auditPage {
		writeHTTPError(w, http.StatusBadRequest, codeInvalid, fmt.Sprintf("after must be >= 0 and limit 1..%d", auditPage))
		return
	}
	limit := req.Limit
	if limit == 0 {
		limit = auditPage
	}
	entries, err := b.store.AuditLog(r.Context(), call.mesh.ID, req.After, limit+1)
	if err != nil {
		writeStoreUnavailable(w)
		return
	}
	more := len(entries) > limit
	if more {
		entries = entries[:limit]
	}
	writeJSON(w, http.StatusOK, AuditResponse{OK: true, MeshID: call.mesh.ID, Entries: nonNil(entries), More: more})
}
