// `claudemesh peer list`, `claudemesh members` and `claudemesh whoami`.
//
// Policy: control-plane rows (daemon member links, cold-path
// CLIs) are hidden unless --all, and the header says how many were hidden;
// a row whose name now comes with another member key than the one this
// machine first saw with it is marked (cli_verify.go);
// this session comes first and is marked; the member's other sessions are
// tagged sid:<8>; role and groups are always shown; --mesh really scopes
// (the daemon filters). whoami never prints a secret.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// peerRecord is one peer row as the CLI shows it: the broker's fields
// plus mesh, isSelf and isThisSession.
type peerRecord map[string]any

func (p peerRecord) str(k string) string {
	s, _ := p[k].(string)
	return s
}

// meshPeers is one mesh's peers, or why they could not be listed.
type meshPeers struct {
	Mesh  string
	Peers []peerRecord
	Err   string
}

// selfKeys is what marks our own rows.
type selfKeys struct {
	members       map[string]bool // our member keys, from the config
	sessionPubkey string          // this session's key, when in a session
}

// peersWithSelf lists the peers (listPeers) and the keys that mark our own
// rows among them: the config's member keys, and the session's.
func (c *cli) peersWithSelf(ctx context.Context, cfg *Config, mesh string) ([]meshPeers, selfKeys, error) {
	self := selfKeys{members: map[string]bool{}}
	for _, m := range cfg.Meshes {
		self.members[m.Pubkey] = true
	}
	groups, err := c.listPeers(ctx, cfg, mesh, &self)
	return groups, self, err
}

// annotatePeers marks self rows, defaults peerRole and lifts profile.role,
// then orders: this session, our other sessions, everyone else.
func annotatePeers(rows []peerRecord, self selfKeys) {
	for _, r := range rows {
		r["isSelf"] = self.members[r.str("memberPubkey")]
		r["isThisSession"] = self.sessionPubkey != "" && r.str("pubkey") == self.sessionPubkey
		if r.str("peerRole") == "" {
			r["peerRole"] = peerRoleSession
		}
		if prof, ok := r["profile"].(map[string]any); ok {
			if role, ok := prof["role"].(string); ok && role != "" && r.str("role") == "" {
				r["role"] = role
			}
			// How messages reach this session's model, lifted as role is.
			if path, ok := prof["surfacing"].(string); ok && path != "" && r.str("surfacing") == "" {
				r["surfacing"] = path
			}
		}
	}
	rank := func(r peerRecord) int {
		switch {
		case r["isThisSession"] == true:
			return 0
		case r["isSelf"] == true:
			return 1
		}
		return 2
	}
	sort.SliceStable(rows, func(i, j int) bool { return rank(rows[i]) < rank(rows[j]) })
}

// visiblePeers drops control-plane rows unless all; it returns how many
// were hidden.
func visiblePeers(rows []peerRecord, all bool) ([]peerRecord, int) {
	if all {
		return rows, 0
	}
	out := []peerRecord{}
	hidden := 0
	for _, r := range rows {
		if r.str("peerRole") == peerRoleControlPlane {
			hidden++
			continue
		}
		out = append(out, r)
	}
	return out, hidden
}

// projectPeer keeps the requested fields (`name` means displayName).
func projectPeer(r peerRecord, fields []string) map[string]any {
	out := map[string]any{}
	for _, f := range fields {
		key := f
		if f == "name" {
			key = "displayName"
		}
		if v, ok := r[key]; ok {
			out[f] = v
		} else {
			out[f] = nil
		}
	}
	return out
}

func setupPeerList(fs *flagSet) runFunc {
	var mesh string
	var all bool
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	fs.BoolVar(&all, "all", false, "include control-plane rows (daemons, one-shot CLI connections)")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			err := usageError("'peer list' takes no arguments")
			if c.jsonMode() {
				// `--json name,status` (a space): the list needs an '='.
				return withHint(err, "for a field list write --json="+args[0])
			}
			return err
		}
		cfg, err := c.loadUserConfig()
		if err != nil {
			return err
		}
		if err := c.needMesh(mesh); err != nil {
			return err
		}
		groups, self, err := c.peersWithSelf(ctx, cfg, mesh)
		if err != nil {
			return err
		}
		c.markKeyChanges(cfg, groups, self)
		return c.printPeers(groups, self, all)
	}
}

