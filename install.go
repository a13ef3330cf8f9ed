// `claudemesh install` / `uninstall`: register the MCP server
// with Claude Code, install the skill and the daemon service, and undo all
// of it.
//
// Policy for ~/.claude.json, which belongs to Claude Code:
//   - Only mcpServers.claudemesh is ours. Every other key keeps its value,
//     its order and its exact text (numbers, escapes); inside our entry,
//     keys other than command and args (an "env" the user added) stay too.
//   - A timestamped backup goes to ~/.claude/backups/ before every write;
//     nothing is written (and no backup made) when nothing changes.
//   - The write is atomic, 0600, through a symlink to its target, and read
//     back to check it.
//   - A file that is not a JSON object is never rewritten: the user gets
//     the error and the file stays as it was.
//
// uninstall removes our entry, the skill and the service, and nothing else:
// meshes, keys and the inbox in ~/.claudemesh stay.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"
)

// Install timings.
const (
	installBrokerWait = 15 * time.Second
	installBrokerPoll = 250 * time.Millisecond
)

// mcpServerName is our key in Claude Code's mcpServers; launch's
// server:claudemesh names it.
const mcpServerName = "claudemesh"

func claudeJSONPath(home string) string { return filepath.Join(home, ".claude.json") }

// claudeKnowsClaudemesh reports whether ~/.claude.json registers an MCP
// server named claudemesh (whatever it runs: doctor checks that).
func claudeKnowsClaudemesh(home string) bool {
	cc, err := readClaudeConfig(claudeJSONPath(home))
	if err != nil {
		return false
	}
	servers, err := cc.servers()
	return err == nil && memberIndex(servers, mcpServerName) >= 0
}

// claudeMCPConfig is a Claude Code MCP config that runs bin's MCP server,
// for a claude whose own config has no claudemesh entry.
func claudeMCPConfig(bin string) []byte {
	return jsonStringNoEscapeHTML(map[string]map[string]mcpEntry{"mcpServers": {mcpServerName: {Command: bin, Args: []string{"mcp"}}}})
}

func claudeBackupDir(home string) string { return filepath.Join(home, ".claude", "backups") }

// jsonMember is one member of a JSON object, value kept as written.
type jsonMember struct {
	Key   string
	Value json.RawMessage
}

// decodeObjectOrdered reads a JSON object keeping its members' order and
// their values' exact text.
func decodeObjectOrdered(data []byte) ([]jsonMember, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	var out []jsonMember
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := kt.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		out = append(out, jsonMember{Key: key, Value: v})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	return out, nil
}

// encodeObjectOrdered writes members back as one compact object.
func encodeObjectOrdered(members []jsonMember) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(jsonStringNoEscapeHTML(m.Key))
		b.WriteByte(':')
		if err := json.Compact(&b, m.Value); err != nil {
			return nil, fmt.Errorf("member %q: %w", m.Key, err)
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func jsonStringNoEscapeHTML(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // strings and string slices always encode
	return bytes.TrimRight(b.Bytes(), "\n")
}

func memberIndex(members []jsonMember, key string) int {
	return slices.IndexFunc(members, func(m jsonMember) bool { return m.Key == key })
}

// mcpEntry is the command and args of an mcpServers entry.
type mcpEntry struct {
	Command string   `json:"command"`
	Args    []string `json:"args"`
}

// claudeConfig is ~/.claude.json as read: its members in order, and whether
// the file existed.
type claudeConfig struct {
	path    string // the real file (symlinks resolved)
	members []jsonMember
	existed bool
	mode    os.FileMode
}

func readClaudeConfig(path string) (*claudeConfig, error) {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	cc := &claudeConfig{path: path, mode: 0o600}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return cc, nil
	case err != nil:
		return nil, exitError(exitIO, fmt.Errorf("reading %s: %w", path, err))
	}
	cc.existed = true
	if len(bytes.TrimSpace(data)) == 0 {
		return cc, nil
	}
	if cc.members, err = decodeObjectOrdered(data); err != nil {
		return nil, exitError(exitFailure, fmt.Errorf("%s is not a JSON object Claude Code could read: %v", path, err),
			"fix the file (or move it aside); it was not changed")
	}
	return cc, nil
}

