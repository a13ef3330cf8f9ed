// Tests of the IPC client's unix-socket transport.
package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// unixTestServer serves h on a unix socket and counts its connections.
func unixTestServer(t *testing.T, h http.Handler) (sock string, conns *atomic.Int32) {
	t.Helper()
	sock = filepath.Join(shortTempDir(t), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	conns = new(atomic.Int32)
	srv := &http.Server{Handler: h, ConnState: func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock, conns
}

// TestUnixTransport: answers read to the end leave their connection for
// the next request; a stream closed early, or a request whose context
// ends, does not block and drops its connection.
func TestUnixTransport(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/version", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte(`{"daemon_version":"x"}`))
	})
	mux.HandleFunc("/v1/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte(": connected\n\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done() // a stream that never ends by itself
	})
	sock, conns := unixTestServer(t, mux)
	cl := newDaemonClient(sock, "")
	ctx := context.Background()

	for i := 0; i < 3; i++ {
		if _, err := cl.Version(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("three sequential requests used %d connections, want 1", n)
	}

	body, err := cl.OpenEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := body.Read(buf); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { body.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(testWait):
		t.Fatal("closing an unfinished event stream blocked")
	}

	sctx, cancel := context.WithCancel(ctx)
	body, err = cl.OpenEvents(sctx)
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(body)
		read <- err
	}()
	cancel()
	select {
	case err := <-read:
		if err == nil {
			t.Fatal("a cancelled stream read to a clean end")
		}
	case <-time.After(testWait):
		t.Fatal("cancelling the context did not interrupt the stream")
	}
	body.Close()

	// The streams' connections were dropped: the next request dials, the
	// one after it reuses.
	if _, err := cl.Version(ctx); err != nil {
		t.Fatal(err)
	}
	before := conns.Load()
	if _, err := cl.Version(ctx); err != nil {
		t.Fatal(err)
	}
	if conns.Load() != before {
		t.Fatal("the kept connection was not reused after the streams")
	}
	cl.http.CloseIdleConnections()
	if _, err := cl.Version(ctx); err != nil {
		t.Fatal(err)
	}
	if conns.Load() != before+1 {
		t.Fatal("a request after CloseIdleConnections did not dial again")
	}
}

// TestUnixTransportNoDaemon: a socket nobody serves is an error at once.
func TestUnixTransportNoDaemon(t *testing.T) {
	cl := newDaemonClient(filepath.Join(shortTempDir(t), "none"), "")
	_, err := cl.Version(context.Background())
	var ne *net.OpError
	if err == nil || !errors.As(err, &ne) {
		t.Fatalf("Version on a missing socket = %v, want a dial error", err)
	}
}
