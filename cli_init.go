// `claudemesh init`: the first run on a machine It gives the
// machine a broker embedded in its daemon, a mesh `local` on it with this
// machine's member identity, a running daemon linked to it, and prints the
// commands that come next.
//
// Policy:
//   - Idempotent: what exists is kept, and a second run changes nothing and
//     says so. A machine that has already joined meshes gets no `local`:
//     init reports what is there.
//   - It works on the machine config (~/.claudemesh/config.json), the one
//     the daemon serves, whatever CLAUDEMESH_CONFIG_DIR says.
//   - Each step can be resumed: a run that stopped half-way (say, on a
//     taken port) is finished by the next.
//   - The daemon is started if it is not running, reloaded if it is (it
//     then serves the new broker block), and restarted if it is too old to
//     serve one; a service-managed daemon is never restarted behind the
//     service manager's back — init says how to.
//   - `--listen` with port 0 picks a free port once and writes it down:
//     a mesh needs an address that stays put. The broker may move (a new
//     --listen) only while no mesh is joined.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// initMesh is the slug of the mesh init creates.
const initMesh = "local"

// initLinkWait bounds the wait for the daemon's link to the new mesh.
const initLinkWait = 5 * time.Second

type initFlags struct {
	name, listen, publicURL string
	listenSet               bool // --listen was given
}

func setupInit(fs *flagSet) runFunc {
	var f initFlags
	fs.StringVar(&f.name, "name", "", "your display name in the mesh (default: CLAUDEMESH_DISPLAY_NAME, $USER, the hostname)")
	fs.StringVar(&f.listen, "listen", defaultBrokerListen, "address of the embedded broker (0.0.0.0:PORT lets other machines in)")
	fs.StringVar(&f.publicURL, "public-url", "", "the broker URL other machines use, ws://HOST:PORT/ws (with a --listen on every interface)")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("init takes no arguments")
		}
		fs.Visit(func(fl *flag.Flag) { f.listenSet = f.listenSet || fl.Name == "listen" })
		if err := checkListenAddr(f.listen); err != nil {
			return usageError("--listen: %v", err)
		}
		if f.publicURL != "" {
			if _, err := brokerHTTPBase(f.publicURL); err != nil {
				return usageError("--public-url: %v", err)
			}
		}
		return runInit(ctx, c, f)
	}
}

// initReport is what init found and did; `--json` prints it.
type initReport struct {
	Changed bool                  `json:"changed"`
	Actions []string              `json:"actions"`
	Config  string                `json:"config"`
	Broker  *EmbeddedBrokerHealth `json:"broker,omitempty"`
	Meshes  []initMeshRow         `json:"meshes"`
	Daemon  initDaemonRow         `json:"daemon"`
	Next    []string              `json:"next"`
}

type initMeshRow struct {
	Slug      string `json:"slug"`
	BrokerURL string `json:"broker_url"`
	Link      string `json:"link,omitempty"`
}

type initDaemonRow struct {
	Running bool   `json:"running"`
	Pid     int    `json:"pid,omitempty"`
	Version string `json:"version,omitempty"`
	Log     string `json:"log"`
}

func (r *initReport) did(format string, a ...any) {
	r.Changed = true
	r.Actions = append(r.Actions, fmt.Sprintf(format, a...))
}