// servers returns the mcpServers object's members; an absent or null
// mcpServers is empty.
func (cc *claudeConfig) servers() ([]jsonMember, error) {
	i := memberIndex(cc.members, "mcpServers")
	if i < 0 || string(bytes.TrimSpace(cc.members[i].Value)) == "null" {
		return nil, nil
	}
	s, err := decodeObjectOrdered(cc.members[i].Value)
	if err != nil {
		return nil, exitError(exitFailure, fmt.Errorf("%s: mcpServers is not an object: %v", cc.path, err), "the file was not changed")
	}
	return s, nil
}

func (cc *claudeConfig) setServers(servers []jsonMember) error {
	raw, err := encodeObjectOrdered(servers)
	if err != nil {
		return err
	}
	if i := memberIndex(cc.members, "mcpServers"); i >= 0 {
		cc.members[i].Value = raw
	} else {
		cc.members = append(cc.members, jsonMember{Key: "mcpServers", Value: raw})
	}
	return nil
}

// write backs the file up (if it existed) and replaces it atomically. It
// returns the backup's path.
func (cc *claudeConfig) write(home string, now time.Time) (string, error) {
	compact, err := encodeObjectOrdered(cc.members)
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, compact, "", "  "); err != nil {
		return "", err
	}
	out.WriteByte('\n')
	backup := ""
	if cc.existed {
		old, err := os.ReadFile(cc.path)
		if err != nil {
			return "", exitError(exitIO, err)
		}
		if err := ensurePrivateDir(claudeBackupDir(home)); err != nil {
			return "", exitError(exitIO, err)
		}
		backup = filepath.Join(claudeBackupDir(home), filepath.Base(cc.path)+".pre-claudemesh."+strconv.FormatInt(now.UnixMilli(), 10))
		if err := writeFileAtomic(backup, old, 0o600); err != nil {
			return "", exitError(exitIO, fmt.Errorf("backing up %s: %w", cc.path, err))
		}
	}
	if err := writeFileAtomic(cc.path, out.Bytes(), 0o600); err != nil {
		return backup, exitError(exitIO, fmt.Errorf("writing %s: %w", cc.path, err))
	}
	return backup, nil
}

// registerClaudeMCP sets mcpServers.claudemesh to run `<bin> mcp`. It
// returns added, updated or unchanged, and the backup made, if any.
func registerClaudeMCP(home, bin string, now time.Time) (result, backup string, err error) {
	cc, err := readClaudeConfig(claudeJSONPath(home))
	if err != nil {
		return "", "", err
	}
	servers, err := cc.servers()
	if err != nil {
		return "", "", err
	}
	want := mcpEntry{Command: bin, Args: []string{"mcp"}}
	i := memberIndex(servers, mcpServerName)
	result = fileAdded
	if i >= 0 {
		var have mcpEntry
		entry, derr := decodeObjectOrdered(servers[i].Value)
		if derr == nil && json.Unmarshal(servers[i].Value, &have) == nil && have.Command == want.Command && slices.Equal(have.Args, want.Args) {
			return fileUnchanged, "", nil
		}
		if derr != nil {
			entry = nil // not an object: replaced whole
		}
		for _, kv := range []jsonMember{{"command", jsonStringNoEscapeHTML(want.Command)}, {"args", jsonStringNoEscapeHTML(want.Args)}} {
			if j := memberIndex(entry, kv.Key); j >= 0 {
				entry[j].Value = kv.Value
			} else {
				entry = append(entry, kv)
			}
		}
		raw, err := encodeObjectOrdered(entry)
		if err != nil {
			return "", "", err
		}
		servers[i].Value, result = raw, fileUpdated
	} else {
		servers = append(servers, jsonMember{Key: mcpServerName, Value: jsonStringNoEscapeHTML(want)})
	}
	if err := cc.setServers(servers); err != nil {
		return "", "", err
	}
	if backup, err = cc.write(home, now); err != nil {
		return "", backup, err
	}
	// Read back: what Claude Code will read must be what we meant.
	check, err := readClaudeConfig(claudeJSONPath(home))
	if err == nil {
		var s []jsonMember
		if s, err = check.servers(); err == nil {
			var got mcpEntry
			if j := memberIndex(s, mcpServerName); j < 0 || json.Unmarshal(s[j].Value, &got) != nil || got.Command != bin {
				err = errors.New("the entry is not there after writing")
			}
		}
	}
	if err != nil {
		return "", backup, exitError(exitIO, fmt.Errorf("checking %s after writing it: %v", cc.path, err), "the previous file is at "+backup)
	}
	return result, backup, nil
}

