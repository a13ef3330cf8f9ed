// `claudemesh doctor`: checks the set-up of this machine and says, for each
// problem, the command that fixes it.
//
// Policy:
//   - It only looks: nothing is started, written or repaired, and the
//     daemon is asked only if it already runs.
//   - Exit 1 when something needs fixing, 0 otherwise; a warning (claude
//     not on PATH, no service unit, a daemon of another version) is printed
//     and does not change the exit code.
//   - It checks the machine config (~/.claudemesh/config.json), the one the
//     daemon serves.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Check outcomes.
const (
	checkOK   = "ok"
	checkWarn = "warn"
	checkFail = "fail"
)

// doctorCheck is one line of the report.
type doctorCheck struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// doctorReport is `doctor --json`.
type doctorReport struct {
	OK       bool          `json:"ok"`
	Problems int           `json:"problems"`
	Warnings int           `json:"warnings"`
	Checks   []doctorCheck `json:"checks"`
}

func (r *doctorReport) add(name, status, detail, fix string) {
	r.Checks = append(r.Checks, doctorCheck{Name: name, Status: status, Detail: detail, Fix: fix})
	switch status {
	case checkFail:
		r.Problems++
	case checkWarn:
		r.Warnings++
	}
}

func setupDoctor(fs *flagSet) runFunc {
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("doctor takes no arguments")
		}
		rep := runDoctor(ctx, c)
		if c.jsonMode() {
			if err := c.printJSON(rep); err != nil {
				return err
			}
		} else {
			printDoctor(c, rep)
		}
		if !rep.OK {
			return silentExit(exitFailure)
		}
		return nil
	}
}

// runDoctor runs every check in the order a user would fix them.
func runDoctor(ctx context.Context, c *cli) doctorReport {
	rep := doctorReport{Checks: []doctorCheck{}}
	paths := c.Paths()
	home := homeDir(c.env.Getenv)

	bin, binErr := serviceBinary()
	switch {
	case binErr != nil:
		rep.add("binary", checkWarn, binErr.Error(), "")
	case strings.Contains(bin, string(filepath.Separator)+"go-build"):
		rep.add("binary", checkWarn, bin+" is a temporary 'go run' build: what install registers with it disappears",
			"go install . (then run claudemesh from $(go env GOPATH)/bin)")
	default:
		rep.add("binary", checkOK, fmt.Sprintf("%s (claudemesh %s)", bin, version), "")
	}

	cfg := doctorConfig(&rep, paths)
	doctorPrivateDir(&rep, "daemon dir", paths.DaemonDir)
	doctorDaemon(ctx, c, &rep, cfg)

	if p, err := findClaude(c.env.Getenv, home); err != nil {
		rep.add("claude", checkWarn, "Claude Code's claude is not on PATH: launch cannot start sessions",
			"npm install -g @anthropic-ai/claude-code (or set CLAUDEMESH_CLAUDE_BIN)")
	} else {
		rep.add("claude", checkOK, p, "")
	}
	doctorMCP(&rep, home, bin)
	doctorSkill(&rep, home)
	doctorClaudeCode(ctx, c, &rep, home, bin)
	doctorService(&rep, c, home, bin)

	rep.OK = rep.Problems == 0
	return rep
}

// doctorPrivateDir checks that dir, if it exists, is 0700.
func doctorPrivateDir(rep *doctorReport, name, dir string) bool {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false
	case err != nil:
		rep.add(name, checkFail, err.Error(), "")
		return false
	case !st.IsDir():
		rep.add(name, checkFail, dir+" is not a directory", "move it aside: mv "+shellQuote(dir)+" "+shellQuote(dir+".bak"))
		return false
	case st.Mode().Perm()&0o077 != 0:
		rep.add(name, checkFail, fmt.Sprintf("%s is %04o: others can read what is in it", dir, st.Mode().Perm()), "chmod 700 "+shellQuote(dir))
		return true
	}
	rep.add(name, checkOK, dir+" (0700)", "")
	return true
}

