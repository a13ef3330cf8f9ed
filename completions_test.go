// Tests of the generated completion scripts: they cover every verb, parse
// in each shell, and complete as they should.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// complProbeTable is the real verb table plus verbs shaped like the ones
// still to come: sub-verbs, three-word verbs, aliases on other paths, value
// flags, and summaries with quotes and colons.
func complProbeTable() []*command {
	meshFlag := func(fs *flagSet) runFunc {
		fs.String("mesh", "", "mesh slug")
		return nil
	}
	// The real help and completions rows, plus fixed probes shaped like the
	// real verbs so the expectations do not move as verbs are added.
	var table []*command
	for _, cmd := range commands {
		if cmd.name == "help" || cmd.name == "completions" {
			table = append(table, cmd)
		}
	}
	return append(table,
		&command{name: "send", aliases: []string{"message send"}, args: "<to> <message…>", summary: "send a message",
			setup: func(fs *flagSet) runFunc {
				fs.String("mesh", "", "mesh slug")
				fs.String("priority", "next", "now|next|low")
				fs.Bool("self", false, "fan out to your other sessions")
				return nil
			}},
		&command{name: "mesh create", aliases: []string{"new"}, args: "<slug>", summary: "create a mesh", setup: meshFlag},
		&command{name: "mesh list", aliases: []string{"list"}, summary: "list meshes: the joined ones", setup: meshFlag},
		&command{name: "inbox", summary: "read the inbox", setup: meshFlag},
		&command{name: "inbox flush", summary: "delete messages", setup: func(fs *flagSet) runFunc {
			fs.String("before", "", "only messages received before this time")
			fs.Bool("all", false, "every message")
			return nil
		}},
		&command{name: "daemon outbox list", summary: "the daemon's outbox", setup: meshFlag},
		&command{name: "peer list", aliases: []string{"peers"}, summary: `list peers ("who's online")`, setup: meshFlag},
	)
}

func writeComplScript(t *testing.T, shell string, table []*command) string {
	t.Helper()
	script, err := completionScript(shell, table)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "claudemesh."+shell)
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func needComplShell(t *testing.T, shell string) string {
	t.Helper()
	path, err := exec.LookPath(shell)
	if err != nil {
		t.Skipf("%s is not installed; its completion script is checked only by the other tests", shell)
	}
	return path
}

func TestCompletionScriptsCoverEveryVerb(t *testing.T) {
	labels := map[string]func(path string) string{
		"bash": func(p string) string { return sq(p) + ")" },
		"zsh":  func(p string) string { return "(" + sq(p) + ")" },
		"fish": func(p string) string { return "case " + fishQuote(p) + "\n" },
	}
	for name, table := range map[string][]*command{"real table": commands, "probe table": complProbeTable()} {
		for _, shell := range completionShells {
			t.Run(name+"/"+shell, func(t *testing.T) {
				script, err := completionScript(shell, table)
				if err != nil {
					t.Fatal(err)
				}
				for _, cmd := range table {
					for _, n := range cmd.names() {
						// Every verb path is a case of the generated tables.
						if !strings.Contains(script, labels[shell](n)) {
							t.Errorf("%s script has no case for %q", shell, n)
						}
						for _, w := range strings.Fields(n) {
							if !strings.Contains(script, w) {
								t.Errorf("%s script never mentions %q", shell, w)
							}
						}
					}
					fs, _ := newVerbFlagSet(cmd, &globalFlags{})
					for _, f := range complFlagsOf(fs) {
						if !strings.Contains(script, f.name) {
							t.Errorf("%s script never mentions %s of %q", shell, f.name, cmd.name)
						}
					}
				}
			})
		}
	}
}

func TestCompletionScriptsParse(t *testing.T) {
	checks := map[string][]string{"bash": {"-n"}, "zsh": {"-n"}, "fish": {"--no-execute"}}
	for _, shell := range completionShells {
		t.Run(shell, func(t *testing.T) {
			bin := needComplShell(t, shell)
			for _, table := range [][]*command{commands, complProbeTable()} {
				path := writeComplScript(t, shell, table)
				out, err := exec.Command(bin, append(checks[shell], path)...).CombinedOutput()
				if err != nil {
					t.Fatalf("%s %v %s: %v\n%s", shell, checks[shell], path, err, out)
				}
			}
		})
	}
}

