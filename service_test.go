// Tests of the systemd unit and launchd plist: golden files, escaping,
// refusals, CI detection.
package main

import (
	"context"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

func aliceSpec(platform string) serviceSpec {
	return serviceSpec{
		Platform: platform,
		Home:     "/home/alice",
		Binary:   "/usr/local/bin/claudemesh",
		LogFile:  "/home/alice/.claudemesh/daemon/daemon.log",
		UID:      1000,
	}
}

// oddSpec has every character the unit formats treat specially that a path
// can still legally hold.
func oddSpec(platform string) serviceSpec {
	s := aliceSpec(platform)
	s.Binary = "/opt/My Tools/100% $HOME & <co>;#/claudemesh"
	s.LogFile = "/home/alice/logs %h $USER/daemon.log"
	s.Env = map[string]string{
		"CLAUDEMESH_SESSIONS_DIR": "/srv/sess\"ions",
		"CLAUDEMESH_DAEMON_DIR":   "/tmp/a b/%i/$X",
	}
	if platform == platformLaunchd {
		s.Binary = `/Users/al"ice/it's <mine> & more/claudemesh`
	}
	return s
}

func TestServiceUnitGolden(t *testing.T) {
	cases := []struct {
		name, golden string
		spec         serviceSpec
		wantPath     string
		wantBoot     []string
		wantStop     []string
	}{
		{"systemd", "service/claudemesh-daemon.service", aliceSpec(platformSystemd),
			"/home/alice/.config/systemd/user/claudemesh-daemon.service",
			[]string{"systemctl --user daemon-reload", "systemctl --user enable claudemesh-daemon.service", "systemctl --user restart claudemesh-daemon.service"},
			[]string{"systemctl --user disable --now claudemesh-daemon.service"}},
		{"systemd with odd paths", "service/claudemesh-daemon-odd.service", oddSpec(platformSystemd),
			"/home/alice/.config/systemd/user/claudemesh-daemon.service", nil, nil},
		{"launchd", "service/com.claudemesh.daemon.plist", aliceSpec(platformLaunchd),
			"/home/alice/Library/LaunchAgents/com.claudemesh.daemon.plist",
			[]string{"launchctl bootout gui/1000/com.claudemesh.daemon", "launchctl bootstrap gui/1000 /home/alice/Library/LaunchAgents/com.claudemesh.daemon.plist"},
			[]string{"launchctl bootout gui/1000/com.claudemesh.daemon"}},
		{"launchd with odd paths", "service/com.claudemesh.daemon-odd.plist", oddSpec(platformLaunchd),
			"/home/alice/Library/LaunchAgents/com.claudemesh.daemon.plist", nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, err := buildServiceUnit(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, tc.golden, u.Content)
			if u.Path != tc.wantPath {
				t.Errorf("path = %q, want %q", u.Path, tc.wantPath)
			}
			if tc.wantBoot != nil {
				if got := commandStrings(u.Boot); !reflect.DeepEqual(got, tc.wantBoot) {
					t.Errorf("boot = %q, want %q", got, tc.wantBoot)
				}
				if got := commandStrings(u.Stop); !reflect.DeepEqual(got, tc.wantStop) {
					t.Errorf("stop = %q, want %q", got, tc.wantStop)
				}
			}
			if strings.Contains(string(u.Content), "--mesh") {
				t.Error("unit passes --mesh")
			}
		})
	}
}

// systemdWords splits a systemd command line the way systemd does for our
// output: double-quoted words with backslash escapes, "%%" for "%", and in
// arguments (not the executable) "$$" for "$".
func systemdWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	for i := 0; i < len(line); {
		for i < len(line) && line[i] == ' ' {
			i++
		}
		if i == len(line) {
			break
		}
		var w strings.Builder
		if line[i] == '"' {
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' {
					i++
				}
				w.WriteByte(line[i])
			}
			if i == len(line) {
				t.Fatalf("unbalanced quote in %q", line)
			}
			i++
		} else {
			for ; i < len(line) && line[i] != ' '; i++ {
				w.WriteByte(line[i])
			}
		}
		s := strings.ReplaceAll(w.String(), "%%", "%")
		if len(words) > 0 {
			s = strings.ReplaceAll(s, "$$", "$")
		}
		words = append(words, s)
	}
	return words
}

