// The daemon as `claudemesh mcp` sees it: mcpDaemon implemented over the
// IPC client, with the session token of the launched session behind this
// server.
//
// Policy: every call has its own deadline, shorter than the IPC client's,
// so that a stuck daemon delays a welcome or a tool call by seconds, never
// hangs the session; marking rows seen gets the shortest, as it is
// best-effort. The event stream has no deadline: it lives until the server
// stops.
package main

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Deadlines of the MCP server's daemon calls.
const (
	mcpReadTimeout     = 5 * time.Second
	mcpSendTimeout     = 8 * time.Second
	mcpMarkSeenTimeout = 3 * time.Second
)

// daemonMCP implements mcpDaemon on a DaemonClient that carries the
// session token.
type daemonMCP struct {
	cl *DaemonClient
}

var _ mcpDaemon = daemonMCP{}

func (d daemonMCP) get(ctx context.Context, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, mcpReadTimeout)
	defer cancel()
	return d.cl.Do(ctx, "GET", path, nil, out)
}

// Skills lists the mesh's skills (the session's mesh when it has one).
func (d daemonMCP) Skills(ctx context.Context) ([]Skill, error) {
	var resp struct {
		Skills []Skill `json:"skills"`
	}
	if err := d.get(ctx, "/v1/skills", &resp); err != nil {
		return nil, err
	}
	return resp.Skills, nil
}

// Skill fetches one skill with its instructions; ok is false when no mesh
// has it.
func (d daemonMCP) Skill(ctx context.Context, name string) (Skill, bool, error) {
	var resp struct {
		Skill Skill `json:"skill"`
	}
	err := d.get(ctx, "/v1/skills/"+url.PathEscape(name), &resp)
	if ipcStatus(err) == http.StatusNotFound {
		return Skill{}, false, nil
	}
	if err != nil {
		return Skill{}, false, err
	}
	return resp.Skill, true, nil
}

// Send queues a message through the daemon's outbox.
func (d daemonMCP) Send(ctx context.Context, req mcpSendRequest) (mcpSendResult, error) {
	ctx, cancel := context.WithTimeout(ctx, mcpSendTimeout)
	defer cancel()
	var res mcpSendResult
	err := d.cl.Do(ctx, "POST", "/v1/send", req, &res)
	return res, err
}

// Peers lists a mesh's peers ("" = the session's mesh, else every mesh).
func (d daemonMCP) Peers(ctx context.Context, mesh string) ([]PeerRow, error) {
	var resp struct {
		Peers []PeerRow `json:"peers"`
	}
	if err := d.get(ctx, ipcPath("/v1/peers", "mesh", mesh), &resp); err != nil {
		return nil, err
	}
	return resp.Peers, nil
}

// Inbox reads the session's inbox rows, newest first.
func (d daemonMCP) Inbox(ctx context.Context, q mcpInboxQuery) ([]mcpInboxItem, error) {
	kv := []string{"mesh", q.Mesh, "mark_seen", strconv.FormatBool(q.MarkSeen)}
	if q.UnreadOnly {
		kv = append(kv, "unread_only", "true")
	}
	if q.Limit > 0 {
		kv = append(kv, "limit", strconv.Itoa(q.Limit))
	}
	var resp struct {
		Items []mcpInboxItem `json:"items"`
	}
	if err := d.get(ctx, ipcPath("/v1/inbox", kv...), &resp); err != nil {
		return nil, err
	}
	return resp.Items, nil
}

// Events opens the session's event stream.
func (d daemonMCP) Events(ctx context.Context) (io.ReadCloser, error) {
	return d.cl.OpenEvents(ctx)
}

// Me is the launched session behind the token.
func (d daemonMCP) Me(ctx context.Context) (mcpSelf, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, mcpReadTimeout)
	defer cancel()
	v, err := d.cl.SessionMe(ctx)
	if err != nil || v == nil {
		return mcpSelf{}, false, err
	}
	self := mcpSelf{DisplayName: v.DisplayName, Role: v.Role, Mesh: v.Mesh}
	if v.Presence != nil {
		self.SessionPubkey = v.Presence.SessionPubkey
	}
	return self, true, nil
}

// MarkSeen stamps inbox rows as read.
func (d daemonMCP) MarkSeen(ctx context.Context, ids []string) error {
	ctx, cancel := context.WithTimeout(ctx, mcpMarkSeenTimeout)
	defer cancel()
	return d.cl.Do(ctx, "POST", "/v1/inbox/seen", map[string]any{"ids": ids}, nil)
}
