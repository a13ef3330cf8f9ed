// `claudemesh launch` (alias `connect`): start `claude` wired into
// a mesh with a session identity of its own.
//
// Policy:
//   - Every flag is wired (claudemesh 1.27.1), and a bad value is a usage error rather
//     than silently replaced by a default.
//   - The session needs the daemon: it holds the session's broker link and
//     feeds the MCP server. A daemon that cannot be had, or a registration
//     it refuses, stops the launch with the reason; nothing is swallowed.
//   - The session's secrets stay off argv and out of the environment's
//     values: claude gets the path of the token file, not the token.
//   - The session keypair is kept in the sessions dir under the session id,
//     so a relaunch with --resume (or --continue) keeps its pubkey and the
//     DMs queued for it.
//   - The terminal is handed over untouched: claude inherits stdin, stdout
//     and stderr and stays in the foreground process group. While it runs
//     this process ignores the terminal's SIGINT and SIGQUIT (they are
//     claude's) and forwards SIGTERM and SIGHUP to it.
//   - Whatever happens after registration, the session is deregistered and
//     its temp dir removed before launch exits; it then exits with claude's
//     status, or dies of the signal claude died of.
//   - Old temp dirs of launches that are gone (their launch.pid is dead) are
//     removed after an hour; a running session's dir is never touched, however
//     old.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Launch timings and names.
const (
	launchDaemonBudget = 10 * time.Second // spawn budget for the daemon
	launchIPCTimeout   = 5 * time.Second  // register, status queries, deregister
	launchDirPrefix    = "claudemesh-"
	launchStaleAge     = time.Hour
	launchPidFile      = "launch.pid"
	launchTokenFile    = "session-token"
	// claudeChannelsFlag makes claude load our MCP server's channel
	// notifications: server:claudemesh is the mcpServers entry install
	// writes.
	claudeChannelsFlag = "--dangerously-load-development-channels"
	// claudeMCPConfigFlag gives claude MCP servers beyond its own config.
	claudeMCPConfigFlag = "--mcp-config"
	claudeChannelsArg   = "server:claudemesh"
	claudeSkipPerms     = "--dangerously-skip-permissions"
)

// launchFlags are launch's flags as parsed.
type launchFlags struct {
	mesh, name, role, groups, messageMode string
	systemPrompt, resume, join            string
	cont, quiet, yes                      bool
}

func setupLaunch(fs *flagSet) runFunc {
	var f launchFlags
	fs.StringVar(&f.mesh, "mesh", "", "mesh slug (or give it as the first argument)")
	fs.StringVar(&f.name, "name", "", "this session's display name (default: CLAUDEMESH_DISPLAY_NAME, config, $USER, hostname)")
	fs.StringVar(&f.role, "role", "", "this session's role, free-form (shown to peers)")
	fs.StringVar(&f.groups, "groups", "", `groups to be in, "name[:role],…", e.g. "frontend:lead,reviewers"`)
	fs.StringVar(&f.messageMode, "message-mode", "", "push (messages arrive as reminders, the default), inbox (held in the inbox) or off")
	fs.StringVar(&f.systemPrompt, "system-prompt", "", "passed to claude as --system-prompt")
	fs.StringVar(&f.resume, "resume", "", "resume this Claude Code session id; the session keeps its mesh identity")
	fs.BoolVar(&f.cont, "continue", false, "continue the newest Claude Code session of this directory, keeping its mesh identity")
	fs.BoolVar(&f.quiet, "quiet", false, "no banner, status or progress lines")
	yesFlag(fs, &f.yes, "never ask; claude runs with --dangerously-skip-permissions")
	fs.StringVar(&f.join, "join", "", "join the mesh of this invite first, then launch into it")
	return func(ctx context.Context, c *cli, args []string) error {
		opts, err := f.options(args, c.passthrough)
		if err != nil {
			return err
		}
		return runLaunch(ctx, c, opts)
	}
}

// launchOptions is a validated launch request.
type launchOptions struct {
	Mesh         string
	Name         string
	Role         string
	Groups       []GroupRef
	MessageMode  string
	SystemPrompt string
	Resume       string
	Continue     bool
	Quiet        bool
	Yes          bool
	Join         string
	Passthrough  []string // for claude, already stripped of flags launch sets itself
}