func unitValue(t *testing.T, content, key string) []string {
	t.Helper()
	var vals []string
	for _, line := range strings.Split(content, "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			vals = append(vals, v)
		}
	}
	return vals
}

func TestSystemdUnitSays(t *testing.T) {
	for _, spec := range []serviceSpec{aliceSpec(platformSystemd), oddSpec(platformSystemd)} {
		u, err := buildServiceUnit(spec)
		if err != nil {
			t.Fatal(err)
		}
		c := string(u.Content)
		exec := unitValue(t, c, "ExecStart")
		if len(exec) != 1 {
			t.Fatalf("ExecStart lines = %q", exec)
		}
		want := []string{spec.Binary, "daemon", "up", "--foreground"}
		if got := systemdWords(t, exec[0]); !reflect.DeepEqual(got, want) {
			t.Errorf("ExecStart %q runs %q, want %q", exec[0], got, want)
		}
		if got := unitValue(t, c, "Restart"); !reflect.DeepEqual(got, []string{"always"}) {
			t.Errorf("Restart = %q", got)
		}
		log := strings.ReplaceAll(spec.LogFile, "%", "%%")
		for _, k := range []string{"StandardOutput", "StandardError"} {
			if got := unitValue(t, c, k); !reflect.DeepEqual(got, []string{"append:" + log}) {
				t.Errorf("%s = %q, want append:%s", k, got, log)
			}
		}
		var env []string
		for _, e := range unitValue(t, c, "Environment") {
			env = append(env, systemdWords(t, e)...) // one word each: no "$" unescaping, as Environment= has none
		}
		var wantEnv []string
		for _, k := range sortedKeys(spec.Env) {
			wantEnv = append(wantEnv, k+"="+spec.Env[k])
		}
		if !reflect.DeepEqual(env, wantEnv) {
			t.Errorf("Environment = %q, want %q", env, wantEnv)
		}
	}
}

// TestSystemdAnalyzeVerify has systemd itself check the unit, with the
// binary at an awkward but legal path, when systemd-analyze is installed.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed; the unit is checked by the golden files and TestSystemdUnitSays only")
	}
	dir := t.TempDir()
	binDir := filepath.Join(dir, "odd dir 100% $X & #;")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "claudemesh")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := serviceSpec{Platform: platformSystemd, Home: dir, Binary: bin, LogFile: filepath.Join(dir, "log %h", "daemon.log"),
		Env: map[string]string{"CLAUDEMESH_DAEMON_DIR": filepath.Join(dir, "d $x")}}
	u, err := buildServiceUnit(spec)
	if err != nil {
		t.Fatal(err)
	}
	unitFile := filepath.Join(dir, systemdUnitName)
	if err := os.WriteFile(unitFile, u.Content, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unitFile).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s\n%s", err, out, u.Content)
	}
	if len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify complained:\n%s", out)
	}
}

// plistDict reads the top-level dict of a plist into key → values (strings
// of a <string> or an <array> of them, "true"/"false" for booleans).
func plistDict(t *testing.T, data []byte) map[string][]string {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(string(data)))
	dec.Strict = true
	out := map[string][]string{}
	var key string
	var path []string
	var text strings.Builder
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("plist is not well-formed XML: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			path = append(path, tok.Name.Local)
			text.Reset()
			if len(path) == 3 && (tok.Name.Local == "true" || tok.Name.Local == "false") {
				out[key] = []string{tok.Name.Local}
			}
		case xml.CharData:
			text.Write(tok)
		case xml.EndElement:
			name := path[len(path)-1]
			switch {
			case len(path) == 3 && name == "key":
				key = text.String()
			case len(path) == 3 && name == "string":
				out[key] = []string{text.String()}
			case len(path) == 4 && name == "string" && path[2] == "array":
				out[key] = append(out[key], text.String())
			case len(path) == 4 && name == "key" && path[2] == "dict":
				out[key] = append(out[key], text.String())
			case len(path) == 4 && name == "string" && path[2] == "dict":
				out[key] = append(out[key], text.String())
			}
			path = path[:len(path)-1]
		}
	}
	return out
}