// unregisterClaudeMCP removes mcpServers.claudemesh; removed is false when
// it was not there (nothing is written then).
func unregisterClaudeMCP(home string, now time.Time) (removed bool, backup string, err error) {
	cc, err := readClaudeConfig(claudeJSONPath(home))
	if err != nil || !cc.existed {
		return false, "", err
	}
	servers, err := cc.servers()
	if err != nil {
		return false, "", err
	}
	i := memberIndex(servers, mcpServerName)
	if i < 0 {
		return false, "", nil
	}
	servers = slices.Delete(servers, i, i+1)
	if err := cc.setServers(servers); err != nil {
		return false, "", err
	}
	backup, err = cc.write(home, now)
	return err == nil, backup, err
}

// Verbs.

type installFlags struct {
	noService  bool
	allowCI    bool
	brokerWait time.Duration // how long install waits for the broker links
}

func setupInstall(fs *flagSet) runFunc {
	f := installFlags{brokerWait: installBrokerWait}
	fs.BoolVar(&f.noService, "no-service", false, "do not install the daemon as a service (it then starts on demand)")
	fs.BoolVar(&f.allowCI, "allow-ci-persistent", false, "install even though a CI environment variable is set")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("'install' takes no arguments")
		}
		return runInstall(ctx, c, f, execServiceRunner())
	}
}

func setupUninstall(fs *flagSet) runFunc {
	var f installFlags
	fs.BoolVar(&f.noService, "no-service", false, "leave the daemon service installed")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("'uninstall' takes no arguments")
		}
		return runUninstall(ctx, c, f, execServiceRunner())
	}
}

// installReport is `install --json`.
type installReport struct {
	MCP struct {
		Result  string   `json:"result"`
		Config  string   `json:"config"`
		Backup  string   `json:"backup,omitempty"`
		Command string   `json:"command"`
		Args    []string `json:"args"`
	} `json:"mcp"`
	Skill struct {
		Result string `json:"result"`
		Path   string `json:"path"`
	} `json:"skill"`
	Hooks         hooksReport    `json:"hooks"`
	Service       *serviceReport `json:"service,omitempty"`
	DaemonRunning bool           `json:"daemon_running"`
	Brokers       []brokerReport `json:"brokers"`
}

func runInstall(ctx context.Context, c *cli, f installFlags, runner serviceRunner) error {
	home := homeDir(c.env.Getenv)
	if !f.noService {
		// Before anything is touched: under CI, install nothing unless asked.
		if err := checkServiceAllowed(c.env.Getenv, f.allowCI); err != nil {
			return withHint(err, "or install without the service: claudemesh install --no-service")
		}
	}
	bin, err := serviceBinary()
	if err != nil {
		return exitError(exitFailure, err)
	}
	var rep installReport
	rep.MCP.Config, rep.MCP.Command, rep.MCP.Args = claudeJSONPath(home), bin, []string{"mcp"}
	if rep.MCP.Result, rep.MCP.Backup, err = registerClaudeMCP(home, bin, time.Now()); err != nil {
		return err
	}
	rep.Skill.Path = skillInstallPath(home)
	if rep.Skill.Result, err = installSkillFile(home); err != nil {
		return exitError(exitIO, err)
	}
	if !c.jsonMode() {
		c.printf("%s MCP server %q %s in %s\n", c.paint(colorGreen, "✓"), mcpServerName, rep.MCP.Result, rep.MCP.Config)
		c.printf("  command  %s mcp\n", bin)
		if rep.MCP.Backup != "" {
			c.printf("  backup   %s\n", rep.MCP.Backup)
		}
		c.printf("%s Claude skill %s: %s\n", c.paint(colorGreen, "✓"), rep.Skill.Result, rep.Skill.Path)
	}
	if rep.Hooks, err = installClaudeHooks(ctx, c, home, bin); err != nil {
		return err
	}
	if !c.jsonMode() {
		printHooksInstall(c, rep.Hooks)
	}
	if !f.noService {
		srep, err := installDaemonService(ctx, c, runner, f.allowCI)
		if err != nil {
			return err
		}
		rep.Service = &srep
		if !c.jsonMode() {
			printServiceInstall(c, srep)
		}
	}
	rep.Brokers, rep.DaemonRunning = []brokerReport{}, false
	// Wait for a daemon only where one is coming: the service's, or one
	// that already runs. Otherwise none will answer, however long we wait.
	serviceStarted := rep.Service != nil && rep.Service.Started
	if serviceStarted || c.runningDaemon(ctx) != nil {
		if reps, ok := waitBrokers(ctx, c, f.brokerWait, installBrokerPoll); ok {
			rep.Brokers, rep.DaemonRunning = reps, true
		}
	}
	if serviceStarted && !rep.DaemonRunning {
		c.warnf("the daemon service was started, but no daemon answered within %s (%s; its log: %s)",
			f.brokerWait, serviceStatusHint(runtime.GOOS), c.Paths().LogFile())
	}
	if c.jsonMode() {
		return c.printJSON(rep)
	}
	printBrokerReport(c, rep.DaemonRunning, rep.Brokers, serviceStarted)
	c.printf("\nRestart Claude Code to load the claudemesh MCP server and hooks: a plain `claude` is then a peer too.\n")
	c.printf("hint: start a session in a mesh with 'claudemesh launch --name <you>'\n")
	return nil
}

