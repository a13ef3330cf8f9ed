// Tests of the command line: argv rules, errors and exit codes, --json,
// help, and the verb table's consistency.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// argvProbe records what a verb received.
type argvProbe struct {
	verb        string
	args        []string
	passthrough []string
	mesh        string
	priority    string
	self        bool
	yes         bool
	json        bool
	fields      []string
}

// probeTable is a small verb table shaped like the real one, for the argv
// rules.
func probeTable(got *argvProbe) []*command {
	record := func(name string, mesh, priority *string, self, yes *bool) runFunc {
		return func(ctx context.Context, c *cli, args []string) error {
			*got = argvProbe{verb: name, args: args, passthrough: c.passthrough, mesh: *mesh, priority: *priority,
				self: *self, yes: *yes, json: c.jsonMode(), fields: c.global.json.fields}
			return nil
		}
	}
	verb := func(name string, aliases []string, passthrough, fields bool) *command {
		messageFlags := name != "mesh create"
		return &command{name: name, aliases: aliases, passthrough: passthrough, jsonFields: fields,
			setup: func(fs *flagSet) runFunc {
				var mesh, priority string
				var self, yes bool
				fs.StringVar(&mesh, "mesh", "", "mesh slug")
				fs.StringVar(&priority, "priority", "next", "now|next|low")
				if messageFlags {
					fs.BoolVar(&self, "self", false, "fan out to sibling sessions")
				}
				fs.BoolVar(&yes, "yes", false, "skip permission prompts")
				fs.BoolVar(&yes, "y", false, "skip permission prompts")
				return record(name, &mesh, &priority, &self, &yes)
			}}
	}
	return []*command{
		verb("send", []string{"message send"}, false, false),
		verb("peer list", []string{"peers"}, false, true),
		verb("mesh create", []string{"new", "create"}, false, false),
		verb("launch", []string{"connect"}, true, false),
		{name: "help", setup: func(fs *flagSet) runFunc { return runHelp }},
	}
}

func TestArgvRules(t *testing.T) {
	pk := strings.Repeat("ab", 32)
	cases := []struct {
		name string
		argv []string
		want argvProbe
	}{
		{"self keeps both positionals (1.32.0)", []string{"send", "--self", pk, "msg"},
			argvProbe{verb: "send", args: []string{pk, "msg"}, self: true, priority: "next"}},
		{"boolean never eats the next word", []string{"send", "--json", "bob", "hi"},
			argvProbe{verb: "send", args: []string{"bob", "hi"}, json: true, priority: "next"}},
		{"flags before the verb", []string{"--mesh", "team", "send", "bob", "hi", "there"},
			argvProbe{verb: "send", args: []string{"bob", "hi", "there"}, mesh: "team", priority: "next"}},
		{"flags after the positionals", []string{"send", "bob", "hi", "--priority", "now"},
			argvProbe{verb: "send", args: []string{"bob", "hi"}, priority: "now"}},
		{"equals form", []string{"send", "--mesh=team", "--priority=low", "bob", "x"},
			argvProbe{verb: "send", args: []string{"bob", "x"}, mesh: "team", priority: "low"}},
		{"equals form on a boolean", []string{"send", "--self=false", "bob", "x"},
			argvProbe{verb: "send", args: []string{"bob", "x"}, priority: "next"}},
		{"value flag takes a dash word", []string{"send", "--mesh", "-odd", "bob", "x"},
			argvProbe{verb: "send", args: []string{"bob", "x"}, mesh: "-odd", priority: "next"}},
		{"double dash makes flags literal", []string{"send", "bob", "--", "--self", "-y"},
			argvProbe{verb: "send", args: []string{"bob", "--self", "-y"}, priority: "next"}},
		{"double dash goes to claude for launch", []string{"launch", "-y", "team", "--", "--resume", "abc", "--model", "opus"},
			argvProbe{verb: "launch", args: []string{"team"}, passthrough: []string{"--resume", "abc", "--model", "opus"}, yes: true, priority: "next"}},
		{"short boolean", []string{"launch", "-y"},
			argvProbe{verb: "launch", args: []string{}, yes: true, priority: "next"}},
		{"two-word verb", []string{"mesh", "create", "team"},
			argvProbe{verb: "mesh create", args: []string{"team"}, priority: "next"}},
		{"alias", []string{"new", "team"},
			argvProbe{verb: "mesh create", args: []string{"team"}, priority: "next"}},
		{"two-word alias", []string{"message", "send", "bob", "hi"},
			argvProbe{verb: "send", args: []string{"bob", "hi"}, priority: "next"}},
		{"json field list", []string{"peers", "--json=name,pubkey"},
			argvProbe{verb: "peer list", args: []string{}, json: true, fields: []string{"name", "pubkey"}, priority: "next"}},
		{"json with space keeps the word positional", []string{"peers", "--json", "name"},
			argvProbe{verb: "peer list", args: []string{"name"}, json: true, priority: "next"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got argvProbe
			var stderr bytes.Buffer
			c := newCLI(Env{Stderr: &stderr}, probeTable(&got))
			if code := c.report(c.dispatch(context.Background(), tc.argv)); code != 0 {
				t.Fatalf("dispatch(%q) exit %d: %s", tc.argv, code, stderr.String())
			}
			if got.args == nil {
				got.args = []string{}
			}
			if tc.want.args == nil {
				tc.want.args = []string{}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("dispatch(%q) = %+v, want %+v", tc.argv, got, tc.want)
			}
		})
	}
}

