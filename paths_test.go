// Tests of where claudemesh keeps its files: overrides and the stale
// config-dir fallback.
package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolvePaths(t *testing.T) {
	const home = "/home/u"
	existing := map[string]bool{"/tmp/live": true}
	cases := []struct {
		name        string
		env         map[string]string
		tty         bool
		wantConfig  string
		wantDaemon  string
		wantSession string
		wantWarning string // substring; "" means no warning
	}{
		{name: "defaults", wantConfig: "/home/u/.claudemesh", wantDaemon: "/home/u/.claudemesh/daemon", wantSession: "/home/u/.claudemesh/sessions"},
		{name: "empty env is unset", env: map[string]string{"CLAUDEMESH_CONFIG_DIR": ""}, tty: true, wantConfig: "/home/u/.claudemesh", wantDaemon: "/home/u/.claudemesh/daemon", wantSession: "/home/u/.claudemesh/sessions"},
		{name: "live config dir is trusted", env: map[string]string{"CLAUDEMESH_CONFIG_DIR": "/tmp/live"}, tty: true, wantConfig: "/tmp/live", wantDaemon: "/home/u/.claudemesh/daemon", wantSession: "/home/u/.claudemesh/sessions"},
		{name: "stale dir on a tty warns with unset", env: map[string]string{"CLAUDEMESH_CONFIG_DIR": "/tmp/gone", "SHELL": "/bin/bash"}, tty: true, wantConfig: "/home/u/.claudemesh", wantDaemon: "/home/u/.claudemesh/daemon", wantSession: "/home/u/.claudemesh/sessions", wantWarning: "hint: unset CLAUDEMESH_CONFIG_DIR"},
		{name: "stale dir under fish warns with set -e", env: map[string]string{"CLAUDEMESH_CONFIG_DIR": "/tmp/gone", "SHELL": "/usr/bin/fish"}, tty: true, wantConfig: "/home/u/.claudemesh", wantDaemon: "/home/u/.claudemesh/daemon", wantSession: "/home/u/.claudemesh/sessions", wantWarning: "hint: set -e CLAUDEMESH_CONFIG_DIR"},
		{name: "stale dir off a tty is quiet", env: map[string]string{"CLAUDEMESH_CONFIG_DIR": "/tmp/gone"}, tty: false, wantConfig: "/home/u/.claudemesh", wantDaemon: "/home/u/.claudemesh/daemon", wantSession: "/home/u/.claudemesh/sessions"},
		{name: "daemon dir ignores config dir", env: map[string]string{"CLAUDEMESH_CONFIG_DIR": "/tmp/live"}, wantConfig: "/tmp/live", wantDaemon: "/home/u/.claudemesh/daemon", wantSession: "/home/u/.claudemesh/sessions"},
		{name: "daemon and sessions overrides", env: map[string]string{"CLAUDEMESH_DAEMON_DIR": "/d", "CLAUDEMESH_SESSIONS_DIR": "/s"}, wantConfig: "/home/u/.claudemesh", wantDaemon: "/d", wantSession: "/s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, warning := resolvePaths(pathEnv{
				getenv:    func(k string) string { return tc.env[k] },
				home:      home,
				stderrTTY: tc.tty,
				dirExists: func(d string) bool { return existing[d] },
			})
			if p.ConfigDir != tc.wantConfig || p.DaemonDir != tc.wantDaemon || p.SessionsDir != tc.wantSession {
				t.Fatalf("resolvePaths = %+v, want config %s daemon %s sessions %s", p, tc.wantConfig, tc.wantDaemon, tc.wantSession)
			}
			if tc.wantWarning == "" && warning != "" {
				t.Fatalf("unexpected warning %q", warning)
			}
			if tc.wantWarning != "" && !strings.Contains(warning, tc.wantWarning) {
				t.Fatalf("warning = %q, want it to contain %q", warning, tc.wantWarning)
			}
		})
	}
}

// The CLI resolves paths once per process: a stale dir warns once however
// often paths are asked for.
func TestCLIPathsWarnOnce(t *testing.T) {
	home := t.TempDir()
	var stderr bytes.Buffer
	env := map[string]string{"HOME": home, "CLAUDEMESH_CONFIG_DIR": filepath.Join(home, "gone")}
	c := newCLI(Env{Getenv: func(k string) string { return env[k] }, Stderr: &stderr, StderrTTY: true}, nil)
	for i := 0; i < 3; i++ {
		if got := c.Paths().ConfigDir; got != filepath.Join(home, ".claudemesh") {
			t.Fatalf("ConfigDir = %s", got)
		}
	}
	if n := strings.Count(stderr.String(), "warning:"); n != 1 {
		t.Fatalf("%d warnings, want 1: %q", n, stderr.String())
	}
	// A dir that exists (even without config.json) is trusted.
	live := filepath.Join(home, "live")
	if err := os.Mkdir(live, 0o700); err != nil {
		t.Fatal(err)
	}
	env["CLAUDEMESH_CONFIG_DIR"] = live
	c = newCLI(Env{Getenv: func(k string) string { return env[k] }, Stderr: &stderr}, nil)
	if got := c.Paths().ConfigDir; got != live {
		t.Fatalf("ConfigDir = %s, want %s", got, live)
	}
}