// listPeers gets peers per mesh from the daemon, else from the brokers.
func (c *cli) listPeers(ctx context.Context, cfg *Config, mesh string, self *selfKeys) ([]meshPeers, error) {
	cl, err := c.daemon(ctx)
	if err != nil {
		return nil, err
	}
	if cl != nil {
		me, err := cl.SessionMe(ctx)
		if err != nil {
			return nil, ipcFailure(err)
		}
		if me != nil && me.Presence != nil {
			self.sessionPubkey = me.Presence.SessionPubkey
		}
		if me != nil && me.MemberPubkey != "" {
			self.members[me.MemberPubkey] = true
		}
		resp, err := callIPC(ctx, cl, apiPeers, MeshQuery{Mesh: mesh})
		if err != nil {
			return nil, ipcFailure(err)
		}
		byMesh := map[string]*meshPeers{}
		var order []string
		add := func(slug string) *meshPeers {
			if g, ok := byMesh[slug]; ok {
				return g
			}
			g := &meshPeers{Mesh: slug, Peers: []peerRecord{}}
			byMesh[slug] = g
			order = append(order, slug)
			return g
		}
		// Meshes with no rows still get a (empty) section.
		if mesh != "" {
			add(mesh)
		} else if me != nil {
			add(me.Mesh)
		}
		for _, p := range resp.Peers {
			rec, err := p.object()
			if err != nil {
				return nil, fmt.Errorf("daemon sent a bad peer row: %w", err)
			}
			g := add(p.Mesh)
			g.Peers = append(g.Peers, rec)
		}
		for slug, e := range resp.Errors {
			add(slug).Err = e
		}
		sort.Strings(order)
		out := make([]meshPeers, 0, len(order))
		for _, s := range order {
			out = append(out, *byMesh[s])
		}
		return out, nil
	}
	var meshes []Mesh
	if mesh != "" {
		m, err := c.coldMesh(mesh)
		if err != nil {
			return nil, err
		}
		meshes = []Mesh{m}
	} else {
		meshes = cfg.Meshes
	}
	if len(meshes) == 0 {
		return nil, errNoMeshJoined()
	}
	var out []meshPeers
	for _, m := range meshes {
		g := meshPeers{Mesh: m.Slug, Peers: []peerRecord{}}
		err := c.withCold(ctx, m, func(cl *ColdLink) error {
			raw, err := coldRequest(ctx, cl, ListPeersFrame{Type: frameListPeers}, framePeersList)
			if err != nil {
				return err
			}
			var f struct {
				Peers []peerRecord `json:"peers"`
			}
			if err := json.Unmarshal(raw, &f); err != nil {
				return err
			}
			for _, p := range f.Peers {
				p["mesh"] = m.Slug
				g.Peers = append(g.Peers, p)
			}
			return nil
		})
		if err != nil {
			if len(meshes) == 1 {
				return nil, err
			}
			g.Err = err.Error()
		}
		out = append(out, g)
	}
	return out, nil
}

func (c *cli) printPeers(groups []meshPeers, self selfKeys, all bool) error {
	if len(groups) == 1 && groups[0].Err != "" {
		return exitError(exitNetwork, fmt.Errorf("mesh %s: %s", groups[0].Mesh, groups[0].Err))
	}
	type shown struct {
		meshPeers
		hidden int
	}
	var views []shown
	for _, g := range groups {
		annotatePeers(g.Peers, self)
		rows, hidden := visiblePeers(g.Peers, all)
		g.Peers = rows
		views = append(views, shown{g, hidden})
	}
	if c.jsonMode() {
		render := func(rows []peerRecord) []any {
			out := []any{}
			for _, r := range rows {
				if c.global.json.fields != nil {
					out = append(out, projectPeer(r, c.global.json.fields))
				} else {
					out = append(out, r)
				}
			}
			return out
		}
		if len(views) == 1 {
			return c.printJSON(render(views[0].Peers))
		}
		var out []map[string]any
		for _, v := range views {
			m := map[string]any{"mesh": v.Mesh, "peers": render(v.Peers)}
			if v.Err != "" {
				m["error"] = v.Err
			}
			out = append(out, m)
		}
		return c.printJSON(out)
	}
	if len(views) == 0 {
		c.printf("no peers: no mesh joined\n")
		return nil
	}
	for i, v := range views {
		if i > 0 {
			c.printf("\n")
		}
		if v.Err != "" {
			c.printf("%s mesh %s: %s\n", c.paint(colorRed, "✘"), v.Mesh, terminalLine(v.Err))
			continue
		}
		header := fmt.Sprintf("peers on %s (%d", v.Mesh, len(v.Peers))
		if v.hidden > 0 {
			header += fmt.Sprintf(", %d control-plane hidden — use --all", v.hidden)
		}
		c.printf("%s\n", c.paint(colorBold, header+")"))
		for _, p := range v.Peers {
			c.printf("%s\n", c.peerLine(p))
		}
	}
	return nil
}

