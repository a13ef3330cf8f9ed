// `claudemesh completions bash|zsh|fish`: shell completion scripts generated
// from the verb table, so they follow every verb, alias, sub-verb and flag
// as they are added.
//
// Every script walks the words typed so far the same way: flags are skipped
// (with the value of a flag that takes one), words that continue a verb path
// ("mesh" → "mesh create") descend, and the first other word is a
// positional argument, after which only flags are offered. The shell
// functions are generated as plain case tables, so they run on macOS's
// bash 3.2 as well as on current shells.
package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// completionShells are the shells a script can be generated for.
var completionShells = []string{"bash", "zsh", "fish"}

// complNode is one point of the verb tree: "" (the root), "mesh",
// "mesh create".
type complNode struct {
	path     string
	verb     bool   // a runnable verb (it may also have sub-verbs: "inbox")
	summary  string // the verb's summary
	children []string
	flags    []complFlag // the verb's flags; the global ones at a group word
	choices  []string    // literal values of the first positional ("bash|zsh|fish")
}

// complFlag is one flag as typed: "--mesh" or "-h".
type complFlag struct {
	name  string
	usage string
	value bool // takes a value
}

// complTree is the verb tree with every value-taking flag name.
type complTree struct {
	nodes      map[string]*complNode
	valueFlags []string
}

// isComplChoiceWord: ^[a-z0-9][a-z0-9-]*$.
func isComplChoiceWord(c string) bool {
	return matchesClass(c, 1, -1, isLowerAlnumByte, orBytes(isLowerAlnumByte, "-"))
}

// argChoices reads literal choices from a synopsis whose first word lists
// them: "bash|zsh|fish", "<now|next|low>".
func argChoices(args string) []string {
	fields := strings.Fields(args)
	if len(fields) == 0 {
		return nil
	}
	first := strings.Trim(fields[0], "<>[]")
	if !strings.Contains(first, "|") {
		return nil
	}
	choices := strings.Split(first, "|")
	for _, c := range choices {
		if !isComplChoiceWord(c) {
			return nil
		}
	}
	return choices
}

