// How far a sent message got, in words: the receipt ladder as `send` prints
// it after the send and as `claudemesh message status <id>` shows it.
//
// Policy: each recipient's highest rung is one line in plain words, with
// how long it took from the send; a ladder that cannot climb further says
// why (the broker relays no receipts, the recipient shares only delivered,
// the recipient is shown messages only when it asks).
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ladderWords is a ladder as lines; label names a DM's recipient, and
// surfacing is how that recipient is shown messages, when known.
func ladderWords(l messageLadder, label, surfacing string) []string {
	switch l.Rung {
	case rungQueued:
		return []string{"⚠ still in the daemon's outbox"}
	case rungDead:
		return []string{"✘ dead: " + l.Reason}
	case rungExpired:
		if l.Reason != "" {
			return []string{"✘ expired: " + l.Reason}
		}
	case rungAborted:
		return []string{"✘ " + l.Reason}
	}
	if l.Receipts == receiptsOff {
		return []string{"⚠ its broker does not relay receipts: the ladder stops at sent"}
	}
	var out []string
	if l.Summary != "" {
		out = append(out, l.Summary)
	}
	for i, r := range l.Recipients {
		if i == 10 {
			out = append(out, fmt.Sprintf("… and %d more (claudemesh message status <id>)", len(l.Recipients)-i))
			break
		}
		name := r.Name
		if name == "" || l.Summary == "" && label != "" {
			name = cmp.Or(label, shortKey(r.Pubkey))
		}
		name = terminalLine(name)
		switch r.Rung {
		case rungReplied:
			out = append(out, fmt.Sprintf("✔ %s replied %s", name, after(r.RepliedMs)))
		case rungSurfaced:
			line := fmt.Sprintf("✔ surfaced to %s via %s %s", name, viaWords(r.Via), after(r.SurfacedMs))
			if !r.Confirmed {
				line += " (not confirmed yet)"
			}
			out = append(out, line)
		case rungDelivered:
			line := fmt.Sprintf("✔ delivered to %s's daemon %s", name, after(r.DeliveredMs))
			switch {
			case r.Shares == sharesDelivered:
				line += "; " + name + " does not share more"
			case surfacing == surfacedViaPull && l.Summary == "":
				line += "; not shown yet — " + name + " is pull-only: it sees the message only when it runs 'claudemesh inbox'"
			default:
				line += "; not shown to its model yet"
			}
			out = append(out, line)
		case rungExpired:
			out = append(out, fmt.Sprintf("✘ %s never took it: expired at the broker", name))
		default:
			if l.Summary == "" {
				out = append(out, fmt.Sprintf("not delivered to %s's daemon yet", name))
			}
		}
	}
	return out
}

// viaWords names a surfacing path for a person.
func viaWords(via string) string {
	switch via {
	case surfacedViaHooks:
		return "hook"
	case surfacedViaPull:
		return "claudemesh inbox"
	}
	return via
}

// after is "in 840 ms", "in 3.2 s", or "" when unknown.
func after(ms *int64) string {
	if ms == nil {
		return ""
	}
	d := time.Duration(max(*ms, 0)) * time.Millisecond
	if d < time.Second {
		return fmt.Sprintf("in %d ms", d.Milliseconds())
	}
	if d < time.Minute {
		return fmt.Sprintf("in %.1f s", d.Seconds())
	}
	return "after " + d.Round(time.Second).String()
}

// paintRung colours a ladder line by its mark.
func (c *cli) paintRung(line string) string {
	for mark, color := range map[string]string{"✔": colorGreen, "⚠": colorYellow, "✘": colorRed} {
		if rest, ok := strings.CutPrefix(line, mark); ok {
			return c.paint(color, mark) + rest
		}
	}
	return line
}

// ladderDoc is a ladder in `send --json`'s camelCase.
type ladderDoc struct {
	Rung       string    `json:"rung"`
	Receipts   string    `json:"receipts,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	Expected   *int      `json:"expected,omitempty"`
	Summary    string    `json:"summary,omitempty"`
	Recipients []rungDoc `json:"recipients"`
}

// rungDoc is one recipient's ladder in `send --json`.
type rungDoc struct {
	Pubkey       string `json:"pubkey"`
	MemberPubkey string `json:"memberPubkey,omitempty"`
	Name         string `json:"name,omitempty"`
	Rung         string `json:"rung"`
	Via          string `json:"via,omitempty"`
	Confirmed    bool   `json:"confirmed,omitempty"`
	Shares       string `json:"shares,omitempty"`
	DeliveredMs  *int64 `json:"deliveredMs,omitempty"`
	SurfacedMs   *int64 `json:"surfacedMs,omitempty"`
	RepliedMs    *int64 `json:"repliedMs,omitempty"`
	ReplyID      string `json:"replyId,omitempty"`
}

func ladderDocOf(l *messageLadder) *ladderDoc {
	if l == nil {
		return nil
	}
	d := &ladderDoc{Rung: l.Rung, Receipts: l.Receipts, Reason: l.Reason, Expected: l.Expected, Summary: l.Summary, Recipients: []rungDoc{}}
	for _, r := range l.Recipients {
		d.Recipients = append(d.Recipients, rungDoc{Pubkey: r.Pubkey, MemberPubkey: r.MemberPubkey, Name: r.Name, Rung: r.Rung,
			Via: r.Via, Confirmed: r.Confirmed, Shares: r.Shares, DeliveredMs: r.DeliveredMs, SurfacedMs: r.SurfacedMs,
			RepliedMs: r.RepliedMs, ReplyID: r.ReplyID})
	}
	return d
}

// `claudemesh message status <id>`.

func setupMessageStatus(fs *flagSet) runFunc {
	var wait time.Duration
	fs.DurationVar(&wait, "wait", 0, "wait up to this long for the ladder to climb as far as it can")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) != 1 {
			return usageError("usage: claudemesh message status <id> (the msg id send printed, its client id, or the outbox row id)")
		}
		if wait < 0 || wait > maxSendWaitMs*time.Millisecond {
			return usageError("--wait must be between 0 and %s", maxSendWaitMs*time.Millisecond)
		}
		cl, err := c.daemonOnly(ctx, "a message's receipts")
		if err != nil {
			return err
		}
		rep, err := callIPCWithin(ctx, cl, wait+ipcTimeout, apiMessage, MessageQuery{ID: args[0], WaitMs: int(wait.Milliseconds())})
		var ie *IPCError
		if errors.As(err, &ie) && ie.Status == 404 {
			return exitError(exitNotFound, fmt.Errorf("no message %s in this machine's outbox", args[0]),
				"give the msg id 'claudemesh send' printed, or see 'claudemesh daemon outbox list'")
		}
		if err != nil {
			return ipcFailure(err)
		}
		if c.jsonMode() {
			return c.printJSON(rep)
		}
		m := rep.Message
		l := deref(m.Ladder)
		c.printf("message %s to %s on %s: %s\n", shortID(cmp.Or(deref(m.BrokerMessageID), m.ID)), terminalLine(targetWords(m.Target)),
			m.Mesh, l.Rung)
		c.printf("  queued at %s", l.QueuedAt)
		if l.SentAt != "" {
			c.printf(", sent at %s", l.SentAt)
		}
		c.printf("\n")
		for _, line := range ladderWords(l, "", "") {
			c.printf("  %s\n", c.paintRung(line))
		}
		return nil
	}
}

// targetWords is a target for a person: a key shortened, the rest as is.
func targetWords(t string) string {
	if isHexKey(t) {
		return shortKey(t)
	}
	return t
}
