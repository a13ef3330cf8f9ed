// Tests of the broker's opt-in profiler: loopback only, and it serves.
package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestCheckLoopbackAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:6060", true},
		{"[::1]:6060", true},
		{"localhost:0", true},
		{"0.0.0.0:6060", false},
		{"192.0.2.1:6060", false},
		{"example.com:6060", false},
		{"6060", false},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			if err := checkLoopbackAddr(tc.addr); (err == nil) != tc.ok {
				t.Fatalf("checkLoopbackAddr(%q) = %v, want ok %v", tc.addr, err, tc.ok)
			}
		})
	}
}

func TestProfilerServes(t *testing.T) {
	p, err := startProfiler("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+p.Addr().String()+"/debug/pprof/goroutine?debug=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile") {
		t.Fatalf("GET goroutine profile = %d %q", resp.StatusCode, body[:min(len(body), 200)])
	}
	for path, want := range map[string]int{
		"/debug/pprof/profile?seconds=1": http.StatusOK,
		"/debug/pprof/heap?gc=1":         http.StatusOK,
		"/debug/pprof/":                  http.StatusOK,
		"/debug/pprof/nothing":           http.StatusNotFound,
		"/debug/pprof/profile?seconds=0": http.StatusBadRequest,
	} {
		resp, err := http.Get("http://" + p.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || (want == http.StatusOK && len(body) == 0) {
			t.Errorf("GET %s = %d with %d bytes, want %d with a body", path, resp.StatusCode, len(body), want)
		}
	}
}

// TestBrokerServePprofUsage: a profiler address off loopback is refused
// before anything starts.
func TestBrokerServePprofUsage(t *testing.T) {
	code := run(context.Background(), []string{"broker", "serve", "--listen", "127.0.0.1:0", "--data", t.TempDir(), "--pprof", "0.0.0.0:6060"},
		Env{Stdout: io.Discard, Stderr: io.Discard})
	if code != exitUsage {
		t.Fatalf("broker serve --pprof 0.0.0.0:6060 = exit %d, want %d", code, exitUsage)
	}
}