// peerLine renders one peer: a status dot, name, markers, key, summary,
// then the role/groups and cwd lines.
func (c *cli) peerLine(p peerRecord) string {
	text := func(k string) string { return terminalLine(p.str(k)) } // a peer's own words
	dot := c.paint(colorGreen, "●")
	switch p.str("status") {
	case statusWorking:
		dot = c.paint(colorYellow, "●")
	case statusDND:
		dot = c.paint(colorRed, "●")
	}
	var b strings.Builder
	name := cmp.Or(text("displayName"), "(unnamed)")
	fmt.Fprintf(&b, "  %s %s", dot, c.paint(colorBold, name))
	if p["isThisSession"] == true {
		b.WriteString(" (this session)")
	} else if p["isSelf"] == true && p.str("peerRole") == peerRoleControlPlane {
		b.WriteString(" (you)")
	}
	var kinds []string
	for _, k := range []string{"peerType", "channel"} {
		if v := text(k); v != "" {
			kinds = append(kinds, v)
		}
	}
	if p.str("peerRole") == peerRoleControlPlane {
		kinds = append(kinds, peerRoleControlPlane)
	}
	if len(kinds) > 0 {
		b.WriteString(" (" + strings.Join(kinds, ", ") + ")")
	}
	if pk := text("pubkey"); pk != "" {
		b.WriteString(" · " + shortKey(pk))
	}
	if p["isSelf"] == true && p.str("peerRole") == peerRoleSession {
		if sid := text("sessionId"); sid != "" {
			b.WriteString(" · sid:" + shortID(sid))
		}
	}
	if s := text("summary"); s != "" {
		b.WriteString(" — " + s)
	}
	if p["keyChanged"] == true {
		fmt.Fprintf(&b, "\n     %s its member key changed since this machine first saw %s (was %s): check with claudemesh verify %s",
			c.paint(colorYellow, "⚠"), name, shortKey(p.str("knownMemberPubkey")), shellQuote(p.str("displayName")))
	}
	fmt.Fprintf(&b, "\n     role: %s  groups: %s", noneIfEmpty(text("role")), noneIfEmpty(terminalLine(groupLabels(p["groups"]))))
	if path := text("surfacing"); path != "" {
		b.WriteString("  messages: " + surfacingLabel(path))
	}
	if cwd := text("cwd"); cwd != "" {
		fmt.Fprintf(&b, "\n     cwd: %s", cwd)
	}
	return b.String()
}

// surfacingLabel says what a session's surfacing path means for a sender.
func surfacingLabel(path string) string {
	switch path {
	case surfacedViaChannel:
		return "channel (live, mid-turn)"
	case surfacedViaHooks:
		return "hooks (with its next prompt or tool call)"
	case surfacedViaPull:
		return "pull (only when it runs claudemesh inbox)"
	}
	return path
}

// groupLabels renders a decoded peers_list groups value as "@name:role, @other".
func groupLabels(v any) string {
	var raw []json.RawMessage
	if b, err := json.Marshal(v); err == nil {
		_ = json.Unmarshal(b, &raw)
	}
	return strings.Join(formatGroups(raw), ", ")
}

// whoamiDoc is `whoami --json`, snake_case throughout.
type whoamiDoc struct {
	Local struct {
		ConfigPath string       `json:"config_path"`
		Meshes     []whoamiMesh `json:"meshes"`
	} `json:"local"`
	Session *whoamiSession `json:"session"` // null outside a launched session
}

