// `claudemesh inbox`, `inbox flush`, `inbox delete` and `daemon outbox list|requeue`: thin clients of the daemon,
// which owns both stores. They have no cold path — the inbox is what the
// daemon received — so without a daemon they fail and say how to start it.
//
// Policy: listing marks what it shows as seen (as claudemesh does); inside
// a session the daemon scopes everything to that session's rows; `inbox
// flush` refuses to run without --mesh, --before or --all.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// daemonOnly returns the daemon client for verbs that have no cold path.
func (c *cli) daemonOnly(ctx context.Context, what string) (*DaemonClient, error) {
	cl, err := c.daemon(ctx)
	if err != nil {
		return nil, err
	}
	if cl == nil {
		why, hints := c.daemonAbsence()
		return nil, exitError(exitFailure, fmt.Errorf("%s lives in the daemon, and %s", what, why), hints...)
	}
	return cl, nil
}

func setupInbox(fs *flagSet) runFunc {
	var mesh string
	var unread bool
	var limit int
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	fs.BoolVar(&unread, "unread", false, "only messages not seen yet")
	fs.IntVar(&limit, "limit", 100, "at most this many messages (1..1000)")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("'inbox' takes no arguments (did you mean 'inbox flush' or 'inbox delete <id>'?)")
		}
		if limit < 1 || limit > 1000 {
			return usageError("--limit must be 1..1000")
		}
		cl, err := c.daemonOnly(ctx, "the inbox")
		if err != nil {
			return err
		}
		resp, err := callIPC(ctx, cl, apiInbox, InboxQuery{Limit: &limit, Mesh: mesh, UnreadOnly: unread})
		if err != nil {
			return ipcFailure(err)
		}
		resp.Items = nonNil(resp.Items)
		if c.jsonMode() {
			return c.printJSON(resp.Items)
		}
		scope, kind := "", ""
		if mesh != "" {
			scope = " on " + mesh
		}
		if unread {
			kind = "unread "
		}
		if len(resp.Items) == 0 {
			c.printf("no %smessages%s\n", kind, scope)
			return nil
		}
		c.printf("%s\n", c.paint(colorBold, fmt.Sprintf("inbox%s: %d %smessage(s), newest first", scope, len(resp.Items), kind)))
		for _, it := range resp.Items {
			c.printf("%s\n", c.inboxLine(it))
		}
		return nil
	}
}

// inboxLine renders one message: who, where, when, and the text.
func (c *cli) inboxLine(it inboxItem) string {
	var b strings.Builder
	dot := " "
	if it.SeenAt == "" {
		dot = c.paint(colorGreen, "●")
	}
	fmt.Fprintf(&b, "%s %s (%s) [%s]", dot, c.paint(colorBold, terminalLine(it.SenderName)), terminalLine(shortID(it.SenderPubkey)), terminalLine(it.Mesh))
	if it.Topic != "" {
		b.WriteString(" #" + terminalLine(string(it.Topic)))
	}
	if t, err := time.Parse(time.RFC3339Nano, it.ReceivedAt); err == nil {
		b.WriteString(" " + t.Local().Format("2006-01-02 15:04:05"))
	}
	if it.Priority == priorityNow {
		b.WriteString(" " + c.paint(colorRed, "[now]"))
	}
	fmt.Fprintf(&b, "  id %s", it.ID)
	if it.BrokerMessageID != "" {
		fmt.Fprintf(&b, "  msg %s", terminalLine(string(it.BrokerMessageID)))
	}
	body := "(could not be decrypted)"
	if it.Body != nil {
		body = strings.ReplaceAll(terminalBlock(*it.Body), "\n", "\n    ")
	}
	fmt.Fprintf(&b, "\n    %s", body)
	return b.String()
}

func setupInboxFlush(fs *flagSet) runFunc {
	var mesh, before string
	var all bool
	fs.StringVar(&mesh, "mesh", "", "only this mesh's messages")
	fs.StringVar(&before, "before", "", "only messages received before this ISO time (2026-05-04T18:00:00Z)")
	fs.BoolVar(&all, "all", false, "every message you can see, on every mesh")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("'inbox flush' takes no arguments")
		}
		if mesh == "" && before == "" && !all {
			return withHint(usageError("inbox flush needs a filter: --mesh <slug>, --before <iso time>, or --all"),
				"--all deletes every message you can see; nothing was deleted")
		}
		if before != "" {
			if _, err := time.Parse(time.RFC3339Nano, before); err != nil {
				return usageError("--before must be an ISO time such as 2026-05-04T18:00:00Z, not %q", before)
			}
		}
		cl, err := c.daemonOnly(ctx, "the inbox")
		if err != nil {
			return err
		}
		resp, err := callIPC(ctx, cl, apiInboxFlush, InboxFlushQuery{Mesh: mesh, Before: before, All: all})
		if err != nil {
			return ipcFailure(err)
		}
		if c.jsonMode() {
			return c.printJSON(map[string]any{"ok": true, "removed": resp.Removed})
		}
		var scope []string
		if mesh != "" {
			scope = append(scope, "mesh "+mesh)
		}
		if before != "" {
			scope = append(scope, "before "+before)
		}
		if len(scope) == 0 {
			scope = []string{"every mesh"}
		}
		c.printf("%s flushed %d message(s) (%s)\n", c.paint(colorGreen, "✔"), resp.Removed, strings.Join(scope, ", "))
		return nil
	}
}

