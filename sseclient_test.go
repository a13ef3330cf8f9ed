// Tests of the SSE client parser: any split of the stream, overlong lines,
// fuzzing.
package main

import (
	"context"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// feedAll parses stream fed in the given pieces.
func feedAll(pieces ...string) []sseClientEvent {
	var p sseClientParser
	var out []sseClientEvent
	for _, piece := range pieces {
		out = append(out, p.Feed([]byte(piece))...)
	}
	return out
}

func TestSSEClientParser(t *testing.T) {
	cases := []struct {
		name   string
		stream string
		want   []sseClientEvent
	}{
		{"daemon stream", ": connected\n\nid: 1\nevent: message\ndata: {\"id\":\"r1\"}\n\n: keepalive\n\nid: 2\nevent: peer_join\ndata: {\"name\":\"bob\"}\n\n",
			[]sseClientEvent{{ID: "1", Event: "message", Data: `{"id":"r1"}`}, {ID: "2", Event: "peer_join", Data: `{"name":"bob"}`}}},
		{"no event type means message", "data: x\n\n", []sseClientEvent{{Event: "message", Data: "x"}}},
		{"several data lines join with newline", "data: a\ndata: b\ndata:\n\n", []sseClientEvent{{Event: "message", Data: "a\nb\n"}}},
		{"no space after colon", "event:ping\ndata:x\n\n", []sseClientEvent{{Event: "ping", Data: "x"}}},
		{"only one space is dropped", "data:  two\n\n", []sseClientEvent{{Event: "message", Data: " two"}}},
		{"field without colon", "data\n\n", []sseClientEvent{{Event: "message", Data: ""}}},
		{"CRLF", "event: a\r\ndata: 1\r\n\r\n", []sseClientEvent{{Event: "a", Data: "1"}}},
		{"CR alone", "event: a\rdata: 1\r\r", []sseClientEvent{{Event: "a", Data: "1"}}},
		{"mixed endings", "data: 1\r\n\ndata: 2\r\r\n", []sseClientEvent{{Event: "message", Data: "1"}, {Event: "message", Data: "2"}}},
		{"comments only", ": connected\n\n: keepalive\n\n", nil},
		{"comment inside an event", "event: a\n: note\ndata: 1\n\n", []sseClientEvent{{Event: "a", Data: "1"}}},
		{"event without data is not dispatched", "event: a\n\ndata: 1\n\n", []sseClientEvent{{Event: "message", Data: "1"}}},
		{"id persists across events", "id: 7\ndata: a\n\ndata: b\n\n", []sseClientEvent{{ID: "7", Event: "message", Data: "a"}, {ID: "7", Event: "message", Data: "b"}}},
		{"empty id resets it", "id: 7\ndata: a\n\nid\ndata: b\n\n", []sseClientEvent{{ID: "7", Event: "message", Data: "a"}, {Event: "message", Data: "b"}}},
		{"id with NUL ignored", "id: 7\ndata: a\n\nid: 8\x009\ndata: b\n\n", []sseClientEvent{{ID: "7", Event: "message", Data: "a"}, {ID: "7", Event: "message", Data: "b"}}},
		{"retry", "retry: 2500\ndata: a\n\nretry: soon\ndata: b\n\n", []sseClientEvent{{Event: "message", Data: "a", Retry: 2500}, {Event: "message", Data: "b", Retry: 2500}}},
		{"unknown field ignored", "foo: bar\ndata: a\n\n", []sseClientEvent{{Event: "message", Data: "a"}}},
		{"leading BOM dropped", "\xEF\xBB\xBFdata: a\n\n", []sseClientEvent{{Event: "message", Data: "a"}}},
		{"incomplete event at the end is dropped", "data: a\n\ndata: b\n", []sseClientEvent{{Event: "message", Data: "a"}}},
		{"event type does not leak into the next event", "event: a\ndata: 1\n\ndata: 2\n\n", []sseClientEvent{{Event: "a", Data: "1"}, {Event: "message", Data: "2"}}},
		{"JSON with colons", "data: {\"a\":\"b:c\"}\n\n", []sseClientEvent{{Event: "message", Data: `{"a":"b:c"}`}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := feedAll(tc.stream); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("whole: %q → %+v, want %+v", tc.stream, got, tc.want)
			}
			// A byte at a time.
			var bytewise []string
			for i := 0; i < len(tc.stream); i++ {
				bytewise = append(bytewise, tc.stream[i:i+1])
			}
			if got := feedAll(bytewise...); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("byte by byte: %q → %+v, want %+v", tc.stream, got, tc.want)
			}
			// Split in two at every point.
			for i := 0; i <= len(tc.stream); i++ {
				if got := feedAll(tc.stream[:i], tc.stream[i:]); !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("split at %d: %q → %+v, want %+v", i, tc.stream, got, tc.want)
				}
			}
		})
	}
}

