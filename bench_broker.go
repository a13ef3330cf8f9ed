// `claudemesh bench --broker process`: the broker under test runs as a
// process of its own (`claudemesh broker serve` of this same binary), so
// that its CPU and memory are measured apart from the peers that load it.
//
// Policy: it listens on 127.0.0.1:0 with a temp data dir (removed after the
// run) and with its send, handshake and connection limits raised for the
// run; it is stopped with SIGTERM (SIGKILL if it has not exited within
// benchBrokerStopWait) before bench returns, whatever the run's outcome.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	benchBrokerStartWait = 30 * time.Second // until it prints its URL
	benchBrokerStopWait  = 10 * time.Second // SIGTERM to exit
	// clockTicksPerSecond is the unit of /proc/<pid>/stat's CPU times
	// (USER_HZ): 100 on every Linux that Go supports.
	clockTicksPerSecond = 100
)

// benchBrokerProc is a broker serve process started for one run.
type benchBrokerProc struct {
	url  string
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// spawnBenchBroker starts the broker process and waits for its URL.
func spawnBenchBroker(ctx context.Context, peers int) (*benchBrokerProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this binary to run its broker: %w", err)
	}
	dir, err := os.MkdirTemp("", "claudemesh-bench-")
	if err != nil {
		return nil, err
	}
	unlimited := strconv.Itoa(benchUnlimited)
	cmd := exec.Command(exe, "--json", "broker", "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "data"),
		"--send-burst", unlimited, "--send-per-minute", unlimited, "--handshake-burst", unlimited,
		"--handshake-per-minute", unlimited, "--max-connections-per-mesh", strconv.Itoa(peers+16))
	cmd.Env = append(os.Environ(), "CLAUDEMESH_CONFIG_DIR="+dir)
	return startBenchBrokerCmd(ctx, cmd, dir)
}

// startBenchBrokerCmd starts a broker serve --json command and waits for
// the URL it prints; dir is removed when it stops.
func startBenchBrokerCmd(ctx context.Context, cmd *exec.Cmd, dir string) (*benchBrokerProc, error) {
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &limitedWriter{w: &stderr, left: 8 << 10}
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s broker serve: %w", cmd.Path, err)
	}
	p := &benchBrokerProc{dir: dir, cmd: cmd, done: make(chan struct{})}
	// It prints one JSON document once it listens.
	type startedDoc struct {
		URL string `json:"url"`
	}
	docs := make(chan startedDoc, 1)
	go func() {
		var d startedDoc
		_ = json.NewDecoder(stdout).Decode(&d)
		docs <- d
		_, _ = io.Copy(io.Discard, stdout) // keep the pipe drained until the process exits
		cmd.Wait()
		close(p.done)
	}()
	var started startedDoc
	select {
	case started = <-docs:
	case <-time.After(benchBrokerStartWait):
	case <-ctx.Done():
	}
	if started.URL == "" {
		p.stop()
		return nil, fmt.Errorf("the broker process did not start: %s", strings.TrimSpace(stderr.String()))
	}
	p.url = started.URL
	return p, nil
}

// stop ends the process and removes its data dir.
func (p *benchBrokerProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(benchBrokerStopWait):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	os.RemoveAll(p.dir)
}

// cpu is the process's CPU time so far, user and system.
func (p *benchBrokerProc) cpu() time.Duration {
	d, _ := procCPU(p.cmd.Process.Pid)
	return d
}

// rss is the process's resident set and its peak, in MB.
func (p *benchBrokerProc) rss() (rss, peak float64) { return rssOf(strconv.Itoa(p.cmd.Process.Pid)) }

// storeMB is the size of the broker's data dir in MB: its database, WAL
// and shared-memory files.
func (p *benchBrokerProc) storeMB() float64 {
	var total int64
	entries, _ := os.ReadDir(filepath.Join(p.dir, "data"))
	for _, e := range entries {
		if info, err := e.Info(); err == nil {
			total += info.Size()
		}
	}
	return float64(total) / (1 << 20)
}

// procCPU reads utime + stime of /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// the fields after it are counted from its closing parenthesis.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, errors.New("unreadable /proc stat")
	}
	return time.Duration(utime+stime) * time.Second / clockTicksPerSecond, nil
}

// limitedWriter keeps the first left bytes written to it and drops the
// rest, so a chatty process cannot grow our memory.
type limitedWriter struct {
	w    *strings.Builder
	left int
}

func (l *limitedWriter) Write(b []byte) (int, error) {
	if l.left > 0 {
		n := min(len(b), l.left)
		l.w.Write(b[:n])
		l.left -= n
	}
	return len(b), nil
}