// complCases are command lines (the last word is the one being completed)
// and what every shell must offer for them.
var complCases = []struct {
	name  string
	words []string
	want  []string
}{
	{"verbs", []string{""}, []string{"completions", "daemon", "help", "inbox", "list", "mesh", "message", "new", "peer", "peers", "send"}},
	{"verb prefix", []string{"me"}, []string{"mesh", "message"}},
	{"sub-verbs", []string{"mesh", ""}, []string{"create", "list"}},
	{"three words", []string{"daemon", "outbox", ""}, []string{"list"}},
	{"alias path", []string{"message", ""}, []string{"send"}},
	{"verb with sub-verbs", []string{"inbox", ""}, []string{"flush"}},
	{"verb flags", []string{"send", "--"}, []string{"--help", "--json", "--mesh", "--no-color", "--no-daemon", "--priority", "--self", "--strict", "--verbose", "--version"}},
	{"flag prefix", []string{"send", "--s"}, []string{"--self", "--strict"}},
	{"flags after positionals", []string{"send", "bob", "hi", "--p"}, []string{"--priority"}},
	{"flags before the verb are skipped", []string{"--mesh", "team", "send", "--se"}, []string{"--self"}},
	{"a flag's value", []string{"send", "--priority", ""}, nil},
	{"no verbs after a positional", []string{"send", "bob", ""}, nil},
	{"sub-verb flags", []string{"inbox", "flush", "--b"}, []string{"--before"}},
	{"choices", []string{"completions", ""}, []string{"bash", "fish", "zsh"}},
	{"choice prefix", []string{"completions", "z"}, []string{"zsh"}},
	{"unknown verb", []string{"nope", ""}, nil},
	{"after --", []string{"send", "--", ""}, nil},
}

func sortedWords(s []string) []string {
	out := append([]string{}, s...)
	sort.Strings(out)
	if len(out) == 0 {
		return nil
	}
	return out
}

func TestBashCompletionBehaviour(t *testing.T) {
	bash := needComplShell(t, "bash")
	script := writeComplScript(t, "bash", complProbeTable())
	run := func(t *testing.T, words []string) []string {
		t.Helper()
		prog := `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _claudemesh; ` +
			`for c in "${COMPREPLY[@]}"; do printf '%s\n' "$c"; done`
		args := append([]string{"-c", prog, "_", script, "claudemesh"}, words...)
		out, err := exec.Command(bash, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return sortedWords(strings.Fields(string(out)))
	}
	for _, tc := range complCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := run(t, tc.words); !reflect.DeepEqual(got, sortedWords(tc.want)) {
				t.Errorf("claudemesh %s<TAB> = %q, want %q", strings.Join(tc.words, " "), got, sortedWords(tc.want))
			}
		})
	}
	// bash splits --flag=value at "=" (COMP_WORDBREAKS).
	t.Run("equals form split by bash", func(t *testing.T) {
		if got := run(t, []string{"--mesh", "=", "team", "send", "--se"}); !reflect.DeepEqual(got, []string{"--self"}) {
			t.Errorf("got %q, want --self", got)
		}
		if got := run(t, []string{"send", "--priority", "=", ""}); got != nil {
			t.Errorf("value after = : got %q, want nothing", got)
		}
	})
}

func TestZshCompletionBehaviour(t *testing.T) {
	zsh := needComplShell(t, "zsh")
	script := writeComplScript(t, "zsh", complProbeTable())
	// Outside a completion widget, _describe and compadd are stood in for
	// by functions that print the candidates.
	prog := `_describe() { local name=${@[-1]}; local l; for l in "${(@P)name}"; do print -r -- "${l%%:*}"; done; }
compadd() { [[ $1 == -- ]] && shift; print -rl -- "$@"; }
source "$1"; shift
words=(claudemesh "$@"); CURRENT=${#words}
_claudemesh`
	for _, tc := range complCases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-f", "-c", prog, "_", script}, tc.words...)
			out, err := exec.Command(zsh, args...).CombinedOutput()
			if err != nil && len(tc.want) > 0 {
				t.Fatalf("zsh: %v\n%s", err, out)
			}
			// zsh's candidates are filtered by the shell itself, not the
			// script: apply the typed prefix here.
			prefix := tc.words[len(tc.words)-1]
			var got []string
			for _, c := range strings.Fields(string(out)) {
				if strings.HasPrefix(c, prefix) {
					got = append(got, c)
				}
			}
			if !reflect.DeepEqual(sortedWords(got), sortedWords(tc.want)) {
				t.Errorf("claudemesh %s<TAB> = %q, want %q", strings.Join(tc.words, " "), sortedWords(got), sortedWords(tc.want))
			}
		})
	}
}

