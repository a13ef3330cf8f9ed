// The broker's opt-in profiler: `broker serve --pprof 127.0.0.1:PORT` serves
// Go's /debug/pprof/ handlers on a listener of their own. Policy: off unless
// asked for, and only on a loopback address — profiles show the broker's
// internals and cost CPU to take, so they are never open to the network.
package main

import (
	"cmp"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

// checkLoopbackAddr accepts host:port where host is a loopback IP or
// localhost.
func checkLoopbackAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port, such as 127.0.0.1:6060, not %q", addr)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address: the profiler is only served on 127.0.0.1 or ::1", host)
	}
	return nil
}

// profilerServer serves /debug/pprof/ until closed.
type profilerServer struct {
	l   net.Listener
	srv *http.Server
}

// startProfiler listens on addr and serves the profiler in the background:
// /debug/pprof/profile?seconds=N (CPU), /debug/pprof/<name>?debug=N for
// every runtime profile (heap, goroutine, allocs, block, mutex,
// threadcreate; gc=1 collects garbage first), and an index. These are the
// paths `go tool pprof` reads. The handlers are our own on runtime/pprof,
// so that no process of this binary pays net/http/pprof's start-up work.
func startProfiler(addr string) (*profilerServer, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", serveProfile)
	mux.HandleFunc("/debug/pprof/profile", serveCPUProfile)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return &profilerServer{l: l, srv: srv}, nil
}

// maxCPUProfile bounds one CPU profile's length.
const maxCPUProfile = 5 * time.Minute

// serveCPUProfile records the CPU for ?seconds= (30 by default).
func serveCPUProfile(w http.ResponseWriter, r *http.Request) {
	secs, err := strconv.Atoi(cmp.Or(r.URL.Query().Get("seconds"), "30"))
	d := time.Duration(secs) * time.Second
	if err != nil || d <= 0 || d > maxCPUProfile {
		http.Error(w, "seconds must be 1.."+strconv.Itoa(int(maxCPUProfile.Seconds())), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if err := pprof.StartCPUProfile(w); err != nil {
		http.Error(w, err.Error(), http.StatusConflict) // another profile is running
		return
	}
	select {
	case <-time.After(d):
	case <-r.Context().Done():
	}
	pprof.StopCPUProfile()
}

// serveProfile writes one runtime profile, or the index of them.
func serveProfile(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/debug/pprof/")
	if name == "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		for _, p := range pprof.Profiles() {
			fmt.Fprintf(w, "%s (%d)\n", p.Name(), p.Count())
		}
		fmt.Fprintln(w, "profile (CPU, ?seconds=N)")
		return
	}
	p := pprof.Lookup(name)
	if p == nil {
		http.Error(w, "unknown profile "+strconv.Quote(name), http.StatusNotFound)
		return
	}
	debug, _ := strconv.Atoi(r.URL.Query().Get("debug"))
	if r.URL.Query().Get("gc") == "1" {
		runtime.GC()
	}
	if debug > 0 {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	_ = p.WriteTo(w, debug)
}

// Addr is where the profiler listens (the real port when asked for :0).
func (p *profilerServer) Addr() net.Addr { return p.l.Addr() }

// Close stops serving.
func (p *profilerServer) Close() error { return p.srv.Close() }
