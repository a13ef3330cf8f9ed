// Tests of `claudemesh bench`: every message checked exactly once, the verb's
// flags and report, and BenchmarkLoad for the 100 peers × 1,000 DMs load shape.
package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestBenchExactlyOnce runs the load tool at a tiny shape against a broker
// in this process: every message must arrive exactly once, intact. It
// asserts nothing about latency.
func TestBenchExactlyOnce(t *testing.T) {
	r, err := runBenchLoad(context.Background(), benchOptions{Peers: 4, Messages: 25, Rate: 400, Drain: testWait})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Sent != 100 || r.Delivered != 100 || r.Acked != 100 {
		t.Fatalf("report = %+v, want 100 sent, acked and delivered exactly once", r)
	}
}

// TestBenchVerb runs `claudemesh bench --json` in-process and reads its
// report.
func TestBenchVerb(t *testing.T) {
	var out, errb strings.Builder
	code := run(context.Background(), []string{"bench", "--peers", "3", "--messages", "5", "--rate", "300", "--json"},
		Env{Stdout: &out, Stderr: &errb})
	if code != exitOK {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
	var r benchReport
	if err := json.Unmarshal([]byte(out.String()), &r); err != nil {
		t.Fatalf("--json output %q: %v", out.String(), err)
	}
	if r.Delivered != 15 || r.DeliveredPct != 100 || r.P99Ms <= 0 {
		t.Fatalf("report = %+v, want 15 delivered", r)
	}
}

// TestBenchUsage: shapes the tool cannot run are usage errors.
func TestBenchUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"one peer", []string{"--peers", "1"}},
		{"no messages", []string{"--messages", "0"}},
		{"no rate", []string{"--rate", "0"}},
		{"stray word", []string{"now"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code := run(context.Background(), append([]string{"bench"}, tc.args...), Env{})
			if code != exitUsage {
				t.Fatalf("bench %v = exit %d, want %d", tc.args, code, exitUsage)
			}
		})
	}
}

// TestBenchReportFailure: a report with anything lost, duplicated,
// misdelivered, undecryptable or refused is not OK, and says why.
func TestBenchReportFailure(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    benchReport
		want string
	}{
		{"clean", benchReport{Sent: 10, Delivered: 10}, ""},
		{"lost", benchReport{Sent: 10, Delivered: 9, Lost: 1}, "1 lost"},
		{"duplicated", benchReport{Sent: 10, Delivered: 10, Duplicated: 2}, "2 duplicated"},
		{"misdelivered", benchReport{Sent: 10, Delivered: 10, Misdelivered: 1}, "1 misdelivered"},
		{"undecryptable", benchReport{Sent: 10, Delivered: 10, Undecryptable: 1}, "1 undecryptable"},
		{"refused", benchReport{Sent: 10, Delivered: 10, Refused: 3}, "3 refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.r.failure()
			if (tc.want == "") != tc.r.OK() || !strings.Contains(got, tc.want) || (tc.want == "" && got != "") {
				t.Fatalf("failure() = %q, OK() = %v, want %q", got, tc.r.OK(), tc.want)
			}
		})
	}
}

// BenchmarkLoad runs the load tool at a CI-sized shape (20 peers × 100 DMs
// at 1,000 msg/s) and reports its figures; `claudemesh bench` runs the full
// shape (100 peers × 1,000 DMs).
//
//	go test -run XXX -bench Load -benchtime 1x .
func BenchmarkLoad(b *testing.B) {
	for i := 0; i < b.N; i++ {
		r, err := runBenchLoad(context.Background(), benchOptions{Peers: 20, Messages: 100, Rate: 1000, Drain: testWait})
		if err != nil {
			b.Fatal(err)
		}
		if !r.OK() {
			b.Fatalf("load run failed: %s", r.failure())
		}
		b.ReportMetric(r.DeliveredPct, "delivered-%")
		b.ReportMetric(r.P50Ms, "p50-ms")
		b.ReportMetric(r.P99Ms, "p99-ms")
		b.ReportMetric(r.MaxMs, "max-ms")
		b.ReportMetric(r.Throughput, "msgs/s")
	}
}

// TestBenchClosedLoopAndCurve: a closed loop keeps every peer's sends in
// flight up to its bound and still checks every message; a curve runs one
// step per rate on the same mesh, each with its own messages.
func TestBenchClosedLoopAndCurve(t *testing.T) {
	r, err := runBenchLoad(context.Background(), benchOptions{Peers: 4, Messages: 30, Rate: 1, Inflight: 3, Drain: testWait})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Delivered != 120 || r.Inflight != 3 || r.TargetRate != 0 {
		t.Fatalf("closed loop = %+v, want 120 delivered with 3 in flight", r)
	}
	rs, err := runBench(context.Background(), benchOptions{Peers: 3, Messages: 10, Rate: 1, Curve: []float64{200, 400}, Drain: testWait})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].TargetRate != 200 || rs[1].TargetRate != 400 {
		t.Fatalf("curve = %+v, want steps at 200 and 400 msg/s", rs)
	}
	for _, r := range rs {
		if !r.OK() || r.Delivered != 30 {
			t.Fatalf("curve step = %+v, want 30 delivered exactly once", r)
		}
	}
}

// TestBenchBrokerProcess runs the built binary's bench against a broker it
// starts as a process of its own, which it measures and stops.
func TestBenchBrokerProcess(t *testing.T) {
	res := runBinary(t, map[string]string{"CLAUDEMESH_CONFIG_DIR": t.TempDir()},
		"bench", "--broker", "process", "--peers", "3", "--messages", "10", "--rate", "300", "--json")
	if res.code != exitOK {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}
	var r benchReport
	if err := json.Unmarshal([]byte(res.stdout), &r); err != nil {
		t.Fatalf("--json output %q: %v", res.stdout, err)
	}
	// Its CPU comes in 10 ms ticks, which so short a run may not reach.
	if !r.OK() || r.Delivered != 30 || r.BrokerCPUS < 0 || r.BrokerRSSMB <= 0 || r.BrokerStoreMB <= 0 ||
		!strings.HasPrefix(r.Broker, "own process ws://127.0.0.1:") {
		t.Fatalf("report = %+v, want 30 delivered and the broker process's RSS and store size", r)
	}
}

// TestBenchCurveUsage: --curve takes positive rates and is an open loop.
func TestBenchCurveUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"not a number", []string{"--curve", "1000,fast"}},
		{"zero", []string{"--curve", "0"}},
		{"with inflight", []string{"--curve", "1000", "--inflight", "4"}},
		{"negative inflight", []string{"--inflight", "-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code := run(context.Background(), append([]string{"bench"}, tc.args...), Env{}); code != exitUsage {
				t.Fatalf("bench %v = exit %d, want %d", tc.args, code, exitUsage)
			}
		})
	}
}