func TestSSEClientParserDropsOverlongLines(t *testing.T) {
	long := strings.Repeat("x", sseClientMaxLine+1)
	stream := "data: " + long + "\n\ndata: ok\n\n"
	want := []sseClientEvent{{Event: "message", Data: "ok"}}
	if got := feedAll(stream); !reflect.DeepEqual(got, want) {
		t.Errorf("whole: %d events, want only the short one", len(got))
	}
	var chunks []string
	for i := 0; i < len(stream); i += 4096 {
		chunks = append(chunks, stream[i:min(i+4096, len(stream))])
	}
	if got := feedAll(chunks...); !reflect.DeepEqual(got, want) {
		t.Errorf("chunked: %d events, want only the short one", len(got))
	}
	// Data lines that are short one by one but too much together.
	half := strings.Repeat("y", sseClientMaxLine/2+1)
	stream = "data: " + half + "\ndata: " + half + "\n\ndata: ok\n\n"
	if got := feedAll(stream); !reflect.DeepEqual(got, want) {
		t.Errorf("oversized event: %d events, want only the short one", len(got))
	}
}

const daemonStream = ": connected\n\n" +
	"id: 1\nevent: message\ndata: {\"ts\":\"2026-05-04T10:00:00Z\",\"id\":\"r1\",\"body\":\"hi\"}\n\n" +
	": keepalive\n\n" +
	"id: 2\nevent: broker_status\ndata: {\"mesh\":\"team\",\"status\":\"open\"}\n\n"

func TestReadSSEStream(t *testing.T) {
	readers := map[string]func() io.Reader{
		"whole":       func() io.Reader { return strings.NewReader(daemonStream) },
		"one byte":    func() io.Reader { return iotest.OneByteReader(strings.NewReader(daemonStream)) },
		"half reads":  func() io.Reader { return iotest.HalfReader(strings.NewReader(daemonStream)) },
		"data at EOF": func() io.Reader { return iotest.DataErrReader(strings.NewReader(daemonStream)) },
	}
	for name, r := range readers {
		t.Run(name, func(t *testing.T) {
			var kinds []string
			err := readSSEStream(context.Background(), r(), func(ev sseClientEvent) error {
				kinds = append(kinds, ev.ID+":"+ev.Event)
				return nil
			})
			if !errors.Is(err, errSSEStreamEnded) {
				t.Errorf("readSSEStream = %v, want errSSEStreamEnded", err)
			}
			if want := []string{"1:message", "2:broker_status"}; !reflect.DeepEqual(kinds, want) {
				t.Errorf("events = %v, want %v", kinds, want)
			}
		})
	}
}

func TestReadSSEStreamErrors(t *testing.T) {
	stop := errors.New("stop here")
	err := readSSEStream(context.Background(), strings.NewReader(daemonStream), func(ev sseClientEvent) error { return stop })
	if !errors.Is(err, stop) {
		t.Errorf("handler error: readSSEStream = %v, want %v", err, stop)
	}
	boom := errors.New("connection reset")
	err = readSSEStream(context.Background(), iotest.ErrReader(boom), func(sseClientEvent) error { return nil })
	if !errors.Is(err, boom) {
		t.Errorf("read error: readSSEStream = %v, want %v", err, boom)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = readSSEStream(ctx, strings.NewReader(daemonStream), func(sseClientEvent) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: readSSEStream = %v, want context.Canceled", err)
	}
	// A read that fails because ctx ended (the caller closed the body) is
	// reported as ctx's end, not as a network error.
	ctx, cancel = context.WithCancel(context.Background())
	r := sseReaderFunc(func([]byte) (int, error) { cancel(); return 0, errors.New("use of closed connection") })
	if err := readSSEStream(ctx, r, func(sseClientEvent) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("closed on cancel: readSSEStream = %v, want context.Canceled", err)
	}
}

type sseReaderFunc func([]byte) (int, error)

func (f sseReaderFunc) Read(p []byte) (int, error) { return f(p) }

func FuzzSSEClientParser(f *testing.F) {
	f.Add([]byte(daemonStream), uint16(7))
	f.Add([]byte("data: a\r\n\r\nid: 1\rdata: b\r\r"), uint16(8))
	f.Add([]byte("\xEF\xBB\xBFretry: 10\ndata\n\n"), uint16(1))
	f.Add([]byte(": c\nevent: x\n\n"), uint16(0))
	f.Fuzz(func(t *testing.T, stream []byte, cut uint16) {
		whole := feedAll(string(stream))
		at := int(cut) % (len(stream) + 1)
		if split := feedAll(string(stream[:at]), string(stream[at:])); !reflect.DeepEqual(whole, split) {
			t.Fatalf("%q: split at %d gives %+v, whole gives %+v", stream, at, split, whole)
		}
		var bytewise []string
		for i := range stream {
			bytewise = append(bytewise, string(stream[i:i+1]))
		}
		if got := feedAll(bytewise...); !reflect.DeepEqual(whole, got) {
			t.Fatalf("%q: byte by byte gives %+v, whole gives %+v", stream, got, whole)
		}
		for _, ev := range whole {
			if ev.Event == "" {
				t.Fatalf("%q: event without a type", stream)
			}
			if strings.ContainsAny(ev.Event, "\r\n") || strings.ContainsAny(ev.ID, "\r\n\x00") {
				t.Fatalf("%q: line break or NUL inside a field: %+v", stream, ev)
			}
		}
	})
}
