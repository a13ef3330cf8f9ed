// The hook's cost as Claude Code pays it: a whole `claudemesh hook`
// process, stdin to exit, against a warm daemon, next to the floor of any
// process of the binary (`--version`).
//
//	go test -run XXX -bench HookProcess -benchtime 500x .
package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func BenchmarkHookProcess(b *testing.B) {
	b.StopTimer()
	td, _, env := hookDaemonFor(b)
	bin := claudemeshBinary(b)
	sid := newUUID()
	transcript := filepath.Join(b.TempDir(), sid+".jsonl")
	os.WriteFile(transcript, []byte(`{"type":"user"}`+"\n"), 0o600)
	environ := []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	run := func(stdin []byte, args ...string) string {
		cmd := exec.Command(bin, args...)
		cmd.Env = environ
		cmd.Stdin = strings.NewReader(string(stdin))
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("%v: %v", args, err)
		}
		return string(out)
	}
	run(hookInput(b, "session-start", sid, transcript, nil), "hook", hookSessionStart)
	s := td.sessions.BySessionID(sid)
	if s == nil {
		b.Fatal("no session")
	}
	ups := hookInput(b, "user-prompt-submit", sid, transcript, nil)
	for _, bc := range []struct {
		name   string
		before func()
		args   []string
		want   string
	}{
		{"quiet-prompt", nil, []string{"hook", hookUserPromptSubmit}, ""},
		{"prompt-with-a-message", func() { insertForSession(b, td, s, "a message to show") }, []string{"hook", hookUserPromptSubmit}, "a message to show"},
		{"version", nil, []string{"--version"}, "claudemesh"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			run(ups, bc.args...) // page the binary in
			lat := make([]time.Duration, 0, b.N)
			for range b.N {
				if bc.before != nil {
					bc.before()
				}
				t0 := time.Now()
				b.StartTimer()
				out := run(ups, bc.args...)
				b.StopTimer()
				lat = append(lat, time.Since(t0))
				if !strings.Contains(out, bc.want) {
					b.Fatalf("%v printed %q, want %q", bc.args, out, bc.want)
				}
			}
			reportLatencies(b, lat)
		})
	}
}
