// The daemon as `claudemesh mcp` sees it: mcpDaemon implemented over the
// IPC client, with the session token of the launched session behind this
// server.
//
// Policy: every call has its own deadline, shorter than the IPC client's,
// so that a stuck daemon delays a welcome or a tool call by seconds, never
// hangs the session; giving back a claim gets the shortest, as it is
// best-effort. The event stream has no deadline: it lives until the server
// stops.
package main

import (
	"context"
	"io"
	"net/http"
	"time"
)

// Deadlines of the MCP server's daemon calls.
const (
	mcpReadTimeout      = 5 * time.Second
	mcpSendTimeout      = 8 * time.Second
	mcpUnsurfaceTimeout = 3 * time.Second
)

// daemonMCP implements mcpDaemon on a DaemonClient that carries the
// session token.
type daemonMCP struct {
	cl *DaemonClient
}

var _ mcpDaemon = daemonMCP{}

// read runs one read-only call under the read deadline.
func read[Req, Rep any](ctx context.Context, d daemonMCP, ep ipcEndpoint[Req, Rep], in Req) (Rep, error) {
	ctx, cancel := context.WithTimeout(ctx, mcpReadTimeout)
	defer cancel()
	return callIPC(ctx, d.cl, ep, in)
}

// Skills lists the mesh's skills (the session's mesh when it has one).
func (d daemonMCP) Skills(ctx context.Context) ([]Skill, error) {
	resp, err := read(ctx, d, apiSkills, SkillsQuery{})
	if err != nil {
		return nil, err
	}
	return rowsOf(resp.Skills), nil
}

// Skill fetches one skill with its instructions; ok is false when no mesh
// has it.
func (d daemonMCP) Skill(ctx context.Context, name string) (Skill, bool, error) {
	resp, err := read(ctx, d, apiSkill, SkillRequest{Name: name})
	if ipcStatus(err) == http.StatusNotFound {
		return Skill{}, false, nil
	}
	if err != nil {
		return Skill{}, false, err
	}
	return resp.Skill.Row, true, nil
}

// Send queues a message through the daemon's outbox.
func (d daemonMCP) Send(ctx context.Context, req SendRequest) (SendReply, error) {
	ctx, cancel := context.WithTimeout(ctx, mcpSendTimeout)
	defer cancel()
	return callIPC(ctx, d.cl, apiSend, req)
}

// Message reads one sent message's ladder, waiting as long as asked on
// top of the read deadline.
func (d daemonMCP) Message(ctx context.Context, q MessageQuery) (MessageReply, error) {
	return callIPCWithin(ctx, d.cl, mcpReadTimeout+time.Duration(q.WaitMs)*time.Millisecond, apiMessage, q)
}

// Peers lists a mesh's peers ("" = the session's mesh, else every mesh).
func (d daemonMCP) Peers(ctx context.Context, mesh string) ([]PeerRow, error) {
	resp, err := read(ctx, d, apiPeers, MeshQuery{Mesh: mesh})
	if err != nil {
		return nil, err
	}
	return rowsOf(resp.Peers), nil
}

// Inbox reads the session's inbox rows, newest first.
func (d daemonMCP) Inbox(ctx context.Context, q InboxQuery) ([]inboxItem, error) {
	resp, err := read(ctx, d, apiInbox, q)
	if err != nil {
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
	self := mcpSelf{DisplayName: v.DisplayName, Role: v.Role, Mesh: v.Mesh, HookWelcomed: v.HookWelcomed}
	if v.Presence != nil {
		self.SessionPubkey = v.Presence.SessionPubkey
	}
	return self, true, nil
}

// Surface claims rows for the channel path.
func (d daemonMCP) Surface(ctx context.Context, ids []string, limit int) ([]inboxItem, error) {
	resp, err := read(ctx, d, apiSurface, SurfaceRequest{Via: surfacedViaChannel, IDs: ids, Limit: positive(limit)})
	if err != nil {
		return nil, err
	}
	return resp.Items, nil
}

// Unsurface gives back claims whose emit failed.
func (d daemonMCP) Unsurface(ctx context.Context, ids []string) error {
	ctx, cancel := context.WithTimeout(ctx, mcpUnsurfaceTimeout)
	defer cancel()
	_, err := callIPC(ctx, d.cl, apiUnsurface, UnsurfaceRequest{IDs: ids})
	return err
}

// ClaimWelcome takes (or gives back) the session's welcome for the channel.
func (d daemonMCP) ClaimWelcome(ctx context.Context, release bool) (WelcomeClaimReply, error) {
	ctx, cancel := context.WithTimeout(ctx, mcpReadTimeout)
	defer cancel()
	return callIPC(ctx, d.cl, apiWelcome, WelcomeClaimRequest{Release: release})
}

// rowsOf is the rows of a list, without their meshes.
func rowsOf[T any](rows []MeshRow[T]) []T {
	out := make([]T, 0, len(rows))
	for _, r := range rows {
		out = append(out, r.Row)
	}
	return out
}

// ReportMCP tells the daemon what this server negotiated.
func (d daemonMCP) ReportMCP(ctx context.Context, r MCPReport) error {
	ctx, cancel := context.WithTimeout(ctx, mcpReadTimeout)
	defer cancel()
	_, err := callIPC(ctx, d.cl, apiSessionMCP, r)
	return err
}
