// `claudemesh search` and `claudemesh export`: the history of what this
// machine sent and received, read from the daemon (which owns the stores).
//
// Policy: --since takes an ISO time or an age (90m, 12h, 7d); export reads
// the history page by page, oldest first, so a long history never sits in
// one answer; peers' text is shown with its control characters escaped,
// except in jsonl, which keeps every message as it came.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// parseSince reads --since: an ISO time, or an age before now ("90m",
// "12h", "7d"). It returns the ISO time the daemon takes ("" for none).
func parseSince(s string, now time.Time) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC().Format(time.RFC3339Nano), nil
	}
	var age time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 {
			return "", usageError("--since %q: give an ISO time (2026-05-04T18:00:00Z) or an age such as 90m, 12h or 7d", s)
		}
		age = time.Duration(n) * 24 * time.Hour
	} else {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return "", usageError("--since %q: give an ISO time (2026-05-04T18:00:00Z) or an age such as 90m, 12h or 7d", s)
		}
		age = d
	}
	return now.Add(-age).UTC().Format(time.RFC3339Nano), nil
}

func setupSearch(fs *flagSet) runFunc {
	var mesh, from, since string
	var limit int
	fs.StringVar(&mesh, "mesh", "", "only this mesh")
	fs.StringVar(&from, "from", "", "only messages from this sender (a name or a key prefix)")
	fs.StringVar(&since, "since", "", "only messages from this time on: an ISO time or an age (90m, 12h, 7d)")
	fs.IntVar(&limit, "limit", 50, "at most this many messages (1..500)")
	return func(ctx context.Context, c *cli, args []string) error {
		query := strings.TrimSpace(strings.Join(args, " "))
		if query == "" {
			return usageError("usage: claudemesh search <query…> [--mesh <slug>] [--from <sender>] [--since <time>]")
		}
		if limit < 1 || limit > 500 {
			return usageError("--limit must be 1..500")
		}
		sinceISO, err := parseSince(since, time.Now())
		if err != nil {
			return err
		}
		cl, err := c.daemonOnly(ctx, "the message history")
		if err != nil {
			return err
		}
		resp, err := callIPC(ctx, cl, apiSearch, SearchQuery{Q: query, Mesh: mesh, From: from, Since: sinceISO, Limit: &limit})
		if err != nil {
			return ipcFailure(err)
		}
		if c.jsonMode() {
			return c.printJSON(nonNil(resp.Messages))
		}
		if len(resp.Messages) == 0 {
			c.printf("no message matches %q\n", query)
			return nil
		}
		c.printf("%s\n", c.paint(colorBold, fmt.Sprintf("%d message(s) match %q, newest first", len(resp.Messages), query)))
		for _, m := range resp.Messages {
			c.printf("%s\n    %s\n", c.historyHeading(m), c.snippetText(m))
		}
		return nil
	}
}

// historyHeading is a message's one-line heading: when, who to whom, where.
func (c *cli) historyHeading(m historyMessage) string {
	at := m.At
	if t, err := time.Parse(time.RFC3339Nano, m.At); err == nil {
		at = t.Local().Format("2006-01-02 15:04:05")
	}
	line := fmt.Sprintf("%s  %s → %s  [%s]", at, c.paint(colorBold, terminalLine(m.FromName)), terminalLine(historyRecipient(m)), m.Mesh)
	if m.Outbox != nil && m.Outbox.Status != outboxDone {
		line += "  " + c.paint(colorYellow, "("+m.Outbox.Status+")")
	}
	return line + "  id " + m.ID
}

// historyRecipient is whom a message went to, as a reader says it.
func historyRecipient(m historyMessage) string {
	switch {
	case m.ToName != "":
		return m.ToName
	case m.To == "*":
		return "everyone (*)"
	case m.To == "":
		return "?"
	case isHexKey(m.To):
		return shortID(m.To)
	}
	return m.To
}

// snippetText is a search hit's matching text, the matches in bold.
func (c *cli) snippetText(m historyMessage) string {
	text := m.Snippet
	if text == "" {
		text = deref(m.Body)
	}
	var b strings.Builder
	for i, part := range strings.Split(text, snippetOpen) {
		if i == 0 {
			b.WriteString(terminalLine(strings.ReplaceAll(part, snippetClose, "")))
			continue
		}
		match, rest, _ := strings.Cut(part, snippetClose)
		b.WriteString(c.paint(colorBold, terminalLine(match)) + terminalLine(rest))
	}
	return b.String()
}

// Export.

