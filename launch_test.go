// Tests of `claudemesh launch`: options, claude's argv and environment,
// transcripts, stale dirs, and the verb as a process with a fake claude.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestLaunchOptions(t *testing.T) {
	cases := []struct {
		name        string
		flags       launchFlags
		args        []string
		passthrough []string
		wantArgv    []string // with session id "SID", fresh
		wantErr     string
	}{
		{name: "bare", wantArgv: []string{claudeChannelsFlag, claudeChannelsArg, "--session-id", "SID"}},
		{name: "everything", flags: launchFlags{yes: true, systemPrompt: "be terse", role: "lead"},
			passthrough: []string{"--model", "opus", claudeSkipPerms, claudeChannelsFlag, "server:other", "-p"},
			wantArgv:    []string{claudeChannelsFlag, claudeChannelsArg, "--session-id", "SID", claudeSkipPerms, "--system-prompt", "be terse", "--model", "opus", "-p"}},
		{name: "channels flag with =", passthrough: []string{claudeChannelsFlag + "=server:x", "--verbose"},
			wantArgv: []string{claudeChannelsFlag, claudeChannelsArg, "--session-id", "SID", "--verbose"}},
		{name: "slug as argument", args: []string{"team"}, wantArgv: []string{claudeChannelsFlag, claudeChannelsArg, "--session-id", "SID"}},
		{name: "two meshes", flags: launchFlags{mesh: "a"}, args: []string{"b"}, wantErr: "two meshes"},
		{name: "extra words", args: []string{"a", "b"}, wantErr: "at most one mesh"},
		{name: "bad message mode", flags: launchFlags{messageMode: "loud"}, wantErr: "--message-mode"},
		{name: "resume and continue", flags: launchFlags{resume: "x", cont: true}, wantErr: "do not go together"},
		{name: "resume not an id", flags: launchFlags{resume: "../etc"}, wantErr: "session id"},
		{name: "bad group", flags: launchFlags{groups: "ok, bad group"}, wantErr: "not a group name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := tc.flags.options(tc.args, tc.passthrough)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || exitCodeOf(err) != exitUsage {
					t.Fatalf("options = %v, want a usage error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := claudeArgv(o, "SID", true); !reflect.DeepEqual(got, tc.wantArgv) {
				t.Fatalf("argv = %q, want %q", got, tc.wantArgv)
			}
		})
	}
}

func TestClaudeArgvResumeContinue(t *testing.T) {
	if got, want := claudeArgv(launchOptions{Resume: "abc"}, "abc", false), []string{claudeChannelsFlag, claudeChannelsArg, "--resume", "abc"}; !reflect.DeepEqual(got, want) {
		t.Errorf("resume argv = %q, want %q", got, want)
	}
	if got, want := claudeArgv(launchOptions{Continue: true}, "x", false), []string{claudeChannelsFlag, claudeChannelsArg, "--continue"}; !reflect.DeepEqual(got, want) {
		t.Errorf("continue argv = %q, want %q", got, want)
	}
}

