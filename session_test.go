// Tests of the session registry: the reaper, start times, replacement,
// restore after a restart, session keypairs on disk.
package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeProcs is a process table the reaper reads instead of the OS's.
type fakeProcs struct {
	mu     sync.Mutex
	alive  map[int]bool
	starts map[int]string
	calls  int // start-time batches read
}

func (f *fakeProcs) pidAlive(pid int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.alive[pid]
}

func (f *fakeProcs) startTimes(pids []int) map[int]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	out := map[int]string{}
	for _, p := range pids {
		if st, ok := f.starts[p]; ok {
			out[p] = st
		}
	}
	return out
}

// The reaper's truth table: dead pid, reused pid (start time changed),
// TTL, and what it must leave alone.
func TestReaperTruthTable(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name       string
		alive      bool
		startAtReg string // start time when registered
		startNow   string // start time at the sweep ("" = pid missing from the batch)
		age        time.Duration
		kept       bool
	}{
		{"live, same process", true, "100", "100", time.Minute, true},
		{"pid dead", false, "100", "", time.Minute, false},
		{"pid reused by another process", true, "100", "999", time.Minute, false},
		{"start time unknown at register", true, "", "999", time.Minute, true},
		{"pid missing from the batch: left for the next sweep", true, "100", "", time.Minute, true},
		{"older than the TTL", true, "100", "100", 25 * time.Hour, false},
		{"just under the TTL", true, "100", "100", 23 * time.Hour, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			procs := &fakeProcs{alive: map[int]bool{42: true}, starts: map[int]string{}}
			if tc.startAtReg != "" {
				procs.starts[42] = tc.startAtReg
			}
			var dropped []string
			clock := now
			r := newRegistry(RegistryOptions{
				PidAlive: procs.pidAlive, StartTimes: procs.startTimes, Now: func() time.Time { return clock },
				OnDeregister: func(s *Session, reason string) { dropped = append(dropped, reason) },
			})
			r.Register(&Session{Token: randomHex(32), SessionID: "s", Mesh: "m", DisplayName: "d", Pid: 42})
			procs.alive[42] = tc.alive
			delete(procs.starts, 42)
			if tc.startNow != "" {
				procs.starts[42] = tc.startNow
			}
			clock = now.Add(tc.age)
			r.Sweep()
			if kept := r.Len() == 1; kept != tc.kept {
				t.Fatalf("kept = %v (dropped: %v), want %v", kept, dropped, tc.kept)
			}
		})
	}
}

// One sweep reads every start time in one batch, whatever the count.
func TestReaperBatchesStartTimes(t *testing.T) {
	procs := &fakeProcs{alive: map[int]bool{}, starts: map[int]string{}}
	r := newRegistry(RegistryOptions{PidAlive: procs.pidAlive, StartTimes: procs.startTimes})
	for i := 0; i < 50; i++ {
		pid := 1000 + i
		procs.alive[pid], procs.starts[pid] = true, "t"
		r.Register(&Session{Token: randomHex(32), SessionID: newUUID(), Mesh: "m", DisplayName: "d", Pid: pid})
	}
	procs.calls = 0
	r.Sweep()
	if procs.calls != 1 {
		t.Fatalf("a sweep over 50 sessions read start times %d times, want 1", procs.calls)
	}
}

