// Tests of `broker install-service`: the unit runs broker serve with the
// checked flags, the store URL goes to an owner-only environment file, and
// uninstall removes both.
package main

import (
	"context"
	"os"
	"strings"
	"testing"
)

func TestBrokerInstallService(t *testing.T) {
	ctx := context.Background()
	h := newTestHome(t)
	store := "postgres://broker:s3cret@db.example/claudemesh"
	c := newCLI(Env{Getenv: mapEnv(h.env(envBrokerStore, store))}, commands)
	var calls []string
	user := brokerServiceFlags{user: true} // never a system unit from a test, even as root

	if _, err := installBrokerService(ctx, c, recordingRunner(true, nil, &calls), user, []string{"--no-such-flag"}); err == nil ||
		!strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("an unknown serve flag = %v, want refused", err)
	}
	calls = nil
	rep, err := installBrokerService(ctx, c, recordingRunner(true, nil, &calls), user,
		[]string{"--listen", "0.0.0.0:7901", "--replica-id", "a b", "--tls-cert", "/etc/team.crt", "--tls-key", "/etc/team.key"})
	if err != nil || !rep.Started {
		t.Fatalf("install = %+v, %v", rep, err)
	}
	want := []string{"--user daemon-reload", "--user enable " + brokerUnitName, "--user restart " + brokerUnitName}
	if strings.Join(calls, "|") != strings.Join(want, "|") {
		t.Fatalf("calls = %q, want %q", calls, want)
	}
	unit := string(must(os.ReadFile(rep.Unit)))
	for _, w := range []string{" broker serve --log-format=json ", "--listen=0.0.0.0:7901", `"--replica-id=a b"`, "EnvironmentFile=" + rep.EnvFile, "WantedBy=default.target"} {
		if !strings.Contains(unit, w) {
			t.Errorf("unit lacks %q:\n%s", w, unit)
		}
	}
	if strings.Contains(unit, "s3cret") {
		t.Fatalf("the store's password is in the unit:\n%s", unit)
	}
	env := must(os.ReadFile(rep.EnvFile))
	if string(env) != envBrokerStore+"="+store+"\n" {
		t.Fatalf("environment file = %q", env)
	}
	if st, _ := os.Stat(rep.EnvFile); st.Mode().Perm() != 0o600 {
		t.Fatalf("environment file mode %v, want 0600", st.Mode().Perm())
	}

	calls = nil
	urep, err := uninstallBrokerService(ctx, c, recordingRunner(true, nil, &calls), user)
	if err != nil || urep.File != "removed" || !urep.Stopped || calls[0] != "--user disable --now "+brokerUnitName {
		t.Fatalf("uninstall = %+v, %v, calls %q", urep, err, calls)
	}
	if _, err := os.Stat(rep.EnvFile); !os.IsNotExist(err) {
		t.Fatalf("environment file left behind: %v", err)
	}
}
