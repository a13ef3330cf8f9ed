// `claudemesh grant`, `revoke` and `grants`: who may reach you. Each is one
// request to the mesh's broker, signed with this machine's member key
// (POST /cli/mesh/<mesh>/grants); the broker keeps the grants and enforces
// them when it routes a message to you (grants.go).
package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

type grantFlags struct {
	mesh  string
	reset bool
}

func setupGrant(fs *flagSet) runFunc {
	var f grantFlags
	fs.StringVar(&f.mesh, "mesh", "", "mesh slug")
	fs.BoolVar(&f.reset, "reset", false, "remove the peer's entry, so the defaults apply to it again")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) == 0 {
			return usageError("usage: claudemesh grant <peer> <capability…> (or --reset)")
		}
		req := GrantsRequest{Op: grantOpGrant, Peer: args[0], Caps: splitCaps(args[1:])}
		switch {
		case f.reset && len(req.Caps) > 0:
			return usageError("grant --reset takes no capabilities")
		case f.reset:
			req.Op = grantOpReset
		case len(req.Caps) == 0:
			return withHint(usageError("grant needs at least one capability"), "capabilities: "+strings.Join(allCapabilities, ", ")+", or all")
		}
		if _, err := normalizeCaps(req.Caps); err != nil {
			return usageError("%v", err)
		}
		return c.changeGrants(ctx, f.mesh, req)
	}
}

func setupRevoke(fs *flagSet) runFunc {
	var mesh string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) == 0 {
			return usageError("usage: claudemesh revoke <peer> [capability…] (none named: every capability, which blocks the peer)")
		}
		req := GrantsRequest{Op: grantOpRevoke, Peer: args[0], Caps: splitCaps(args[1:])}
		if _, err := normalizeCaps(req.Caps); err != nil {
			return usageError("%v", err)
		}
		return c.changeGrants(ctx, mesh, req)
	}
}

func setupGrants(fs *flagSet) runFunc {
	var mesh string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("'grants' takes no arguments")
		}
		m, resp, err := c.grantsRequest(ctx, mesh, GrantsRequest{Op: grantOpList})
		if err != nil {
			return err
		}
		if c.jsonMode() {
			return c.printJSON(map[string]any{"mesh": m.Slug, "grants": resp.Grants, "defaults": resp.Defaults})
		}
		if len(resp.Grants) == 0 {
			c.printf("no grants on %s: every peer has the defaults (%s)\n", m.Slug, capsLabel(resp.Defaults))
			return nil
		}
		c.printf("%s\n", c.paint(colorBold, fmt.Sprintf("grants on %s (%d; everyone else: %s)", m.Slug, len(resp.Grants), capsLabel(resp.Defaults))))
		width := 0
		for _, e := range resp.Grants {
			width = max(width, len([]rune(grantName(e))))
		}
		for _, e := range resp.Grants {
			c.printf("  %-*s  %-7s  %s  %s\n", width, grantName(e), e.Kind, shortKey(e.Key), capsLabel(e.Caps))
		}
		c.printf("the broker refuses DMs from a peer without dm, and skips it in broadcasts and groups without broadcast\n")
		return nil
	}
}

// splitCaps reads capabilities given as words, commas or both.
func splitCaps(args []string) []string {
	var caps []string
	for _, a := range args {
		for _, c := range strings.Split(a, ",") {
			if c = strings.TrimSpace(c); c != "" {
				caps = append(caps, c)
			}
		}
	}
	return caps
}

// grantName is how an entry is shown: its name, else its key's start.
func grantName(e GrantEntry) string {
	if e.Name != "" {
		return terminalLine(e.Name)
	}
	return shortKey(e.Key)
}

// changeGrants runs a grant, revoke or reset and reports the entry.
func (c *cli) changeGrants(ctx context.Context, mesh string, req GrantsRequest) error {
	m, resp, err := c.grantsRequest(ctx, mesh, req)
	if err != nil {
		return err
	}
	e := resp.Changed
	if e == nil {
		return fmt.Errorf("the broker's answer names no changed entry")
	}
	if c.jsonMode() {
		return c.printJSON(map[string]any{"mesh": m.Slug, "op": req.Op, "changed": e, "grants": resp.Grants, "defaults": resp.Defaults})
	}
	who := fmt.Sprintf("%s (%s %s)", grantName(*e), e.Kind, shortKey(e.Key))
	switch {
	case e.Default:
		c.printf("%s %s has the defaults again on %s: %s\n", c.paint(colorGreen, "✔"), who, m.Slug, capsLabel(e.Caps))
	case len(e.Caps) == 0:
		c.printf("%s %s is blocked on %s: the broker refuses its DMs and skips you in its broadcasts\n", c.paint(colorGreen, "✔"), who, m.Slug)
		c.printf("  undo: claudemesh grant %s --reset --mesh %s\n", shellQuote(req.Peer), m.Slug)
	default:
		c.printf("%s %s may now on %s: %s\n", c.paint(colorGreen, "✔"), who, m.Slug, capsLabel(e.Caps))
	}
	return nil
}

// grantsRequest signs req with the mesh's member key and sends it to the
// mesh's broker.
func (c *cli) grantsRequest(ctx context.Context, mesh string, req GrantsRequest) (Mesh, GrantsResponse, error) {
	var resp GrantsResponse
	m, err := c.coldMesh(mesh)
	if err != nil {
		return m, resp, err
	}
	if err := memberPost(ctx, m, "grants", &req, &resp); err != nil {
		var be *brokerError
		wrapped := brokerExit(err, "the broker refused the request")
		if errors.As(err, &be) && be.Code == codeNotFound {
			wrapped = withHint(wrapped, "see 'claudemesh members' and 'claudemesh peer list' for who is on "+m.Slug)
		}
		return m, resp, wrapped
	}
	return m, resp, nil
}

// memberPost signs req with m's member key and POSTs it to
// /cli/mesh/<mesh id>/<route> on m's broker.
func memberPost(ctx context.Context, m Mesh, route string, req signedRequest, out any) error {
	kp, err := m.Keypair()
	if err != nil {
		return exitError(exitIO, err)
	}
	base, err := brokerHTTPBase(m.BrokerURL)
	if err != nil {
		return exitError(exitIO, err)
	}
	path := "/cli/mesh/" + m.MeshID + "/" + route
	if err := signMemberRequest(kp, path, req, time.Now()); err != nil {
		return err
	}
	tlsConf, err := meshTLSConfig(m)
	if err != nil {
		return exitError(exitUsage, err)
	}
	return postBrokerTLS(ctx, tlsConf, base, path, nil, req, out)
}