func runInit(ctx context.Context, c *cli, f initFlags) error {
	paths := c.Paths()
	cfgPath := paths.MachineConfigFile()
	if paths.ConfigDir != paths.MachineConfigDir {
		c.warnf("init sets up this machine's config, %s; CLAUDEMESH_CONFIG_DIR (%s) is not used", cfgPath, paths.ConfigDir)
	}
	rep := &initReport{Actions: []string{}, Config: cfgPath, Daemon: initDaemonRow{Log: paths.LogFile()}}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		return err
	}
	fresh := len(cfg.Meshes) == 0
	var write *BrokerConf // a broker block to write, and why
	var why string
	switch {
	case fresh && cfg.Broker == nil:
		conf, err := initBrokerConf(f.listen, filepath.Join(paths.MachineConfigDir, "broker"))
		if err != nil {
			return err
		}
		write, why = &conf, fmt.Sprintf("config: embedded broker on %s (data %s)", conf.Listen, conf.Data)
	case fresh && f.listenSet && f.listen != cfg.Broker.Listen:
		// No mesh lives on the broker yet, so it may move.
		conf, err := initBrokerConf(f.listen, cfg.Broker.Data)
		if err != nil {
			return err
		}
		write, why = &conf, fmt.Sprintf("config: embedded broker moved from %s to %s", cfg.Broker.Listen, conf.Listen)
	case !fresh && f.listenSet && (cfg.Broker == nil || f.listen != cfg.Broker.Listen):
		c.warnf("--listen is ignored: this machine has joined meshes, whose broker address must stay put")
	}
	if !fresh && f.name != "" {
		c.warnf("--name is ignored: init names you only in the mesh it creates, and this machine has its meshes already; "+
			"a session takes its name from 'claudemesh launch --name %s'", f.name)
	}
	if write != nil {
		if err := updateConfig(cfgPath, func(cfg *Config) error {
			cfg.Broker = write
			return nil
		}); err != nil {
			return err
		}
		rep.did("%s", why)
		cfg.Broker = write
	}

	cl, h, err := initDaemon(ctx, c, rep, cfg.Broker)
	if err != nil {
		return err
	}
	if cfg.Broker != nil && (h.EmbeddedBroker == nil || h.EmbeddedBroker.State != embeddedServing) {
		return embeddedBrokerFailure(h.EmbeddedBroker, cfgPath, fresh)
	}
	if fresh {
		brokerURL, postURL := embeddedBrokerURLs(cfg.Broker.Listen)
		if f.publicURL != "" {
			brokerURL = f.publicURL
		}
		display := displayNameFor(c, f.name, defaultDisplayName(c.env.Getenv, cfg))
		m, err := createInitMesh(ctx, meshCreation{ConfigFile: cfgPath, BrokerURL: brokerURL, PostURL: postURL, Display: display})
		if err != nil {
			return err
		}
		rep.did("mesh %s created on %s; you are %s (owner)", m.Slug, brokerURL, display)
		if _, err := cl.Reload(ctx); err != nil {
			return ipcFailure(err)
		}
		if cfg, err = loadConfig(cfgPath); err != nil {
			return err
		}
	}
	h = waitLinksOpen(ctx, cl, cfg, initLinkWait)
	rep.Broker = h.EmbeddedBroker
	for _, m := range cfg.Meshes {
		rep.Meshes = append(rep.Meshes, initMeshRow{Slug: m.Slug, BrokerURL: m.BrokerURL, Link: h.Brokers[m.Slug]})
	}
	rep.Next = initNextSteps(cfg)
	if c.jsonMode() {
		return c.printJSON(rep)
	}
	ours := cfg.Broker != nil && slices.ContainsFunc(cfg.Meshes, func(m Mesh) bool {
		return m.Slug == initMesh || strings.HasPrefix(m.Slug, initMesh+"-")
	})
	printInitReport(c, rep, ours)
	return nil
}

// createInitMesh creates mesh local, or local-2, local-3 … when the
// broker still holds a local this machine has left.
func createInitMesh(ctx context.Context, mc meshCreation) (Mesh, error) {
	for i := 1; ; i++ {
		mc.Slug = initMesh
		if i > 1 {
			mc.Slug = initMesh + "-" + strconv.Itoa(i)
		}
		m, err := createMesh(ctx, mc)
		var be *brokerError
		if errors.As(err, &be) && be.Code == "mesh_exists" && i < 9 {
			continue
		}
		return m, err
	}
}

// initBrokerConf is the broker block for --listen; port 0 becomes a free
// port, chosen now and kept.
func initBrokerConf(listen, data string) (BrokerConf, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return BrokerConf{}, usageError("--listen %q: want HOST:PORT", listen)
	}
	if port == "0" {
		l, err := net.Listen("tcp", listen)
		if err != nil {
			return BrokerConf{}, exitError(exitFailure, fmt.Errorf("finding a free port on %s: %w", host, err))
		}
		listen = l.Addr().String()
		l.Close()
	}
	return BrokerConf{Listen: listen, Data: data}, nil
}