func (f launchFlags) options(args, passthrough []string) (launchOptions, error) {
	o := launchOptions{
		Mesh: f.mesh, Name: strings.TrimSpace(f.name), Role: strings.TrimSpace(f.role), SystemPrompt: f.systemPrompt,
		Resume: strings.TrimSpace(f.resume), Continue: f.cont, Quiet: f.quiet, Yes: f.yes, Join: strings.TrimSpace(f.join),
		Passthrough: stripClaudePassthrough(passthrough),
	}
	switch len(args) {
	case 0:
	case 1:
		if o.Mesh != "" && o.Mesh != args[0] {
			return o, usageError("launch got two meshes: %q and --mesh %q", args[0], o.Mesh)
		}
		o.Mesh = args[0]
	default:
		return o, withHint(usageError("launch takes at most one mesh slug, got %q", strings.Join(args, " ")),
			"arguments for claude go after --: claudemesh launch team -- --model opus")
	}
	switch f.messageMode {
	case "", messageModePush, messageModeInbox, messageModeOff:
		o.MessageMode = f.messageMode
	default:
		return o, usageError("--message-mode must be push, inbox or off, not %q", f.messageMode)
	}
	if o.Resume != "" && o.Continue {
		return o, usageError("--resume and --continue do not go together: pick one session")
	}
	if o.Resume != "" && !safePathName(o.Resume) {
		return o, usageError("--resume needs a Claude Code session id (a UUID), not %q", o.Resume)
	}
	groups, err := parseGroupsFlag(f.groups)
	if err != nil {
		return o, err
	}
	o.Groups = groups
	return o, nil
}

// validGroupName: ^[A-Za-z0-9][A-Za-z0-9._/-]*$.
func validGroupName(name string) bool {
	return matchesClass(name, 1, -1, isAlnumByte, orBytes(isAlnumByte, "._/-"))
}

// parseGroupsFlag reads --groups: comma-separated name[:role], an optional
// leading @ on each name.
func parseGroupsFlag(s string) ([]GroupRef, error) {
	var out []GroupRef
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, role, _ := strings.Cut(strings.TrimPrefix(item, "@"), ":")
		name, role = strings.TrimSpace(name), strings.TrimSpace(role)
		if !validGroupName(name) {
			return nil, usageError("--groups: %q is not a group name (letters, digits, '.', '_', '-', '/')", name)
		}
		out = append(out, GroupRef{Name: name, Role: role})
	}
	return out, nil
}

// stripClaudePassthrough drops from the user's claude arguments the flags
// launch sets itself, so claude does not get them twice.
func stripClaudePassthrough(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == claudeSkipPerms:
		case a == claudeChannelsFlag:
			if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++
			}
		case strings.HasPrefix(a, claudeChannelsFlag+"="):
		default:
			out = append(out, a)
		}
	}
	return out
}

// claudeArgv is claude's command line, in the order claudemesh uses.
func claudeArgv(o launchOptions, sessionID string, fresh bool) []string {
	argv := []string{claudeChannelsFlag, claudeChannelsArg}
	if fresh {
		// claude refuses --session-id together with --resume / --continue.
		argv = append(argv, "--session-id", sessionID)
	}
	if o.Resume != "" {
		argv = append(argv, "--resume", o.Resume)
	}
	if o.Continue {
		argv = append(argv, "--continue")
	}
	if o.Yes {
		argv = append(argv, claudeSkipPerms)
	}
	if o.SystemPrompt != "" {
		argv = append(argv, "--system-prompt", o.SystemPrompt)
	}
	return append(argv, o.Passthrough...)
}

// claudeEnv is claude's environment: ours, with the session's variables set
// and a literal session token inherited from an outer session removed (it
// would beat the token file).
func claudeEnv(environ []string, set map[string]string) []string {
	out := make([]string, 0, len(environ)+len(set))
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if _, ours := set[k]; ours || k == "CLAUDEMESH_IPC_TOKEN" {
			continue
		}
		out = append(out, kv)
	}
	for _, k := range sortedKeys(set) {
		out = append(out, k+"="+set[k])
	}
	return out
}

// errClaudeMissing is exit 9 with how to get claude.
func errClaudeMissing(what string) error {
	return exitError(exitClaudeMissing, fmt.Errorf("`claude` not found: %s", what),
		"install Claude Code (npm install -g @anthropic-ai/claude-code) and make sure `claude` is on PATH",
		"or point CLAUDEMESH_CLAUDE_BIN at the claude executable")
}

