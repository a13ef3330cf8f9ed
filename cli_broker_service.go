// `claudemesh broker install-service` and `uninstall-service`: a broker as
// a systemd unit, like the daemon's, running `broker serve` with the flags
// given after `--`.
//
// Policy:
//   - As root the unit is a system unit (/etc/systemd/system), what a
//     server wants; otherwise, or with --user, a user unit.
//   - The serve flags are checked by broker serve's own parser before
//     anything is written.
//   - The store URL (it may hold a password) never goes into the unit: when
//     --store or $CLAUDEMESH_BROKER_STORE names one, it is written to an
//     environment file readable by its owner only, which the unit loads.
//   - Without systemctl the files are written and the commands printed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// brokerUnitName is the broker's systemd unit.
const brokerUnitName = "claudemesh-broker.service"

// brokerServiceFlags are install-service's own flags.
type brokerServiceFlags struct {
	user    bool
	allowCI bool
}

func setupBrokerInstallService(fs *flagSet) runFunc {
	var f brokerServiceFlags
	fs.BoolVar(&f.user, "user", false, "a user unit even as root (default: a system unit as root, a user unit otherwise)")
	fs.BoolVar(&f.allowCI, "allow-ci-persistent", false, "install even though a CI environment variable is set")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > len(c.passthrough) {
			return usageError("'broker install-service' takes broker serve's flags after --, not %q", args[0])
		}
		rep, err := installBrokerService(ctx, c, execServiceRunner(), f, c.passthrough)
		if err != nil {
			return err
		}
		return printBrokerService(c, rep)
	}
}

func setupBrokerUninstallService(fs *flagSet) runFunc {
	var f brokerServiceFlags
	fs.BoolVar(&f.user, "user", false, "the user unit even as root")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("'broker uninstall-service' takes no arguments")
		}
		rep, err := uninstallBrokerService(ctx, c, execServiceRunner(), f)
		if err != nil {
			return err
		}
		return printBrokerService(c, rep)
	}
}

// brokerServicePlace is where the unit and its environment file go.
type brokerServicePlace struct {
	system   bool
	unitPath string
	envPath  string
}

func brokerServicePlaceFor(c *cli, user bool) (brokerServicePlace, error) {
	if os.Geteuid() == 0 && !user {
		return brokerServicePlace{system: true, unitPath: filepath.Join("/etc/systemd/system", brokerUnitName),
			envPath: "/etc/claudemesh/broker.env"}, nil
	}
	home := homeDir(c.env.Getenv)
	if home == "" {
		return brokerServicePlace{}, errors.New("no home directory for a user unit")
	}
	base := filepath.Join(home, ".config")
	if x := c.env.Getenv("XDG_CONFIG_HOME"); filepath.IsAbs(x) {
		base = x
	}
	return brokerServicePlace{unitPath: filepath.Join(base, "systemd", "user", brokerUnitName),
		envPath: filepath.Join(c.Paths().ConfigDir, "broker.env")}, nil
}

// systemctl is the command line for the place's manager.
func (p brokerServicePlace) systemctl(args ...string) serviceCommand {
	if !p.system {
		args = append([]string{"--user"}, args...)
	}
	return serviceCommand{Argv: append([]string{"systemctl"}, args...)}
}