func TestParseGroupsFlag(t *testing.T) {
	got, err := parseGroupsFlag(" frontend:lead, @reviewers ,, ops/oncall ")
	want := []GroupRef{{Name: "frontend", Role: "lead"}, {Name: "reviewers"}, {Name: "ops/oncall"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("parseGroupsFlag = %v, %v; want %v", got, err, want)
	}
	if specs := groupSpecs(got); !reflect.DeepEqual(specs, []string{"@frontend:lead", "@reviewers", "@ops/oncall"}) {
		t.Fatalf("groupSpecs = %q", specs)
	}
	if !reflect.DeepEqual(parseGroupList(groupSpecs(got)), want) {
		t.Fatal("the daemon does not read back what launch registers")
	}
}

func TestClaudeEnv(t *testing.T) {
	got := claudeEnv([]string{"PATH=/bin", "CLAUDEMESH_IPC_TOKEN=outer", "CLAUDEMESH_CONFIG_DIR=/old", "HOME=/h"},
		map[string]string{"CLAUDEMESH_CONFIG_DIR": "/new", "CLAUDEMESH_ROLE": "lead"})
	want := []string{"PATH=/bin", "HOME=/h", "CLAUDEMESH_CONFIG_DIR=/new", "CLAUDEMESH_ROLE=lead"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("claudeEnv = %q, want %q", got, want)
	}
}

func TestContinueSessionID(t *testing.T) {
	home := t.TempDir()
	cwd := "/work/my.proj"
	dir := filepath.Join(home, ".claude", "projects", "-work-my-proj")
	os.MkdirAll(dir, 0o700)
	old, newer := "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
	for i, id := range []string{old, newer, "not-a-uuid"} {
		p := filepath.Join(dir, id+".jsonl")
		os.WriteFile(p, []byte("{}\n"), 0o600)
		at := time.Now().Add(time.Duration(i-3) * time.Hour)
		if id == "not-a-uuid" {
			at = time.Now()
		}
		os.Chtimes(p, at, at)
	}
	if got := continueSessionID(home, cwd); got != newer {
		t.Fatalf("continueSessionID = %q, want %q", got, newer)
	}
	if got := continueSessionID(home, "/elsewhere"); got != "" {
		t.Fatalf("continueSessionID without transcripts = %q", got)
	}
	o := launchOptions{Continue: true}
	if id, fresh := launchSessionID(o, home, cwd); id != newer || fresh {
		t.Fatalf("launchSessionID(--continue) = %q, %v", id, fresh)
	}
}

func TestCleanStaleLaunchDirs(t *testing.T) {
	tmp := t.TempDir()
	mk := func(name string, pid int, age time.Duration) string {
		d := filepath.Join(tmp, name)
		os.MkdirAll(d, 0o700)
		if pid != 0 {
			os.WriteFile(filepath.Join(d, launchPidFile), []byte(strconv.Itoa(pid)+"\n"), 0o600)
		}
		at := time.Now().Add(-age)
		os.Chtimes(d, at, at)
		return d
	}
	dead := deadPid(t)
	gone := mk(launchDirPrefix+"gone", dead, 2*time.Hour)
	noPid := mk(launchDirPrefix+"nopid", 0, 2*time.Hour)
	running := mk(launchDirPrefix+"running", os.Getpid(), 2*time.Hour)
	fresh := mk(launchDirPrefix+"fresh", dead, time.Minute)
	other := mk("other-dir", dead, 2*time.Hour)
	if n := cleanStaleLaunchDirs(tmp, time.Now(), launchStaleAge); n != 2 {
		t.Fatalf("removed %d, want 2", n)
	}
	for d, want := range map[string]bool{gone: false, noPid: false, running: true, fresh: true, other: true} {
		if _, err := os.Stat(d); (err == nil) != want {
			t.Errorf("%s exists = %v, want %v", filepath.Base(d), err == nil, want)
		}
	}
}

// deadPid is the pid of a process that has exited.
func deadPid(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestFindClaude(t *testing.T) {
	home := t.TempDir()
	env := map[string]string{"PATH": t.TempDir()}
	_, err := findClaude(mapEnv(env), home)
	if exitCodeOf(err) != exitClaudeMissing {
		t.Fatalf("findClaude with nothing installed = %v, want exit 9", err)
	}
	local := filepath.Join(home, ".local", "bin", "claude")
	os.MkdirAll(filepath.Dir(local), 0o700)
	os.WriteFile(local, []byte("#!/bin/sh\n"), 0o755)
	if got, err := findClaude(mapEnv(env), home); err != nil || got != local {
		t.Fatalf("findClaude = %q, %v; want %q", got, err, local)
	}
	env["CLAUDEMESH_CLAUDE_BIN"] = filepath.Join(home, "nope")
	if _, err := findClaude(mapEnv(env), home); exitCodeOf(err) != exitClaudeMissing {
		t.Fatalf("findClaude with a bad CLAUDEMESH_CLAUDE_BIN = %v, want exit 9", err)
	}
}

// fakeClaude is a `claude` that records its argv (NUL-separated) and
// environment in dir, then waits for a line on dir/fifo (when it exists):
// a number to exit with, or "kill" to die of SIGTERM.
func fakeClaude(t *testing.T, dir string, withFifo bool) string {
	t.Helper()
	if withFifo {
		if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	script := filepath.Join(dir, "claude")
	body := `#!/bin/sh
out='` + dir + `'
env > "$out/env"
printf '%s\0' "$@" > "$out/argv.tmp" && mv "$out/argv.tmp" "$out/argv"
code=0
if [ -p "$out/fifo" ]; then read code < "$out/fifo"; fi
if [ "$code" = kill ]; then kill -TERM $$; fi
exit "$code"
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script
}

// launchProc is `claudemesh launch` as a process.
type launchProc struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{}
}

func startLaunch(t *testing.T, env map[string]string, args ...string) *launchProc {
	t.Helper()
	cmd := binaryCommand(t, env, append([]string{"launch"}, args...)...)
	lp := &launchProc{cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = lp.stdout, lp.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	go func() { cmd.Wait(); close(lp.done) }()
	t.Cleanup(func() {
		select {
		case <-lp.done:
		default:
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-lp.done
		}
		if t.Failed() {
			t.Logf("launch stdout:\n%s\nlaunch stderr:\n%s", lp.stdout.String(), lp.stderr.String())
		}
	})
	return lp
}

func (lp *launchProc) wait(t *testing.T) *os.ProcessState {
	t.Helper()
	select {
	case <-lp.done:
	case <-time.After(testWait):
		t.Fatal("launch did not exit")
	}
	return lp.cmd.ProcessState
}

func readNULList(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
}

func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			out[k] = v
		}
	}
	return out
}

func modeOf(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// launch end to end with a fake claude: the exact argv and environment,
// private temp files, the registration (with the launch process's pid and
// the stored session key) visible while claude runs, claude's exit code,
// then deregistration and cleanup. A relaunch with --resume keeps the
// session key; a SIGTERM to launch reaches claude, and launch dies of the
// signal claude died of.
func TestLaunchProcess(t *testing.T) {
	b, url := startTestBrokerWith(t, msgBrokerOptions())
	alpha := newTestMesh(t, b, url, "alpha", "me")
	h := newTestHome(t)
	h.writeConfig(t, alpha)
	td := startTestDaemon(t, h, nil)
	td.waitLink(t, "alpha", LinkOpen)

	registerClaudemeshWithClaude(t, h.Home) // as install does: claude needs no --mcp-config
	out := shortTempDir(t)
	claude := fakeClaude(t, out, true)
	env := h.env("CLAUDEMESH_CLAUDE_BIN", claude, "CLAUDEMESH_INTERNAL_NO_AUTOSPAWN", "1", "TMPDIR", shortTempDir(t))
	lp := startLaunch(t, env, "alpha", "--name", "alice", "--role", "lead", "--groups", "fe:lead,all", "--message-mode", "inbox",
		"--system-prompt", "be terse", "-y", "--", "--model", "opus", claudeSkipPerms)
	waitFor(t, "claude started", func() bool { _, err := os.Stat(filepath.Join(out, "argv")); return err == nil })

	e := readEnvFile(t, filepath.Join(out, "env"))
	sid := e["CLAUDEMESH_SESSION_ID"]
	if !regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`).MatchString(sid) {
		t.Fatalf("CLAUDEMESH_SESSION_ID = %q", sid)
	}
	wantArgv := []string{claudeChannelsFlag, claudeChannelsArg, "--session-id", sid, claudeSkipPerms, "--system-prompt", "be terse", "--model", "opus"}
	if got := readNULList(t, filepath.Join(out, "argv")); !reflect.DeepEqual(got, wantArgv) {
		t.Fatalf("claude argv = %q, want %q", got, wantArgv)
	}
	tmp := e["CLAUDEMESH_CONFIG_DIR"]
	if !strings.HasPrefix(filepath.Base(tmp), launchDirPrefix) || e["CLAUDEMESH_IPC_TOKEN_FILE"] != filepath.Join(tmp, launchTokenFile) ||
		e["CLAUDEMESH_DISPLAY_NAME"] != "alice" || e["CLAUDEMESH_ROLE"] != "lead" || e["CLAUDEMESH_IPC_TOKEN"] != "" {
		t.Fatalf("claude env = %v", e)
	}
	if modeOf(t, tmp) != 0o700 || modeOf(t, filepath.Join(tmp, "config.json")) != 0o600 || modeOf(t, e["CLAUDEMESH_IPC_TOKEN_FILE"]) != 0o600 {
		t.Fatalf("modes: dir %v, config %v, token %v", modeOf(t, tmp), modeOf(t, filepath.Join(tmp, "config.json")), modeOf(t, e["CLAUDEMESH_IPC_TOKEN_FILE"]))
	}
	cfg, err := loadConfig(filepath.Join(tmp, "config.json"))
	if err != nil || len(cfg.Meshes) != 1 || cfg.Meshes[0].Slug != "alpha" || cfg.MessageMode != "inbox" || cfg.DisplayName != "alice" ||
		!reflect.DeepEqual(cfg.Groups, []GroupRef{{Name: "fe", Role: "lead"}, {Name: "all"}}) {
		t.Fatalf("session config = %+v, %v", cfg, err)
	}
	token := strings.TrimSpace(string(must(os.ReadFile(e["CLAUDEMESH_IPC_TOKEN_FILE"]))))
	key, err := loadSessionKeypair(h.Paths.SessionKeyFile("alpha", sid))
	if err != nil {
		t.Fatalf("session key not stored: %v", err)
	}
	me, err := td.client(token).SessionMe(context.Background())
	if err != nil || me == nil || me.SessionID != sid || me.Pid != lp.cmd.Process.Pid || me.DisplayName != "alice" || me.Role != "lead" ||
		me.Presence == nil || me.Presence.SessionPubkey != key.PublicHex() || !reflect.DeepEqual(me.Groups, []string{"@fe:lead", "@all"}) {
		t.Fatalf("registered session = %+v, %v (launch pid %d)", me, err, lp.cmd.Process.Pid)
	}
	var list struct {
		Sessions []sessionView `json:"sessions"`
	}
	if err := td.client("").Do(context.Background(), "GET", "/v1/sessions", nil, &list); err != nil || len(list.Sessions) != 1 || list.Sessions[0].SessionID != sid {
		t.Fatalf("/v1/sessions = %+v, %v", list, err)
	}

	os.WriteFile(filepath.Join(out, "fifo"), []byte("7\n"), 0o600)
	if st := lp.wait(t); st.ExitCode() != 7 {
		t.Fatalf("launch exit = %v, want claude's 7", st)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp dir left behind: %v", err)
	}
	if td.sessions.Len() != 0 {
		t.Fatalf("%d sessions still registered after launch exited", td.sessions.Len())
	}
	if s := lp.stdout.String(); !strings.Contains(s, "claudemesh launch — as alice (lead) on alpha [@fe:lead, @all] [inbox]") ||
		!strings.Contains(s, "● broker connected · 0 peers online · 0 unread") {
		t.Fatalf("banner = %q", s)
	}
	// The daemon was up and stderr is no terminal: no progress chatter.
	if s := lp.stderr.String(); s != "" {
		t.Fatalf("launch stderr = %q, want nothing", s)
	}

	// Relaunch with --resume: same session key; SIGTERM to launch reaches
	// claude, which dies of it, and so does launch.
	os.Remove(filepath.Join(out, "argv"))
	lp = startLaunch(t, env, "--resume", sid, "--quiet")
	waitFor(t, "claude started again", func() bool { _, err := os.Stat(filepath.Join(out, "argv")); return err == nil })
	if got, want := readNULList(t, filepath.Join(out, "argv")), []string{claudeChannelsFlag, claudeChannelsArg, "--resume", sid}; !reflect.DeepEqual(got, want) {
		t.Fatalf("resume argv = %q, want %q", got, want)
	}
	e = readEnvFile(t, filepath.Join(out, "env"))
	token = strings.TrimSpace(string(must(os.ReadFile(e["CLAUDEMESH_IPC_TOKEN_FILE"]))))
	me, err = td.client(token).SessionMe(context.Background())
	if err != nil || me == nil || me.Presence == nil || me.Presence.SessionPubkey != key.PublicHex() || me.SessionID != sid {
		t.Fatalf("resumed session = %+v, %v; want session key %s", me, err, key.PublicHex())
	}
	if err := lp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st := lp.wait(t)
	if ws := st.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("launch after SIGTERM = %v, want killed by SIGTERM", st)
	}
	if lp.stdout.String() != "" {
		t.Fatalf("--quiet printed %q", lp.stdout.String())
	}
	if td.sessions.Len() != 0 {
		t.Fatal("session still registered after a signalled launch")
	}
	if _, err := os.Stat(e["CLAUDEMESH_CONFIG_DIR"]); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp dir left behind after a signal: %v", err)
	}

	// claude missing: exit 9 with a hint, nothing registered.
	res := runBinary(t, h.env("CLAUDEMESH_CLAUDE_BIN", filepath.Join(out, "missing")), "launch", "alpha")
	if res.code != exitClaudeMissing || !strings.Contains(res.stderr, "install Claude Code") {
		t.Fatalf("launch without claude = %d, %q", res.code, res.stderr)
	}
}

