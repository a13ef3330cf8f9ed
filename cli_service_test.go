// Tests of install-service / uninstall-service and install's wait for a
// daemon, with and without a service manager.
package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// recordingRunner is a service manager that records its commands and fails
// the ones fail says.
func recordingRunner(present bool, fail func(args []string) bool, calls *[]string) serviceRunner {
	return serviceRunner{
		lookPath: func(name string) (string, error) {
			if !present {
				return "", exec.ErrNotFound
			}
			return "/usr/bin/" + name, nil
		},
		run: func(ctx context.Context, path string, args []string) ([]byte, error) {
			*calls = append(*calls, strings.Join(args, " "))
			if fail != nil && fail(args) {
				return []byte("Failed to connect to bus"), errors.New("exit status 1")
			}
			return nil, nil
		},
	}
}

func TestInstallDaemonService(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the systemd path is checked on linux")
	}
	ctx := context.Background()
	newC := func(h testHome, extra ...string) *cli { return newCLI(Env{Getenv: mapEnv(h.env(extra...))}, commands) }

	t.Run("manager missing: unit written, commands printed, daemon left alone", func(t *testing.T) {
		h := newTestHome(t)
		h.writeConfig(t)
		td := startTestDaemon(t, h, nil)
		var calls []string
		rep, err := installDaemonService(ctx, newC(h), recordingRunner(false, nil, &calls), false)
		if err != nil || !rep.ManagerMissing || rep.Started || rep.File != fileAdded || len(calls) != 0 {
			t.Fatalf("install = %+v, %v, calls %q", rep, err, calls)
		}
		if len(rep.Commands) != 3 || !strings.Contains(rep.Commands[2], "restart "+systemdUnitName) {
			t.Fatalf("commands = %q", rep.Commands)
		}
		if !serviceInstalled(rep.Unit) {
			t.Fatal("unit not written")
		}
		if !daemonLockHeld(h.Paths) {
			t.Fatal("the running daemon was stopped although no service replaces it")
		}
		td.shutdown(t)
	})

	t.Run("manager refuses: a new unit is removed again", func(t *testing.T) {
		h := newTestHome(t)
		h.writeConfig(t)
		var calls []string
		c := newC(h, "CLAUDEMESH_INTERNAL_NO_AUTOSPAWN", "1")
		_, err := installDaemonService(ctx, c, recordingRunner(true, func(a []string) bool { return a[1] == "daemon-reload" }, &calls), false)
		if err == nil || !strings.Contains(err.Error(), "did not start the daemon") {
			t.Fatalf("install with a failing systemctl = %v", err)
		}
		if serviceInstalled(serviceUnitFor("linux", h.Home, "")) {
			t.Fatal("a unit the manager refused was left behind")
		}
		var ce *cliError
		if !errors.As(err, &ce) || !strings.Contains(strings.Join(ce.hints, "\n"), "systemctl --user daemon-reload && systemctl --user enable") {
			t.Fatalf("hints = %v", err)
		}
	})

	t.Run("no user manager runs: nothing written, nothing stopped, no error", func(t *testing.T) {
		h := newTestHome(t)
		h.writeConfig(t)
		td := startTestDaemon(t, h, nil)
		var calls []string
		noManager := recordingRunner(true, func(a []string) bool { return a[1] == "show-environment" }, &calls)
		rep, err := installDaemonService(ctx, newC(h), noManager, false)
		if err != nil || !rep.ManagerNotRunning || rep.Started || rep.File != "skipped" || !strings.Contains(rep.Reason, "Failed to connect to bus") ||
			strings.Join(calls, "|") != "--user show-environment" {
			t.Fatalf("install = %+v, %v, calls %q", rep, err, calls)
		}
		if serviceInstalled(serviceUnitFor("linux", h.Home, "")) {
			t.Fatal("a unit no manager runs was written: every CLI call would wait for it")
		}
		if !daemonLockHeld(h.Paths) {
			t.Fatal("the running daemon was stopped although no service replaces it")
		}
		td.shutdown(t)
	})

	t.Run("CI refused unless asked", func(t *testing.T) {
		h := newTestHome(t)
		var calls []string
		if _, err := installDaemonService(ctx, newC(h, "GITHUB_ACTIONS", "true"), recordingRunner(true, nil, &calls), false); err == nil {
			t.Fatal("installed under CI")
		}
		if serviceInstalled(serviceUnitFor("linux", h.Home, "")) {
			t.Fatal("unit written under CI")
		}
		rep, err := installDaemonService(ctx, newC(h, "GITHUB_ACTIONS", "true"), recordingRunner(true, nil, &calls), true)
		if err != nil || !rep.Started {
			t.Fatalf("install with --allow-ci-persistent = %+v, %v", rep, err)
		}
		want := []string{"--user show-environment", "--user daemon-reload", "--user enable " + systemdUnitName, "--user restart " + systemdUnitName}
		if strings.Join(calls, "|") != strings.Join(want, "|") {
			t.Fatalf("calls = %q, want %q", calls, want)
		}

		calls = nil
		urep, err := uninstallDaemonService(ctx, newC(h), recordingRunner(true, nil, &calls))
		if err != nil || urep.File != "removed" || !urep.Stopped {
			t.Fatalf("uninstall = %+v, %v", urep, err)
		}
		if len(calls) == 0 || calls[0] != "--user disable --now "+systemdUnitName {
			t.Fatalf("uninstall calls = %q", calls)
		}
		if urep, err := uninstallDaemonService(ctx, newC(h), recordingRunner(true, nil, &calls)); err != nil || urep.File != "absent" {
			t.Fatalf("second uninstall = %+v, %v", urep, err)
		}
	})
}