func setupInboxDelete(fs *flagSet) runFunc {
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) != 1 {
			return usageError("usage: claudemesh inbox delete <id>")
		}
		id := args[0]
		cl, err := c.daemonOnly(ctx, "the inbox")
		if err != nil {
			return err
		}
		if _, err := callIPC(ctx, cl, apiInboxDelete, InboxDeleteRequest{ID: id}); err != nil {
			if ipcStatus(err) == http.StatusNotFound {
				return exitError(exitNotFound, fmt.Errorf("no inbox row %s", id), "ids are in 'claudemesh inbox' (id …)")
			}
			return ipcFailure(err)
		}
		if c.jsonMode() {
			return c.printJSON(map[string]any{"ok": true, "id": id})
		}
		c.printf("%s deleted inbox row %s\n", c.paint(colorGreen, "✔"), id)
		return nil
	}
}

// daemon outbox list|requeue.

func setupOutboxList(fs *flagSet) runFunc {
	var status string
	var limit int
	fs.StringVar(&status, "status", "", "only rows in this state: pending, inflight, done, dead (or failed), aborted")
	fs.IntVar(&limit, "limit", 50, "at most this many rows (1..500)")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("'daemon outbox list' takes no arguments")
		}
		cl, err := c.daemonOnly(ctx, "the outbox")
		if err != nil {
			return err
		}
		resp, err := callIPC(ctx, cl, apiOutbox, OutboxQuery{Status: status, Limit: &limit})
		if err != nil {
			return ipcFailure(err)
		}
		resp.Items = nonNil(resp.Items)
		if c.jsonMode() {
			return c.printJSON(resp)
		}
		if len(resp.Items) == 0 {
			c.printf("(empty)\n")
			return nil
		}
		for _, it := range resp.Items {
			line := fmt.Sprintf("%-8s %s  %-12s  cid=%s  attempts=%d  to=%s [%s]", it.Status, it.ID, ladderColumn(it.Ladder),
				it.ClientMessageID, it.Attempts, shortKey(it.Target), it.Mesh)
			if it.BrokerMessageID != nil {
				line += " → " + *it.BrokerMessageID
			}
			if it.LastError != nil {
				line += fmt.Sprintf(" last_error=%q", *it.LastError)
			}
			c.printf("%s\n", line)
		}
		return nil
	}
}

// ladderColumn is a row's ladder in one word or a summary: the rung a DM
// reached, a multicast's count ("3/4 surfaced"), or how far receipts go.
func ladderColumn(l *messageLadder) string {
	switch {
	case l == nil:
		return "-"
	case l.Summary != "":
		return l.Summary
	case l.Rung == rungSent && l.Receipts == receiptsOff:
		return "sent (no receipts)"
	}
	return l.Rung
}

func setupOutboxRequeue(fs *flagSet) runFunc {
	var newID string
	fs.StringVar(&newID, "new-client-id", "", "the client_message_id of the new row (default: a fresh one)")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) != 1 {
			return usageError("usage: claudemesh daemon outbox requeue <id> [--new-client-id X]")
		}
		cl, err := c.daemonOnly(ctx, "the outbox")
		if err != nil {
			return err
		}
		resp, err := callIPC(ctx, cl, apiOutboxRequeue, RequeueRequest{ID: args[0], NewClientMessageID: newID})
		if ie := (*IPCError)(nil); errors.As(err, &ie) && ie.Status == 409 {
			return exitError(exitFailure, fmt.Errorf("cannot requeue %s: %s", args[0], ie.Message), "see 'claudemesh daemon outbox list'")
		}
		if err != nil {
			return ipcFailure(err)
		}
		if c.jsonMode() {
			return c.printJSON(resp)
		}
		c.printf("requeued: aborted %s → new %s (client_message_id=%s)\n", resp.AbortedRowID, resp.NewRowID, resp.NewClientMessageID)
		return nil
	}
}