// findClaude locates the claude executable: CLAUDEMESH_CLAUDE_BIN, else
// PATH, else where Claude Code's own installers put it.
func findClaude(getenv func(string) string, home string) (string, error) {
	if bin := getenv("CLAUDEMESH_CLAUDE_BIN"); bin != "" {
		if !isExecutableFile(bin) {
			return "", errClaudeMissing("CLAUDEMESH_CLAUDE_BIN=" + bin + " is not an executable file")
		}
		return bin, nil
	}
	if p, err := lookPathIn("claude", getenv("PATH")); err == nil {
		return p, nil
	}
	for _, p := range []string{filepath.Join(home, ".local", "bin", "claude"), filepath.Join(home, ".claude", "local", "claude")} {
		if isExecutableFile(p) {
			return p, nil
		}
	}
	return "", errClaudeMissing("not on PATH, nor in ~/.local/bin or ~/.claude/local")
}

// lookPathIn is exec.LookPath against a given PATH value.
func lookPathIn(name, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		if p := filepath.Join(dir, name); isExecutableFile(p) {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

func isExecutableFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// claudeProjectDirs are the directories under ~/.claude/projects where
// Claude Code may keep this cwd's transcripts: it names them after the cwd
// with every character outside [A-Za-z0-9] replaced by '-' (older versions
// replaced only '/').
func claudeProjectDirs(home, cwd string) []string {
	all := strings.Map(func(r rune) rune {
		if r < 0x80 && isAlnumByte(byte(r)) {
			return r
		}
		return '-'
	}, cwd)
	slash := strings.ReplaceAll(cwd, "/", "-")
	dirs := []string{filepath.Join(home, ".claude", "projects", all)}
	if slash != all {
		dirs = append(dirs, filepath.Join(home, ".claude", "projects", slash))
	}
	return dirs
}

// continueSessionID is the id of the session `claude --continue` picks up:
// the newest <uuid>.jsonl transcript of this cwd; "" when there is none.
func continueSessionID(home, cwd string) string {
	var best string
	var bestTime time.Time
	for _, dir := range claudeProjectDirs(home, cwd) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			id, ok := strings.CutSuffix(e.Name(), ".jsonl")
			if !ok || !isUUID(id) || !e.Type().IsRegular() {
				continue
			}
			info, err := e.Info()
			if err == nil && (best == "" || info.ModTime().After(bestTime)) {
				best, bestTime = id, info.ModTime()
			}
		}
	}
	return best
}

// cleanStaleLaunchDirs removes launch temp dirs under tmp older than maxAge
// whose launch is gone. It returns how many it removed.
func cleanStaleLaunchDirs(tmp string, now time.Time, maxAge time.Duration) int {
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return 0
	}
	removed := 0
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), launchDirPrefix) {
			continue
		}
		dir := filepath.Join(tmp, e.Name())
		info, err := os.Stat(dir)
		if err != nil || now.Sub(info.ModTime()) < maxAge {
			continue
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
			continue // another user's
		}
		if pid := readPidFile(filepath.Join(dir, launchPidFile)); pid > 0 && pidAlive(pid) {
			continue // its session is still running
		}
		if os.RemoveAll(dir) == nil {
			removed++
		}
	}
	return removed
}

// launchDir is a session's private temp dir: the one-mesh config that CLI
// verbs inside the session read, and the session token file.
type launchDir struct {
	Path      string
	TokenFile string
}