// The verbs as a user types them, without a service manager on PATH.
func TestServiceVerbsWithoutManager(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the systemd path is checked on linux")
	}
	h := newTestHome(t)
	env := h.env("PATH", shortTempDir(t)) // no systemctl here
	res := runBinary(t, env, "daemon", "install-service")
	if res.code != 0 || !strings.Contains(res.stderr, "systemctl is not on this machine") || !strings.Contains(res.stdout, "systemctl --user enable "+systemdUnitName) {
		t.Fatalf("install-service = %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	if _, err := os.Stat(serviceUnitFor("linux", h.Home, "")); err != nil {
		t.Fatal("unit not written")
	}
	res = runBinary(t, env, "daemon", "uninstall-service", "--json")
	if res.code != 0 || !strings.Contains(res.stdout, `"file": "removed"`) {
		t.Fatalf("uninstall-service = %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
}

// install waits for broker links only when a daemon is coming: without a
// service and without a running daemon it says how the daemon will start
// and returns at once; a service that starts but brings no daemon up is a
// warning that says where to look.
func TestInstallWaitsOnlyForAComingDaemon(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the systemd path is checked on linux")
	}
	run := func(h testHome, f installFlags, runner serviceRunner) (string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		c := newCLI(Env{Getenv: mapEnv(h.env("CLAUDEMESH_INTERNAL_NO_AUTOSPAWN", "1")), Stdout: &out, Stderr: &errb}, commands)
		done := make(chan error, 1)
		go func() { done <- runInstall(context.Background(), c, f, runner) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("install: %v\n%s", err, errb.String())
			}
		case <-time.After(testWait):
			t.Fatal("install is still waiting for a daemon that nothing starts")
		}
		return out.String(), errb.String()
	}
	h := newTestHome(t)
	h.writeConfig(t)
	var calls []string
	out, _ := run(h, installFlags{noService: true, brokerWait: time.Hour}, recordingRunner(true, nil, &calls))
	if !strings.Contains(out, "the daemon is not running yet; it starts with 'claudemesh daemon up'") {
		t.Fatalf("install --no-service without a daemon:\n%s", out)
	}

	h = newTestHome(t)
	h.writeConfig(t)
	out, errs := run(h, installFlags{brokerWait: time.Millisecond}, recordingRunner(true, nil, &calls))
	if !strings.Contains(errs, "the daemon service was started, but no daemon answered") ||
		!strings.Contains(errs, "systemctl --user status claudemesh-daemon.service") || !strings.Contains(out, "not answering yet") ||
		strings.Contains(out, "first verb that needs it") {
		t.Fatalf("install with a service that brings no daemon up:\n%s\n%s", out, errs)
	}
}

// install where systemctl exists but no user manager runs (a container,
// WSL, SSH without lingering): everything but the service is done, the
// warning says how the daemon starts instead, and install succeeds.
func TestInstallWithoutUserManager(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the systemd path is checked on linux")
	}
	h := newTestHome(t)
	h.writeConfig(t)
	var out, errb bytes.Buffer
	c := newCLI(Env{Getenv: mapEnv(h.env("CLAUDEMESH_INTERNAL_NO_AUTOSPAWN", "1")), Stdout: &out, Stderr: &errb}, commands)
	var calls []string
	noManager := recordingRunner(true, func(a []string) bool { return a[1] == "show-environment" }, &calls)
	if err := runInstall(context.Background(), c, installFlags{brokerWait: time.Millisecond}, noManager); err != nil {
		t.Fatalf("install = %v\n%s%s", err, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "service was skipped") || !strings.Contains(out.String(), "starts on demand") ||
		!strings.Contains(out.String(), "loginctl enable-linger") || strings.Contains(out.String()+errb.String(), "systemctl --user enable") {
		t.Fatalf("install without a user manager said:\n%s%s", out.String(), errb.String())
	}
	if !claudeKnowsClaudemesh(h.Home) {
		t.Fatal("the MCP server was not registered")
	}
}