func TestArgvErrors(t *testing.T) {
	cases := []struct {
		name     string
		argv     []string
		code     int
		contains string
	}{
		{"unknown verb with a close match", []string{"sedn", "bob"}, exitUsage, "did you mean 'claudemesh send'"},
		{"unknown subverb", []string{"mesh", "craete", "x"}, exitUsage, "did you mean 'claudemesh mesh create'"},
		{"group without subverb", []string{"mesh"}, exitUsage, "one of: create"},
		{"unknown verb far from everything", []string{"xyzzyplugh"}, exitUsage, "claudemesh help"},
		{"unknown flag", []string{"send", "--prority", "now"}, exitUsage, "did you mean --priority"},
		{"value flag at the end", []string{"send", "bob", "hi", "--mesh"}, exitUsage, "--mesh needs a value"},
		{"value flag followed by a flag", []string{"send", "--mesh", "--self", "bob"}, exitUsage, "--mesh needs a value"},
		{"flag of another verb", []string{"mesh", "create", "x", "--self"}, exitUsage, "does not apply to 'mesh create'"},
		{"field list on a verb without one", []string{"send", "--json=a,b", "bob", "x"}, exitUsage, "field list"},
		{"bad boolean value", []string{"send", "--self=maybe", "bob", "x"}, exitUsage, "invalid value"},
		{"argument not UTF-8", []string{"send", "bob", "caf\xe9"}, exitUsage, "not valid UTF-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got argvProbe
			var stderr bytes.Buffer
			c := newCLI(Env{Stderr: &stderr}, probeTable(&got))
			code := c.report(c.dispatch(context.Background(), tc.argv))
			if code != tc.code || !strings.Contains(stderr.String(), tc.contains) {
				t.Fatalf("dispatch(%q) = exit %d, stderr %q; want exit %d containing %q", tc.argv, code, stderr.String(), tc.code, tc.contains)
			}
			if !strings.HasPrefix(stderr.String(), "claudemesh: error: ") {
				t.Fatalf("stderr %q must start with 'claudemesh: error: '", stderr.String())
			}
			if !strings.Contains(stderr.String(), "\nhint: ") {
				t.Fatalf("stderr %q has no hint line", stderr.String())
			}
			if got.verb != "" {
				t.Fatalf("verb %s ran despite the error", got.verb)
			}
		})
	}
}