// makeLaunchDir creates the temp dir (0700) with config.json (0600), the
// token (0600) and launch.pid.
func makeLaunchDir(cfg *Config, token string) (launchDir, error) {
	dir, err := os.MkdirTemp("", launchDirPrefix)
	if err != nil {
		return launchDir{}, err
	}
	ld := launchDir{Path: dir, TokenFile: filepath.Join(dir, launchTokenFile)}
	if err := os.Chmod(dir, 0o700); err != nil {
		os.RemoveAll(dir)
		return launchDir{}, err
	}
	if err := saveConfig(filepath.Join(dir, "config.json"), cfg); err == nil {
		err = writeFileAtomic(ld.TokenFile, []byte(token+"\n"), 0o600)
		if err == nil {
			err = writeFileAtomic(filepath.Join(dir, launchPidFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
		}
		if err != nil {
			os.RemoveAll(dir)
			return launchDir{}, err
		}
	} else {
		os.RemoveAll(dir)
		return launchDir{}, err
	}
	return ld, nil
}

// launchSessionID picks the session id: --resume's, the transcript
// --continue picks up, else a new one. fresh says claude gets it as
// --session-id.
func launchSessionID(o launchOptions, home, cwd string) (id string, fresh bool) {
	switch {
	case o.Resume != "":
		return o.Resume, false
	case o.Continue:
		if id := continueSessionID(home, cwd); id != "" {
			return id, false
		}
		// Nothing to continue in this directory: claude starts a new
		// conversation whose id we cannot know; the mesh identity is new too.
		return newUUID(), false
	}
	return newUUID(), true
}

// defaultDisplayName: CLAUDEMESH_DISPLAY_NAME, the config's displayName,
// $USER, the hostname.
func defaultDisplayName(getenv func(string) string, cfg *Config) string {
	for _, n := range []string{getenv("CLAUDEMESH_DISPLAY_NAME"), cfg.DisplayName, getenv("USER"), getenv("USERNAME")} {
		if n = strings.TrimSpace(n); n != "" {
			return n
		}
	}
	return hostnameOr("claude")
}

// chooseLaunchMesh picks the mesh: the one asked for, the only one, or —
// with several — the user's choice at a terminal, else the first with a
// notice.
func chooseLaunchMesh(c *cli, cfg *Config, o launchOptions) (Mesh, error) {
	if o.Mesh != "" || len(cfg.Meshes) <= 1 {
		m, err := pickMesh(cfg, o.Mesh)
		if err != nil {
			if len(cfg.Meshes) == 0 {
				return Mesh{}, exitError(exitNotFound, errors.New("no mesh joined yet"),
					"start one on this machine with 'claudemesh init', or join one: 'claudemesh launch --join <invite>'")
			}
			return Mesh{}, err
		}
		return *m, nil
	}
	if c.env.StdinTTY && c.env.StdoutTTY && !o.Quiet && !o.Yes {
		c.printf("Several meshes are joined:\n")
		for i, m := range cfg.Meshes {
			c.printf("  %d) %s  %s\n", i+1, m.Slug, m.BrokerURL)
		}
		c.printf("Choice [1]: ")
		line, err := readLine(c.env.Stdin)
		if err != nil && !errors.Is(err, io.EOF) {
			return Mesh{}, err
		}
		line = strings.TrimSpace(line)
		if line == "" {
			return cfg.Meshes[0], nil
		}
		if n, err := strconv.Atoi(line); err == nil && n >= 1 && n <= len(cfg.Meshes) {
			return cfg.Meshes[n-1], nil
		}
		if m, ok := cfg.MeshBySlug(line); ok {
			return *m, nil
		}
		return Mesh{}, usageError("%q is not one of the meshes listed", line)
	}
	m := cfg.Meshes[0]
	if !o.Quiet {
		c.infof("several meshes are joined (%s); launching into %s — pick one with 'claudemesh launch <slug>'", strings.Join(cfg.Slugs(), ", "), m.Slug)
	}
	return m, nil
}

// readLine reads up to a newline one byte at a time, so that nothing meant
// for claude is read ahead from the terminal.
func readLine(r io.Reader) (string, error) {
	var b strings.Builder
	buf := make([]byte, 1)
	for b.Len() < 256 {
		n, err := r.Read(buf)
		if n == 1 {
			if buf[0] == '\n' {
				return b.String(), nil
			}
			b.WriteByte(buf[0])
		}
		if err != nil {
			return b.String(), err
		}
	}
	return b.String(), nil
}

// runLaunch is the launch: its options settled, the session registered
// with the daemon, then claude run as that session until it exits.
func runLaunch(ctx context.Context, c *cli, o launchOptions) error {
	claudeBin, err := findClaude(c.env.Getenv, homeDir(c.env.Getenv))
	if err != nil {
		return err
	}
	if c.daemonMode() == modeNoDaemon {
		return withHint(usageError("launch needs the daemon: it holds the session's broker link and feeds Claude Code"),
			"drop --no-daemon (or unset CLAUDEMESH_NO_DAEMON)")
	}
	o, mesh, err := resolveLaunch(ctx, c, o)
	if err != nil {
		return err
	}
	sess, err := startLaunchSession(ctx, c, o, mesh)
	if err != nil {
		return err
	}
	defer sess.end(ctx, c)
	if !o.Quiet {
		printLaunchBanner(c, o, mesh)
		if sess.mcpConfig != "" {
			c.printf("%s Claude Code has no claudemesh MCP server of its own: this session brings it along.\n"+
				"  'claudemesh install' registers it, so that plain claude gets the mesh too.\n", c.paint(colorYellow, "⚠"))
		}
		c.printf("%s\n\n", launchStatusLine(ctx, c, sess.client, mesh.Slug, sess.key.PublicHex()))
	}
	return sess.runClaude(c, claudeBin, o)
}

// resolveLaunch settles the launch's options: it joins --join's mesh, picks
// the mesh, and fills what the flags left open from the config.
func resolveLaunch(ctx context.Context, c *cli, o launchOptions) (launchOptions, Mesh, error) {
	if o.Join != "" {
		j, err := joinInvite(ctx, c, o.Name, "", o.Join, brokerReach{})
		if err != nil {
			return o, Mesh{}, err
		}
		if o.Mesh != "" && o.Mesh != j.Mesh.Slug {
			return o, Mesh{}, usageError("--join is an invite to %s, but the launch asks for mesh %s", j.Mesh.Slug, o.Mesh)
		}
		o.Mesh = j.Mesh.Slug
		if !o.Quiet {
			if j.Already {
				c.infof("already in %s on this machine", j.Mesh.Slug)
			} else {
				c.infof("joined %s as %s (%s)", j.Mesh.Slug, j.Display, j.Role)
			}
		}
	}
	cfg, err := c.loadUserConfig()
	if err != nil {
		return o, Mesh{}, err
	}
	mesh, err := chooseLaunchMesh(c, cfg, o)
	if err != nil {
		return o, Mesh{}, err
	}
	o.Name = cmp.Or(o.Name, defaultDisplayName(c.env.Getenv, cfg))
	o.Role = cmp.Or(o.Role, cfg.Role)
	if o.Groups == nil {
		o.Groups = cfg.Groups
	}
	o.MessageMode = cmp.Or(o.MessageMode, cfg.MessageMode, messageModePush)
	return o, mesh, nil
}

// launchSession is a launched session as the daemon knows it: its id and
// keypair, the temp dir claude's claudemesh reads, and its registration.
type launchSession struct {
	paths  Paths
	client *DaemonClient
	token  string
	id     string
	fresh  bool // a new session id, not a --resume or --continue
	key    Keypair
	dir    launchDir
	// mcpConfig is the MCP config file claude is given when its own
	// config has no claudemesh server ("" when it has one).
	mcpConfig string
}

// startLaunchSession makes sure the daemon runs, loads or creates the
// session's keypair, writes the session's temp dir and registers the
// session (with its presence) with the daemon.
func startLaunchSession(ctx context.Context, c *cli, o launchOptions, mesh Mesh) (*launchSession, error) {
	member, err := mesh.Keypair()
	if err != nil {
		return nil, exitError(exitFailure, err)
	}
	cleanStaleLaunchDirs(os.TempDir(), time.Now(), launchStaleAge)

	paths := c.Paths()
	dc := newDaemonConnector(paths, c.env.Getenv)
	if !o.Quiet && c.env.StderrTTY && dc.probe(ctx) != probeUp {
		// Progress for a person waiting at a terminal; a running daemon
		// needs no word, and scripts get only the outcome.
		c.infof("starting the daemon…")
	}
	r := dc.ensure(ctx, launchDaemonBudget)
	if !r.usable() {
		return nil, exitError(exitFailure, fmt.Errorf("the daemon is not available (%s: %s); the session cannot join the mesh without it", r.State, r.Reason),
			hintStartDaemon, "its log: "+paths.LogFile())
	}
	if r.State == daemonStarted && !o.Quiet {
		c.infof("daemon started (took %dms)", r.Duration.Milliseconds())
	}

	cwd, _ := os.Getwd()
	s := &launchSession{token: randomHex(32)}
	s.id, s.fresh = launchSessionID(o, homeDir(c.env.Getenv), cwd)
	if aside, err := moveAsideBadSessionKey(paths.SessionKeyFile(mesh.Slug, s.id)); err != nil {
		return nil, exitError(exitIO, err)
	} else if aside != "" {
		c.warnf("this session's key file was damaged; it is kept as %s and the session gets a new key (peers see a new session key)", aside)
	}
	key, presence, err := sessionPresence(paths, mesh, member, s.id)
	if err != nil {
		return nil, exitError(exitIO, fmt.Errorf("session key: %w", err))
	}
	s.key = key
	s.dir, err = makeLaunchDir(&Config{Version: 1, Meshes: []Mesh{mesh}, DisplayName: o.Name, Role: o.Role, Groups: o.Groups, MessageMode: o.MessageMode}, s.token)
	if err != nil {
		return nil, exitError(exitIO, fmt.Errorf("session temp dir: %w", err))
	}
	if !claudeKnowsClaudemesh(homeDir(c.env.Getenv)) {
		// Without it claude would run with no channel and say nothing:
		// this session brings the server itself.
		bin, err := os.Executable()
		if err == nil {
			s.mcpConfig = filepath.Join(s.dir.Path, "mcp.json")
			err = os.WriteFile(s.mcpConfig, claudeMCPConfig(bin), 0o600)
		}
		if err != nil {
			os.RemoveAll(s.dir.Path)
			return nil, exitError(exitIO, fmt.Errorf("the session's MCP config: %w", err), "or register claudemesh with Claude Code: claudemesh install")
		}
	}
	s.client = newDaemonClient(paths.SocketFile(), s.token)
	if v, err := s.client.Version(ctx); err == nil && v.DaemonVersion != version {
		c.warnf("the daemon runs claudemesh %s, this is %s; restart it to match: claudemesh daemon down && claudemesh daemon up", v.DaemonVersion, version)
	}
	reg := RegisterRequest{
		Token: s.token, SessionID: s.id, Mesh: mesh.Slug, DisplayName: o.Name, Pid: os.Getpid(), Cwd: cwd,
		Role: o.Role, Groups: groupSpecs(o.Groups), Presence: presence,
	}
	regCtx, cancel := context.WithTimeout(ctx, launchIPCTimeout)
	err = s.client.RegisterSession(regCtx, reg)
	cancel()
	if err != nil {
		s.client.http.CloseIdleConnections()
		os.RemoveAll(s.dir.Path)
		return nil, withHint(ipcFailure(fmt.Errorf("registering the session with the daemon: %w", err)), "its log: "+paths.LogFile())
	}
	return s, nil
}

// end deregisters the session and removes its temp dir. ctx may be
// cancelled by now (a signal): deregistering must still happen.
func (s *launchSession) end(ctx context.Context, c *cli) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), launchIPCTimeout)
	defer cancel()
	if err := s.client.DeregisterSession(dctx, s.token); err != nil && ipcStatus(err) != 404 {
		c.warnf("deregistering the session: %v (the daemon drops it once this process is gone)", err)
	}
	s.client.http.CloseIdleConnections()
	os.RemoveAll(s.dir.Path)
}

