// `claudemesh peer kick|disconnect|ban|unban`, top-level `kick`, `ban`,
// `unban`, and `bans`: moderation, spoken to the broker directly with the
// member key over a one-shot connection (the broker checks that the member
// is the mesh owner or an admin).
//
// Policy (claudemesh 1.34.15): kick ends sessions but leaves control-plane connections
// alone — a daemon would reconnect at once — and says which it refused,
// pointing at `claudemesh ban <peer>` or `claudemesh daemon down`;
// disconnect skips nothing and its targets reconnect on their own.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

type kickFlags struct {
	mesh, stale string
	all, yes    bool
}

// moderationYes is -y/--yes on the moderation verbs: they never ask, and
// take it so that scripts that pass it everywhere keep working.
const moderationYes = "do not ask for confirmation (this verb never asks)"

func setupKick(fs *flagSet) runFunc       { return setupKickLike(fs, frameKick) }
func setupDisconnect(fs *flagSet) runFunc { return setupKickLike(fs, frameDisconnect) }

func setupKickLike(fs *flagSet, verb string) runFunc {
	var f kickFlags
	fs.StringVar(&f.mesh, "mesh", "", "mesh slug")
	fs.StringVar(&f.stale, "stale", "", "everyone silent for longer than this (30s, 30m, 2h)")
	fs.BoolVar(&f.all, "all", false, "everyone on the mesh but you")
	yesFlag(fs, &f.yes, moderationYes)
	return func(ctx context.Context, c *cli, args []string) error {
		frame := KickFrame{Type: verb}
		modes := 0
		if len(args) > 0 {
			frame.Target = strings.Join(args, " ")
			modes++
		}
		if f.all {
			frame.All = true
			modes++
		}
		if f.stale != "" {
			d, err := parseLifetime(f.stale)
			if err != nil {
				return usageError("--stale takes a duration such as 30m, not %q", f.stale)
			}
			ms := d.Milliseconds()
			frame.Stale = &ms
			modes++
		}
		if modes != 1 {
			return usageError("usage: claudemesh %s <peer> | --all | --stale <duration>", verb)
		}
		var ack KickAckFrame
		m, err := c.moderate(ctx, f.mesh, frame, []string{frameKickAck, frameDisconnectAck}, &ack)
		if err != nil {
			return err
		}
		if ack.Kicked == nil {
			ack.Kicked = ack.Affected
		}
		nothing := len(ack.Kicked) == 0 && len(ack.SkippedControlPlane) == 0
		if nothing && frame.Target != "" {
			return exitError(exitNotFound, fmt.Errorf("no peer on %s matches %q", m.Slug, frame.Target), "see 'claudemesh peer list --all'")
		}
		if c.jsonMode() {
			return c.printJSON(map[string]any{"ok": true, "mesh": m.Slug, "verb": verb, "affected": nonNil(ack.Kicked),
				"skipped_control_plane": nonNil(ack.SkippedControlPlane)})
		}
		past := map[string]string{frameKick: "kicked", frameDisconnect: "disconnected"}[verb]
		if nothing {
			c.printf("no peers matched on %s\n", m.Slug)
			return nil
		}
		if len(ack.Kicked) > 0 {
			c.printf("%s %s %d peer(s) on %s: %s\n", c.paint(colorGreen, "✔"), past, len(ack.Kicked), m.Slug, terminalLine(strings.Join(ack.Kicked, ", ")))
			if verb == frameKick {
				c.printf("  they are out of the mesh (and told so); they come back by launching again\n")
			} else {
				c.printf("  they reconnect on their own\n")
			}
		}
		if len(ack.SkippedControlPlane) > 0 {
			c.printf("%s not kicked: %s — control-plane connection(s) (a daemon) that would reconnect at once\n",
				c.paint(colorYellow, "⚠"), terminalLine(strings.Join(ack.SkippedControlPlane, ", ")))
			c.printf("  to keep a member out: claudemesh ban <peer>\n  to stop your own daemon: claudemesh daemon down\n")
		}
		return nil
	}
}

func setupBan(fs *flagSet) runFunc   { return setupBanLike(fs, frameBan) }
func setupUnban(fs *flagSet) runFunc { return setupBanLike(fs, frameUnban) }

func setupBanLike(fs *flagSet, verb string) runFunc {
	var mesh string
	var yes bool
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	yesFlag(fs, &yes, moderationYes)
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) == 0 {
			return usageError("usage: claudemesh %s <peer> (a display name, member or session key, or key prefix)", verb)
		}
		target := strings.Join(args, " ")
		var ack struct {
			Banned   string `json:"banned"`
			Unbanned string `json:"unbanned"`
		}
		m, err := c.moderate(ctx, mesh, BanFrame{Type: verb, Target: target}, []string{frameBanAck, frameUnbanAck}, &ack)
		if err != nil {
			return err
		}
		who := ack.Banned
		if verb == frameUnban {
			who = ack.Unbanned
		}
		if who == "" {
			who = target
		}
		if c.jsonMode() {
			return c.printJSON(map[string]any{"ok": true, "mesh": m.Slug, verb + "ned": who})
		}
		if verb == frameBan {
			c.printf("%s banned %s from %s: they cannot reconnect until unbanned\n", c.paint(colorGreen, "✔"), terminalLine(who), m.Slug)
			c.printf("  undo: claudemesh unban %s --mesh %s\n", shellQuote(who), m.Slug)
			return nil
		}
		c.printf("%s unbanned %s on %s: they may connect again\n", c.paint(colorGreen, "✔"), terminalLine(who), m.Slug)
		return nil
	}
}

func setupBans(fs *flagSet) runFunc {
	var mesh string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("'bans' takes no arguments")
		}
		var res ListBansResultFrame
		m, err := c.moderate(ctx, mesh, ListBansFrame{Type: frameListBans}, []string{frameListBansResult}, &res)
		if err != nil {
			return err
		}
		res.Bans = nonNil(res.Bans)
		if c.jsonMode() {
			return c.printJSON(res.Bans)
		}
		if len(res.Bans) == 0 {
			c.printf("no banned members on %s\n", m.Slug)
			return nil
		}
		c.printf("%s\n", c.paint(colorBold, fmt.Sprintf("banned members on %s (%d)", m.Slug, len(res.Bans))))
		for _, b := range res.Bans {
			c.printf("  %s  %s  since %s\n", terminalLine(b.Name), terminalLine(shortKey(b.Pubkey)), terminalLine(b.RevokedAt))
		}
		return nil
	}
}

// moderate sends one moderation request to mesh's broker with the member
// key and decodes the reply into out.
func (c *cli) moderate(ctx context.Context, mesh string, frame any, replies []string, out any) (Mesh, error) {
	m, err := c.coldMesh(mesh)
	if err != nil {
		return Mesh{}, err
	}
	err = c.withCold(ctx, m, func(cl *ColdLink) error {
		raw, err := coldRequest(ctx, cl, frame, replies...)
		if err != nil {
			return err
		}
		return json.Unmarshal(raw, out)
	})
	return m, brokerFailure(err)
}

// brokerFailure gives a broker's refusal of a moderation request the
// fitting exit code and hint.
func brokerFailure(err error) error {
	var be *BrokerError
	if !errors.As(err, &be) {
		return err
	}
	err = brokerRefusal(err)
	switch be.Code {
	case codeForbidden:
		return withHint(err, "only the mesh owner or an admin can moderate")
	case codeNotFound:
		return withHint(err, "see 'claudemesh peer list --all' or 'claudemesh bans'")
	}
	return err
}