func complFlagsOf(fs *flagSet) []complFlag {
	var out []complFlag
	fs.VisitAll(func(f *flag.Flag) {
		name := "--" + f.Name
		if len(f.Name) == 1 {
			name = "-" + f.Name
		}
		out = append(out, complFlag{name: name, usage: f.Usage, value: !isBoolFlag(f)})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// buildComplTree builds the tree from the verb table.
func buildComplTree(table []*command) complTree {
	global := complFlagsOf(globalFlagSet())
	nodes := map[string]*complNode{"": {flags: global}}
	node := func(path string) *complNode {
		if n, ok := nodes[path]; ok {
			return n
		}
		n := &complNode{path: path, flags: global}
		nodes[path] = n
		return n
	}
	for _, cmd := range table {
		fs, _ := newVerbFlagSet(cmd, &globalFlags{})
		flags := complFlagsOf(fs)
		for _, name := range cmd.names() {
			words := strings.Fields(name)
			for i, w := range words {
				parent := node(strings.Join(words[:i], " "))
				if !slices.Contains(parent.children, w) {
					parent.children = append(parent.children, w)
				}
				node(strings.Join(words[:i+1], " "))
			}
			n := node(name)
			n.verb, n.summary, n.flags, n.choices = true, cmd.summary, flags, argChoices(cmd.args)
		}
	}
	for _, n := range nodes {
		sort.Strings(n.children)
	}
	var values []string
	for name, isBool := range flagKinds(table) {
		if !isBool {
			if len(name) == 1 {
				values = append(values, "-"+name)
			} else {
				values = append(values, "--"+name)
			}
		}
	}
	sort.Strings(values)
	return complTree{nodes: nodes, valueFlags: values}
}

// paths returns the node paths in a stable order.
func (t complTree) paths() []string {
	var out []string
	for p := range t.nodes {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// describe is the one-line description of the word leading to path.
func (t complTree) describe(path string) string {
	n := t.nodes[path]
	if n.verb {
		return n.summary
	}
	return "subcommands: " + strings.Join(n.children, ", ")
}

func childPath(parent, word string) string {
	if parent == "" {
		return word
	}
	return parent + " " + word
}

// completionScript generates the script for one shell.
func completionScript(shell string, table []*command) (string, error) {
	t := buildComplTree(table)
	switch shell {
	case "bash":
		return bashCompletion(t), nil
	case "zsh":
		return zshCompletion(t), nil
	case "fish":
		return fishCompletion(t), nil
	}
	return "", withHint(usageError("no completions for shell %q", shell), "one of: "+strings.Join(completionShells, ", "))
}

func runCompletions(ctx context.Context, c *cli, args []string) error {
	if len(args) != 1 {
		return withHint(usageError("'completions' needs the shell name"), "one of: "+strings.Join(completionShells, ", "))
	}
	script, err := completionScript(args[0], c.commands)
	if err != nil {
		return err
	}
	if c.jsonMode() {
		return c.printJSON(map[string]string{"shell": args[0], "script": script})
	}
	c.printf("%s", script)
	return nil
}

// sq quotes s for POSIX shells and zsh: single quotes, with each embedded
// one closed, escaped and reopened.
func sq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// fishQuote quotes s for fish, where a single-quoted string escapes only
// backslash and single quote.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// describeLine is "word:description" for zsh's _describe, whose first
// unescaped colon ends the word.
func describeLine(word, desc string) string {
	return strings.ReplaceAll(word, ":", `\:`) + ":" + strings.Join(strings.Fields(desc), " ")
}

func bashCompletion(t complTree) string {
	var b strings.Builder
	b.WriteString("# bash completion for claudemesh, generated by `claudemesh completions bash`.\n")
	b.WriteString("# Load it with:  source <(claudemesh completions bash)\n\n")
	writeCase := func(fn string, body func(n *complNode) []string) {
		b.WriteString(fn + "() {\n    case \"$1\" in\n")
		for _, p := range t.paths() {
			if words := body(t.nodes[p]); len(words) > 0 {
				fmt.Fprintf(&b, "        %s) echo %s ;;\n", sq(p), sq(strings.Join(words, " ")))
			}
		}
		b.WriteString("    esac\n}\n\n")
	}
	writeCase("_claudemesh_children", func(n *complNode) []string { return n.children })
	writeCase("_claudemesh_choices", func(n *complNode) []string { return n.choices })
	writeCase("_claudemesh_flags", func(n *complNode) []string {
		var names []string
		for _, f := range n.flags {
			names = append(names, f.name)
		}
		return names
	})
	b.WriteString("_claudemesh_value_flag() {\n    case \"$1\" in\n")
	if len(t.valueFlags) > 0 {
		quoted := make([]string, len(t.valueFlags))
		for i, f := range t.valueFlags {
			quoted[i] = sq(f)
		}
		fmt.Fprintf(&b, "        %s) return 0 ;;\n", strings.Join(quoted, "|"))
	}
	b.WriteString("    esac\n    return 1\n}\n\n")
	b.WriteString(`_claudemesh() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" node="" positional=0 i w
    COMPREPLY=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        case "$w" in
        --) return 0 ;;
        -*=*) continue ;;
        -*)
            # bash splits --flag=value at "=" (COMP_WORDBREAKS).
            if [[ "${COMP_WORDS[i+1]}" == "=" ]]; then
                i=$((i + 2))
            elif _claudemesh_value_flag "$w"; then
                i=$((i + 1))
            fi
            continue
            ;;
        esac
        if ((positional == 0)) && [[ " $(_claudemesh_children "$node") " == *" $w "* ]]; then
            node="${node:+$node }$w"
        else
            positional=$((positional + 1))
        fi
    done
    if ((COMP_CWORD > 1)); then
        prev="${COMP_WORDS[COMP_CWORD-1]}"
    fi
    if [[ "$prev" == "=" || "$cur" == "=" ]] || _claudemesh_value_flag "$prev"; then
        return 0 # a flag's value: nothing to offer
    fi
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$(_claudemesh_flags "$node")" -- "$cur"))
    elif ((positional == 0)); then
        COMPREPLY=($(compgen -W "$(_claudemesh_children "$node") $(_claudemesh_choices "$node")" -- "$cur"))
    fi
    return 0
}

complete -F _claudemesh claudemesh
`)
	return b.String()
}

func zshCompletion(t complTree) string {
	var b strings.Builder
	b.WriteString("#compdef claudemesh\n")
	b.WriteString("# zsh completion for claudemesh, generated by `claudemesh completions zsh`.\n")
	b.WriteString("# Load it with:  source <(claudemesh completions zsh)   (after compinit)\n")
	b.WriteString("# or save it as _claudemesh in a directory on $fpath.\n\n")
	writeCase := func(fn string, body func(n *complNode) []string) {
		b.WriteString(fn + "() {\n  case \"$1\" in\n")
		for _, p := range t.paths() {
			if lines := body(t.nodes[p]); len(lines) > 0 {
				quoted := make([]string, len(lines))
				for i, l := range lines {
					quoted[i] = sq(l)
				}
				fmt.Fprintf(&b, "    (%s) print -rl -- %s ;;\n", sq(p), strings.Join(quoted, " "))
			}
		}
		b.WriteString("  esac\n}\n\n")
	}
	writeCase("_claudemesh_children", func(n *complNode) []string { return n.children })
	writeCase("_claudemesh_children_desc", func(n *complNode) []string {
		var out []string
		for _, c := range n.children {
			out = append(out, describeLine(c, t.describe(childPath(n.path, c))))
		}
		return out
	})
	writeCase("_claudemesh_choices", func(n *complNode) []string { return n.choices })
	writeCase("_claudemesh_flags_desc", func(n *complNode) []string {
		var out []string
		for _, f := range n.flags {
			out = append(out, describeLine(f.name, f.usage))
		}
		return out
	})
	b.WriteString("_claudemesh_value_flag() {\n  case \"$1\" in\n")
	if len(t.valueFlags) > 0 {
		quoted := make([]string, len(t.valueFlags))
		for i, f := range t.valueFlags {
			quoted[i] = sq(f)
		}
		fmt.Fprintf(&b, "    (%s) return 0 ;;\n", strings.Join(quoted, "|"))
	}
	b.WriteString("  esac\n  return 1\n}\n\n")
	b.WriteString(`_claudemesh() {
  local node="" w prev="" i positional=0
  local -a subs descs choices
  for (( i = 2; i < CURRENT; i++ )); do
    w=${words[i]}
    case $w in
      (--) return 0 ;;
      (-*=*) continue ;;
      (-*)
        _claudemesh_value_flag "$w" && i=$(( i + 1 ))
        continue ;;
    esac
    subs=( ${(f)"$(_claudemesh_children "$node")"} )
    if (( positional == 0 && ${subs[(Ie)$w]} )); then
      node=${node:+$node }$w
    else
      positional=$(( positional + 1 ))
    fi
  done
  (( CURRENT > 2 )) && prev=${words[CURRENT-1]}
  if _claudemesh_value_flag "$prev"; then
    return 1 # a flag's value: nothing to offer
  fi
  if [[ ${words[CURRENT]} == -* ]]; then
    descs=( ${(f)"$(_claudemesh_flags_desc "$node")"} )
    _describe -t flags 'claudemesh flag' descs
  elif (( positional == 0 )); then
    descs=( ${(f)"$(_claudemesh_children_desc "$node")"} )
    choices=( ${(f)"$(_claudemesh_choices "$node")"} )
    (( ${#descs} )) && _describe -t commands 'claudemesh verb' descs
    (( ${#choices} )) && compadd -- "${choices[@]}"
  fi
  return 0
}

if [[ ${funcstack[1]} == _claudemesh ]]; then
  # Autoloaded from $fpath: this file is the body of _claudemesh.
  _claudemesh "$@"
elif (( ${+functions[compdef]} )); then
  compdef _claudemesh claudemesh
fi
`)
	return b.String()
}

func fishCompletion(t complTree) string {
	var b strings.Builder
	b.WriteString("# fish completion for claudemesh, generated by `claudemesh completions fish`.\n")
	b.WriteString("# Load it with:  claudemesh completions fish | source\n")
	b.WriteString("# or save it as ~/.config/fish/completions/claudemesh.fish\n\n")
	writeSwitch := func(fn string, body func(n *complNode) []string) {
		b.WriteString("function " + fn + "\n    switch \"$argv[1]\"\n")
		for _, p := range t.paths() {
			if lines := body(t.nodes[p]); len(lines) > 0 {
				quoted := make([]string, len(lines))
				for i, l := range lines {
					quoted[i] = fishQuote(l)
				}
				fmt.Fprintf(&b, "        case %s\n            printf '%%s\\n' %s\n", fishQuote(p), strings.Join(quoted, " "))
			}
		}
		b.WriteString("    end\nend\n\n")
	}
	tabbed := func(word, desc string) string { return word + "\t" + strings.Join(strings.Fields(desc), " ") }
	writeSwitch("__claudemesh_children", func(n *complNode) []string { return n.children })
	writeSwitch("__claudemesh_children_desc", func(n *complNode) []string {
		var out []string
		for _, c := range n.children {
			out = append(out, tabbed(c, t.describe(childPath(n.path, c))))
		}
		return out
	})
	writeSwitch("__claudemesh_choices", func(n *complNode) []string { return n.choices })
	writeSwitch("__claudemesh_flags_desc", func(n *complNode) []string {
		var out []string
		for _, f := range n.flags {
			out = append(out, tabbed(f.name, f.usage))
		}
		return out
	})
	quoted := make([]string, len(t.valueFlags))
	for i, f := range t.valueFlags {
		quoted[i] = fishQuote(f)
	}
	fmt.Fprintf(&b, "function __claudemesh_value_flag\n    contains -- $argv[1] %s\nend\n\n", strings.Join(quoted, " "))
	b.WriteString(`function __claudemesh_complete
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l node ''
    set -l positional 0
    set -l skip 0
    for w in $tokens
        if test $skip = 1
            set skip 0
            continue
        end
        switch $w
            case '--'
                return
            case '-*=*'
                continue
            case '-*'
                if __claudemesh_value_flag $w
                    set skip 1
                end
                continue
        end
        if test $positional = 0; and contains -- $w (__claudemesh_children "$node")
            set node (string trim -- "$node $w")
        else
            set positional (math $positional + 1)
        end
    end
    if test $skip = 1
        return # a flag's value: nothing to offer
    end
    if string match -q -- '-*' (commandline -ct)
        __claudemesh_flags_desc "$node"
    else if test $positional = 0
        __claudemesh_children_desc "$node"
        __claudemesh_choices "$node"
    end
end

complete -c claudemesh -f -a '(__claudemesh_complete)'
`)
	return b.String()
}
