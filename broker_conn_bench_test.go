// BenchmarkBrokerConnections: how fast a broker in its own process takes
// member connections, and what an idle one costs it.
//
//	go test -run XXX -bench BrokerConnections -benchtime 1x -conns 5000 .
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	benchConns     = flag.Int("conns", 1000, "connections BenchmarkBrokerConnections opens")
	benchConnsBin  = flag.String("conns.bin", "", "the claudemesh binary whose broker BenchmarkBrokerConnections measures (default: this tree's)")
	benchConnsMesh = flag.Int("conns.mesh", 0, "connections per mesh in BenchmarkBrokerConnections (default: all in one)")
)

func BenchmarkBrokerConnections(b *testing.B) {
	bin := *benchConnsBin
	if bin == "" {
		bin = claudemeshBinary(b)
	}
	for range b.N {
		dir := b.TempDir()
		pprofAddr := cmpOrEnv("CLAUDEMESH_BENCH_PPROF", freeLoopbackAddr(b)) // a fixed address to profile the broker from outside
		n := *benchConns
		cmd := exec.Command(bin, "--json", "broker", "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "data"),
			"--pprof", pprofAddr, "--max-connections-per-mesh", strconv.Itoa(n+16),
			"--handshake-burst", strconv.Itoa(benchUnlimited), "--handshake-per-minute", strconv.Itoa(benchUnlimited))
		cmd.Env = append(os.Environ(), "CLAUDEMESH_CONFIG_DIR="+dir)
		bp, err := startBenchBrokerCmd(context.Background(), cmd, dir)
		if err != nil {
			b.Fatal(err)
		}
		perMesh := cmp.Or(*benchConnsMesh, n)
		var runs []*benchRun
		for left := n; left > 0; left -= perMesh {
			run := &benchRun{opts: benchOptions{Peers: max(min(perMesh, left), 2)}, url: bp.url, urls: []string{bp.url}}
			if err := run.enroll(context.Background()); err != nil {
				bp.stop()
				b.Fatal(err)
			}
			runs = append(runs, run)
		}
		rss0, _ := bp.rss()
		g0 := brokerGoroutines(b, pprofAddr)
		start := time.Now()
		// Three meshes at a time, eight handshakes each: fewer in flight
		// than a broker lets one address hold before their handshakes.
		errs := make(chan error, len(runs))
		slots := make(chan struct{}, 3)
		for _, run := range runs {
			slots <- struct{}{}
			go func() { errs <- run.connect(context.Background()); <-slots }()
		}
		for range runs {
			if err := <-errs; err != nil {
				bp.stop()
				b.Fatal(err)
			}
		}
		elapsed := time.Since(start)
		time.Sleep(2 * time.Second) // settle: handshakes' garbage collected, presences written
		rss1, _ := bp.rss()
		g1 := brokerGoroutines(b, pprofAddr)
		for _, run := range runs {
			run.close()
		}
		bp.stop()
		b.ReportMetric(float64(n)/elapsed.Seconds(), "conns/s")
		b.ReportMetric((rss1-rss0)*1024/float64(n), "KB/conn")
		b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/conn")
	}
}

// brokerGoroutines reads the goroutine count from a broker's profiler.
func brokerGoroutines(t testing.TB, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	var total int
	if _, err := fmt.Sscanf(strings.SplitN(string(head), "\n", 2)[0], "goroutine profile: total %d", &total); err != nil {
		t.Fatalf("goroutine profile %q: %v", head, err)
	}
	return total
}

// freeLoopbackAddr is a 127.0.0.1 address with a port free a moment ago.
func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// cmpOrEnv is the environment variable k when set, else v.
func cmpOrEnv(k, v string) string {
	if e := os.Getenv(k); e != "" {
		return e
	}
	return v
}
