// Tests of install and uninstall: ~/.claude.json edited member by member,
// and the whole verb as a process against a temp HOME.
package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A ~/.claude.json as Claude Code leaves it: unrelated keys, another MCP
// server, numbers and escapes whose exact text must survive.
const sampleClaudeJSON = `{
  "numStartups": 42,
  "theme": "dark",
  "tipsHistory": {"a": 1, "b": 2.50},
  "mcpServers": {
    "github": {"type": "stdio", "command": "npx", "args": ["-y", "gh-mcp"], "env": {"TOKEN": "<secret & \u00e9>"}}
  },
  "projects": {"/home/u/p": {"allowedTools": [], "history": [{"display": "fix \"it\""}]}},
  "big": 12345678901234567890
}
`

// decodeLoose decodes JSON keeping numbers as written.
func decodeLoose(t *testing.T, data []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	return m
}

func withoutOurEntry(m map[string]any) map[string]any {
	if s, ok := m["mcpServers"].(map[string]any); ok {
		delete(s, mcpServerName)
	}
	return m
}

func TestRegisterClaudeMCP(t *testing.T) {
	home := t.TempDir()
	path := claudeJSONPath(home)
	os.WriteFile(path, []byte(sampleClaudeJSON), 0o644)
	before := decodeLoose(t, []byte(sampleClaudeJSON))
	now := time.UnixMilli(1700000000000)

	res, backup, err := registerClaudeMCP(home, "/opt/cm/claudemesh", now)
	if err != nil || res != fileAdded {
		t.Fatalf("first register = %q, %v", res, err)
	}
	if want := filepath.Join(home, ".claude", "backups", ".claude.json.pre-claudemesh.1700000000000"); backup != want {
		t.Fatalf("backup = %q, want %q", backup, want)
	}
	if got, _ := os.ReadFile(backup); string(got) != sampleClaudeJSON {
		t.Fatalf("backup holds %q", got)
	}
	data, _ := os.ReadFile(path)
	after := decodeLoose(t, data)
	entry := after["mcpServers"].(map[string]any)[mcpServerName]
	if !reflect.DeepEqual(entry, map[string]any{"command": "/opt/cm/claudemesh", "args": []any{"mcp"}}) {
		t.Fatalf("entry = %v", entry)
	}
	if !reflect.DeepEqual(withoutOurEntry(after), before) {
		t.Fatalf("other keys changed:\nbefore %v\nafter  %v", before, after)
	}
	for _, exact := range []string{"2.50", "12345678901234567890", `"<secret & \u00e9>"`, `"fix \"it\""`} {
		if !strings.Contains(string(data), exact) {
			t.Errorf("%s lost its exact text:\n%s", exact, data)
		}
	}
	if i, j := strings.Index(string(data), `"numStartups"`), strings.Index(string(data), `"big"`); i < 0 || j < i {
		t.Error("key order changed")
	}
	if modeOf(t, path) != 0o600 {
		t.Errorf("mode = %v, want 0600", modeOf(t, path))
	}

	// Idempotent: nothing written, no new backup.
	backups, _ := os.ReadDir(claudeBackupDir(home))
	if res, backup, err := registerClaudeMCP(home, "/opt/cm/claudemesh", now.Add(time.Second)); err != nil || res != fileUnchanged || backup != "" {
		t.Fatalf("second register = %q, %q, %v", res, backup, err)
	}
	if again, _ := os.ReadDir(claudeBackupDir(home)); len(again) != len(backups) {
		t.Fatal("an unchanged register made a backup")
	}
	// Moved binary: updated, keeping keys the user added to our entry.
	patched := bytes.Replace(data, []byte(`"command": "/opt/cm/claudemesh"`), []byte(`"command": "/opt/cm/claudemesh", "env": {"X": "1"}`), 1)
	os.WriteFile(path, patched, 0o600)
	if res, _, err := registerClaudeMCP(home, "/usr/local/bin/claudemesh", now.Add(2*time.Second)); err != nil || res != fileUpdated {
		t.Fatalf("register after a move = %q, %v", res, err)
	}
	after = decodeLoose(t, must(os.ReadFile(path)))
	entry = after["mcpServers"].(map[string]any)[mcpServerName]
	if !reflect.DeepEqual(entry, map[string]any{"command": "/usr/local/bin/claudemesh", "args": []any{"mcp"}, "env": map[string]any{"X": "1"}}) {
		t.Fatalf("updated entry = %v", entry)
	}

	// Unregister: our entry only.
	removed, backup, err := unregisterClaudeMCP(home, now.Add(3*time.Second))
	if err != nil || !removed || backup == "" {
		t.Fatalf("unregister = %v, %q, %v", removed, backup, err)
	}
	if got := decodeLoose(t, must(os.ReadFile(path))); !reflect.DeepEqual(got, before) {
		t.Fatalf("after unregister:\n%v\nwant\n%v", got, before)
	}
	if removed, _, err := unregisterClaudeMCP(home, now); err != nil || removed {
		t.Fatalf("second unregister = %v, %v", removed, err)
	}
}