func TestFishCompletionBehaviour(t *testing.T) {
	fish := needComplShell(t, "fish")
	script := writeComplScript(t, "fish", complProbeTable())
	for _, tc := range complCases {
		t.Run(tc.name, func(t *testing.T) {
			line := "claudemesh " + strings.Join(tc.words, " ")
			out, err := exec.Command(fish, "--no-config", "-c", `source $argv[1]; complete -C $argv[2]`, script, line).CombinedOutput()
			if err != nil {
				t.Fatalf("fish: %v\n%s", err, out)
			}
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if word, _, _ := strings.Cut(l, "\t"); word != "" {
					got = append(got, word)
				}
			}
			if !reflect.DeepEqual(sortedWords(got), sortedWords(tc.want)) {
				t.Errorf("%s<TAB> = %q, want %q", line, sortedWords(got), sortedWords(tc.want))
			}
		})
	}
	t.Run("descriptions", func(t *testing.T) {
		out, err := exec.Command(fish, "--no-config", "-c", `source $argv[1]; complete -C $argv[2]`, script, "claudemesh pe").CombinedOutput()
		if err != nil {
			t.Fatal(err)
		}
		want := "peer\tsubcommands: list\npeers\tlist peers (\"who's online\")\n"
		if string(out) != want {
			t.Errorf("descriptions = %q, want %q", out, want)
		}
	})
}

func TestArgChoices(t *testing.T) {
	cases := []struct {
		args string
		want []string
	}{
		{"bash|zsh|fish", []string{"bash", "zsh", "fish"}},
		{"<now|next|low> <text>", []string{"now", "next", "low"}},
		{"[idle|working]", []string{"idle", "working"}},
		{"<slug>", nil},
		{"", nil},
		{"<to> <a|b>", nil}, // only the first positional
		{"<a b|c>", nil},
		{"A|B", nil},
	}
	for _, tc := range cases {
		if got := argChoices(tc.args); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("argChoices(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestCompletionsVerb(t *testing.T) {
	cases := []struct {
		name     string
		argv     []string
		wantCode int
		check    func(t *testing.T, stdout string)
	}{
		{"bash", []string{"completions", "bash"}, exitOK, func(t *testing.T, out string) {
			want, _ := completionScript("bash", commands)
			if out != want {
				t.Error("stdout is not the bash script")
			}
		}},
		{"fish", []string{"completions", "fish"}, exitOK, func(t *testing.T, out string) {
			if !strings.Contains(out, "complete -c claudemesh") {
				t.Error("stdout is not the fish script")
			}
		}},
		{"json", []string{"completions", "zsh", "--json"}, exitOK, func(t *testing.T, out string) {
			var doc map[string]string
			if err := json.Unmarshal([]byte(out), &doc); err != nil || doc["shell"] != "zsh" || !strings.HasPrefix(doc["script"], "#compdef claudemesh") {
				t.Errorf("--json output = %.80q, %v", out, err)
			}
		}},
		{"no shell", []string{"completions"}, exitUsage, nil},
		{"two shells", []string{"completions", "bash", "zsh"}, exitUsage, nil},
		{"unknown shell", []string{"completions", "tcsh"}, exitUsage, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.argv, Env{Stdout: &stdout, Stderr: &stderr})
			if code != tc.wantCode {
				t.Fatalf("claudemesh %v = exit %d (%s), want %d", tc.argv, code, stderr.String(), tc.wantCode)
			}
			if tc.wantCode != exitOK && !strings.Contains(stderr.String(), "hint: one of: bash, zsh, fish") {
				t.Errorf("stderr = %q, want the list of shells", stderr.String())
			}
			if tc.check != nil {
				tc.check(t, stdout.String())
			}
		})
	}
}
