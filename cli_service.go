// `claudemesh daemon install-service` and `daemon uninstall-service`: the
// daemon as a systemd user unit or launchd agent, also used by
// `install` / `uninstall`.
//
// Policy:
//   - Refused under CI unless --allow-ci-persistent (checkServiceAllowed).
//   - A running daemon is stopped first, as `daemon down` does, then the
//     service is (re)started: the service's daemon takes the singleton lock
//     cleanly instead of crash-looping against the old one (claudemesh 1.30.1).
//   - When systemctl / launchctl is not on this machine, the unit file is
//     still written (it serves a later login) and the commands that start it
//     are printed; the running daemon is left alone.
//   - When the manager is installed but no user manager runs (a container,
//     WSL, SSH without lingering), nothing is written or stopped: the
//     service is skipped with a warning, and the daemon starts on demand. When the manager is
//     there but refuses the unit, a unit file this call added is removed
//     again and a daemon it stopped is started again: a unit nobody runs
//     would only make every CLI call wait for a service that never comes.
package main

import (
	"context"
	"fmt"
	"time"
)

type serviceFlags struct {
	allowCI bool
}

func setupInstallService(fs *flagSet) runFunc {
	var f serviceFlags
	fs.BoolVar(&f.allowCI, "allow-ci-persistent", false, "install even though a CI environment variable is set")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("'daemon install-service' takes no arguments")
		}
		rep, err := installDaemonService(ctx, c, execServiceRunner(), f.allowCI)
		if err != nil {
			return err
		}
		if c.jsonMode() {
			return c.printJSON(rep)
		}
		printServiceInstall(c, rep)
		return nil
	}
}

func setupUninstallService(fs *flagSet) runFunc {
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("'daemon uninstall-service' takes no arguments")
		}
		rep, err := uninstallDaemonService(ctx, c, execServiceRunner())
		if err != nil {
			return err
		}
		if c.jsonMode() {
			return c.printJSON(rep)
		}
		printServiceUninstall(c, rep)
		return nil
	}
}

// serviceReport is what installing or removing the service did.
type serviceReport struct {
	Platform string `json:"platform"`
	Unit     string `json:"unit"`
	// File is added | updated | unchanged | skipped (install), removed |
	// absent (uninstall).
	File    string `json:"file"`
	Started bool   `json:"started,omitempty"`
	Stopped bool   `json:"stopped,omitempty"`
	// ManagerMissing: systemctl / launchctl is not on this machine; the
	// Commands are what to run where it is.
	ManagerMissing bool     `json:"manager_missing,omitempty"`
	Commands       []string `json:"commands,omitempty"`
	// ManagerNotRunning: the manager is installed but no user manager
	// answers (Reason says how it failed); the service was skipped.
	ManagerNotRunning bool   `json:"manager_not_running,omitempty"`
	Reason            string `json:"reason,omitempty"`
	// ReplacedPid is the daemon stopped so that the service's could start.
	ReplacedPid int `json:"replaced_pid,omitempty"`
}

func commandStrings(cmds []serviceCommand) []string {
	out := make([]string, len(cmds))
	for i, c := range cmds {
		out[i] = c.String()
	}
	return out
}

// daemonServiceUnit is the unit for this binary, home and daemon dir.
func daemonServiceUnit(c *cli) (serviceUnit, error) {
	spec, err := defaultServiceSpec(c.Paths(), homeDir(c.env.Getenv), c.env.Getenv)
	if err != nil {
		return serviceUnit{}, exitError(exitFailure, err)
	}
	return buildServiceUnit(spec)
}

// installDaemonService writes the unit and, where its manager exists,
// replaces any running daemon by the service's.
func installDaemonService(ctx context.Context, c *cli, runner serviceRunner, allowCI bool) (serviceReport, error) {
	if err := checkServiceAllowed(c.env.Getenv, allowCI); err != nil {
		return serviceReport{}, err
	}
	u, err := daemonServiceUnit(c)
	if err != nil {
		return serviceReport{}, err
	}
	if err := ensurePrivateDir(c.Paths().DaemonDir); err != nil {
		return serviceReport{}, exitError(exitIO, err)
	}
	rep := serviceReport{Platform: u.Platform, Unit: u.Path}
	_, missing := runner.lookPath(u.Boot[0].Argv[0])
	if missing == nil {
		if err := runner.runServiceCommands(ctx, u.Probe); err != nil {
			rep.File, rep.ManagerNotRunning, rep.Reason = "skipped", true, err.Error()
			return rep, nil
		}
	}
	wasInstalled := serviceInstalled(u.Path)
	if rep.File, err = installServiceFile(u); err != nil {
		return rep, exitError(exitIO, err)
	}
	if missing != nil {
		rep.ManagerMissing, rep.Commands = true, commandStrings(u.Boot)
		return rep, nil
	}
	if rep.ReplacedPid, err = stopRunningDaemon(ctx, c); err != nil {
		return rep, err
	}
	if err := runner.runServiceCommands(ctx, u.Boot); err != nil {
		hints := []string{"run by hand: " + joinCommands(u.Boot)}
		if !wasInstalled {
			if _, rerr := uninstallServiceFile(u.Path); rerr == nil {
				hints = append(hints, "the unit file was removed again, so the CLI keeps starting the daemon itself")
			}
		}
		if rep.ReplacedPid != 0 {
			if r := newDaemonConnector(c.Paths(), c.env.Getenv).ensure(ctx, defaultSpawnBudget); r.usable() {
				hints = append(hints, "the daemon it stopped was started again")
			}
		}
		return rep, exitError(exitFailure, fmt.Errorf("the service manager did not start the daemon: %w", err), hints...)
	}
	rep.Started = true
	return rep, nil
}