func TestRegisterClaudeMCPEdgeCases(t *testing.T) {
	t.Run("no file", func(t *testing.T) {
		home := t.TempDir()
		res, backup, err := registerClaudeMCP(home, "/bin/cm", time.Now())
		if err != nil || res != fileAdded || backup != "" {
			t.Fatalf("register = %q, %q, %v", res, backup, err)
		}
		got := decodeLoose(t, must(os.ReadFile(claudeJSONPath(home))))
		if !reflect.DeepEqual(got, map[string]any{"mcpServers": map[string]any{mcpServerName: map[string]any{"command": "/bin/cm", "args": []any{"mcp"}}}}) {
			t.Fatalf("new file = %v", got)
		}
	})
	t.Run("not an object", func(t *testing.T) {
		home := t.TempDir()
		os.WriteFile(claudeJSONPath(home), []byte(`[1,2]`), 0o600)
		if _, _, err := registerClaudeMCP(home, "/bin/cm", time.Now()); err == nil {
			t.Fatal("a non-object file was accepted")
		}
		if got, _ := os.ReadFile(claudeJSONPath(home)); string(got) != `[1,2]` {
			t.Fatalf("the file was changed to %q", got)
		}
	})
	t.Run("symlink", func(t *testing.T) {
		home := t.TempDir()
		real := filepath.Join(home, "dotfiles", "claude.json")
		os.MkdirAll(filepath.Dir(real), 0o700)
		os.WriteFile(real, []byte(`{"a":1}`), 0o600)
		os.Symlink(real, claudeJSONPath(home))
		if _, _, err := registerClaudeMCP(home, "/bin/cm", time.Now()); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Lstat(claudeJSONPath(home)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatal("the symlink was replaced by a file")
		}
		if got := decodeLoose(t, must(os.ReadFile(real))); got["a"] != json.Number("1") || got["mcpServers"] == nil {
			t.Fatalf("target = %v", got)
		}
	})
}

