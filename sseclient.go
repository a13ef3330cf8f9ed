// The client side of Server-Sent Events, as the MCP server reads the
// daemon's GET /v1/events: comment lines (": connected", ": keepalive"),
// "id:", "event:" and "data:" fields, an event dispatched at a blank line.
//
// Policy: the parser is fed whatever the network hands it — a byte at a time,
// a line split between reads, "\r\n" split across two reads — and produces
// exactly the events it would for the whole stream at once. It follows the
// WHATWG event-stream rules (LF, CRLF or CR end a line; one space after the
// colon is dropped; several data lines join with "\n"; an event with no data
// is not dispatched), and bounds memory: a line longer than
// sseClientMaxLine is dropped along with the event it belongs to.
package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
)

// sseClientMaxLine bounds one line (and so one event's data) held in memory.
// The daemon's largest event is a message with a 256 KiB body; JSON escaping
// can grow that, hence the margin.
const sseClientMaxLine = 4 << 20

// sseClientEvent is one dispatched event.
type sseClientEvent struct {
	ID    string // the last event id seen on the stream, as the spec defines it
	Event string // the event type; "message" when the stream gave none
	Data  string
	Retry int // the last "retry:" value in ms, 0 when none was sent
}

// sseClientParser turns stream bytes into events. The zero value is ready.
type sseClientParser struct {
	line     []byte // the current, not yet terminated line
	dropLine bool   // the current line overflowed; ignore it up to its end
	afterCR  bool   // the last byte was CR: a following LF belongs to it
	started  bool   // past the optional leading byte-order mark

	data      []byte
	hasData   bool
	eventType string
	lastID    string
	retry     int
	broken    bool // a line of this event was dropped: do not dispatch it
}

var sseBOM = []byte{0xEF, 0xBB, 0xBF}

// Feed consumes the next chunk of the stream and returns the events it
// completed, in order.
func (p *sseClientParser) Feed(chunk []byte) []sseClientEvent {
	var out []sseClientEvent
	if !p.started {
		// The BOM may itself be split across reads: hold back a prefix of it.
		pending := append(append([]byte(nil), p.line...), chunk...)
		if len(pending) < len(sseBOM) && bytes.HasPrefix(sseBOM, pending) {
			p.line = pending
			return nil
		}
		p.started = true
		p.line = p.line[:0]
		chunk = bytes.TrimPrefix(pending, sseBOM)
	}
	for len(chunk) > 0 {
		if p.afterCR {
			p.afterCR = false
			if chunk[0] == '\n' {
				chunk = chunk[1:]
				continue
			}
		}
		i := bytes.IndexAny(chunk, "\r\n")
		if i < 0 {
			p.appendLine(chunk)
			break
		}
		p.appendLine(chunk[:i])
		p.afterCR = chunk[i] == '\r'
		chunk = chunk[i+1:]
		if ev, ok := p.endLine(); ok {
			out = append(out, ev)
		}
	}
	return out
}

func (p *sseClientParser) appendLine(b []byte) {
	if p.dropLine {
		return
	}
	if len(p.line)+len(b) > sseClientMaxLine {
		p.line = p.line[:0]
		p.dropLine = true
		return
	}
	p.line = append(p.line, b...)
}

// endLine interprets the line just terminated; it returns an event when the
// line was the blank one that dispatches it.
func (p *sseClientParser) endLine() (sseClientEvent, bool) {
	line := p.line
	p.line = p.line[:0]
	if p.dropLine {
		p.dropLine = false
		p.broken = true
		return sseClientEvent{}, false
	}
	if len(line) == 0 {
		return p.dispatch()
	}
	if line[0] == ':' {
		return sseClientEvent{}, false // a comment: ": connected", ": keepalive"
	}
	field, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		field, value = line[:i], line[i+1:]
		value = bytes.TrimPrefix(value, []byte(" "))
	}
	switch string(field) {
	case "event":
		p.eventType = string(value)
	case "data":
		if len(p.data)+len(value)+1 > sseClientMaxLine {
			p.broken = true
			return sseClientEvent{}, false
		}
		if p.hasData {
			p.data = append(p.data, '\n')
		}
		p.data = append(p.data, value...)
		p.hasData = true
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.lastID = string(value)
		}
	case "retry":
		if n, err := strconv.Atoi(string(value)); err == nil && n >= 0 && isASCIIDigits(value) {
			p.retry = n
		}
	}
	return sseClientEvent{}, false
}

func (p *sseClientParser) dispatch() (sseClientEvent, bool) {
	ev := sseClientEvent{ID: p.lastID, Event: p.eventType, Data: string(p.data), Retry: p.retry}
	ok := p.hasData && !p.broken
	p.data, p.hasData, p.eventType, p.broken = p.data[:0], false, "", false
	if ev.Event == "" {
		ev.Event = "message"
	}
	return ev, ok
}

func isASCIIDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

// errSSEStreamEnded reports that the server closed the stream; the caller
// reconnects.
var errSSEStreamEnded = errors.New("event stream ended")

// readSSEStream parses r until it ends, calling handle for every event in
// order. It returns errSSEStreamEnded at a clean end of stream, handle's
// error if handle fails, ctx's error once ctx is done, and the read error
// otherwise. An event left incomplete at the end of the stream is dropped,
// as the spec requires. Closing r is the caller's job (closing it is also
// how a blocked read is interrupted when ctx ends).
func readSSEStream(ctx context.Context, r io.Reader, handle func(sseClientEvent) error) error {
	var p sseClientParser
	buf := make([]byte, 32<<10)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := r.Read(buf)
		for _, ev := range p.Feed(buf[:n]) {
			if herr := handle(ev); herr != nil {
				return herr
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return errSSEStreamEnded
			}
			return err
		}
	}
}