// A verb's own usage error without a hint points at the verb's help, and a
// flag value the flag package cannot parse says what the flag wants.
func TestUsageErrorsPointAtHelp(t *testing.T) {
	table := []*command{{name: "inbox", setup: func(fs *flagSet) runFunc {
		limit := fs.Int("limit", 100, "at most this many")
		return func(ctx context.Context, c *cli, args []string) error {
			if *limit < 1 {
				return usageError("--limit must be 1..1000")
			}
			return nil
		}
	}}}
	for _, tc := range []struct {
		argv []string
		want []string
	}{
		{[]string{"inbox", "--limit", "-1"}, []string{"claudemesh: error: --limit must be 1..1000\n", "hint: see 'claudemesh help inbox'\n"}},
		{[]string{"inbox", "--limit", "abc"}, []string{`invalid value "abc" for --limit: want a whole number`, "hint: see 'claudemesh help inbox'\n"}},
		{[]string{"inbox", "--json=maybe"}, []string{"hint: see 'claudemesh help inbox'\n"}},
	} {
		var stderr bytes.Buffer
		c := newCLI(Env{Stderr: &stderr}, table)
		if code := c.report(c.dispatch(context.Background(), tc.argv)); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", tc.argv, code, exitUsage)
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr.String(), w) {
				t.Errorf("%q: stderr %q lacks %q", tc.argv, stderr.String(), w)
			}
		}
	}
}

// Under --json, stdout carries exactly one JSON document whatever happens:
// the verb's, or the error's when the verb failed before printing one.
func TestJSONModeErrorIsOneDocument(t *testing.T) {
	table := []*command{
		{name: "fail", setup: func(fs *flagSet) runFunc {
			return func(ctx context.Context, c *cli, args []string) error {
				return exitError(exitNotFound, errors.New("no such thing"), "try another")
			}
		}},
		{name: "printed", setup: func(fs *flagSet) runFunc {
			return func(ctx context.Context, c *cli, args []string) error {
				_ = c.printJSON(map[string]any{"running": false})
				return exitError(exitFailure, errors.New("after its own document"))
			}
		}},
	}
	for _, tc := range []struct {
		argv []string
		code int
		want map[string]any
	}{
		{[]string{"fail", "--json"}, exitNotFound, map[string]any{"ok": false, "error": "no such thing", "exit_code": float64(exitNotFound), "hints": []any{"try another"}}},
		{[]string{"printed", "--json"}, exitFailure, map[string]any{"running": false}},
		{[]string{"fail", "--json", "--frob"}, exitUsage, nil},
		{[]string{"--version", "--json"}, exitOK, map[string]any{"version": version}},
	} {
		var stdout, stderr bytes.Buffer
		c := newCLI(Env{Stdout: &stdout, Stderr: &stderr}, table)
		code := c.report(c.dispatch(context.Background(), tc.argv))
		dec := json.NewDecoder(&stdout)
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			t.Errorf("%q: stdout %q is not a JSON document: %v", tc.argv, stdout.String(), err)
			continue
		}
		if dec.More() {
			t.Errorf("%q: more than one document on stdout", tc.argv)
		}
		if code != tc.code || tc.want != nil && !reflect.DeepEqual(doc, tc.want) {
			t.Errorf("%q: exit %d, %v; want exit %d, %v", tc.argv, code, doc, tc.code, tc.want)
		}
		if code != exitOK && !strings.HasPrefix(stderr.String(), "claudemesh: error: ") {
			t.Errorf("%q: stderr %q lacks the error", tc.argv, stderr.String())
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	cases := []struct {
		name     string
		argv     []string
		contains []string
		absent   []string
	}{
		{"help lists verbs", []string{"help"}, []string{"send", "mesh create", "Global flags"}, nil},
		{"bare prints help", nil, []string{"Usage: claudemesh"}, nil},
		{"verb --help", []string{"send", "--help"}, []string{"Usage: claudemesh send", "--priority <string>", "--self", "-y, --yes"}, []string{"Flags:\n  --json"}},
		{"-h anywhere", []string{"-h", "mesh", "create"}, []string{"Usage: claudemesh mesh create"}, nil},
		{"help verb", []string{"help", "peers"}, []string{"Usage: claudemesh peer list"}, nil},
		{"--version", []string{"--version"}, []string{"claudemesh " + version}, nil},
		{"-V", []string{"-V"}, []string{"claudemesh " + version}, nil},
		{"--version after a verb", []string{"send", "--version"}, []string{"claudemesh " + version}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got argvProbe
			var stdout bytes.Buffer
			c := newCLI(Env{Stdout: &stdout}, probeTable(&got))
			if code := c.report(c.dispatch(context.Background(), tc.argv)); code != 0 {
				t.Fatalf("exit %d", code)
			}
			for _, s := range tc.contains {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("output lacks %q:\n%s", s, stdout.String())
				}
			}
			for _, s := range tc.absent {
				if strings.Contains(stdout.String(), s) {
					t.Errorf("output has %q:\n%s", s, stdout.String())
				}
			}
			if got.verb != "" {
				t.Errorf("verb %s ran for help/version", got.verb)
			}
		})
	}
}