func TestLaunchdPlistSays(t *testing.T) {
	for _, spec := range []serviceSpec{aliceSpec(platformLaunchd), oddSpec(platformLaunchd)} {
		u, err := buildServiceUnit(spec)
		if err != nil {
			t.Fatal(err)
		}
		d := plistDict(t, u.Content)
		want := map[string][]string{
			"Label":             {launchdLabel},
			"ProgramArguments":  {spec.Binary, "daemon", "up", "--foreground"},
			"RunAtLoad":         {"true"},
			"KeepAlive":         {"true"},
			"WorkingDirectory":  {spec.Home},
			"StandardOutPath":   {spec.LogFile},
			"StandardErrorPath": {spec.LogFile},
		}
		if len(spec.Env) > 0 {
			var env []string
			for _, k := range sortedKeys(spec.Env) {
				env = append(env, k, spec.Env[k])
			}
			want["EnvironmentVariables"] = env
		}
		if !reflect.DeepEqual(d, want) {
			t.Errorf("plist says %q\nwant %q", d, want)
		}
	}
}

func TestBuildServiceUnitRefuses(t *testing.T) {
	cases := []struct {
		name string
		edit func(s *serviceSpec)
	}{
		{"relative binary", func(s *serviceSpec) { s.Binary = "claudemesh" }},
		{"relative log", func(s *serviceSpec) { s.LogFile = "daemon.log" }},
		{"relative home", func(s *serviceSpec) { s.Home = "alice" }},
		{"newline in binary", func(s *serviceSpec) { s.Binary = "/opt/a\nExecStartPre=/bin/evil" }},
		{"tab in home", func(s *serviceSpec) { s.Home = "/home/a\tb" }},
		{"control char in env", func(s *serviceSpec) { s.Env = map[string]string{"A": "x\x00"} }},
		{"bad env name", func(s *serviceSpec) { s.Env = map[string]string{"A=B": "x"} }},
		{"env name starting with a digit", func(s *serviceSpec) { s.Env = map[string]string{"1A": "x"} }},
		{"quote in a systemd executable", func(s *serviceSpec) { s.Binary = `/opt/it's/claudemesh` }},
		{"backslash in a systemd executable", func(s *serviceSpec) { s.Binary = `/opt/a\b/claudemesh` }},
		{"log ending in a backslash", func(s *serviceSpec) { s.LogFile = `/var/log\` }},
		{"unknown platform", func(s *serviceSpec) { s.Platform = "upstart" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := aliceSpec(platformSystemd)
			tc.edit(&spec)
			if u, err := buildServiceUnit(spec); err == nil {
				t.Errorf("buildServiceUnit accepted it:\n%s", u.Content)
			}
		})
	}
	// launchd can carry quotes and backslashes: the plist escapes them.
	spec := aliceSpec(platformLaunchd)
	spec.Binary = `/opt/it's\odd/claudemesh`
	if _, err := buildServiceUnit(spec); err != nil {
		t.Errorf("launchd with quote and backslash: %v", err)
	}
}

func TestServiceUnitPath(t *testing.T) {
	cases := []struct {
		name, platform, xdg, want string
	}{
		{"systemd", platformSystemd, "", "/home/a/.config/systemd/user/claudemesh-daemon.service"},
		{"systemd under XDG_CONFIG_HOME", platformSystemd, "/cfg", "/cfg/systemd/user/claudemesh-daemon.service"},
		{"relative XDG_CONFIG_HOME ignored", platformSystemd, "cfg", "/home/a/.config/systemd/user/claudemesh-daemon.service"},
		{"launchd", platformLaunchd, "/cfg", "/home/a/Library/LaunchAgents/com.claudemesh.daemon.plist"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := serviceUnitPath(tc.platform, "/home/a", tc.xdg)
			if err != nil || got != tc.want {
				t.Errorf("serviceUnitPath(%q, %q) = %q, %v; want %q", tc.platform, tc.xdg, got, err, tc.want)
			}
		})
	}
	if _, err := serviceUnitPath("sysv", "/home/a", ""); err == nil {
		t.Error("unknown platform accepted")
	}
	for goos, want := range map[string]string{"linux": platformSystemd, "darwin": platformLaunchd} {
		if got, err := servicePlatformFor(goos); err != nil || got != want {
			t.Errorf("servicePlatformFor(%q) = %q, %v; want %q", goos, got, err, want)
		}
	}
	if _, err := servicePlatformFor("windows"); err == nil {
		t.Error("servicePlatformFor(windows) succeeded")
	}
}

func TestDetectCI(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		wantVar string
		wantCI  bool
	}{
		{"none", nil, "", false},
		{"CI=true", map[string]string{"CI": "true"}, "CI", true},
		{"CI=1", map[string]string{"CI": "1"}, "CI", true},
		{"CI=false", map[string]string{"CI": "false"}, "", false},
		{"CI=FALSE", map[string]string{"CI": "FALSE"}, "", false},
		{"CI=0", map[string]string{"CI": "0"}, "", false},
		{"CI blank", map[string]string{"CI": "  "}, "", false},
		{"GitHub Actions", map[string]string{"GITHUB_ACTIONS": "true"}, "GITHUB_ACTIONS", true},
		{"GitLab", map[string]string{"GITLAB_CI": "true"}, "GITLAB_CI", true},
		{"Buildkite", map[string]string{"BUILDKITE": "true"}, "BUILDKITE", true},
		{"CircleCI", map[string]string{"CIRCLECI": "true"}, "CIRCLECI", true},
		{"Jenkins", map[string]string{"JENKINS_URL": "http://jenkins:8080/"}, "JENKINS_URL", true},
		{"CI=false but GitHub", map[string]string{"CI": "false", "GITHUB_ACTIONS": "true"}, "GITHUB_ACTIONS", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, ci := detectCI(mapGetenv(tc.env))
			if v != tc.wantVar || ci != tc.wantCI {
				t.Errorf("detectCI(%v) = %q, %v; want %q, %v", tc.env, v, ci, tc.wantVar, tc.wantCI)
			}
		})
	}
}