// doctorConfig checks the config dir and file; it returns the config when
// it could be read.
func doctorConfig(rep *doctorReport, paths Paths) *Config {
	dir, file := paths.MachineConfigDir, paths.MachineConfigFile()
	if !doctorPrivateDir(rep, "config dir", dir) {
		rep.add("config", checkFail, "no "+dir+": this machine is not set up", "claudemesh init (or claudemesh join <invite>)")
		return nil
	}
	st, err := os.Stat(file)
	if errors.Is(err, fs.ErrNotExist) {
		rep.add("config", checkFail, "no "+file+": this machine is not set up", "claudemesh init (or claudemesh join <invite>)")
		return nil
	}
	if err != nil {
		rep.add("config", checkFail, err.Error(), "")
		return nil
	}
	if st.Mode().Perm()&0o077 != 0 {
		rep.add("config file mode", checkFail, fmt.Sprintf("%s is %04o: it holds secret keys", file, st.Mode().Perm()), "chmod 600 "+shellQuote(file))
	}
	cfg, err := loadConfig(file)
	if err != nil {
		rep.add("config", checkFail, err.Error(),
			"fix the JSON, or move it aside and start over: mv "+shellQuote(file)+" "+shellQuote(file+".broken")+" && claudemesh init")
		return nil
	}
	var bad []string
	seen := map[string]bool{}
	for _, m := range cfg.Meshes {
		var why string
		_, urlErr := brokerHTTPBase(m.BrokerURL)
		_, keyErr := m.Keypair()
		switch {
		case !validSlug(m.Slug):
			why = fmt.Sprintf("slug %q is not valid", m.Slug)
		case seen[m.Slug]:
			why = "listed twice"
		case m.MeshID == "" || m.MemberID == "":
			why = "no meshId or memberId"
		case keyErr != nil:
			why = "its member key is broken: " + keyErr.Error()
		case urlErr != nil:
			why = "its brokerUrl is broken: " + urlErr.Error()
		}
		seen[m.Slug] = true
		if why != "" {
			bad = append(bad, m.Slug)
			rep.add("mesh "+m.Slug, checkFail, why, "claudemesh leave "+m.Slug+", then join it again with a new invite")
		}
	}
	if cfg.Broker != nil {
		if err := checkListenAddr(cfg.Broker.Listen); err != nil {
			rep.add("config broker block", checkFail, "broker.listen: "+err.Error(), "set broker.listen to HOST:PORT in "+file)
		}
	}
	if len(cfg.Meshes) == 0 {
		rep.add("config", checkFail, file+" joins no mesh", "claudemesh init (or claudemesh join <invite>)")
	} else if len(bad) == 0 {
		rep.add("config", checkOK, fmt.Sprintf("%s: %s", file, strings.Join(cfg.Slugs(), ", ")), "")
	}
	return cfg
}

// doctorDaemon checks that the daemon runs, its version, the embedded
// broker and each mesh's link.
func doctorDaemon(ctx context.Context, c *cli, rep *doctorReport, cfg *Config) {
	paths := c.Paths()
	start := "claudemesh daemon up"
	if serviceInstalled(serviceUnitFor(runtime.GOOS, homeDir(c.env.Getenv), c.env.Getenv("XDG_CONFIG_HOME"))) {
		start = serviceStartCommand(runtime.GOOS)
	}
	cl := c.runningDaemon(ctx)
	if cl == nil {
		rep.add("daemon", checkFail, "not running: nothing is received while it is down (log: "+paths.LogFile()+")", start)
		return
	}
	defer cl.http.CloseIdleConnections()
	h, err := cl.Health(ctx)
	if err != nil {
		rep.add("daemon", checkFail, "it does not answer: "+err.Error(), "claudemesh daemon down && "+start)
		return
	}
	if h.Version != version {
		rep.add("daemon", checkWarn, fmt.Sprintf("pid %d runs claudemesh %s, this is %s", h.Pid, h.Version, version),
			"claudemesh daemon down && "+start)
	} else {
		rep.add("daemon", checkOK, fmt.Sprintf("running, pid %d, claudemesh %s", h.Pid, h.Version), "")
	}
	if eb := h.EmbeddedBroker; eb != nil {
		if eb.State == embeddedServing {
			rep.add("embedded broker", checkOK, eb.URL+" (data "+eb.Data+")", "")
		} else {
			rep.add("embedded broker", checkFail, eb.Error, "free "+eb.Listen+" (or change broker.listen in "+paths.MachineConfigFile()+"), then: claudemesh daemon down && "+start)
		}
	} else if cfg != nil && cfg.Broker != nil {
		rep.add("embedded broker", checkFail, "the config has a broker block but the daemon does not serve it", "claudemesh daemon down && "+start)
	}
	if cfg == nil {
		return
	}
	lastErr := map[string]string{}
	for _, l := range h.Links {
		if l.Kind == linkMember {
			lastErr[l.Mesh] = l.LastError
		}
	}
	for _, m := range cfg.Meshes {
		st, ok := h.Brokers[m.Slug]
		switch {
		case !ok:
			rep.add("link "+m.Slug, checkFail, "the daemon has not attached this mesh", "claudemesh daemon down && "+start)
		case st == string(LinkOpen):
			rep.add("link "+m.Slug, checkOK, "open to "+m.BrokerURL, "")
		case st == string(LinkBanned):
			rep.add("link "+m.Slug, checkFail, "this member is banned from the mesh", "ask a mesh admin for 'claudemesh unban', then: claudemesh daemon down && "+start+"; or leave it: claudemesh leave "+m.Slug)
		default:
			detail := st + " to " + m.BrokerURL
			if e := lastErr[m.Slug]; e != "" {
				detail += ": " + e
			}
			rep.add("link "+m.Slug, checkFail, detail, "is the broker at "+m.BrokerURL+" up? 'claudemesh status' shows every link")
		}
	}
}

