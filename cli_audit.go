// `claudemesh audit [--mesh] [--verify]`: a mesh's audit log, for its owner
// and admins. The entries come from the mesh's broker (a request signed
// with this machine's member key); --verify recomputes the whole hash chain
// here, so a log changed on the broker's disk is caught by the reader, not
// vouched for by the broker that holds it.
package main

import (
	"context"
	"fmt"
	"strings"
)

type auditFlags struct {
	mesh   string
	verify bool
	limit  int
}

func setupAudit(fs *flagSet) runFunc {
	var f auditFlags
	fs.StringVar(&f.mesh, "mesh", "", "mesh slug")
	fs.BoolVar(&f.verify, "verify", false, "recompute the whole hash chain and name the first entry that does not hold")
	fs.IntVar(&f.limit, "limit", 50, "show the last N entries (1..1000)")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("'audit' takes no arguments")
		}
		if f.limit < 1 || f.limit > auditPage {
			return usageError("--limit must be 1..%d", auditPage)
		}
		m, err := c.coldMesh(f.mesh)
		if err != nil {
			return err
		}
		entries, meshID, err := fetchAuditLog(ctx, m)
		if err != nil {
			return brokerExit(err, "the broker refused the audit log")
		}
		if f.verify {
			return c.reportAuditVerify(m, meshID, entries)
		}
		shown := entries[max(0, len(entries)-f.limit):]
		if c.jsonMode() {
			return c.printJSON(map[string]any{"mesh": m.Slug, "meshId": meshID, "total": len(entries), "entries": shown})
		}
		if len(entries) == 0 {
			c.printf("the audit log of %s is empty\n", m.Slug)
			return nil
		}
		header := fmt.Sprintf("audit log of %s (%d entries", m.Slug, len(entries))
		if len(shown) < len(entries) {
			header += fmt.Sprintf(", the last %d shown — use --limit", len(shown))
		}
		c.printf("%s\n", c.paint(colorBold, header+")"))
		for _, e := range shown {
			actor := "-"
			if e.Actor != nil {
				actor = shortKey(*e.Actor)
			}
			c.printf("  #%-4d %s  %-14s %s  %s\n", e.ID, e.CreatedAt, e.EventType, actor, terminalLine(payloadSummary(e)))
		}
		c.printf("hint: 'claudemesh audit --verify' checks the whole hash chain\n")
		return nil
	}
}

// fetchAuditLog reads a mesh's whole audit log, page by page.
func fetchAuditLog(ctx context.Context, m Mesh) ([]AuditEntry, string, error) {
	var all []AuditEntry
	var after int64
	for {
		var resp AuditResponse
		if err := memberPost(ctx, m, "audit", &AuditRequest{After: after}, &resp); err != nil {
			return nil, "", err
		}
		all = append(all, resp.Entries...)
		if !resp.More || len(resp.Entries) == 0 {
			return all, resp.MeshID, nil
		}
		after = resp.Entries[len(resp.Entries)-1].ID
	}
}

// reportAuditVerify prints the chain's verdict; a broken chain exits 1.
func (c *cli) reportAuditVerify(m Mesh, meshID string, entries []AuditEntry) error {
	broken := verifyAuditChain(meshID, entries)
	head := auditGenesis
	if len(entries) > 0 {
		head = entries[len(entries)-1].Hash
	}
	if c.jsonMode() {
		doc := map[string]any{"mesh": m.Slug, "meshId": meshID, "total": len(entries), "verified": broken == nil, "head": head}
		if broken != nil {
			doc["brokenAt"] = map[string]any{"id": broken.Entry.ID, "eventType": broken.Entry.EventType,
				"createdAt": broken.Entry.CreatedAt, "reason": broken.Reason}
		}
		if err := c.printJSON(doc); err != nil {
			return err
		}
		if broken != nil {
			return silentExit(exitFailure)
		}
		return nil
	}
	if broken != nil {
		return exitError(exitFailure, fmt.Errorf("the audit log of %s does not verify: %w", m.Slug, broken),
			fmt.Sprintf("entries #1..#%d verify; from #%d on the log is not what was written", broken.Entry.ID-1, broken.Entry.ID))
	}
	c.printf("%s audit log of %s verifies: %d entries, chain head %s\n", c.paint(colorGreen, "✔"), m.Slug, len(entries), shortKey(head))
	return nil
}

// payloadSummary is an entry's payload on one line, cut to a width.
func payloadSummary(e AuditEntry) string {
	s := strings.TrimSuffix(strings.TrimPrefix(string(e.Payload), "{"), "}")
	const width = 100
	if r := []rune(s); len(r) > width {
		s = string(r[:width]) + "…"
	}
	return s
}
