// The daemon as a per-user service: a systemd user unit on Linux, a launchd
// agent on macOS, generated from the absolute path of the running binary.
//
// Policy:
//   - The service runs `<binary> daemon up --foreground`: systemd and
//     launchd own the process and its output, so the daemon must not detach
//     from them. There is no --mesh: the daemon attaches to every mesh in
//     the machine's config.
//   - Paths are escaped for the file they land in (systemd's quoting and
//     specifiers, XML for the plist); a path no unit file can carry (a line
//     break, a control character) is refused rather than mangled.
//   - A persistent service is refused in CI unless asked for explicitly: a
//     CI runner that installs one leaves a daemon behind on a shared machine.
//   - The unit file's presence is what tells the CLI the daemon is
//     service-managed (it then waits for the service instead of spawning a
//     daemon), so install and uninstall are about that file first.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// serviceSpec is what a unit is generated from.
type serviceSpec struct {
	Platform string            // platformSystemd or platformLaunchd
	Home     string            // the user's home directory
	Binary   string            // absolute path of the claudemesh binary
	LogFile  string            // absolute path of daemon.log
	Env      map[string]string // extra environment, such as a non-default CLAUDEMESH_DAEMON_DIR
	UID      int               // launchd's gui/<uid> domain
	// XDGConfigHome is $XDG_CONFIG_HOME when set; systemd looks for user
	// units under it instead of ~/.config.
	XDGConfigHome string
}

// serviceUnit is a generated unit: where it goes, what it says, and the
// commands that start and stop it.
type serviceUnit struct {
	Platform string
	Path     string
	Content  []byte
	Boot     []serviceCommand // enable and start (replacing a loaded copy)
	Stop     []serviceCommand // stop and disable
	// Probe succeeds only where this user's service manager runs: systemctl
	// can be installed in a container, WSL or an SSH session without
	// lingering, and no user manager answer it.
	Probe []serviceCommand
}

// serviceCommand is one service-manager invocation.
type serviceCommand struct {
	Argv []string
	// MayFail: the command is allowed to fail, e.g. unloading an agent
	// that is not loaded.
	MayFail bool
}

// String is the command as a user would type it in a POSIX shell.
func (c serviceCommand) String() string { return shellQuoteArgs(c.Argv) }

