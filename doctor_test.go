// Tests of `claudemesh doctor`: each check's verdict and fix.
package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// doctorRun runs `claudemesh doctor --json` as the built binary in h.
func doctorRun(t *testing.T, h testHome) (doctorReport, int) {
	t.Helper()
	res := runBinary(t, h.env(), "doctor", "--json")
	var rep doctorReport
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatalf("doctor --json (exit %d): %v\n%s%s", res.code, err, res.stdout, res.stderr)
	}
	return rep, res.code
}

// check finds a check by name.
func (r doctorReport) check(name string) (doctorCheck, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return doctorCheck{}, false
}

// A healthy machine passes (warnings allowed); each way of breaking it is
// a problem with its fix, and exit 1.
func TestDoctor(t *testing.T) {
	b, url := startTestBroker(t)
	m := newTestMesh(t, b, url, "team", "me")
	h := newTestHome(t)
	h.writeConfig(t, m)
	td := startTestDaemon(t, h, nil)
	td.waitLink(t, "team", LinkOpen)
	if res := runBinary(t, h.env(), "install", "--no-service"); res.code != 0 {
		t.Fatalf("install: %d %s%s", res.code, res.stdout, res.stderr)
	}

	rep, code := doctorRun(t, h)
	if code != 0 || !rep.OK || rep.Problems != 0 {
		t.Fatalf("healthy machine: exit %d, %+v", code, rep)
	}
	for _, name := range []string{"binary", "config dir", "config", "daemon dir", "daemon", "link team", "mcp server", "skill"} {
		if c, ok := rep.check(name); !ok || c.Status != checkOK {
			t.Errorf("check %s = %+v, want ok", name, c)
		}
	}
	if c, ok := rep.check("service"); !ok || c.Status != checkWarn {
		t.Errorf("no service unit: %+v, want a warning", c)
	}

	cfgFile := h.Paths.MachineConfigFile()
	good := readFile(t, cfgFile)
	claudeJSON := claudeJSONPath(h.Home)
	goodClaude := readFile(t, claudeJSON)
	cases := []struct {
		name      string
		breakIt   func(t *testing.T)
		restore   func(t *testing.T)
		check     string
		fixSubstr string
	}{
		{
			name:      "config file mode",
			breakIt:   func(t *testing.T) { mustChmod(t, cfgFile, 0o644) },
			restore:   func(t *testing.T) { mustChmod(t, cfgFile, 0o600) },
			check:     "config file mode",
			fixSubstr: "chmod 600",
		},
		{
			name:      "config dir mode",
			breakIt:   func(t *testing.T) { mustChmod(t, h.Paths.MachineConfigDir, 0o755) },
			restore:   func(t *testing.T) { mustChmod(t, h.Paths.MachineConfigDir, 0o700) },
			check:     "config dir",
			fixSubstr: "chmod 700",
		},
		{
			name:      "corrupt config",
			breakIt:   func(t *testing.T) { mustWrite(t, cfgFile, []byte("{\"version\":1, oops"), 0o600) },
			restore:   func(t *testing.T) { mustWrite(t, cfgFile, good, 0o600) },
			check:     "config",
			fixSubstr: "claudemesh init",
		},
		{
			name: "broken member key",
			breakIt: func(t *testing.T) {
				mustWrite(t, cfgFile, []byte(strings.Replace(string(good), m.SecretKey, strings.Repeat("0", 10), 1)), 0o600)
			},
			restore:   func(t *testing.T) { mustWrite(t, cfgFile, good, 0o600) },
			check:     "mesh team",
			fixSubstr: "claudemesh leave team",
		},
		{
			name: "mcp entry elsewhere",
			breakIt: func(t *testing.T) {
				mustWrite(t, claudeJSON, []byte(`{"mcpServers":{"claudemesh":{"command":"/usr/local/bin/other-claudemesh","args":["mcp"]}}}`), 0o600)
			},
			restore:   func(t *testing.T) { mustWrite(t, claudeJSON, goodClaude, 0o600) },
			check:     "mcp server",
			fixSubstr: "claudemesh install",
		},
		{
			name:      "skill missing",
			breakIt:   func(t *testing.T) { os.Remove(skillInstallPath(h.Home)) },
			restore:   func(t *testing.T) { installSkillFile(h.Home) },
			check:     "skill",
			fixSubstr: "claudemesh install",
		},
		{
			name:      "no daemon",
			breakIt:   func(t *testing.T) { td.shutdown(t) },
			restore:   func(t *testing.T) {},
			check:     "daemon",
			fixSubstr: "claudemesh daemon up",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.breakIt(t)
			defer tc.restore(t)
			rep, code := doctorRun(t, h)
			c, ok := rep.check(tc.check)
			if code != exitFailure || rep.OK || !ok || c.Status != checkFail || !strings.Contains(c.Fix, tc.fixSubstr) {
				t.Fatalf("exit %d, check %s = %+v (found %v), want a failure fixed by %q\n%+v", code, tc.check, c, ok, tc.fixSubstr, rep.Checks)
			}
		})
	}
}

func mustChmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}
