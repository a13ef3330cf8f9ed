// Tests of the CLI's --json documents: each uses one key style, and
// docs/json.md lists each of them.
package main

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"
)

// keyStyles collects the key styles of a JSON document: "snake" for keys
// with an underscore, "camel" for keys with an upper-case letter. Values
// that are people's own data (a state value, a skill manifest, a profile's
// fields) and objects keyed by mesh slug are not walked.
func keyStyles(v any, styles map[string][]string) {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			keyStyles(e, styles)
		}
	case map[string]any:
		for k, e := range x {
			switch {
			case strings.Contains(k, "_"):
				styles["snake"] = append(styles["snake"], k)
			case strings.IndexFunc(k, unicode.IsUpper) >= 0:
				styles["camel"] = append(styles["camel"], k)
			}
			switch k {
			case "value", "manifest", "brokers", "errors", "stats":
				continue
			}
			keyStyles(e, styles)
		}
	}
}

// The --json documents of the verbs, against a real daemon, broker and
// session: none mixes snake_case and camelCase keys, and docs/json.md has
// a section for each.
func TestJSONDocumentsUseOneKeyStyle(t *testing.T) {
	f := newMsgFixture(t, nil)
	a := registerTestSession(t, f.d1, f.me, "alice")
	registerTestSession(t, f.d2, f.bob, "bert")
	env := f.h1.env("CLAUDEMESH_IPC_TOKEN", a.reg.Token)
	doc, err := os.ReadFile("docs/json.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, argv := range [][]string{
		{"whoami"},
		{"send", "bert", "hello"},
		{"peer", "list"},
		{"members"},
		{"inbox"},
		{"state", "set", "build", `{"green":true}`},
		{"state", "get", "build"},
		{"state", "list"},
		{"remember", "the release is on friday"},
		{"recall", "release"},
		{"skill", "list"},
		{"profile", "--summary", "testing"},
		{"profile"},
		{"peer", "bans"},
		{"grant", "bert", "memory"},
		{"revoke", "bert", "memory"},
		{"grants"},
		{"role", "bob", "admin"},
		{"audit"},
		{"verify", "bert"},
		{"audit", "--verify"},
		{"status"},
		{"daemon", "status"},
		{"daemon", "version"},
		{"daemon", "outbox", "list"},
		{"mesh", "list"},
		{"invite"},
		{"invite", "--short"},
		{"invite", "list"},
		{"doctor"},
		{"version"},
		{"completions", "bash"},
		{"inbox", "delete", "no-such-row"}, // the error document
	} {
		name := strings.Join(argv, " ")
		t.Run(name, func(t *testing.T) {
			r := runCLI(t, env, append(argv, "--json")...)
			var v any
			if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
				t.Fatalf("claudemesh %s --json = %d, not one JSON document: %v\n%s%s", name, r.code, err, r.stdout, r.stderr)
			}
			styles := map[string][]string{}
			keyStyles(v, styles)
			if len(styles["snake"]) > 0 && len(styles["camel"]) > 0 {
				sort.Strings(styles["snake"])
				sort.Strings(styles["camel"])
				t.Fatalf("claudemesh %s --json mixes snake_case %q and camelCase %q", name, styles["snake"], styles["camel"])
			}
			section := regexp.MustCompile("(?m)^#+ .*`claudemesh " + regexp.QuoteMeta(verbOf(name)) + "[` ]")
			if r.code != 0 {
				section = regexp.MustCompile("(?m)^#+ .*the error document")
			}
			if !section.Match(doc) {
				t.Errorf("docs/json.md has no section for the document of %q", name)
			}
		})
	}
}

// verbOf is the verb of a command line, without its arguments.
func verbOf(name string) string {
	cmd, n := findCommand(commands, strings.Fields(name))
	if cmd == nil || n == 0 {
		return name
	}
	return cmd.name
}