// buildServiceUnit generates the unit for spec.
func buildServiceUnit(spec serviceSpec) (serviceUnit, error) {
	if !filepath.IsAbs(spec.Binary) || !filepath.IsAbs(spec.LogFile) || !filepath.IsAbs(spec.Home) {
		return serviceUnit{}, errors.New("service unit needs absolute paths for the binary, the log file and the home directory")
	}
	values := []string{spec.Binary, spec.LogFile, spec.Home}
	for k, v := range spec.Env {
		if !isEnvName(k) {
			return serviceUnit{}, fmt.Errorf("service environment: %q is not a variable name", k)
		}
		values = append(values, v)
	}
	for _, v := range values {
		if hasControlChar(v) {
			return serviceUnit{}, fmt.Errorf("service unit: %q contains a control character no unit file can carry", v)
		}
	}
	if spec.Platform == platformSystemd {
		if strings.ContainsAny(spec.Binary, `"'\`) {
			// systemd refuses to run an executable whose path has these,
			// however they are quoted.
			return serviceUnit{}, exitError(exitFailure,
				fmt.Errorf("systemd cannot run %q: its path contains a quote or a backslash", spec.Binary),
				"move the claudemesh binary to a plain path (for example ~/.local/bin) and install the service from there")
		}
		if strings.HasSuffix(spec.LogFile, `\`) {
			// A trailing backslash would continue the StandardOutput= line.
			return serviceUnit{}, fmt.Errorf("service unit: log path %q ends in a backslash", spec.LogFile)
		}
	}
	path, err := serviceUnitPath(spec.Platform, spec.Home, spec.XDGConfigHome)
	if err != nil {
		return serviceUnit{}, err
	}
	u := serviceUnit{Platform: spec.Platform, Path: path}
	switch spec.Platform {
	case platformSystemd:
		u.Content = []byte(systemdUnit(spec))
		u.Boot = []serviceCommand{
			{Argv: []string{"systemctl", "--user", "daemon-reload"}},
			{Argv: []string{"systemctl", "--user", "enable", systemdUnitName}},
			// restart starts it, or replaces a running one with the binary
			// this unit names (enable --now would leave that one running).
			{Argv: []string{"systemctl", "--user", "restart", systemdUnitName}},
		}
		u.Stop = []serviceCommand{
			{Argv: []string{"systemctl", "--user", "disable", "--now", systemdUnitName}, MayFail: true},
		}
		u.Probe = []serviceCommand{{Argv: []string{"systemctl", "--user", "show-environment"}}}
	case platformLaunchd:
		u.Content = []byte(launchdPlist(spec))
		domain := "gui/" + strconv.Itoa(spec.UID)
		u.Boot = []serviceCommand{
			// bootstrap fails for an agent that is already loaded.
			{Argv: []string{"launchctl", "bootout", domain + "/" + launchdLabel}, MayFail: true},
			{Argv: []string{"launchctl", "bootstrap", domain, path}},
		}
		u.Stop = []serviceCommand{
			{Argv: []string{"launchctl", "bootout", domain + "/" + launchdLabel}, MayFail: true},
		}
		u.Probe = []serviceCommand{{Argv: []string{"launchctl", "print", domain}}}
	}
	return u, nil
}

func daemonUpArgs() []string { return []string{"daemon", "up", "--foreground"} }

// systemdUnit renders the systemd user unit.
func systemdUnit(spec serviceSpec) string {
	var b strings.Builder
	b.WriteString("# Generated by claudemesh (daemon install-service); remove with `claudemesh daemon uninstall-service`.\n")
	b.WriteString("[Unit]\n")
	b.WriteString("Description=claudemesh daemon: links this user's Claude Code sessions to their meshes\n")
	b.WriteString("After=network-online.target\n")
	b.WriteString("Wants=network-online.target\n\n")
	b.WriteString("[Service]\n")
	b.WriteString("Type=simple\n")
	// The executable itself is not subject to "$" expansion (systemd would
	// keep a doubled "$$"); its arguments are.
	words := []string{systemdQuote(spec.Binary, false)}
	for _, a := range daemonUpArgs() {
		words = append(words, systemdQuote(a, true))
	}
	b.WriteString("ExecStart=" + strings.Join(words, " ") + "\n")
	b.WriteString("Restart=always\n")
	b.WriteString("RestartSec=3\n")
	for _, k := range sortedKeys(spec.Env) {
		b.WriteString("Environment=" + systemdQuote(k+"="+spec.Env[k], false) + "\n")
	}
	log := systemdEscapeSpecifiers(spec.LogFile)
	b.WriteString("StandardOutput=append:" + log + "\n")
	b.WriteString("StandardError=append:" + log + "\n\n")
	b.WriteString("[Install]\n")
	b.WriteString("WantedBy=default.target\n")
	return b.String()
}

// systemdQuote makes s one word of a systemd command line (ExecStart=,
// expandDollar) or assignment list (Environment=, where "$" means nothing):
// "%" is doubled (specifiers), "$" too on command lines (variable
// expansion), and the word is double-quoted, with backslash escapes, when it
// holds anything else systemd would split or interpret.
func systemdQuote(s string, expandDollar bool) string {
	s = systemdEscapeSpecifiers(s)
	if expandDollar {
		s = strings.ReplaceAll(s, "$", "$$")
	}
	if s != "" && !strings.ContainsAny(s, " \t\"'\\;") {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

func systemdEscapeSpecifiers(s string) string { return strings.ReplaceAll(s, "%", "%%") }

// launchdPlist renders the launchd agent.
func launchdPlist(spec serviceSpec) string {
	var b strings.Builder
	str := func(indent, s string) { b.WriteString(indent + "<string>" + xmlEscape(s) + "</string>\n") }
	key := func(k string) { b.WriteString("\t<key>" + xmlEscape(k) + "</key>\n") }
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">` + "\n")
	b.WriteString("<!-- Generated by claudemesh (daemon install-service); remove with `claudemesh daemon uninstall-service`. -->\n")
	b.WriteString(`<plist version="1.0">` + "\n<dict>\n")
	key("Label")
	str("\t", launchdLabel)
	key("ProgramArguments")
	b.WriteString("\t<array>\n")
	str("\t\t", spec.Binary)
	for _, a := range daemonUpArgs() {
		str("\t\t", a)
	}
	b.WriteString("\t</array>\n")
	key("RunAtLoad")
	b.WriteString("\t<true/>\n")
	key("KeepAlive")
	b.WriteString("\t<true/>\n")
	key("WorkingDirectory")
	str("\t", spec.Home)
	key("StandardOutPath")
	str("\t", spec.LogFile)
	key("StandardErrorPath")
	str("\t", spec.LogFile)
	if len(spec.Env) > 0 {
		key("EnvironmentVariables")
		b.WriteString("\t<dict>\n")
		for _, k := range sortedKeys(spec.Env) {
			b.WriteString("\t\t<key>" + xmlEscape(k) + "</key>\n")
			str("\t\t", spec.Env[k])
		}
		b.WriteString("\t</dict>\n")
	}
	b.WriteString("</dict>\n</plist>\n")
	return b.String()
}

// xmlEscape escapes text for the plist as encoding/xml's EscapeText does
// (that package's init would cost every CLI start for this one call).
func xmlEscape(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == '"':
			b.WriteString("&#34;")
		case r == '\'':
			b.WriteString("&#39;")
		case r == '&':
			b.WriteString("&amp;")
		case r == '<':
			b.WriteString("&lt;")
		case r == '>':
			b.WriteString("&gt;")
		case r == '\t':
			b.WriteString("&#x9;")
		case r == '\n':
			b.WriteString("&#xA;")
		case r == '\r':
			b.WriteString("&#xD;")
		case r == utf8.RuneError && isInvalidUTF8At(s, i), !isXMLChar(r):
			b.WriteRune('\uFFFD')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// isInvalidUTF8At: the RuneError at s[i] stands for a bad byte, not for
// an encoded U+FFFD.
func isInvalidUTF8At(s string, i int) bool {
	_, size := utf8.DecodeRuneInString(s[i:])
	return size == 1
}

// isXMLChar is XML 1.0's Char production.
func isXMLChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D || r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func isEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func hasControlChar(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

// shellQuoteArgs renders argv for a POSIX shell: words made only of safe
// characters stay bare, anything else is single-quoted.
func shellQuoteArgs(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = shellQuote(a)
	}
	return strings.Join(out, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./_-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// CI detection.

// ciEnvVars are the variables CI systems set.
var ciEnvVars = []string{"CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "CIRCLECI", "JENKINS_URL"}

// detectCI returns the first CI variable set in the environment; "false"
// and "0" count as unset, as a user who exports CI=false means.
func detectCI(getenv func(string) string) (string, bool) {
	for _, k := range ciEnvVars {
		v := strings.TrimSpace(getenv(k))
		if v != "" && v != "0" && !strings.EqualFold(v, "false") {
			return k, true
		}
	}
	return "", false
}

// checkServiceAllowed refuses a persistent service under CI unless
// --allow-ci-persistent was given.
func checkServiceAllowed(getenv func(string) string, allowCI bool) error {
	name, ci := detectCI(getenv)
	if !ci || allowCI {
		return nil
	}
	return exitError(exitFailure,
		fmt.Errorf("refusing to install a persistent daemon service in CI (%s is set)", name),
		"a CI job should run `claudemesh daemon up` for its own lifetime; pass --allow-ci-persistent if this machine really should keep one")
}

// serviceBinary is the absolute, symlink-free path of the running binary:
// the unit must keep working when the shell's PATH or a symlink changes.
func serviceBinary() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("locating the claudemesh binary: %w", err)
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	return filepath.Abs(exe)
}

// defaultServiceSpec builds the spec for this process: its binary, the
// user's home, the daemon dir's log, and the environment the daemon needs
// to find the same directories the CLI uses.
func defaultServiceSpec(paths Paths, home string, getenv func(string) string) (serviceSpec, error) {
	platform, err := servicePlatformFor(runtime.GOOS)
	if err != nil {
		return serviceSpec{}, err
	}
	bin, err := serviceBinary()
	if err != nil {
		return serviceSpec{}, err
	}
	spec := serviceSpec{
		Platform:      platform,
		Home:          home,
		Binary:        bin,
		LogFile:       paths.LogFile(),
		UID:           os.Getuid(),
		XDGConfigHome: getenv("XDG_CONFIG_HOME"),
		Env:           serviceEnv(paths, home),
	}
	return spec, nil
}

// serviceEnv passes on the daemon and sessions dirs when they are not the
// defaults under home, so the service's daemon uses the same socket and
// session keys as the CLI that installed it.
func serviceEnv(paths Paths, home string) map[string]string {
	env := map[string]string{}
	base := filepath.Join(home, ".claudemesh")
	if paths.DaemonDir != filepath.Join(base, "daemon") {
		env["CLAUDEMESH_DAEMON_DIR"] = paths.DaemonDir
	}
	if paths.SessionsDir != filepath.Join(base, "sessions") {
		env["CLAUDEMESH_SESSIONS_DIR"] = paths.SessionsDir
	}
	return env
}

// Results of installing a file.
const (
	fileAdded     = "added"
	fileUpdated   = "updated"
	fileUnchanged = "unchanged"
)

// installFile writes content to path atomically with perm and says whether
// the file was added, updated or already had that content (then it is not
// touched, so its mtime says when it last changed).
func installFile(path string, content []byte, perm os.FileMode) (string, error) {
	old, err := os.ReadFile(path)
	switch {
	case err == nil && bytes.Equal(old, content):
		return fileUnchanged, nil
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	if werr := writeFileAtomic(path, content, perm); werr != nil {
		return "", fmt.Errorf("writing %s: %w", path, werr)
	}
	if err == nil {
		return fileUpdated, nil
	}
	return fileAdded, nil
}

// installServiceFile writes the unit file (0644).
func installServiceFile(u serviceUnit) (string, error) { return installFile(u.Path, u.Content, 0o644) }

// uninstallServiceFile removes the unit file; removed is false when there
// was none.
func uninstallServiceFile(path string) (removed bool, err error) {
	if err := os.Remove(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("removing %s: %w", path, err)
	}
	return true, nil
}

// serviceRunner runs service-manager commands. lookPath finds the manager;
// when it is missing (a container without systemd, say) the commands are
// skipped and reported, not failed: the unit file still serves a later
// login.
type serviceRunner struct {
	lookPath func(string) (string, error)
	run      func(ctx context.Context, path string, args []string) ([]byte, error)
}

// execServiceRunner runs commands for real.
func execServiceRunner() serviceRunner {
	return serviceRunner{
		lookPath: exec.LookPath,
		run: func(ctx context.Context, path string, args []string) ([]byte, error) {
			return exec.CommandContext(ctx, path, args...).CombinedOutput()
		},
	}
}

// errServiceManagerMissing: systemctl or launchctl is not on PATH.
var errServiceManagerMissing = errors.New("service manager not found")

// runServiceCommands runs cmds in order, stopping at the first failure of a
// command that must succeed. If the manager is not installed it runs
// nothing and returns an error wrapping errServiceManagerMissing.
func (r serviceRunner) runServiceCommands(ctx context.Context, cmds []serviceCommand) error {
	for _, c := range cmds {
		path, err := r.lookPath(c.Argv[0])
		if err != nil {
			return fmt.Errorf("%w: %s (%v)", errServiceManagerMissing, c.Argv[0], err)
		}
		out, err := r.run(ctx, path, c.Argv[1:])
		if err != nil && !c.MayFail {
			msg := strings.TrimSpace(string(out))
			if msg != "" {
				return fmt.Errorf("%s: %w: %s", c, err, msg)
			}
			return fmt.Errorf("%s: %w", c, err)
		}
	}
	return nil
}