// embeddedBrokerURLs are the URL a mesh on the embedded broker is saved
// with, and the one this machine creates meshes through: a broker on every
// interface (0.0.0.0, ::) is reached on loopback, where creating a mesh
// needs no token.
func embeddedBrokerURLs(listen string) (brokerURL, postURL string) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "ws://" + listen + "/ws", ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		u := "ws://" + net.JoinHostPort("127.0.0.1", port) + "/ws"
		return u, u
	}
	return "ws://" + listen + "/ws", ""
}

// initDaemon gets a daemon that serves the config's broker block (want,
// nil for none): started, reloaded, or (when it is too old to know broker
// blocks) restarted.
func initDaemon(ctx context.Context, c *cli, rep *initReport, want *BrokerConf) (*DaemonClient, HealthReply, error) {
	wantBroker := want != nil
	paths := c.Paths()
	dc := newDaemonConnector(paths, c.env.Getenv)
	wasUp := dc.probe(ctx) == probeUp
	r := dc.ensure(ctx, defaultSpawnBudget)
	if !r.usable() {
		return nil, HealthReply{}, exitError(exitFailure, fmt.Errorf("the daemon is not available (%s: %s)", r.State, r.Reason),
			"start it with 'claudemesh daemon up', then run init again", "its log: "+paths.LogFile())
	}
	cl := newDaemonClient(paths.SocketFile(), "")
	if r.State == daemonStarted {
		rep.did("daemon started")
	}
	h, err := cl.Health(ctx)
	if err != nil {
		return nil, HealthReply{}, ipcFailure(err)
	}
	if wasUp && wantBroker && (h.EmbeddedBroker == nil || h.EmbeddedBroker.State != embeddedServing || h.EmbeddedBroker.Listen != want.Listen) {
		// A daemon that ran before the block was written (or moved): a
		// reload makes it serve the block (and retries one that failed).
		if _, err := cl.Reload(ctx); err != nil {
			return nil, HealthReply{}, ipcFailure(err)
		}
		if h, err = cl.Health(ctx); err != nil {
			return nil, HealthReply{}, ipcFailure(err)
		}
		if h.EmbeddedBroker != nil && h.EmbeddedBroker.State == embeddedServing {
			rep.did("daemon reloaded: it serves the embedded broker")
		}
	}
	if wantBroker && h.EmbeddedBroker == nil {
		// It does not know broker blocks: an older claudemesh.
		if dc.serviceManaged() {
			return nil, HealthReply{}, exitError(exitFailure, fmt.Errorf("the running daemon (claudemesh %s) does not serve embedded brokers", h.Version),
				"restart its service to run this version: "+serviceRestartCommand(dc.goos), "then run 'claudemesh init' again")
		}
		old := h.Version
		if _, err := stopRunningDaemon(ctx, c); err != nil {
			return nil, HealthReply{}, err
		}
		if r := dc.ensure(ctx, defaultSpawnBudget); !r.usable() {
			return nil, HealthReply{}, exitError(exitFailure, fmt.Errorf("restarting the daemon: %s: %s", r.State, r.Reason), "its log: "+paths.LogFile())
		}
		if h, err = cl.Health(ctx); err != nil {
			return nil, HealthReply{}, ipcFailure(err)
		}
		rep.did("daemon restarted (claudemesh %s → %s)", old, h.Version)
	}
	rep.Daemon.Running, rep.Daemon.Pid, rep.Daemon.Version = true, h.Pid, h.Version
	return cl, h, nil
}

// serviceRestartCommand restarts the daemon's service.
func serviceRestartCommand(goos string) string {
	if goos == "darwin" {
		return "launchctl kickstart -k gui/$(id -u)/com.claudemesh.daemon"
	}
	return "systemctl --user restart claudemesh-daemon.service"
}