// runClaude runs claude as this session and turns how it ended into the
// launch's own outcome: its exit code, or its signal re-raised.
func (s *launchSession) runClaude(c *cli, claudeBin string, o launchOptions) error {
	env := claudeEnv(c.env.Environ(), map[string]string{
		"CLAUDEMESH_CONFIG_DIR":     s.dir.Path,
		"CLAUDEMESH_IPC_TOKEN_FILE": s.dir.TokenFile,
		"CLAUDEMESH_DISPLAY_NAME":   o.Name,
		"CLAUDEMESH_SESSION_ID":     s.id,
		"CLAUDEMESH_ROLE":           o.Role,
	})
	argv := claudeArgv(o, s.id, s.fresh)
	if s.mcpConfig != "" {
		// First, and followed by a flag: the option takes several values.
		argv = append([]string{claudeMCPConfigFlag, s.mcpConfig}, argv...)
	}
	code, sig, err := runClaude(c, claudeBin, argv, env)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return errClaudeMissing(claudeBin + " could not be started")
		}
		return exitError(exitFailure, fmt.Errorf("starting claude: %w", err))
	}
	if sig != 0 {
		return signalExit(sig) // after the deferred cleanup, report re-raises it
	}
	if code != 0 {
		return silentExit(code)
	}
	return nil
}