// whoamiMesh is one of this machine's identities.
type whoamiMesh struct {
	Slug         string `json:"slug"`
	MeshID       string `json:"mesh_id"`
	MemberID     string `json:"member_id"`
	Pubkey       string `json:"pubkey"`
	PubkeyPrefix string `json:"pubkey_prefix"`
	BrokerURL    string `json:"broker_url"`
}

// whoamiSession is the launched session as whoami shows it: never a
// secret, and not the token itself.
type whoamiSession struct {
	SessionID     string    `json:"session_id"`
	Mesh          string    `json:"mesh"`
	DisplayName   string    `json:"display_name"`
	Pid           int       `json:"pid"`
	Cwd           string    `json:"cwd,omitempty"`
	Role          string    `json:"role,omitempty"`
	Groups        []string  `json:"groups"`
	SessionPubkey string    `json:"session_pubkey,omitempty"`
	MemberPubkey  string    `json:"member_pubkey,omitempty"`
	Link          LinkState `json:"link,omitempty"`
	RegisteredAt  int64     `json:"registered_at"` // ms
	TokenPrefix   string    `json:"token_prefix"`
}

func whoamiSessionOf(v *sessionView) *whoamiSession {
	if v == nil {
		return nil
	}
	s := &whoamiSession{SessionID: v.SessionID, Mesh: v.Mesh, DisplayName: v.DisplayName, Pid: v.Pid, Cwd: v.Cwd, Role: v.Role,
		Groups: nonNil(v.Groups), MemberPubkey: v.MemberPubkey, Link: v.Link, RegisteredAt: v.RegisteredAt, TokenPrefix: v.TokenPrefix}
	if v.Presence != nil {
		s.SessionPubkey = v.Presence.SessionPubkey
	}
	return s
}

// whoami: this machine's identities and, inside a launched session, the
// session's — never a secret key.
func setupWhoami(fs *flagSet) runFunc {
	return func(ctx context.Context, c *cli, args []string) error {
		cfg, err := c.loadUserConfig()
		if err != nil {
			return err
		}
		local := []whoamiMesh{}
		for _, m := range cfg.Meshes {
			local = append(local, whoamiMesh{m.Slug, m.MeshID, m.MemberID, m.Pubkey, shortKey(m.Pubkey), m.BrokerURL})
		}
		var session *sessionView
		if id := callerIdentityFromEnv(c.env.Getenv); id != (callerIdentity{}) {
			cl, err := c.daemon(ctx)
			if err != nil {
				return err
			}
			if cl != nil {
				if session, err = cl.SessionMe(ctx); err != nil {
					return ipcFailure(err)
				}
			}
		}
		if c.jsonMode() {
			doc := whoamiDoc{Session: whoamiSessionOf(session)}
			doc.Local.ConfigPath, doc.Local.Meshes = c.Paths().ConfigFile(), local
			if err := c.printJSON(doc); err != nil {
				return err
			}
		} else {
			if session != nil {
				c.printf("%s\n", c.paint(colorBold, "this session"))
				c.printf("  name:        %s\n  session id:  %s\n  mesh:        %s\n", terminalLine(session.DisplayName), terminalLine(session.SessionID), session.Mesh)
				if session.Presence != nil {
					c.printf("  pubkey:      %s\n", session.Presence.SessionPubkey)
				}
				c.printf("  role:        %s\n  groups:      %s\n", noneIfEmpty(terminalLine(session.Role)), noneIfEmpty(terminalLine(strings.Join(session.Groups, ", "))))
				c.printf("  cwd:         %s\n  pid:         %d\n", noneIfEmpty(terminalLine(session.Cwd)), session.Pid)
				if session.Link != "" {
					c.printf("  link:        %s\n", session.Link)
				}
			}
			c.printf("%s %d mesh(es) · %s\n", c.paint(colorBold, "local"), len(local), c.Paths().ConfigFile())
			for _, m := range local {
				c.printf("  ● %s  member %s  pk %s\n", m.Slug, shortID(m.MemberID), m.PubkeyPrefix)
			}
		}
		if len(local) == 0 && session == nil {
			return exitError(exitAuth, errors.New("no identity here: no mesh joined and not in a session"),
				"create a mesh with 'claudemesh init' or join one with 'claudemesh join <invite>'")
		}
		return nil
	}
}