func printBrokerReport(c *cli, running bool, reps []brokerReport, serviceStarted bool) {
	switch {
	case !running && serviceStarted:
		c.printf("%s the daemon is not answering yet (see the warning above)\n", c.paint(colorRed, "●"))
	case !running:
		c.printf("%s the daemon is not running yet; it starts with 'claudemesh daemon up' or with the first verb that needs it\n", c.paint(colorYellow, "●"))
	case len(reps) == 0:
		c.printf("%s daemon running; no mesh joined yet ('claudemesh init', or 'claudemesh join <invite>')\n", c.paint(colorGreen, "●"))
	}
	for _, r := range reps {
		if r.State == string(LinkOpen) {
			c.printf("%s mesh %s: broker connected\n", c.stateDot(r.State), r.Mesh)
			continue
		}
		line := fmt.Sprintf("%s mesh %s: broker %s after %s", c.stateDot(r.State), r.Mesh, r.State, installBrokerWait)
		if r.Error != "" {
			line += " (" + r.Error + ")"
		}
		c.printf("%s\n", line)
	}
}

// uninstallReport is `uninstall --json`.
type uninstallReport struct {
	MCPRemoved   bool           `json:"mcp_removed"`
	Backup       string         `json:"backup,omitempty"`
	SkillRemoved bool           `json:"skill_removed"`
	HooksRemoved bool           `json:"hooks_removed"`
	HooksBackup  string         `json:"hooks_backup,omitempty"`
	Service      *serviceReport `json:"service,omitempty"`
}

func runUninstall(ctx context.Context, c *cli, f installFlags, runner serviceRunner) error {
	home := homeDir(c.env.Getenv)
	var rep uninstallReport
	var err error
	if rep.MCPRemoved, rep.Backup, err = unregisterClaudeMCP(home, time.Now()); err != nil {
		return err
	}
	if rep.SkillRemoved, err = uninstallSkillFile(home); err != nil {
		return exitError(exitIO, err)
	}
	removed, hooksBackup, err := setClaudeHooks(home, "", false, time.Now())
	if err != nil {
		return err
	}
	rep.HooksRemoved, rep.HooksBackup = removed == fileRemoved, hooksBackup
	if !f.noService {
		srep, err := uninstallDaemonService(ctx, c, runner)
		if err != nil {
			return err
		}
		rep.Service = &srep
	}
	if c.jsonMode() {
		return c.printJSON(rep)
	}
	if rep.MCPRemoved {
		c.printf("%s MCP server %q removed from %s (backup %s)\n", c.paint(colorGreen, "✓"), mcpServerName, claudeJSONPath(home), rep.Backup)
	} else {
		c.printf("MCP server %q: not registered\n", mcpServerName)
	}
	if rep.SkillRemoved {
		c.printf("%s Claude skill removed: %s\n", c.paint(colorGreen, "✓"), skillInstallPath(home))
	} else {
		c.printf("Claude skill: not installed\n")
	}
	if rep.HooksRemoved {
		c.printf("%s hooks removed from %s (backup %s)\n", c.paint(colorGreen, "✓"), claudeSettingsPath(home), rep.HooksBackup)
	} else {
		c.printf("hooks: not installed\n")
	}
	if rep.Service != nil {
		printServiceUninstall(c, *rep.Service)
	}
	c.printf("Your meshes, keys and inbox in %s are kept; 'claudemesh leave <slug>' forgets a mesh.\n", c.Paths().MachineConfigDir)
	return nil
}