// runClaude runs claude in the foreground of this terminal and waits for
// it. It returns its exit code, or the signal that killed it.
func runClaude(c *cli, bin string, argv, env []string) (code int, sig syscall.Signal, err error) {
	cmd := exec.Command(bin, argv...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.env.Stdin, c.env.Stdout, c.env.Stderr
	// Registered before the start, so that no signal falls in between.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	done := make(chan struct{})
	forwarded := make(chan struct{})
	go func() {
		defer close(forwarded)
		for {
			select {
			case s := <-sigs:
				// SIGINT and SIGQUIT come from the terminal, which sent them
				// to claude too: they are claude's to handle.
				if s == syscall.SIGTERM || s == syscall.SIGHUP {
					_ = cmd.Process.Signal(s)
				}
			case <-done:
				return
			}
		}
	}()
	werr := cmd.Wait()
	close(done)
	<-forwarded
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		if ws.Signaled() {
			return 0, ws.Signal(), nil
		}
		return ws.ExitStatus(), 0, nil
	}
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		return ee.ExitCode(), 0, nil
	}
	return 0, 0, werr
}

// printLaunchBanner says who this session is and how messages arrive.
func printLaunchBanner(c *cli, o launchOptions, m Mesh) {
	who := terminalLine(o.Name)
	if o.Role != "" {
		who += " (" + terminalLine(o.Role) + ")"
	}
	line := "claudemesh launch — as " + c.paint(colorBold, who) + " on " + c.paint(colorBold, m.Slug)
	if len(o.Groups) > 0 {
		line += " [" + terminalLine(strings.Join(groupSpecs(o.Groups), ", ")) + "]"
	}
	line += " [" + o.MessageMode + "]"
	rule := c.paint(colorDim, strings.Repeat("─", 60))
	c.printf("%s\n%s\n", line, rule)
	switch o.MessageMode {
	case messageModeInbox:
		c.printf("Peer messages wait in the inbox: read them with `claudemesh inbox`.\n")
	case messageModeOff:
		c.printf("Peer messages are not delivered to this session; `claudemesh inbox` still has them.\n")
	default:
		c.printf("Peer messages arrive as <channel> reminders mid-turn when this Claude Code loads the channel: confirm the\n" +
			"development channel when it asks (it asks at each launch); channels also need an account and provider that\n" +
			"have them (not Bedrock, Vertex or Foundry), and print mode (-p) has none.\n")
		if claudeHooksInstalled(homeDir(c.env.Getenv)) {
			c.printf("Without a live channel, claudemesh's hooks bring them with your next prompt.\n")
		} else {
			c.printf("Without a live channel they wait for `claudemesh inbox`: 'claudemesh install' adds the hooks that bring them with each prompt.\n")
		}
	}
	c.printf("Peers send text only — they cannot call tools or read files.\n")
	c.printf("%s\n\n", rule)
}