// The real start-time reader sees a live child and stops seeing it.
func TestProcessStartTimesRealProcess(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep binary:", err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	st := processStartTimes([]int{pid, os.Getpid()})
	if st[pid] == "" || st[os.Getpid()] == "" {
		t.Fatalf("start times = %v, want both pids", st)
	}
	if !pidAlive(pid) {
		t.Fatal("pidAlive(child) = false")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if pidAlive(pid) {
		t.Fatal("pidAlive(reaped child) = true")
	}
}

func TestStatStartTime(t *testing.T) {
	stat := "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 12345 67 18446744073709551615"
	if st, ok := statStartTime([]byte(stat)); !ok || st != "987654" {
		t.Fatalf("statStartTime = %q %v, want 987654", st, ok)
	}
	if _, ok := statStartTime([]byte("garbage")); ok {
		t.Fatal("statStartTime(garbage) ok")
	}
}

func TestRegistryReplaceBySessionID(t *testing.T) {
	var events []string
	r := newRegistry(RegistryOptions{
		PidAlive: func(int) bool { return true }, StartTimes: func([]int) map[int]string { return nil },
		OnRegister:   func(s *Session) { events = append(events, "+"+s.Token[:4]) },
		OnDeregister: func(s *Session, reason string) { events = append(events, "-"+s.Token[:4]+":"+reason) },
	})
	t1, t2 := "aaaa"+randomHex(30), "bbbb"+randomHex(30)
	r.Register(&Session{Token: t1, SessionID: "s1", Mesh: "m", DisplayName: "d", Pid: 1})
	r.Register(&Session{Token: t2, SessionID: "s1", Mesh: "m", DisplayName: "d", Pid: 2})
	if r.Resolve(t1) != nil || r.Resolve(t2) == nil || r.Len() != 1 {
		t.Fatalf("re-registering a session id did not replace it")
	}
	if got := strings.Join(events, " "); got != "+aaaa -aaaa:replaced +bbbb" {
		t.Fatalf("hooks = %q", got)
	}
}

// Sessions survive a daemon restart: sessions.json (no secrets) plus the
// stored keypair bring the session back with the same key, and its link
// reconnects; a session whose process is gone is not restored.
func TestSessionsRestoredAfterRestart(t *testing.T) {
	fx := newMeshFixture(t)
	h := newTestHome(t)
	h.writeConfig(t, fx.alpha)
	ctx := context.Background()

	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Skip(err)
	}
	td := startTestDaemon(t, h, func(o *DaemonOptions) { o.ReaperInterval = time.Hour })
	live, key := registration(t, fx.alpha, "live", os.Getpid())
	gone, _ := registration(t, fx.alpha, "gone", dead.Process.Pid)
	for _, r := range []RegisterRequest{live, gone} {
		if err := td.client("").RegisterSession(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(h.Paths.SessionsFile())
	if err != nil {
		t.Fatal(err)
	}
	var f sessionsFile
	if err := json.Unmarshal(data, &f); err != nil || len(f.Sessions) != 2 {
		t.Fatalf("sessions.json = %s, %v", data, err)
	}
	if strings.Contains(string(data), key.SecretHex()[:64]) {
		t.Fatal("sessions.json holds the session secret")
	}
	if st, _ := os.Stat(h.Paths.SessionsFile()); st.Mode().Perm() != 0o600 {
		t.Fatalf("sessions.json mode %v", st.Mode())
	}
	td.shutdown(t)

	td2 := startTestDaemon(t, h, nil)
	s := td2.sessions.Resolve(live.Token)
	if s == nil || s.Presence == nil || s.Presence.SessionPubkey != key.PublicHex() {
		t.Fatalf("restored session = %+v, want the live one with its key", s)
	}
	if td2.sessions.Resolve(gone.Token) != nil {
		t.Fatal("a session whose pid is dead was restored")
	}
	waitFor(t, "restored session link open", func() bool { return td2.sessionLinkState(s) == LinkOpen })
	// The broker sees the same session key again.
	bob := connectMember(t, fx.url, fx.bob)
	waitFor(t, "the restored session in bob's peer list", func() bool {
		for _, n := range peersOf(bob) {
			if n == "live" {
				return true
			}
		}
		return false
	})
}

func TestSessionKeypairStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mesh", "sid.json")
	kp, created, err := loadOrCreateSessionKeypair(path, "mesh", "sid")
	if err != nil || !created {
		t.Fatalf("first load-or-create: %v %v", created, err)
	}
	again, created, err := loadOrCreateSessionKeypair(path, "mesh", "sid")
	if err != nil || created || again.PublicHex() != kp.PublicHex() {
		t.Fatalf("second load-or-create changed the key: %v %v", created, err)
	}
	st, _ := os.Stat(path)
	dst, _ := os.Stat(filepath.Dir(path))
	if st.Mode().Perm() != 0o600 || dst.Mode().Perm() != 0o700 {
		t.Fatalf("modes: file %v dir %v", st.Mode(), dst.Mode())
	}
	// Storing a different key keeps the first one.
	got, stored, err := storeSessionKeypair(path, "mesh", "sid", mustNewKeypair())
	if err != nil || stored || got.PublicHex() != kp.PublicHex() {
		t.Fatalf("store over an existing key: stored=%v err=%v", stored, err)
	}
	// Concurrent creators agree on one key.
	race := filepath.Join(dir, "mesh", "race.json")
	keys := make([]string, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, _, err := loadOrCreateSessionKeypair(race, "mesh", "race")
			if err != nil {
				t.Error(err)
			}
			keys[i] = k.PublicHex()
		}()
	}
	wg.Wait()
	for _, k := range keys {
		if k != keys[0] {
			t.Fatalf("concurrent creators got different keys: %v", keys)
		}
	}
}