func noneIfEmpty(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func setupMembers(fs *flagSet) runFunc {
	var mesh string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("'members' takes no arguments")
		}
		var reply MembersReply
		err := c.warmOrCold(ctx, mesh, func(cl *DaemonClient) error {
			r, err := callIPC(ctx, cl, apiMembers, MeshQuery{Mesh: mesh})
			if err != nil {
				return ipcFailure(err)
			}
			reply = r
			return nil
		}, func(m Mesh, cl *ColdLink) error {
			list, complete, err := coldMembers(ctx, cl)
			if err != nil {
				return err
			}
			reply = MembersReply{Members: []MeshRow[MemberRow]{}, Partial: []string{}}
			for _, r := range list {
				reply.Members = append(reply.Members, meshRowOf(r, m.Slug))
			}
			if !complete {
				reply.Partial = append(reply.Partial, m.Slug)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if c.jsonMode() {
			return c.printJSON(reply)
		}
		return c.printMembers(reply)
	}
}

// printMembers shows each mesh's members: online first, then by name.
func (c *cli) printMembers(reply MembersReply) error {
	byMesh := map[string][]MemberRow{}
	for _, r := range reply.Members {
		byMesh[r.Mesh] = append(byMesh[r.Mesh], r.Row)
	}
	for slug := range reply.Errors {
		if _, listed := byMesh[slug]; !listed {
			byMesh[slug] = nil
		}
	}
	slugs := make([]string, 0, len(byMesh))
	for s := range byMesh {
		slugs = append(slugs, s)
	}
	sort.Strings(slugs)
	if len(slugs) == 0 {
		c.printf("no members: no mesh joined\n")
		return nil
	}
	for i, slug := range slugs {
		if i > 0 {
			c.printf("\n")
		}
		if e, failed := reply.Errors[slug]; failed {
			c.printf("%s mesh %s: %s\n", c.paint(colorRed, "✘"), slug, terminalLine(e))
			continue
		}
		rows := byMesh[slug]
		sort.SliceStable(rows, func(i, j int) bool {
			if rows[i].Online != rows[j].Online {
				return rows[i].Online
			}
			return strings.ToLower(rows[i].DisplayName) < strings.ToLower(rows[j].DisplayName)
		})
		online := 0
		for _, r := range rows {
			if r.Online {
				online++
			}
		}
		header := fmt.Sprintf("members of %s (%d, %d online)", slug, len(rows), online)
		if slices.Contains(reply.Partial, slug) {
			header = fmt.Sprintf("members of %s online now (%d) — its broker does not list members who are away", slug, len(rows))
		}
		c.printf("%s\n", c.paint(colorBold, header))
		for _, r := range rows {
			dot := c.paint(colorGreen, "●")
			if !r.Online {
				dot = c.paint(colorDim, "○")
			}
			line := fmt.Sprintf("  %s %s", dot, cmp.Or(terminalLine(r.DisplayName), "(unnamed)"))
			if r.Role != "" {
				line += "  " + terminalLine(r.Role)
			}
			line += "  " + shortKey(r.Pubkey)
			if !r.Online {
				line += "  offline"
			}
			c.printf("%s\n", line)
		}
	}
	return nil
}

// coldMembers is listMembers over a one-shot broker connection.
func coldMembers(ctx context.Context, cl *ColdLink) ([]MemberRow, bool, error) {
	if !hasFeature(cl.Features, featureListMembers) {
		raw, err := coldRequest(ctx, cl, ListPeersFrame{Type: frameListPeers}, framePeersList)
		if err != nil {
			return nil, false, err
		}
		var f PeersListFrame
		if err := json.Unmarshal(raw, &f); err != nil {
			return nil, false, fmt.Errorf("bad peers_list: %w", err)
		}
		return membersFromPeers(f.Peers), false, nil
	}
	raw, err := coldRequest(ctx, cl, ListMembersFrame{Type: frameListMembers}, frameMembersList)
	if err != nil {
		return nil, false, err
	}
	members, err := decodeMembersList(raw)
	return members, true, err
}
