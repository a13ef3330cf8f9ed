// Where claudemesh keeps its files. Three roots, each with its own override:
// the config dir (CLAUDEMESH_CONFIG_DIR), the daemon dir
// (CLAUDEMESH_DAEMON_DIR only: the daemon is a per-machine singleton, so it
// never follows a launched session's config dir) and the sessions dir
// (CLAUDEMESH_SESSIONS_DIR).
//
// Policy: a CLAUDEMESH_CONFIG_DIR that names a directory which no longer
// exists is stale — typically inherited from a `claudemesh launch` whose temp
// dir is gone — and is ignored in favour of ~/.claudemesh, with one warning on
// stderr only when stderr is a terminal.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Paths are the roots of claudemesh's files for one process.
type Paths struct {
	ConfigDir   string
	DaemonDir   string
	SessionsDir string
	// MachineConfigDir is ~/.claudemesh whatever CLAUDEMESH_CONFIG_DIR
	// says: the daemon serves the machine, never a launched session's
	// one-mesh temp config.
	MachineConfigDir string
}

// ConfigFile is config.json in the config dir.
func (p Paths) ConfigFile() string { return filepath.Join(p.ConfigDir, "config.json") }

// MachineConfigFile is the config the daemon reads.
func (p Paths) MachineConfigFile() string { return filepath.Join(p.MachineConfigDir, "config.json") }

// Daemon-dir files.
func (p Paths) SocketFile() string       { return filepath.Join(p.DaemonDir, "daemon.sock") }
func (p Paths) PidFile() string          { return filepath.Join(p.DaemonDir, "daemon.pid") }
func (p Paths) LockFile() string         { return filepath.Join(p.DaemonDir, "daemon.lock") }
func (p Paths) TokenFile() string        { return filepath.Join(p.DaemonDir, "local-token") }
func (p Paths) DaemonInfoFile() string   { return filepath.Join(p.DaemonDir, "daemon.json") }
func (p Paths) LogFile() string          { return filepath.Join(p.DaemonDir, "daemon.log") }
func (p Paths) OutboxDB() string         { return filepath.Join(p.DaemonDir, "outbox.db") }
func (p Paths) InboxDB() string          { return filepath.Join(p.DaemonDir, "inbox.db") }
func (p Paths) SessionsFile() string     { return filepath.Join(p.DaemonDir, "sessions.json") }
func (p Paths) SpawnLockFile() string    { return filepath.Join(p.DaemonDir, ".spawn.lock") }
func (p Paths) SpawnFailureFile() string { return filepath.Join(p.DaemonDir, ".spawn-failure") }
func (p Paths) HookLogFile() string      { return filepath.Join(p.DaemonDir, "hooks.log") }
func (p Paths) MCPLogFile(pid int) string {
	return filepath.Join(p.DaemonDir, fmt.Sprintf("mcp-%d.log", pid))
}

// SessionNameFile keeps the display name a session chose for itself.
func (p Paths) SessionNameFile(meshSlug, sessionID string) string {
	return filepath.Join(p.SessionsDir, meshSlug, sessionID+".name")
}

// SessionKeyFile is where a launched session's keypair is kept so that a
// relaunch or --resume keeps its pubkey.
func (p Paths) SessionKeyFile(meshSlug, sessionID string) string {
	return filepath.Join(p.SessionsDir, meshSlug, sessionID+".json")
}

// pathEnv is what path resolution reads from the process.
type pathEnv struct {
	getenv    func(string) string
	home      string
	stderrTTY bool
	dirExists func(string) bool
}

// resolvePaths computes the three roots. The returned warning is non-empty
// only for a stale CLAUDEMESH_CONFIG_DIR seen with stderr on a terminal; it is
// ready to print as is.
func resolvePaths(e pathEnv) (Paths, string) {
	base := filepath.Join(e.home, ".claudemesh")
	p := Paths{
		ConfigDir:        base,
		DaemonDir:        filepath.Join(base, "daemon"),
		SessionsDir:      filepath.Join(base, "sessions"),
		MachineConfigDir: base,
	}
	if d := e.getenv("CLAUDEMESH_DAEMON_DIR"); d != "" {
		p.DaemonDir = d
	}
	if d := e.getenv("CLAUDEMESH_SESSIONS_DIR"); d != "" {
		p.SessionsDir = d
	}
	var warning string
	if d := e.getenv("CLAUDEMESH_CONFIG_DIR"); d != "" {
		if e.dirExists(d) {
			p.ConfigDir = d
		} else if e.stderrTTY {
			warning = staleConfigDirWarning(d, base, e.getenv("SHELL"))
		}
	}
	return p, warning
}

func staleConfigDirWarning(stale, fallback, shell string) string {
	unset := "unset CLAUDEMESH_CONFIG_DIR"
	if strings.HasSuffix(shell, "fish") {
		unset = "set -e CLAUDEMESH_CONFIG_DIR"
	}
	return fmt.Sprintf("claudemesh: warning: CLAUDEMESH_CONFIG_DIR=%s no longer exists (left over from an ended launch?); using %s\nhint: %s\n", stale, fallback, unset)
}

func dirExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// homeDir is $HOME from env, else the OS's idea of it.
func homeDir(getenv func(string) string) string {
	if h := getenv("HOME"); h != "" {
		return h
	}
	if h, err := os.UserHomeDir(); err == nil {
		return h
	}
	return "."
}

// Where the daemon's service unit lives. Its presence is what tells a
// client the daemon is service-managed, so clients need this as much as
// the service installer does.

// Service names.
const (
	systemdUnitName = "claudemesh-daemon.service"
	launchdLabel    = "com.claudemesh.daemon"
)

// Service platforms.
const (
	platformSystemd = "systemd"
	platformLaunchd = "launchd"
)

// servicePlatformFor maps an OS to its service manager.
func servicePlatformFor(goos string) (string, error) {
	switch goos {
	case "linux":
		return platformSystemd, nil
	case "darwin":
		return platformLaunchd, nil
	}
	return "", fmt.Errorf("no service manager support on %s; run `claudemesh daemon up` instead", goos)
}

// serviceUnitPath is where the unit file lives for this platform and home.
func serviceUnitPath(platform, home, xdgConfigHome string) (string, error) {
	switch platform {
	case platformSystemd:
		base := filepath.Join(home, ".config")
		if filepath.IsAbs(xdgConfigHome) {
			base = xdgConfigHome
		}
		return filepath.Join(base, "systemd", "user", systemdUnitName), nil
	case platformLaunchd:
		return filepath.Join(home, "Library", "LaunchAgents", launchdLabel+".plist"), nil
	}
	return "", fmt.Errorf("unknown service platform %q", platform)
}

// serviceManagerFor is the command that runs units on goos.
func serviceManagerFor(goos string) string {
	if goos == "darwin" {
		return "launchctl"
	}
	return "systemctl"
}

// serviceUnitFor is where the unit file for goos lives, "" where there is no
// service manager support.
func serviceUnitFor(goos, home, xdgConfigHome string) string {
	platform, err := servicePlatformFor(goos)
	if err != nil {
		return ""
	}
	path, _ := serviceUnitPath(platform, home, xdgConfigHome)
	return path
}

// serviceInstalled reports whether a unit file is present: the CLI's test
// for a service-managed daemon.
func serviceInstalled(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}