// The real table: every flag name has one kind, every help line renders,
// and help lists exactly the verbs of the table.
func TestVerbTableConsistent(t *testing.T) {
	kinds := map[string]bool{}
	seen := map[string]string{}
	for _, cmd := range commands {
		for _, name := range cmd.names() {
			if other, dup := seen[name]; dup {
				t.Errorf("name %q used by both %q and %q", name, other, cmd.name)
			}
			seen[name] = cmd.name
		}
		if cmd.summary == "" || cmd.group == "" {
			t.Errorf("%q needs a summary and a help group", cmd.name)
		}
		fs, run := newVerbFlagSet(cmd, &globalFlags{})
		if run == nil {
			t.Errorf("%q has no run function", cmd.name)
		}
		fs.VisitAll(func(f *flag.Flag) {
			b := isBoolFlag(f)
			if prev, ok := kinds[f.Name]; ok && prev != b {
				t.Errorf("flag --%s is boolean in one verb and not in another", f.Name)
			}
			kinds[f.Name] = b
		})
	}
	help := generalHelp(commands)
	for _, cmd := range commands {
		if !strings.Contains(help, "  "+synopsis(cmd)) {
			t.Errorf("help lacks %q", cmd.name)
		}
	}
}

// The boolean flags (--self, --json, --all, --yes, …) are booleans in the real verb table: none of them
// ever takes the next word as its value.
func TestSpecBooleanFlags(t *testing.T) {
	kinds := flagKinds(commands)
	for _, name := range []string{"self", "json", "all", "yes", "y", "quiet", "strict", "no-daemon", "unread", "foreground",
		"no-tcp", "public-health", "continue", "verbose", "no-color", "help", "h", "version", "V"} {
		if isBool, known := kinds[name]; !known || !isBool {
			t.Errorf("--%s: declared %v, boolean %v; want a boolean flag", name, known, isBool)
		}
	}
}

