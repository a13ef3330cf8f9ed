// Benchmarks of the daemon process: idle memory and autospawn to first answer.
package main

import (
	"context"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// BenchmarkDaemonIdleRSS starts a real daemon (the built binary) with one
// mesh link to a broker, lets it sit idle for a few seconds once the link is
// open, and reports its resident set then and its peak. Budget: idle RSS
// ≤ 30 MB.
//
//	go test -run XXX -bench DaemonIdleRSS -benchtime 1x .
func BenchmarkDaemonIdleRSS(b *testing.B) {
	fx := newMeshFixture(b)
	h := newTestHome(b)
	h.writeConfig(b, fx.alpha)
	stopDaemonAt(b, h.Paths)
	for i := 0; i < b.N; i++ {
		if r := runBinary(b, h.env(), "daemon", "up", "--no-tcp"); r.code != 0 {
			b.Fatalf("daemon up = %d %s", r.code, r.stderr)
		}
		cl := newDaemonClient(h.Paths.SocketFile(), "")
		waitFor(b, "the daemon's link open", func() bool {
			hl, err := cl.Health(context.Background())
			return err == nil && hl.Brokers["alpha"] == string(LinkOpen)
		})
		cl.http.CloseIdleConnections()
		pid := strconv.Itoa(readPidFile(h.Paths.PidFile()))
		// The idle window: sample the resident set for three seconds.
		var rss, peak float64
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			rss, peak = rssOf(pid)
		}
		if rss == 0 {
			b.Skip("no /proc/<pid>/status on this system")
		}
		b.ReportMetric(rss, "idle-rss-MB")
		b.ReportMetric(peak, "peak-rss-MB")
		stopDaemon(b, h.Paths)
	}
}

// BenchmarkAutospawn measures autospawn to first answer: with no daemon
// running, `claudemesh peer list` spawns one and polls it until it answers;
// the CLI reports how long that took. Budget: ≤ 100 ms. The whole
// process (start, spawn, peer list through the new daemon) is reported too.
//
//	go test -run XXX -bench Autospawn -benchtime 20x .
func BenchmarkAutospawn(b *testing.B) {
	fx := newMeshFixture(b)
	h := newTestHome(b)
	h.writeConfig(b, fx.alpha)
	stopDaemonAt(b, h.Paths)
	claudemeshBinary(b)
	took := regexp.MustCompile(`daemon started automatically \(took (\d+)ms\)`)
	var spawn, whole []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		r := runBinary(b, h.env(), "peer", "list", "--all", "--json")
		whole = append(whole, time.Since(t0))
		m := took.FindStringSubmatch(r.stderr)
		if r.code != 0 || m == nil {
			b.Fatalf("peer list = %d, no autospawn line\n%s", r.code, r.stderr)
		}
		ms, _ := strconv.Atoi(m[1])
		spawn = append(spawn, time.Duration(ms)*time.Millisecond)
		b.StopTimer()
		stopDaemon(b, h.Paths)
		b.StartTimer()
	}
	b.StopTimer()
	sortDurations(spawn)
	sortDurations(whole)
	b.ReportMetric(percentileMs(spawn, 0.50), "spawn-p50-ms")
	b.ReportMetric(percentileMs(spawn, 1), "spawn-max-ms")
	b.ReportMetric(percentileMs(whole, 0.50), "process-p50-ms")
}

// stopDaemon stops the daemon of p by the pid in its pid file and waits
// until its lock is free.
func stopDaemon(t testing.TB, p Paths) {
	t.Helper()
	pid := readPidFile(p.PidFile())
	if pid <= 0 {
		t.Fatal("no daemon pid")
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the daemon to stop", func() bool { return !daemonLockHeld(p) })
}