func setupExport(fs *flagSet) runFunc {
	var mesh, since, format, output string
	fs.StringVar(&mesh, "mesh", "", "only this mesh")
	fs.StringVar(&since, "since", "", "only messages from this time on: an ISO time or an age (90m, 12h, 7d)")
	fs.StringVar(&format, "format", "md", "md (a readable transcript) or jsonl (one JSON message a line)")
	fs.StringVar(&output, "output", "", "write to this file (mode 0600) instead of stdout")
	fs.StringVar(&output, "o", "", "the same as --output")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("'export' takes no arguments")
		}
		if format != "md" && format != "jsonl" {
			return usageError("--format must be md or jsonl, not %q", format)
		}
		sinceISO, err := parseSince(since, time.Now())
		if err != nil {
			return err
		}
		cl, err := c.daemonOnly(ctx, "the message history")
		if err != nil {
			return err
		}
		w := c.env.Stdout
		var file *os.File
		if output != "" {
			if file, err = os.OpenFile(output, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600); err != nil {
				return exitError(exitIO, err)
			}
			defer file.Close()
			w = file
		}
		ex := &exporter{w: w, format: format, mesh: mesh, since: sinceISO}
		q := HistoryQuery{Mesh: mesh, Since: sinceISO, Limit: ptr(1000)}
		for {
			page, err := callIPC(ctx, cl, apiHistory, q)
			if err != nil {
				return ipcFailure(err)
			}
			if err := ex.write(page.Messages); err != nil {
				return exitError(exitIO, err)
			}
			if page.Next == "" {
				break
			}
			q.After = page.Next
		}
		if err := ex.finish(); err != nil {
			return exitError(exitIO, err)
		}
		if file != nil {
			if err := file.Close(); err != nil {
				return exitError(exitIO, err)
			}
			c.infof("wrote %d message(s) to %s", ex.count, output)
		}
		return nil
	}
}

// exporter writes history pages as a transcript.
type exporter struct {
	w           io.Writer
	format      string
	mesh, since string
	count       int
	day         string // the day heading last written (md)
	err         error
}

func (ex *exporter) printf(format string, a ...any) {
	if ex.err == nil {
		_, ex.err = fmt.Fprintf(ex.w, format, a...)
	}
}

func (ex *exporter) write(msgs []historyMessage) error {
	for _, m := range msgs {
		if ex.format == "jsonl" {
			line, err := json.Marshal(m)
			if err != nil {
				return err
			}
			ex.printf("%s\n", line)
		} else {
			ex.markdown(m)
		}
		ex.count++
	}
	return ex.err
}

func (ex *exporter) finish() error {
	if ex.format == "md" && ex.count == 0 {
		ex.header()
		ex.printf("No messages.\n")
	}
	return ex.err
}

func (ex *exporter) header() {
	scope := "every mesh"
	if ex.mesh != "" {
		scope = "mesh " + ex.mesh
	}
	if ex.since != "" {
		scope += ", since " + ex.since
	}
	ex.printf("# claudemesh transcript\n\n%s, exported %s.\n", scope, time.Now().UTC().Format(time.RFC3339))
}

// markdown writes one message: a day heading when the day changes, a line
// for who to whom, then the text as a block quote.
func (ex *exporter) markdown(m historyMessage) {
	if ex.count == 0 {
		ex.header()
	}
	t, err := time.Parse(time.RFC3339Nano, m.At)
	if err != nil {
		t = time.Time{}
	}
	t = t.UTC()
	if day := t.Format("2006-01-02"); day != ex.day {
		ex.day = day
		ex.printf("\n## %s\n", day)
	}
	line := fmt.Sprintf("**%s** %s → %s · %s", t.Format("15:04:05"), mdText(m.FromName), mdText(historyRecipient(m)), m.Mesh)
	if m.ReplyToID != "" {
		line += " · reply to " + mdCode(m.ReplyToID)
	}
	if m.Priority != priorityNext {
		line += " · " + m.Priority
	}
	if m.Outbox != nil && m.Outbox.Status != outboxDone {
		line += " · " + m.Outbox.Status
		if m.Outbox.LastError != "" {
			line += ": " + mdText(m.Outbox.LastError)
		}
	}
	ex.printf("\n%s · %s\n\n", line, mdCode(m.Ref))
	body := "(could not be decrypted)"
	if m.Body != nil {
		body = terminalBlock(*m.Body)
	}
	for _, l := range strings.Split(body, "\n") {
		ex.printf("> %s\n", l)
	}
}

// mdText is a name or code for a Markdown line: control characters
// escaped, and the characters that would start emphasis or code escaped.
func mdText(s string) string {
	return strings.NewReplacer("*", `\*`, "_", `\_`, "`", "\\`").Replace(terminalLine(s))
}

// mdCode is an id as Markdown code.
func mdCode(s string) string { return "`" + strings.ReplaceAll(terminalLine(s), "`", "'") + "`" }