// serviceStartCommand starts the installed daemon service.
func serviceStartCommand(goos string) string {
	if goos == "darwin" {
		return "launchctl kickstart gui/$(id -u)/com.claudemesh.daemon"
	}
	return "systemctl --user start claudemesh-daemon.service"
}

// doctorMCP checks mcpServers.claudemesh in ~/.claude.json: present, and
// running this binary's `mcp`.
func doctorMCP(rep *doctorReport, home, bin string) {
	path := claudeJSONPath(home)
	cc, err := readClaudeConfig(path)
	if err != nil {
		rep.add("mcp server", checkFail, err.Error(), "fix "+path+", then: claudemesh install")
		return
	}
	servers, err := cc.servers()
	if err != nil {
		rep.add("mcp server", checkFail, err.Error(), "fix "+path+", then: claudemesh install")
		return
	}
	i := memberIndex(servers, mcpServerName)
	if i < 0 {
		rep.add("mcp server", checkFail, "Claude Code does not know claudemesh: no mcpServers.claudemesh in "+path, "claudemesh install")
		return
	}
	var e mcpEntry
	if err := json.Unmarshal(servers[i].Value, &e); err != nil || len(e.Args) != 1 || e.Args[0] != "mcp" {
		rep.add("mcp server", checkFail, "mcpServers.claudemesh in "+path+" does not run 'claudemesh mcp'", "claudemesh install")
		return
	}
	if bin != "" && !sameExecutable(e.Command, bin) {
		rep.add("mcp server", checkFail, fmt.Sprintf("mcpServers.claudemesh runs %s, not this binary (%s)", e.Command, bin), "claudemesh install")
		return
	}
	rep.add("mcp server", checkOK, "registered in "+path, "")
}

// sameExecutable reports whether two paths name the same file.
func sameExecutable(a, b string) bool {
	if a == b {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// doctorSkill checks the skill file against the one this binary carries.
func doctorSkill(rep *doctorReport, home string) {
	path := skillInstallPath(home)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		rep.add("skill", checkFail, "no "+path+": sessions do not know how to use the mesh", "claudemesh install")
	case err != nil:
		rep.add("skill", checkFail, err.Error(), "claudemesh install")
	case !bytes.Equal(data, skillMarkdown):
		rep.add("skill", checkWarn, path+" is not this version's skill", "claudemesh install")
	default:
		rep.add("skill", checkOK, path, "")
	}
}

// doctorService checks the daemon's service unit: its absence is a
// warning; one that runs another binary is a problem.
func doctorService(rep *doctorReport, c *cli, home, bin string) {
	path := serviceUnitFor(runtime.GOOS, home, c.env.Getenv("XDG_CONFIG_HOME"))
	if path == "" {
		return
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		rep.add("service", checkWarn, "no daemon service: the daemon starts on demand, not at login", "claudemesh install (or claudemesh daemon install-service)")
		return
	case err != nil:
		rep.add("service", checkFail, err.Error(), "")
		return
	}
	if bin != "" && !bytes.Contains(data, []byte(bin)) {
		rep.add("service", checkFail, path+" runs another claudemesh binary, not "+bin, "claudemesh daemon install-service")
		return
	}
	if u, err := daemonServiceUnit(c); err == nil && !bytes.Equal(u.Content, data) {
		rep.add("service", checkWarn, path+" differs from what this version writes", "claudemesh daemon install-service")
		return
	}
	rep.add("service", checkOK, path, "")
}

func printDoctor(c *cli, rep doctorReport) {
	width := 0
	for _, ch := range rep.Checks {
		width = max(width, len(ch.Name))
	}
	for _, ch := range rep.Checks {
		mark := c.paint(colorGreen, "✔")
		switch ch.Status {
		case checkWarn:
			mark = c.paint(colorYellow, "!")
		case checkFail:
			mark = c.paint(colorRed, "✘")
		}
		c.printf("%s %-*s  %s\n", mark, width, ch.Name, ch.Detail)
		if ch.Fix != "" && ch.Status != checkOK {
			c.printf("  %*s  fix: %s\n", width, "", ch.Fix)
		}
	}
	switch {
	case rep.Problems == 0 && rep.Warnings == 0:
		c.printf("\nall good\n")
	case rep.Problems == 0:
		c.printf("\nnothing needs fixing (%s)\n", plural(rep.Warnings, "warning", "warnings"))
	default:
		c.printf("\n%s, %s\n", plural(rep.Problems, "problem", "problems"), plural(rep.Warnings, "warning", "warnings"))
	}
}