// fakeSystemctl puts a systemctl on a PATH that logs its arguments and, on
// restart, starts the daemon the unit names, as systemd would.
func fakeSystemctl(t *testing.T, bin string, env map[string]string) (pathDir, logFile string) {
	t.Helper()
	dir := shortTempDir(t)
	logFile = filepath.Join(dir, "systemctl.log")
	var exports strings.Builder
	for k, v := range env {
		exports.WriteString("export " + k + "=" + shellQuote(v) + "\n")
	}
	script := "#!/bin/sh\n" + exports.String() +
		"echo \"$*\" >> " + shellQuote(logFile) + "\n" +
		"case \"$*\" in *restart*) " + shellQuote(bin) + " daemon up >/dev/null 2>&1 ;; esac\nexit 0\n"
	if err := os.WriteFile(filepath.Join(dir, "systemctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, logFile
}

// install and uninstall as a user runs them, against a temp HOME with an
// existing ~/.claude.json and a fake systemctl: the entry, the backup, the
// skill, the unit, the service started (replacing a running daemon), the
// broker report; then idempotence, and uninstall undoing all of it.
func TestInstallUninstallProcess(t *testing.T) {
	b, url := startTestBroker(t)
	alpha := newTestMesh(t, b, url, "alpha", "me")
	h := newTestHome(t)
	h.writeConfig(t, alpha)
	os.WriteFile(claudeJSONPath(h.Home), []byte(sampleClaudeJSON), 0o600)
	bin := claudemeshBinary(t)
	env := h.env()
	sysDir, sysLog := fakeSystemctl(t, bin, env)
	env["PATH"] = sysDir + string(os.PathListSeparator) + os.Getenv("PATH")
	// A claude that says a version with the wake-up hook.
	os.WriteFile(filepath.Join(sysDir, "claude"), []byte("#!/bin/sh\necho '2.1.197 (Claude Code)'\n"), 0o755)
	stopDaemonAt(t, h.Paths)

	// A plain daemon is running: install must replace it.
	if res := runBinary(t, env, "daemon", "up"); res.code != 0 {
		t.Fatalf("daemon up: %d %s", res.code, res.stderr)
	}
	plainPid := readPidFile(h.Paths.PidFile())

	res := runBinary(t, env, "install", "--json")
	if res.code != 0 {
		t.Fatalf("install = %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	var rep installReport
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatalf("install --json = %q: %v", res.stdout, err)
	}
	if rep.MCP.Result != fileAdded || rep.MCP.Command != bin || rep.MCP.Backup == "" || rep.Skill.Result != fileAdded ||
		rep.Service == nil || !rep.Service.Started || rep.Service.ReplacedPid != plainPid || !rep.DaemonRunning ||
		len(rep.Brokers) != 1 || rep.Brokers[0].Mesh != "alpha" || rep.Brokers[0].State != string(LinkOpen) {
		t.Fatalf("install report = %+v (plain daemon pid %d)", rep, plainPid)
	}
	if rep.Hooks.Result != fileAdded || !rep.Hooks.Wake || rep.Hooks.ClaudeVersion != "2.1.197" || rep.Hooks.Settings != claudeSettingsPath(h.Home) {
		t.Fatalf("install's hooks = %+v, want added with the wake-up for Claude Code 2.1.197", rep.Hooks)
	}
	if hooks := settingsHooks(t, claudeSettingsPath(h.Home)); len(hooks) != 4 || hooks["Stop"][0].Hooks[0].Command != bin+" hook stop" {
		t.Fatalf("settings.json hooks after install = %+v", hooks)
	}
	if syscall.Kill(plainPid, 0) == nil && readPidFile(h.Paths.PidFile()) == plainPid {
		t.Fatal("the plain daemon still runs")
	}
	after := decodeLoose(t, must(os.ReadFile(claudeJSONPath(h.Home))))
	if !reflect.DeepEqual(withoutOurEntry(after), decodeLoose(t, []byte(sampleClaudeJSON))) {
		t.Fatalf("install changed other keys: %v", after)
	}
	if got, _ := os.ReadFile(skillInstallPath(h.Home)); !bytes.Equal(got, skillMarkdown) {
		t.Fatal("skill not installed")
	}
	unit := serviceUnitFor("linux", h.Home, "")
	content, err := os.ReadFile(unit)
	if err != nil || !strings.Contains(string(content), "ExecStart="+bin+" daemon up --foreground") {
		t.Fatalf("unit %s: %v\n%s", unit, err, content)
	}
	if log := string(must(os.ReadFile(sysLog))); !strings.Contains(log, "--user enable "+systemdUnitName) || !strings.Contains(log, "--user restart "+systemdUnitName) {
		t.Fatalf("systemctl calls:\n%s", log)
	}

	// Again: unchanged.
	res = runBinary(t, env, "install")
	if res.code != 0 || !strings.Contains(res.stdout, `"claudemesh" unchanged`) || !strings.Contains(res.stdout, "skill unchanged") ||
		!strings.Contains(res.stdout, "hooks unchanged") ||
		!strings.Contains(res.stdout, "mesh alpha: broker connected") {
		t.Fatalf("second install = %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}

	// Under CI it refuses before touching anything.
	ciEnv := map[string]string{"CI": "true"}
	for k, v := range env {
		ciEnv[k] = v
	}
	if res := runBinary(t, ciEnv, "install"); res.code != exitFailure || !strings.Contains(res.stderr, "--allow-ci-persistent") {
		t.Fatalf("install under CI = %d %q", res.code, res.stderr)
	}

	res = runBinary(t, env, "uninstall")
	if res.code != 0 {
		t.Fatalf("uninstall = %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	if got := decodeLoose(t, must(os.ReadFile(claudeJSONPath(h.Home)))); !reflect.DeepEqual(got, decodeLoose(t, []byte(sampleClaudeJSON))) {
		t.Fatalf("after uninstall ~/.claude.json = %v", got)
	}
	if hooks := settingsHooks(t, claudeSettingsPath(h.Home)); len(hooks) != 0 {
		t.Errorf("settings.json hooks after uninstall = %+v, want none", hooks)
	}
	for _, p := range []string{skillInstallPath(h.Home), unit} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there after uninstall", p)
		}
	}
	if log := string(must(os.ReadFile(sysLog))); !strings.Contains(log, "--user disable --now "+systemdUnitName) {
		t.Fatalf("uninstall did not stop the service:\n%s", log)
	}
	if _, err := os.Stat(h.Paths.MachineConfigFile()); err != nil {
		t.Fatal("uninstall removed the machine config")
	}
}