func joinCommands(cmds []serviceCommand) string {
	s := ""
	for i, c := range cmds {
		if i > 0 {
			s += " && "
		}
		s += c.String()
	}
	return s
}

// uninstallDaemonService stops and disables the service and removes its
// unit file; a daemon not run by the service is left alone.
func uninstallDaemonService(ctx context.Context, c *cli, runner serviceRunner) (serviceReport, error) {
	u, err := daemonServiceUnit(c)
	if err != nil {
		return serviceReport{}, err
	}
	rep := serviceReport{Platform: u.Platform, Unit: u.Path, File: "absent"}
	if !serviceInstalled(u.Path) {
		return rep, nil
	}
	if _, err := runner.lookPath(u.Stop[0].Argv[0]); err != nil {
		rep.ManagerMissing = true
	} else if err := runner.runServiceCommands(ctx, u.Stop); err != nil {
		return rep, exitError(exitFailure, fmt.Errorf("stopping the service: %w", err), "run by hand: "+joinCommands(u.Stop))
	} else {
		rep.Stopped = true
	}
	removed, err := uninstallServiceFile(u.Path)
	if err != nil {
		return rep, exitError(exitIO, err)
	}
	if removed {
		rep.File = "removed"
	}
	if u.Platform == platformSystemd && !rep.ManagerMissing {
		// Forget the removed unit; failing here changes nothing that matters.
		_ = runner.runServiceCommands(ctx, []serviceCommand{{Argv: []string{"systemctl", "--user", "daemon-reload"}, MayFail: true}})
	}
	return rep, nil
}

func printServiceInstall(c *cli, rep serviceReport) {
	if rep.ManagerNotRunning {
		c.warnf("no %s user service manager runs here (%s), so the daemon service was skipped", rep.Platform, rep.Reason)
		c.printf("  the daemon starts on demand instead: any claudemesh command, launch and Claude Code's claudemesh\n" +
			"  MCP server start it when it is not running\n")
		c.printf("hint: to have it start at login, run a user manager (on systemd: loginctl enable-linger $USER, then\n" +
			"  log in again) and then: claudemesh daemon install-service\n")
		return
	}
	c.printf("%s daemon service %s (%s): %s\n", c.paint(colorGreen, "✓"), rep.File, rep.Platform, rep.Unit)
	if rep.ReplacedPid != 0 {
		c.printf("  stopped the running daemon (pid %d) so the service's takes over\n", rep.ReplacedPid)
	}
	switch {
	case rep.Started:
		c.printf("  service started: the daemon now runs at login and restarts if it stops\n")
	case rep.ManagerMissing:
		c.warnf("%s is not on this machine, so the service was not started", serviceManagerFor(platformGOOS(rep.Platform)))
		c.printf("hint: where it is available, run:\n")
		for _, cmd := range rep.Commands {
			c.printf("  %s\n", cmd)
		}
	}
}

func printServiceUninstall(c *cli, rep serviceReport) {
	if rep.File == "absent" {
		c.printf("daemon service: not installed (%s)\n", rep.Unit)
		return
	}
	c.printf("%s daemon service removed: %s\n", c.paint(colorGreen, "✓"), rep.Unit)
	if rep.ManagerMissing {
		c.warnf("%s is not on this machine: nothing was stopped", serviceManagerFor(platformGOOS(rep.Platform)))
	}
	c.printf("  the daemon now starts on demand (or with 'claudemesh daemon up')\n")
}

// platformGOOS maps a service platform back to its OS.
func platformGOOS(platform string) string {
	if platform == platformLaunchd {
		return "darwin"
	}
	return "linux"
}

// brokerReport is one mesh's broker link after install.
type brokerReport struct {
	Mesh  string `json:"mesh"`
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// waitBrokers polls the daemon's /v1/health until every mesh's broker link
// is open or budget runs out, and reports each mesh's last state. ok is
// false when no daemon answered at all.
func waitBrokers(ctx context.Context, c *cli, budget, every time.Duration) (reps []brokerReport, ok bool) {
	cl := newDaemonClient(c.Paths().SocketFile(), "")
	defer cl.http.CloseIdleConnections()
	h, err := waitHealth(ctx, cl, budget, every, func(h HealthReply) bool {
		for _, l := range h.Links {
			if l.Kind == linkMember && l.State != LinkOpen {
				return false
			}
		}
		return true
	})
	if err != nil {
		return nil, false
	}
	reps = []brokerReport{}
	for _, l := range h.Links {
		if l.Kind == linkMember {
			reps = append(reps, brokerReport{Mesh: l.Mesh, State: string(l.State), Error: l.LastError})
		}
	}
	return reps, true
}