func TestCheckServiceAllowed(t *testing.T) {
	ci := mapGetenv(map[string]string{"GITHUB_ACTIONS": "true"})
	err := checkServiceAllowed(ci, false)
	if err == nil {
		t.Fatal("service allowed under CI")
	}
	var ce *cliError
	if !errors.As(err, &ce) || ce.code != exitFailure || !strings.Contains(strings.Join(ce.hints, " "), "--allow-ci-persistent") {
		t.Errorf("refusal = %#v, want exit 1 with an --allow-ci-persistent hint", err)
	}
	if !strings.Contains(err.Error(), "GITHUB_ACTIONS") {
		t.Errorf("refusal %q does not say which variable", err)
	}
	if err := checkServiceAllowed(ci, true); err != nil {
		t.Errorf("with --allow-ci-persistent: %v", err)
	}
	if err := checkServiceAllowed(mapGetenv(nil), false); err != nil {
		t.Errorf("outside CI: %v", err)
	}
}

func TestInstallAndUninstallServiceFile(t *testing.T) {
	for _, platform := range []string{platformSystemd, platformLaunchd} {
		t.Run(platform, func(t *testing.T) {
			home := t.TempDir()
			spec := aliceSpec(platform)
			spec.Home = home
			u, err := buildServiceUnit(spec)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(u.Path, home+string(filepath.Separator)) {
				t.Fatalf("unit path %q is outside HOME %q", u.Path, home)
			}
			if serviceInstalled(u.Path) {
				t.Fatal("installed before install")
			}
			steps := []struct {
				spec serviceSpec
				want string
			}{
				{spec, fileAdded},
				{spec, fileUnchanged},
				{func() serviceSpec { s := spec; s.Binary = "/opt/claudemesh/bin/claudemesh"; return s }(), fileUpdated},
			}
			for _, step := range steps {
				u, err := buildServiceUnit(step.spec)
				if err != nil {
					t.Fatal(err)
				}
				got, err := installServiceFile(u)
				if err != nil || got != step.want {
					t.Fatalf("installServiceFile = %q, %v; want %q", got, err, step.want)
				}
				data, err := os.ReadFile(u.Path)
				if err != nil || string(data) != string(u.Content) {
					t.Fatalf("unit file = %q, %v", data, err)
				}
				st, _ := os.Stat(u.Path)
				if st.Mode().Perm() != 0o644 {
					t.Errorf("unit mode = %v, want 0644", st.Mode().Perm())
				}
			}
			if !serviceInstalled(u.Path) {
				t.Error("not installed after install")
			}
			if removed, err := uninstallServiceFile(u.Path); !removed || err != nil {
				t.Fatalf("uninstall = %v, %v; want true, nil", removed, err)
			}
			if removed, err := uninstallServiceFile(u.Path); removed || err != nil {
				t.Fatalf("second uninstall = %v, %v; want false, nil", removed, err)
			}
			if serviceInstalled(u.Path) {
				t.Error("installed after uninstall")
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	cases := []struct{ in, want string }{
		{"systemctl", "systemctl"},
		{"--user", "--user"},
		{"gui/501", "gui/501"},
		{"/Users/a b/x.plist", "'/Users/a b/x.plist'"},
		{"it's", `'it'\''s'`},
		{"", "''"},
		{"$HOME", "'$HOME'"},
		{"a;b", "'a;b'"},
	}
	for _, tc := range cases {
		if got := shellQuote(tc.in); got != tc.want {
			t.Errorf("shellQuote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
	cmd := serviceCommand{Argv: []string{"launchctl", "bootstrap", "gui/501", "/Users/a b/it's.plist"}}
	if got, want := cmd.String(), `launchctl bootstrap gui/501 '/Users/a b/it'\''s.plist'`; got != want {
		t.Errorf("command = %s, want %s", got, want)
	}
}

func TestServiceRunner(t *testing.T) {
	var ran []string
	r := serviceRunner{
		lookPath: func(name string) (string, error) { return "/fake/" + name, nil },
		run: func(ctx context.Context, path string, args []string) ([]byte, error) {
			ran = append(ran, path+" "+strings.Join(args, " "))
			if args[0] == "bootout" {
				return []byte("not loaded"), errors.New("exit status 3")
			}
			if args[0] == "broken" {
				return []byte("Failed to start\n"), errors.New("exit status 1")
			}
			return nil, nil
		},
	}
	cmds := []serviceCommand{
		{Argv: []string{"launchctl", "bootout", "gui/1/x"}, MayFail: true},
		{Argv: []string{"launchctl", "bootstrap", "gui/1", "/p"}},
	}
	if err := r.runServiceCommands(context.Background(), cmds); err != nil {
		t.Fatalf("a command allowed to fail stopped the run: %v", err)
	}
	want := []string{"/fake/launchctl bootout gui/1/x", "/fake/launchctl bootstrap gui/1 /p"}
	if !reflect.DeepEqual(ran, want) {
		t.Errorf("ran %q, want %q", ran, want)
	}
	ran = nil
	err := r.runServiceCommands(context.Background(), []serviceCommand{{Argv: []string{"systemctl", "broken"}}, {Argv: []string{"systemctl", "never"}}})
	if err == nil || !strings.Contains(err.Error(), "Failed to start") || len(ran) != 1 {
		t.Errorf("failing command: err %v after %q, want its output and a stop", err, ran)
	}
	missing := serviceRunner{lookPath: func(string) (string, error) { return "", exec.ErrNotFound }, run: r.run}
	ran = nil
	if err := missing.runServiceCommands(context.Background(), cmds); !errors.Is(err, errServiceManagerMissing) || ran != nil {
		t.Errorf("missing manager: %v after %q, want errServiceManagerMissing and nothing run", err, ran)
	}
}

func TestExecServiceRunner(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("shell scripts as fake managers need a POSIX system")
	}
	dir := t.TempDir()
	logFile := filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho \"$@\" >> '" + logFile + "'\n[ \"$1\" = fail ] && { echo 'unit failed' >&2; exit 1; }\nexit 0\n"
	if err := os.WriteFile(filepath.Join(dir, "systemctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	u, err := buildServiceUnit(aliceSpec(platformSystemd))
	if err != nil {
		t.Fatal(err)
	}
	r := execServiceRunner()
	if err := r.runServiceCommands(context.Background(), u.Boot); err != nil {
		t.Fatal(err)
	}
	if err := r.runServiceCommands(context.Background(), u.Stop); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(logFile)
	want := "--user daemon-reload\n--user enable claudemesh-daemon.service\n--user restart claudemesh-daemon.service\n--user disable --now claudemesh-daemon.service\n"
	if string(data) != want {
		t.Errorf("systemctl calls:\n%s\nwant:\n%s", data, want)
	}
	err = r.runServiceCommands(context.Background(), []serviceCommand{{Argv: []string{"systemctl", "fail"}}})
	if err == nil || !strings.Contains(err.Error(), "unit failed") {
		t.Errorf("failing systemctl: %v, want its stderr in the error", err)
	}
	if err := r.runServiceCommands(context.Background(), []serviceCommand{{Argv: []string{"launchctl", "list"}}}); !errors.Is(err, errServiceManagerMissing) {
		t.Errorf("launchctl on Linux: %v, want errServiceManagerMissing", err)
	}
}

func TestServiceEnv(t *testing.T) {
	home := "/home/a"
	def := Paths{ConfigDir: "/home/a/.claudemesh", DaemonDir: "/home/a/.claudemesh/daemon", SessionsDir: "/home/a/.claudemesh/sessions"}
	if env := serviceEnv(def, home); len(env) != 0 {
		t.Errorf("default dirs give env %v, want none", env)
	}
	custom := def
	custom.DaemonDir, custom.SessionsDir, custom.ConfigDir = "/tmp/d", "/tmp/s", "/tmp/launch-config"
	want := map[string]string{"CLAUDEMESH_DAEMON_DIR": "/tmp/d", "CLAUDEMESH_SESSIONS_DIR": "/tmp/s"}
	if env := serviceEnv(custom, home); !reflect.DeepEqual(env, want) {
		t.Errorf("custom dirs give env %v, want %v (never the config dir)", env, want)
	}
}

func TestDefaultServiceSpec(t *testing.T) {
	if _, err := servicePlatformFor(runtime.GOOS); err != nil {
		t.Skipf("no service manager on %s", runtime.GOOS)
	}
	home := t.TempDir()
	paths, _ := resolvePaths(pathEnv{getenv: mapGetenv(nil), home: home, dirExists: dirExists})
	spec, err := defaultServiceSpec(paths, home, mapGetenv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(spec.Binary) {
		t.Errorf("binary %q is not absolute", spec.Binary)
	}
	if st, err := os.Stat(spec.Binary); err != nil || !st.Mode().IsRegular() {
		t.Errorf("binary %q is not the running file: %v", spec.Binary, err)
	}
	if spec.LogFile != filepath.Join(home, ".claudemesh", "daemon", "daemon.log") || len(spec.Env) != 0 {
		t.Errorf("spec = %+v", spec)
	}
	if _, err := buildServiceUnit(spec); err != nil {
		t.Errorf("buildServiceUnit(default spec) = %v", err)
	}
}

// TestXMLEscapeMatchesEncodingXML: the plist's escaper agrees with
// encoding/xml's EscapeText, invalid bytes and control characters included.
func TestXMLEscapeMatchesEncodingXML(t *testing.T) {
	for _, s := range []string{"", "/usr/local/bin/claudemesh", `a&b<c>"d"'e'`, "tab\tnl\ncr\r", "ctl\x01\x1f", "bad\xff\xfeutf8",
		"\uFFFD real", "emoji 🎉 ü", "\uFFFE\uFFFF", "\xed\xa0\x80 surrogate"} {
		var want strings.Builder
		_ = xml.EscapeText(&want, []byte(s))
		if got := xmlEscape(s); got != want.String() {
			t.Errorf("xmlEscape(%q) = %q, want %q", s, got, want.String())
		}
	}
}