// launch --join joins through the real join flow, then launches into the
// mesh it joined.
func TestLaunchJoin(t *testing.T) {
	b, url := startTestBrokerWith(t, msgBrokerOptions())
	alpha := newTestMesh(t, b, url, "alpha", "me")
	owner := newTestHome(t)
	owner.writeConfig(t, alpha)
	res := runCLI(t, owner.env(), "invite", "--mesh", "alpha", "--json")
	if res.code != 0 {
		t.Fatalf("invite: %d %s", res.code, res.stderr)
	}
	invite := jsonField(t, res.stdout, "url")

	h := newTestHome(t)
	h.writeConfig(t)
	td := startTestDaemon(t, h, nil)
	out := shortTempDir(t)
	claude := fakeClaude(t, out, false)
	lp := startLaunch(t, h.env("CLAUDEMESH_CLAUDE_BIN", claude, "CLAUDEMESH_INTERNAL_NO_AUTOSPAWN", "1"), "--join", invite, "--name", "carol", "-y")
	if st := lp.wait(t); st.ExitCode() != 0 {
		t.Fatalf("launch --join exit = %v", st)
	}
	cfg, err := loadConfig(h.Paths.MachineConfigFile())
	if err != nil || len(cfg.Meshes) != 1 || cfg.Meshes[0].MeshID != alpha.MeshID {
		t.Fatalf("machine config after --join = %+v, %v", cfg, err)
	}
	e := readEnvFile(t, filepath.Join(out, "env"))
	if e["CLAUDEMESH_DISPLAY_NAME"] != "carol" {
		t.Fatalf("env = %v", e)
	}
	if _, err := loadSessionKeypair(h.Paths.SessionKeyFile("alpha", e["CLAUDEMESH_SESSION_ID"])); err != nil {
		t.Fatalf("no session key for the joined mesh: %v", err)
	}
	if td.MemberLink("alpha") == nil {
		t.Fatal("the daemon did not attach the joined mesh")
	}
	if !strings.Contains(lp.stderr.String(), "joined alpha as carol") {
		t.Fatalf("stderr = %q", lp.stderr.String())
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func jsonField(t *testing.T, doc, field string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("not JSON: %q", doc)
	}
	s, _ := m[field].(string)
	return s
}

// A damaged session key file does not block `launch --resume`: it is moved
// aside (and kept), launch says so, and the session runs with a new key.
func TestLaunchResumeWithDamagedSessionKey(t *testing.T) {
	b, url := startTestBrokerWith(t, msgBrokerOptions())
	alpha := newTestMesh(t, b, url, "alpha", "me")
	h := newTestHome(t)
	h.writeConfig(t, alpha)
	td := startTestDaemon(t, h, nil)
	td.waitLink(t, "alpha", LinkOpen)
	out := shortTempDir(t)
	env := h.env("CLAUDEMESH_CLAUDE_BIN", fakeClaude(t, out, false), "CLAUDEMESH_INTERNAL_NO_AUTOSPAWN", "1", "TMPDIR", shortTempDir(t))
	sid := newUUID()
	keyFile := h.Paths.SessionKeyFile("alpha", sid)
	if err := ensurePrivateDir(filepath.Dir(keyFile)); err != nil {
		t.Fatal(err)
	}
	damaged := []byte(`{"version":1,"publicKey":"trunc`)
	if err := os.WriteFile(keyFile, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	lp := startLaunch(t, env, "alpha", "--resume", sid, "--name", "alice", "--quiet")
	if st := lp.wait(t); st.ExitCode() != 0 {
		t.Fatalf("launch --resume with a damaged key = %v\n%s", st, lp.stderr.String())
	}
	if !strings.Contains(lp.stderr.String(), "key file was damaged") || !strings.Contains(lp.stderr.String(), keyFile+".damaged-") {
		t.Fatalf("launch said %q, want the damaged file named", lp.stderr.String())
	}
	if _, err := loadSessionKeypair(keyFile); err != nil {
		t.Fatalf("no new session key: %v", err)
	}
	kept, _ := filepath.Glob(keyFile + ".damaged-*")
	if len(kept) != 1 || !bytes.Equal(must(os.ReadFile(kept[0])), damaged) {
		t.Fatalf("the damaged file was not kept as it was: %v", kept)
	}
}

// registerClaudemeshWithClaude writes the ~/.claude.json entry install
// writes.
func registerClaudemeshWithClaude(t *testing.T, home string) {
	t.Helper()
	if err := os.WriteFile(claudeJSONPath(home), []byte(`{"mcpServers":{"claudemesh":{"command":"/usr/local/bin/claudemesh","args":["mcp"]}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
}

// launch before install: Claude Code has no claudemesh MCP server, so the
// session brings its own with --mcp-config (this binary's mcp), and the
// banner says so and names install.
func TestLaunchWithoutInstallBringsMCPServer(t *testing.T) {
	b, url := startTestBrokerWith(t, msgBrokerOptions())
	alpha := newTestMesh(t, b, url, "alpha", "me")
	h := newTestHome(t)
	h.writeConfig(t, alpha)
	td := startTestDaemon(t, h, nil)
	td.waitLink(t, "alpha", LinkOpen)
	out := shortTempDir(t)
	env := h.env("CLAUDEMESH_CLAUDE_BIN", fakeClaude(t, out, true), "CLAUDEMESH_INTERNAL_NO_AUTOSPAWN", "1", "TMPDIR", shortTempDir(t))
	lp := startLaunch(t, env, "alpha", "--name", "alice")
	waitFor(t, "claude started", func() bool { _, err := os.Stat(filepath.Join(out, "argv")); return err == nil })
	argv := readNULList(t, filepath.Join(out, "argv"))
	if len(argv) < 4 || argv[0] != "--mcp-config" || argv[2] != claudeChannelsFlag {
		os.WriteFile(filepath.Join(out, "fifo"), []byte("0\n"), 0o600)
		t.Fatalf("claude argv = %q, want --mcp-config <file> first, then the channel", argv)
	}
	var cfg struct {
		MCPServers map[string]mcpEntry `json:"mcpServers"`
	}
	data, err := os.ReadFile(argv[1])
	os.WriteFile(filepath.Join(out, "fifo"), []byte("0\n"), 0o600)
	if err != nil || json.Unmarshal(data, &cfg) != nil {
		t.Fatalf("the MCP config %s = %q, %v", argv[1], data, err)
	}
	e := cfg.MCPServers[mcpServerName]
	if !sameExecutable(e.Command, claudemeshBinary(t)) || !reflect.DeepEqual(e.Args, []string{"mcp"}) {
		t.Fatalf("the session's MCP server = %+v, want this binary's mcp", e)
	}
	if st := lp.wait(t); st.ExitCode() != 0 {
		t.Fatalf("launch exit = %v", st)
	}
	if s := lp.stdout.String(); !strings.Contains(s, "no claudemesh MCP server of its own") || !strings.Contains(s, "claudemesh install") {
		t.Fatalf("banner = %q, want the missing install named", s)
	}
	// No promise of real-time delivery: when channel reminders come, and
	// what brings messages otherwise (here: nothing yet, no hooks).
	if s := lp.stdout.String(); strings.Contains(s, "in real time") || !strings.Contains(s, "confirm the\ndevelopment channel when it asks") ||
		!strings.Contains(s, "not Bedrock, Vertex or Foundry") || !strings.Contains(s, "'claudemesh install' adds the hooks") {
		t.Fatalf("banner = %q, want the channel's conditions and the missing hooks", s)
	}
	if _, err := os.Stat(argv[1]); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the session's MCP config outlived it: %v", err)
	}
}