// brokerServeWords are the serve flags to run with: checked by broker
// serve's parser, with the store taken out (it goes to the environment
// file).
func brokerServeWords(args []string) (words []string, store string, err error) {
	fs := flag.NewFlagSet("broker serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	setupBrokerServe(fs)
	if err := fs.Parse(args); err != nil {
		return nil, "", usageError("broker serve flags after --: %v", err)
	}
	if fs.NArg() > 0 {
		return nil, "", usageError("broker serve takes no arguments, not %q", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "store" {
			store = f.Value.String()
			return
		}
		words = append(words, "--"+f.Name+"="+f.Value.String())
	})
	return words, store, nil
}

// brokerServiceReport is what install-service or uninstall-service did.
type brokerServiceReport struct {
	Unit     string   `json:"unit"`
	EnvFile  string   `json:"envFile,omitempty"`
	File     string   `json:"file"` // written | removed | absent
	Started  bool     `json:"started"`
	Stopped  bool     `json:"stopped"`
	Commands []string `json:"commands"` // the service manager's commands, run or to run
	Note     string   `json:"note,omitempty"`
}

func installBrokerService(ctx context.Context, c *cli, runner serviceRunner, f brokerServiceFlags, args []string) (brokerServiceReport, error) {
	if err := checkServiceAllowed(c.env.Getenv, f.allowCI); err != nil {
		return brokerServiceReport{}, err
	}
	words, store, err := brokerServeWords(args)
	if err != nil {
		return brokerServiceReport{}, err
	}
	if store == "" {
		store = c.env.Getenv(envBrokerStore)
	}
	if store != "" && !isPostgresURL(store) {
		return brokerServiceReport{}, usageError("--store (or $%s) wants a postgres:// URL, not %q", envBrokerStore, redactURL(store))
	}
	bin, err := serviceBinary()
	if err != nil {
		return brokerServiceReport{}, err
	}
	place, err := brokerServicePlaceFor(c, f.user)
	if err != nil {
		return brokerServiceReport{}, err
	}
	rep := brokerServiceReport{Unit: place.unitPath, File: "written"}
	if store != "" {
		if err := os.MkdirAll(filepath.Dir(place.envPath), 0o700); err != nil {
			return rep, exitError(exitIO, err)
		}
		if _, err := installFile(place.envPath, []byte(envBrokerStore+"="+store+"\n"), 0o600); err != nil {
			return rep, exitError(exitIO, err)
		}
		rep.EnvFile = place.envPath
	}
	unit, err := brokerSystemdUnit(bin, words, rep.EnvFile, place.system)
	if err != nil {
		return rep, err
	}
	if err := os.MkdirAll(filepath.Dir(place.unitPath), 0o755); err != nil {
		return rep, exitError(exitIO, err)
	}
	if _, err := installFile(place.unitPath, []byte(unit), 0o644); err != nil {
		return rep, exitError(exitIO, err)
	}
	boot := []serviceCommand{place.systemctl("daemon-reload"), place.systemctl("enable", brokerUnitName), place.systemctl("restart", brokerUnitName)}
	for _, cmd := range boot {
		rep.Commands = append(rep.Commands, cmd.String())
	}
	err = runner.runServiceCommands(ctx, boot)
	switch {
	case errors.Is(err, errServiceManagerMissing):
		rep.Note = "systemctl is not on this machine: the unit is written; start it with the commands above where systemd runs"
	case err != nil:
		return rep, exitError(exitFailure, fmt.Errorf("starting the broker service: %w", err))
	default:
		rep.Started = true
	}
	return rep, nil
}

func uninstallBrokerService(ctx context.Context, c *cli, runner serviceRunner, f brokerServiceFlags) (brokerServiceReport, error) {
	place, err := brokerServicePlaceFor(c, f.user)
	if err != nil {
		return brokerServiceReport{}, err
	}
	rep := brokerServiceReport{Unit: place.unitPath, File: "absent"}
	stop := []serviceCommand{place.systemctl("disable", "--now", brokerUnitName)}
	stop[0].MayFail = true
	rep.Commands = []string{stop[0].String()}
	if err := runner.runServiceCommands(ctx, stop); err == nil {
		rep.Stopped = true
	}
	for _, path := range []string{place.unitPath, place.envPath} {
		switch err := os.Remove(path); {
		case err == nil && path == place.unitPath:
			rep.File = "removed"
		case err != nil && !errors.Is(err, os.ErrNotExist):
			return rep, exitError(exitIO, err)
		}
	}
	return rep, nil
}

// brokerSystemdUnit renders the broker's unit.
func brokerSystemdUnit(bin string, serveWords []string, envFile string, system bool) (string, error) {
	for _, v := range append([]string{bin, envFile}, serveWords...) {
		if hasControlChar(v) {
			return "", fmt.Errorf("service unit: %q contains a control character no unit file can carry", v)
		}
	}
	if strings.ContainsAny(bin, `"'\`) {
		return "", exitError(exitFailure, fmt.Errorf("systemd cannot run %q: its path contains a quote or a backslash", bin),
			"move the claudemesh binary to a plain path and install the service from there")
	}
	var b strings.Builder
	b.WriteString("# Generated by claudemesh (broker install-service); remove with `claudemesh broker uninstall-service`.\n")
	b.WriteString("[Unit]\nDescription=claudemesh broker\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\nType=simple\n")
	words := []string{systemdQuote(bin, false)}
	for _, a := range append([]string{"broker", "serve", "--log-format=json"}, serveWords...) {
		words = append(words, systemdQuote(a, true))
	}
	b.WriteString("ExecStart=" + strings.Join(words, " ") + "\n")
	if envFile != "" {
		b.WriteString("EnvironmentFile=" + systemdEscapeSpecifiers(envFile) + "\n")
	}
	// SIGTERM is a clean stop: sockets get 1001 and, on PostgreSQL, this
	// replica's presences end at once.
	b.WriteString("KillSignal=SIGTERM\nRestart=always\nRestartSec=3\n\n[Install]\n")
	if system {
		b.WriteString("WantedBy=multi-user.target\n")
	} else {
		b.WriteString("WantedBy=default.target\n")
	}
	return b.String(), nil
}

func printBrokerService(c *cli, rep brokerServiceReport) error {
	if c.jsonMode() {
		return c.printJSON(rep)
	}
	c.printf("unit %s: %s\n", rep.Unit, rep.File)
	if rep.EnvFile != "" {
		c.printf("store URL in %s (readable by its owner only)\n", rep.EnvFile)
	}
	for _, cmd := range rep.Commands {
		c.printf("  %s\n", cmd)
	}
	if rep.Note != "" {
		c.warnf("%s", rep.Note)
	}
	return nil
}