// embeddedBrokerFailure explains an embedded broker the daemon could not
// serve. Before any mesh lives on it (fresh), init itself moves it.
func embeddedBrokerFailure(eb *EmbeddedBrokerHealth, cfgPath string, fresh bool) error {
	if eb == nil {
		return exitError(exitFailure, errors.New("the daemon does not serve the embedded broker"), "see 'claudemesh doctor'")
	}
	move := "give it another address: claudemesh init --listen 127.0.0.1:<port>"
	if !fresh {
		move = "the meshes on it keep its address, so fix the broker block in " + cfgPath + ", then: claudemesh daemon down && claudemesh daemon up"
	}
	hint := move
	if strings.Contains(eb.Error, "in use") {
		hint = "another program (another broker?) listens on " + eb.Listen + "; stop it, or " + move
	}
	return exitError(exitFailure, fmt.Errorf("the embedded broker could not start: %s", eb.Error), hint)
}

// waitLinksOpen waits (bounded) until every mesh of cfg has an open link
// and returns the last health read.
func waitLinksOpen(ctx context.Context, cl *DaemonClient, cfg *Config, wait time.Duration) HealthReply {
	h, _ := waitHealth(ctx, cl, wait, 20*time.Millisecond, func(h HealthReply) bool {
		for _, m := range cfg.Meshes {
			if h.Brokers[m.Slug] != string(LinkOpen) {
				return false
			}
		}
		return true
	})
	return h
}

// initNextSteps are the commands to run next.
func initNextSteps(cfg *Config) []string {
	mesh := ""
	if len(cfg.Meshes) > 1 {
		mesh = " " + cfg.Meshes[0].Slug
	}
	return []string{
		"claudemesh install",
		"claudemesh launch" + mesh + " --name alice",
		"claudemesh launch" + mesh + " --name bob",
		"claudemesh invite",
	}
}

// printInitReport prints what init did; ours says whether the machine's
// meshes are init's own (local on the embedded broker).
func printInitReport(c *cli, rep *initReport, ours bool) {
	switch {
	case rep.Changed:
		c.printf("%s claudemesh is set up on this machine\n", c.paint(colorGreen, "✓"))
		for _, a := range rep.Actions {
			c.printf("  · %s\n", a)
		}
	case ours:
		c.printf("claudemesh is set up already; nothing changed\n")
	default:
		c.printf("this machine has joined %s already; init changed nothing and created no '%s' mesh\n",
			plural(len(rep.Meshes), "mesh", "meshes"), initMesh)
	}
	c.printf("  config   %s\n", rep.Config)
	if eb := rep.Broker; eb != nil {
		if eb.State == embeddedServing {
			c.printf("  broker   %s (in the daemon; data %s)\n", eb.URL, eb.Data)
		} else {
			c.printf("  broker   %s on %s: %s\n", c.paint(colorRed, "not serving"), eb.Listen, eb.Error)
		}
	}
	for _, m := range rep.Meshes {
		c.printf("  mesh     %s on %s — link %s\n", m.Slug, m.BrokerURL, cmp.Or(m.Link, "not attached"))
	}
	c.printf("  daemon   running (pid %d, claudemesh %s), log %s\n", rep.Daemon.Pid, rep.Daemon.Version, rep.Daemon.Log)
	c.printf("\nnext:\n")
	notes := []string{
		"register claudemesh with Claude Code (MCP server, skill, daemon service)",
		"in one terminal: a Claude Code session in the mesh",
		"in another: a second session; the two can talk",
		"bring another machine: it runs 'claudemesh join <link>'",
	}
	width := 0
	for _, n := range rep.Next {
		width = max(width, len(n))
	}
	for i, n := range rep.Next {
		c.printf("  %-*s   # %s\n", width, n, notes[i])
	}
	if eb := rep.Broker; eb != nil && isLoopbackListen(eb.Listen) {
		c.printf("hint: the broker answers this machine only; to let others in, see 'claudemesh help init'\n")
	}
}

// checkListenAddr accepts HOST:PORT with a port number (0 = any free one).
func checkListenAddr(listen string) error {
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT", listen)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has no port number", listen)
	}
	return nil
}

func isLoopbackListen(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