// launchStatusLine is "● broker connected · N peers online · M unread", from
// what the daemon can tell; a part it cannot tell is left out. The inbox is
// read with mark_seen=false: the welcome in the session shows those rows
// and marks them.
func launchStatusLine(ctx context.Context, c *cli, cl *DaemonClient, mesh, selfPubkey string) string {
	ctx, cancel := context.WithTimeout(ctx, launchIPCTimeout)
	defer cancel()
	state := "unknown"
	if h, err := cl.Health(ctx); err == nil {
		if st, ok := h.Brokers[mesh]; ok {
			state = st
		}
	}
	dot, text := c.paint(colorYellow, "●"), "broker "+state
	if state == string(LinkOpen) {
		dot, text = c.paint(colorGreen, "●"), "broker connected"
	}
	parts := []string{text}
	d := daemonMCP{cl: cl}
	if peers, err := d.Peers(ctx, mesh); err == nil {
		n := len(welcomePeers(peers, &mcpSelf{SessionPubkey: selfPubkey, Mesh: mesh}))
		parts = append(parts, plural(n, "peer", "peers")+" online")
	}
	if items, err := d.Inbox(ctx, InboxQuery{Mesh: mesh, UnreadOnly: true, Limit: ptr(1000), MarkSeen: ptr(false)}); err == nil {
		parts = append(parts, strconv.Itoa(len(items))+" unread")
	}
	return dot + " " + strings.Join(parts, " · ")
}
