// The IPC client's HTTP/1.1 transport over the daemon's unix socket.
//
// net/http's Transport hands every request to a connection's own reader
// and writer goroutines; in a process that lives for a few milliseconds
// (every CLI verb) those hand-offs between goroutines and threads cost
// more than the daemon takes to answer. unixTransport does each round trip
// on the caller's goroutine: it writes the request and reads the answer on
// a connection of its own, with net/http's own request writer and response
// parser.
//
// Policy:
//   - A connection is reused only when its previous answer was read to the
//     end, the daemon did not ask to close it, and it has been idle for
//     less than unixIdleReuse (well under the daemon's two-minute idle
//     timeout, so a reused connection is one the daemon still holds); a
//     long-lived client such as the MCP server simply dials again.
//   - The request's context bounds the whole exchange, the answer's body
//     included: when it ends, the connection's I/O fails at once and the
//     connection is dropped.
//   - Concurrent requests each get a connection; at most unixMaxIdle wait
//     for reuse.
package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

const (
	unixIdleReuse = 5 * time.Second
	unixMaxIdle   = 4
)

// unixTransport is an http.RoundTripper to one unix socket.
type unixTransport struct {
	sock string
	mu   sync.Mutex
	idle []*unixConn
}

// unixConn is one connection with its read buffer.
type unixConn struct {
	net.Conn
	br        *bufio.Reader
	idleSince time.Time
}

func (t *unixTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	c, err := t.conn(ctx)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	// A deadline in the past fails the connection's I/O at once: how the
	// request's context reaches a read or write in progress.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		c.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if err := req.Write(c); err != nil {
		return fail(err)
	}
	resp, err := http.ReadResponse(c.br, req)
	if err != nil {
		return fail(err)
	}
	resp.Body = &unixBody{ReadCloser: resp.Body, t: t, c: c, stop: stop, keep: !resp.Close}
	return resp, nil
}

// conn takes an idle connection young enough to reuse, else dials one.
func (t *unixTransport) conn(ctx context.Context) (*unixConn, error) {
	t.mu.Lock()
	for len(t.idle) > 0 {
		c := t.idle[len(t.idle)-1]
		t.idle = t.idle[:len(t.idle)-1]
		if time.Since(c.idleSince) < unixIdleReuse {
			t.mu.Unlock()
			return c, nil
		}
		c.Close()
	}
	t.mu.Unlock()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", t.sock)
	if err != nil {
		return nil, err
	}
	return &unixConn{Conn: nc, br: bufio.NewReader(nc)}, nil
}

// put keeps a connection whose exchange is complete for the next request.
func (t *unixTransport) put(c *unixConn) {
	c.idleSince = time.Now()
	t.mu.Lock()
	if len(t.idle) < unixMaxIdle {
		t.idle = append(t.idle, c)
		c = nil
	}
	t.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// CloseIdleConnections closes the connections kept for reuse
// (http.Client.CloseIdleConnections calls it).
func (t *unixTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

// unixBody is an answer's body: closing it after reading it to the end
// returns the connection for reuse, closing it earlier drops it.
type unixBody struct {
	io.ReadCloser
	t    *unixTransport
	c    *unixConn
	stop func() bool
	keep bool
	// clean: the body was read to its end with nothing after it in the
	// connection's buffer. Set by the reading goroutine, which alone
	// touches the buffer; Close may run on another (a cancelled stream).
	clean atomic.Bool
	once  sync.Once
}

func (b *unixBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.clean.Store(b.c.br.Buffered() == 0)
	}
	return n, err
}

func (b *unixBody) Close() error {
	reuse := false
	b.once.Do(func() {
		// stop reports false when the context already poisoned the
		// connection's deadline: it cannot be reused then.
		reuse = b.stop() && b.keep && b.clean.Load()
		if !reuse {
			// Before the body's own Close, which would otherwise read an
			// unfinished answer (an event stream never finishes) to its end.
			b.c.Close()
		}
	})
	err := b.ReadCloser.Close()
	if reuse {
		b.t.put(b.c)
	}
	return err
}