func TestExitCodes(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{errors.New("plain"), exitFailure},
		{usageError("x"), exitUsage},
		{exitError(exitNotFound, errors.New("x")), exitNotFound},
		{withHint(exitError(exitNetwork, errors.New("x")), "h"), exitNetwork},
		{fmt.Errorf("wrapped: %w", exitError(exitClaudeMissing, errors.New("x"))), exitClaudeMissing},
		{&ConfigError{Path: "p", Err: errors.New("x")}, exitIO},
	}
	for _, tc := range cases {
		if got := exitCodeOf(tc.err); got != tc.want {
			t.Errorf("exitCodeOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestColour(t *testing.T) {
	cases := []struct {
		name    string
		tty     bool
		env     map[string]string
		noColor bool
		want    bool
	}{
		{"tty", true, nil, false, true},
		{"pipe", false, nil, false, false},
		{"NO_COLOR", true, map[string]string{"NO_COLOR": "1"}, false, false},
		{"--no-color", true, nil, true, false},
		{"TERM=dumb", true, map[string]string{"TERM": "dumb"}, false, false},
	}
	for _, tc := range cases {
		c := newCLI(Env{StdoutTTY: tc.tty, Getenv: func(k string) string { return tc.env[k] }}, nil)
		c.global.noColor = tc.noColor
		if got := c.colorOn(); got != tc.want {
			t.Errorf("%s: colorOn = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Errors go to stderr: coloured when stderr is a terminal, whatever
	// stdout is.
	for _, tc := range []struct {
		stdoutTTY, stderrTTY, want bool
	}{{true, false, false}, {false, true, true}} {
		var stderr bytes.Buffer
		c := newCLI(Env{StdoutTTY: tc.stdoutTTY, StderrTTY: tc.stderrTTY, Stderr: &stderr}, nil)
		c.report(errors.New("boom"))
		if got := strings.Contains(stderr.String(), "\x1b["); got != tc.want {
			t.Errorf("stdout tty %v, stderr tty %v: colour on stderr = %v, want %v", tc.stdoutTTY, tc.stderrTTY, got, tc.want)
		}
	}
}

// `workspace <verb>` is another name for the mesh and launch verbs.
func TestWorkspaceAliasSurface(t *testing.T) {
	for _, tc := range []struct {
		words []string
		want  []string
	}{
		{[]string{"workspace", "ls", "x"}, []string{"mesh", "list", "x"}},
		{[]string{"workspace", "open"}, []string{"launch"}},
		{[]string{"workspace", "share"}, []string{"invite"}},
		{[]string{"workspace", "frob"}, []string{"workspace", "frob"}},
		{[]string{"send", "workspace", "ls"}, []string{"send", "workspace", "ls"}},
	} {
		if got := expandWorkspace(tc.words); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("expandWorkspace(%q) = %q, want %q", tc.words, got, tc.want)
		}
	}
	for canon := range workspaceVerbs {
		if cmd, n := findCommand(commands, strings.Fields(workspaceVerbs[canon])); cmd == nil || n != len(strings.Fields(workspaceVerbs[canon])) {
			t.Errorf("workspace %s names %q, which is not a verb", canon, workspaceVerbs[canon])
		}
	}
	home := t.TempDir()
	env := map[string]string{"HOME": home}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"workspace", "list", "--json", "--no-daemon"},
		Env{Getenv: func(k string) string { return env[k] }, Stdout: &stdout, Stderr: &stderr})
	if code != 0 || !strings.HasPrefix(strings.TrimSpace(stdout.String()), "[") {
		t.Fatalf("workspace list --json = exit %d, %q, %q", code, stdout.String(), stderr.String())
	}
	stderr.Reset()
	if code := run(context.Background(), []string{"workspace", "frob"}, Env{Stderr: &stderr}); code != exitUsage || !strings.Contains(stderr.String(), "one of: add, connect") {
		t.Fatalf("workspace frob = exit %d, %q", code, stderr.String())
	}
}

// TestFlagKindsForSplitsAsFullTable: the partial flag table splits every
// argv exactly as the table of every verb's flags does.
func TestFlagKindsForSplitsAsFullTable(t *testing.T) {
	full := flagKinds(commands)
	c := newCLI(Env{}, commands)
	for _, args := range [][]string{
		{"--version"},
		{"send", "bob", "hi", "--mesh", "team"},
		{"send", "--mesh", "--json", "bob", "hi"},
		{"send", "bob", "--unread"},
		{"inbox", "--unread", "flush"},
		{"mesh", "--json", "list"},
		{"--json", "peer", "list", "--all"},
		{"send", "bob", "--priority", "-5"},
		{"send", "bob", "--", "--mesh", "x"},
		{"bench", "--peers", "3", "--rate=10"},
		{"nosuchverb", "--limit", "3"},
		{"launch", "--name", "a", "--", "--resume"},
	} {
		want, werr := splitArgs(args, full)
		got, gerr := splitArgs(args, c.flagKindsFor(args))
		if fmt.Sprint(got, gerr) != fmt.Sprint(want, werr) {
			t.Errorf("split %q = %+v, %v; with every verb's flags %+v, %v", args, got, gerr, want, werr)
		}
	}
}

// TestSignalVerbs: the verbs that run until stopped, or have something to
// undo, get SIGINT/SIGTERM as a cancelled context; quick ones do not pay
// for a signal handler.
func TestSignalVerbs(t *testing.T) {
	want := map[string]bool{"broker serve": true, "daemon up": true, "daemon down": true, "mcp": true, "launch": true,
		"install": true, "uninstall": true, "daemon install-service": true, "daemon uninstall-service": true, "bench": true,
		"broker migrate": true, "broker install-service": true, "broker uninstall-service": true,
		"demo": true, "init": true}
	for _, cmd := range commands {
		if cmd.signals != want[cmd.name] {
			t.Errorf("%q handles signals = %v, want %v", cmd.name, cmd.signals, want[cmd.name])
		}
	}
}

// A verb that panics is an internal error: exit 8 with a message, not a
// goroutine dump.
func TestPanickingVerbIsInternalError(t *testing.T) {
	table := []*command{{name: "boom", summary: "panics", setup: func(fs *flagSet) runFunc {
		return func(context.Context, *cli, []string) error { panic("kaboom") }
	}}}
	var stderr bytes.Buffer
	c := newCLI(Env{Stderr: &stderr}, table)
	if code := c.report(c.dispatchGuarded(context.Background(), []string{"boom"})); code != exitInternal {
		t.Fatalf("exit = %d, want %d", code, exitInternal)
	}
	if !strings.Contains(stderr.String(), "claudemesh: error: internal error: kaboom") || !strings.Contains(stderr.String(), "hint: this is a bug") {
		t.Fatalf("stderr = %q", stderr.String())
	}
}

// The real table: group words print their usage under help, a verb's own
// arguments after `help <verb>` change nothing, a swapped pair of letters
// suggests the verb it garbles, a bare invite link joins, and -y/--yes is
// accepted wherever a verb may ask for confirmation.
func TestHelpGroupsInviteLinksAndYes(t *testing.T) {
	home := t.TempDir()
	env := map[string]string{"HOME": home, "CLAUDEMESH_CONFIG_DIR": home + "/cfg", "CLAUDEMESH_NO_DAEMON": "1"}
	for _, tc := range []struct {
		name     string
		argv     []string
		code     int
		contains string
		absent   string
	}{
		{"help of a group", []string{"help", "daemon"}, exitOK, "daemon outbox requeue", ""},
		{"--help on a group", []string{"daemon", "--help"}, exitOK, "daemon install-service", ""},
		{"help peer", []string{"help", "peer"}, exitOK, "peer disconnect", ""},
		{"-h on a group", []string{"peer", "-h"}, exitOK, "Subcommands:", ""},
		{"help of a verb with its argument", []string{"help", "completions", "bash"}, exitOK, "Usage: claudemesh completions", ""},
		{"a group alone still needs a subcommand", []string{"daemon"}, exitUsage, "needs a subcommand", ""},
		{"swapped letters", []string{"sned", "bob", "hi"}, exitUsage, "did you mean 'claudemesh send'", ""},
		{"a bare invite link joins", []string{"ic://join/not-a-token"}, exitFailure, "not a valid invite", "unknown verb"},
		{"kick -y", []string{"kick", "-y", "bob"}, exitNotFound, "no mesh joined yet", "does not apply"},
		{"peer disconnect --yes", []string{"peer", "disconnect", "--yes", "bob"}, exitNotFound, "no mesh joined yet", "does not apply"},
		{"ban -y", []string{"ban", "-y", "bob"}, exitNotFound, "no mesh joined yet", "does not apply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, env, tc.argv...)
			if r.code != tc.code || !strings.Contains(r.stdout+r.stderr, tc.contains) || (tc.absent != "" && strings.Contains(r.stdout+r.stderr, tc.absent)) {
				t.Fatalf("claudemesh %q = exit %d\n%s%s\nwant exit %d with %q, without %q", tc.argv, r.code, r.stdout, r.stderr, tc.code, tc.contains, tc.absent)
			}
		})
	}
}
