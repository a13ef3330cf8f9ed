// The command line: argv parsing, dispatch through the verb table, generated
// help, output in human or --json form, and the mapping from errors to exit
// codes.
//
// Argv rules: flags may come anywhere; `--flag=value` works for every flag;
// a boolean flag never takes the next word as its value; `--` ends flag
// parsing (what follows goes to `claude` for launch, and is positional for
// every other verb). Every flag name has one kind across all verbs, so argv
// can be split into flags and words before the verb is known.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// Exit codes.
const (
	exitOK            = 0
	exitFailure       = 1
	exitAuth          = 2
	exitUsage         = 3
	exitNetwork       = 4
	exitNotFound      = 5
	exitExists        = 6
	exitPermission    = 7
	exitInternal      = 8
	exitClaudeMissing = 9
	exitIO            = 10
)

// runFunc runs a verb with its positional arguments.
type runFunc func(ctx context.Context, c *cli, args []string) error

// flagSet is the standard FlagSet; verbs declare their flags on it.
type flagSet = flag.FlagSet

// command is one row of the verb table.
type command struct {
	name        string   // one or more words: "send", "mesh create"
	aliases     []string // other full names that run it: "new", "mesh new"
	args        string   // positional synopsis for help: "<slug>"
	summary     string   // one line for the verb list
	detail      string   // optional paragraph for `help <verb>`
	group       string   // help section
	passthrough bool     // words after `--` are kept apart (launch)
	// signals: the verb runs until told to stop, or has something to undo,
	// so SIGINT and SIGTERM cancel its context. Other verbs die of them at
	// once, as short commands do: handling signals costs every process a
	// thread and a quarter of a millisecond at start.
	signals    bool
	jsonFields bool // accepts --json=<field,list>
	setup      func(fs *flagSet) runFunc
}

// yesFlag registers -y and --yes, which answer yes to any question the
// verb would ask. Scripts pass it to every verb that may ask.
func yesFlag(fs *flagSet, yes *bool, usage string) {
	fs.BoolVar(yes, "yes", false, usage)
	fs.BoolVar(yes, "y", false, usage)
}

// names are the command's name and aliases.
func (cmd *command) names() []string { return append([]string{cmd.name}, cmd.aliases...) }

// Env is what one run of the CLI sees of its process.
type Env struct {
	Getenv    func(string) string
	Stdin     io.Reader
	Stdout    io.Writer
	Stderr    io.Writer
	StdinTTY  bool
	StdoutTTY bool
	StderrTTY bool
	// Environ is the whole environment, for the processes a verb starts
	// (launch's claude); nil means an empty one.
	Environ func() []string
	// Raise ends the process by sig, as a child that died of it would
	// (launch re-raises claude's signal); nil where the caller is not a
	// process of its own, such as a test running verbs in-process.
	Raise func(sig syscall.Signal)
}

func processEnv() Env {
	return Env{
		Getenv:    os.Getenv,
		Stdin:     os.Stdin,
		Stdout:    os.Stdout,
		Stderr:    os.Stderr,
		StdinTTY:  isTerminal(os.Stdin),
		StdoutTTY: isTerminal(os.Stdout),
		StderrTTY: isTerminal(os.Stderr),
		Environ:   os.Environ,
		Raise:     raiseSignal,
	}
}

// raiseSignal kills this process with sig under its default action. If the
// signal cannot kill it (it was ignored when the process started), it
// returns after a moment and the caller exits with a code instead.
func raiseSignal(sig syscall.Signal) {
	signal.Reset(sig)
	_ = syscall.Kill(os.Getpid(), sig)
	time.Sleep(time.Second)
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// globalFlags are accepted by every verb.
type globalFlags struct {
	json     jsonFlag
	noColor  bool
	help     bool
	version  bool
	strict   bool
	noDaemon bool
	verbose  bool
}

func (g *globalFlags) register(fs *flagSet) {
	fs.Var(&g.json, "json", "print one JSON document instead of text")
	fs.BoolVar(&g.noColor, "no-color", false, "no colour in output (also NO_COLOR)")
	fs.BoolVar(&g.help, "help", false, "show help")
	fs.BoolVar(&g.help, "h", false, "show help")
	fs.BoolVar(&g.version, "version", false, "print the version")
	fs.BoolVar(&g.version, "V", false, "print the version")
	fs.BoolVar(&g.strict, "strict", false, "fail instead of falling back when the daemon is unavailable")
	fs.BoolVar(&g.noDaemon, "no-daemon", false, "never use the daemon; talk to the broker directly")
	fs.BoolVar(&g.verbose, "verbose", false, "say more")
}

// jsonFlag is --json (on/off) or --json=field,field (on, projected).
type jsonFlag struct {
	on     bool
	fields []string
}

func (j *jsonFlag) String() string   { return "" }
func (j *jsonFlag) IsBoolFlag() bool { return true }
func (j *jsonFlag) Set(v string) error {
	switch v {
	case "true", "":
		j.on, j.fields = true, nil
	case "false":
		j.on, j.fields = false, nil
	default:
		j.on, j.fields = true, nil
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				j.fields = append(j.fields, f)
			}
		}
	}
	return nil
}

// cli is one invocation: its environment, parsed global flags and lazily
// resolved paths.
type cli struct {
	env         Env
	commands    []*command
	global      globalFlags
	cmd         *command
	passthrough []string
	jsonPrinted bool // a JSON document went to stdout

	pathsOnce sync.Once
	paths     Paths

	// The daemon connection, found (or started) once per process.
	daemonOnce   sync.Once
	daemonResult ensureResult
	daemonClient *DaemonClient
	coldNoteOnce sync.Once

	userConfig configCache
}

func newCLI(env Env, table []*command) *cli {
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if env.Stdin == nil {
		env.Stdin = strings.NewReader("")
	}
	if env.Stdout == nil {
		env.Stdout = io.Discard
	}
	if env.Stderr == nil {
		env.Stderr = io.Discard
	}
	if env.Environ == nil {
		env.Environ = func() []string { return nil }
	}
	return &cli{env: env, commands: table}
}

// Paths resolves the file roots once per invocation, printing the stale
// config-dir warning at most once.
func (c *cli) Paths() Paths {
	c.pathsOnce.Do(func() {
		p, warning := resolvePaths(pathEnv{
			getenv:    c.env.Getenv,
			home:      homeDir(c.env.Getenv),
			stderrTTY: c.env.StderrTTY,
			dirExists: dirExists,
		})
		if warning != "" {
			fmt.Fprint(c.env.Stderr, warning)
		}
		c.paths = p
	})
	return c.paths
}

// run executes one command line and returns the process exit code.
func run(ctx context.Context, args []string, env Env) int {
	c := newCLI(env, commands)
	return c.report(c.dispatchGuarded(ctx, args))
}

// dispatchGuarded is dispatch with a bug in a verb reported as an internal
// error (exit 8) on stderr, instead of a goroutine dump in the user's
// terminal.
func (c *cli) dispatchGuarded(ctx context.Context, args []string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = exitError(exitInternal, fmt.Errorf("internal error: %v", r),
				"this is a bug in claudemesh; please report the command you ran and this message")
		}
	}()
	return c.dispatch(ctx, args)
}

// parsedArgs is argv split into flags and words.
type parsedArgs struct {
	words       []string
	flags       []flagArg
	passthrough []string
	dashDash    bool
}

type flagArg struct{ name, value string }

// flagKinds maps every flag name any verb declares to whether it is boolean.
func flagKinds(table []*command) map[string]bool {
	kinds := map[string]bool{}
	for _, cmd := range table {
		fs, _ := newVerbFlagSet(cmd, &globalFlags{})
		fs.VisitAll(func(f *flag.Flag) {
			kinds[f.Name] = isBoolFlag(f)
		})
	}
	return kinds
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func newVerbFlagSet(cmd *command, g *globalFlags) (*flagSet, runFunc) {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	var run runFunc
	if cmd.setup != nil {
		run = cmd.setup(fs)
	}
	return fs, run
}

// splitArgs separates flags from words using the flag kinds.
func splitArgs(args []string, kinds map[string]bool) (parsedArgs, error) {
	var p parsedArgs
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			p.dashDash = true
			p.passthrough = append([]string{}, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			p.words = append(p.words, a)
			continue
		}
		body := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		name, value, hasValue := strings.Cut(body, "=")
		isBool, known := kinds[name]
		if !known || name == "" {
			return p, unknownFlagError(a, kinds)
		}
		switch {
		case hasValue:
		case isBool:
			value = "true"
		case i+1 < len(args) && !looksLikeKnownFlag(args[i+1], kinds):
			i++
			value = args[i]
		default:
			return p, usageError("flag --%s needs a value", name)
		}
		p.flags = append(p.flags, flagArg{name: name, value: value})
	}
	return p, nil
}

// flagKindsFor returns flag kinds enough to split args: the global flags
// and those of the verb its leading words name, else (a flag neither
// knows) every verb's. Knowing every verb's flags means building every
// verb's flag set, which a CLI that starts as often as this one should not
// do for `--version` or `send --mesh x`. Every flag name has one kind
// across verbs, so any table that knows all of args' flags splits them as
// the full one does.
func (c *cli) flagKindsFor(args []string) map[string]bool {
	kinds := map[string]bool{}
	add := func(fs *flagSet) { fs.VisitAll(func(f *flag.Flag) { kinds[f.Name] = isBoolFlag(f) }) }
	add(globalFlagSet())
	n := 0
	for n < len(args) && !(len(args[n]) >= 2 && args[n][0] == '-') {
		n++
	}
	if cmd, _ := findCommand(c.commands, args[:n]); cmd != nil {
		fs, _ := newVerbFlagSet(cmd, &globalFlags{})
		add(fs)
	}
	for _, a := range args {
		if a == "--" {
			break
		}
		if len(a) < 2 || a[0] != '-' {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		if _, ok := kinds[name]; !ok {
			return flagKinds(c.commands)
		}
	}
	return kinds
}

// hasFlagArg reports whether any argument is (or ends flag parsing like) a
// flag, as splitArgs would see it.
func hasFlagArg(args []string) bool {
	for _, a := range args {
		if len(a) >= 2 && a[0] == '-' {
			return true
		}
	}
	return false
}

// wantsJSON reports whether argv asks for --json before any `--`.
func wantsJSON(args []string) bool {
	on := false
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "--json" || strings.HasPrefix(a, "--json=") {
			on = a != "--json=false"
		}
	}
	return on
}

func looksLikeKnownFlag(s string, kinds map[string]bool) bool {
	if !strings.HasPrefix(s, "--") {
		return false
	}
	name, _, _ := strings.Cut(s[2:], "=")
	_, ok := kinds[name]
	return ok || s == "--"
}

func unknownFlagError(arg string, kinds map[string]bool) error {
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		if len(k) > 1 {
			names = append(names, k)
		}
	}
	err := usageError("unknown flag %s", arg)
	if s := closest(name, names); s != "" {
		return withHint(err, "did you mean --"+s+"?")
	}
	return err
}

// expandWorkspace rewrites `workspace <verb> …` to the verb it names.
func expandWorkspace(words []string) []string {
	if len(words) < 2 || words[0] != "workspace" {
		return words
	}
	canon, ok := workspaceVerbs[words[1]]
	if !ok {
		return words
	}
	return append(strings.Fields(canon), words[2:]...)
}

// findCommand matches the longest run of leading words against the table.
func findCommand(table []*command, words []string) (*command, int) {
	for n := min(len(words), 3); n > 0; n-- {
		name := strings.Join(words[:n], " ")
		for _, cmd := range table {
			for _, alias := range cmd.names() {
				if alias == name {
					return cmd, n
				}
			}
		}
	}
	return nil, 0
}

// dispatch parses argv, finds the verb, applies its flags and runs it.
func (c *cli) dispatch(ctx context.Context, args []string) error {
	c.global.json.on = wantsJSON(args) // so that even a bad command line answers in JSON
	var kinds map[string]bool
	if hasFlagArg(args) {
		kinds = c.flagKindsFor(args)
	}
	p, err := splitArgs(args, kinds)
	if err != nil {
		return err
	}
	p.words = expandWorkspace(p.words)
	if len(p.words) > 0 && isInviteLink(p.words[0]) {
		// An invite link on its own is what the user wants to join.
		p.words = append([]string{"join"}, p.words...)
	}
	cmd, used := findCommand(c.commands, p.words)
	if cmd == nil {
		// Global flags still mean something without a verb.
		for _, f := range p.flags {
			switch f.name {
			case "version", "V":
				return c.printVersion()
			case "help", "h":
				if len(p.words) == 1 && groupHelp(c.commands, p.words[0]) != "" {
					c.printf("%s", groupHelp(c.commands, p.words[0]))
					return nil
				}
			}
		}
		if len(p.words) == 0 {
			return c.printHelp(nil)
		}
		return unknownVerbError(c.commands, p.words)
	}
	c.cmd = cmd
	fs, run := newVerbFlagSet(cmd, &c.global)
	for _, f := range p.flags {
		if fs.Lookup(f.name) == nil {
			return withHint(usageError("flag --%s does not apply to '%s'", f.name, cmd.name),
				"see 'claudemesh help "+cmd.name+"'")
		}
		if err := fs.Set(f.name, f.value); err != nil {
			return usageError("invalid value %q for --%s: %v", f.value, f.name, flagValueProblem(fs.Lookup(f.name), err))
		}
	}
	if c.global.json.fields != nil && !cmd.jsonFields {
		return usageError("'%s' does not take a --json field list", cmd.name)
	}
	if c.global.version {
		return c.printVersion()
	}
	if c.global.help {
		return c.printHelp(cmd)
	}
	rest := append([]string{}, p.words[used:]...)
	if cmd.passthrough {
		c.passthrough = p.passthrough
	} else {
		rest = append(rest, p.passthrough...)
	}
	for _, w := range rest {
		// Messages, names and keys are text: bytes that are not UTF-8
		// would reach peers as U+FFFD, silently changed.
		if !utf8.ValidString(w) {
			return withHint(usageError("argument %q is not valid UTF-8 text", strings.ToValidUTF8(w, "\uFFFD")),
				"convert it first, for example with iconv -t UTF-8")
		}
	}
	if run == nil {
		return c.printHelp(cmd)
	}
	if cmd.signals {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	return run(ctx, c, rest)
}

// flagValueProblem says what a flag wants when the flag package could only
// say "parse error".
func flagValueProblem(f *flag.Flag, err error) string {
	if err.Error() != "parse error" && err.Error() != "value out of range" {
		return err.Error()
	}
	switch {
	case isBoolFlag(f):
		return "want true or false"
	case isWholeNumber(f.DefValue):
		return "want a whole number"
	}
	return err.Error()
}

func isWholeNumber(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}

func unknownVerbError(table []*command, words []string) error {
	var names []string
	for _, cmd := range table {
		names = append(names, cmd.names()...)
	}
	// A group word ("mesh", "daemon") with a missing or unknown subverb.
	var subs []string
	for _, name := range names {
		if rest, ok := strings.CutPrefix(name, words[0]+" "); ok {
			subs = append(subs, rest)
		}
	}
	if len(subs) > 0 {
		sort.Strings(subs)
		if len(words) == 1 {
			return withHint(usageError("'%s' needs a subcommand", words[0]), "one of: "+strings.Join(subs, ", "))
		}
		attempt := words[0] + " " + words[1]
		if s := closest(attempt, names); s != "" {
			return withHint(usageError("unknown verb %q", attempt), "did you mean 'claudemesh "+s+"'?")
		}
		return withHint(usageError("unknown verb %q", attempt), "'"+words[0]+"' takes: "+strings.Join(subs, ", "))
	}
	if s := closest(words[0], names); s != "" {
		return withHint(usageError("unknown verb %q", words[0]), "did you mean 'claudemesh "+s+"'?")
	}
	return withHint(usageError("unknown verb %q", words[0]), "run 'claudemesh help' for the list of verbs")
}

// closest returns the candidate within edit distance 2 of s (or that s is a
// prefix of), preferring the nearest; "" when nothing is close.
func closest(s string, candidates []string) string {
	best, bestDist := "", 3
	for _, cand := range candidates {
		d := editDistance(s, cand)
		if len(s) >= 3 && strings.HasPrefix(cand, s) && d > 1 {
			d = 2
		}
		if d < bestDist || (d == bestDist && best != "" && cand < best) {
			best, bestDist = cand, d
		}
	}
	if bestDist == 0 {
		return ""
	}
	return best
}

// editDistance counts the insertions, deletions, substitutions and swaps of
// two neighbouring letters that turn a into b: a swap is one slip of the
// fingers ("sned" is one from "send"), not two.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// Errors carry an exit code and hints; report prints them.

// cliError is an error with the exit code it should produce and hints that
// name the likely fix.
type cliError struct {
	code  int
	err   error
	hints []string
}

func (e *cliError) Error() string { return e.err.Error() }
func (e *cliError) Unwrap() error { return e.err }

// usageError is a bad invocation (exit 3).
func usageError(format string, a ...any) error {
	return &cliError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

// exitError gives err an exit code (and hints).
func exitError(code int, err error, hints ...string) error {
	return &cliError{code: code, err: err, hints: hints}
}

// withHint adds a hint line to err, keeping its exit code.
func withHint(err error, hint string) error {
	var ce *cliError
	if errors.As(err, &ce) {
		return &cliError{code: ce.code, err: ce.err, hints: append(append([]string{}, ce.hints...), hint)}
	}
	return &cliError{code: exitFailure, err: err, hints: []string{hint}}
}

// exitCodeOf maps an error to the process exit code.
func exitCodeOf(err error) int {
	if err == nil {
		return exitOK
	}
	var ce *cliError
	if errors.As(err, &ce) {
		return ce.code
	}
	var cfg *ConfigError
	if errors.As(err, &cfg) {
		return exitIO
	}
	return exitFailure
}

// report prints err (if any) the way every verb does and returns the code.
// Under --json, stdout still gets exactly one JSON document: the error's,
// unless the verb printed its own.
func (c *cli) report(err error) int {
	if err == nil {
		return exitOK
	}
	var silent silentExit
	if errors.As(err, &silent) {
		return int(silent)
	}
	var sig signalExit
	if errors.As(err, &sig) {
		if c.env.Raise != nil {
			c.env.Raise(syscall.Signal(sig))
		}
		return 128 + int(sig)
	}
	code := exitCodeOf(err)
	hints := errorHints(err)
	if code == exitUsage && len(hints) == 0 {
		hints = []string{"see 'claudemesh help'"}
		if c.cmd != nil {
			hints = []string{"see 'claudemesh help " + c.cmd.name + "'"}
		}
	}
	// Errors quote peers' names and brokers' words: never their control
	// characters.
	fmt.Fprintf(c.env.Stderr, "%s %s\n", c.paintStderr(colorRed, "claudemesh: error:"), terminalBlock(err.Error()))
	for _, h := range hints {
		fmt.Fprintf(c.env.Stderr, "hint: %s\n", terminalBlock(h))
	}
	if c.jsonMode() && !c.jsonPrinted {
		_ = c.printJSON(map[string]any{"ok": false, "error": err.Error(), "exit_code": code, "hints": nonNil(hints)})
	}
	return code
}

// errorHints are the hint lines err carries.
func errorHints(err error) []string {
	var hints []string
	var ce *cliError
	if errors.As(err, &ce) {
		hints = append(hints, ce.hints...)
	}
	var cfg *ConfigError
	if errors.As(err, &cfg) && errors.As(cfg.Err, new(*json.SyntaxError)) {
		hints = append(hints, "fix or move the file aside; nothing was changed")
	}
	return hints
}

// silentExit ends a verb with a code after it has printed its own output.
type silentExit int

func (s silentExit) Error() string { return fmt.Sprintf("exit %d", int(s)) }

// signalExit ends the process by a signal, as the child it ran died of it
// (launch); where the process cannot be killed by it, the exit code is
// 128 + the signal number, as a shell reports it.
type signalExit syscall.Signal

func (s signalExit) Error() string { return "killed by " + syscall.Signal(s).String() }

// Output.

const (
	colorRed    = "31"
	colorGreen  = "32"
	colorYellow = "33"
	colorDim    = "2"
	colorBold   = "1"
)

// colorOn: colour only on a terminal, without NO_COLOR, --no-color or TERM=dumb.
func (c *cli) colorOn() bool { return c.colorFor(c.env.StdoutTTY) }

// colorFor: colour on a stream that is (tty) or is not a terminal.
func (c *cli) colorFor(tty bool) bool {
	return tty && !c.global.noColor && c.env.Getenv("NO_COLOR") == "" && c.env.Getenv("TERM") != "dumb"
}

// paintStderr colours text bound for stderr, which may be a terminal when
// stdout is not, or the other way round.
func (c *cli) paintStderr(code, s string) string {
	return paintIf(c.colorFor(c.env.StderrTTY), code, s)
}

func (c *cli) paint(code, s string) string { return paintIf(c.colorOn(), code, s) }

func paintIf(on bool, code, s string) string {
	if !on {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

// jsonMode reports whether --json was given.
func (c *cli) jsonMode() bool { return c.global.json.on }

// printJSON writes v as one indented JSON document.
func (c *cli) printJSON(v any) error {
	c.jsonPrinted = true
	enc := json.NewEncoder(c.env.Stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// confirm asks a yes/no question on a terminal and reads the answer from
// stdin; without a terminal (or under --json) nothing is asked and the
// answer is no.
func (c *cli) confirm(question string) bool {
	if !c.env.StdinTTY || c.jsonMode() {
		return false
	}
	fmt.Fprintf(c.env.Stderr, "%s [y/N] ", question)
	line, _ := bufio.NewReader(c.env.Stdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}

// printf writes human output to stdout.
func (c *cli) printf(format string, a ...any) {
	fmt.Fprintf(c.env.Stdout, format, a...)
}

// warnf writes a warning to stderr.
func (c *cli) warnf(format string, a ...any) {
	fmt.Fprintf(c.env.Stderr, "%s %s\n", c.paintStderr(colorYellow, "claudemesh: warning:"), terminalBlock(fmt.Sprintf(format, a...)))
}

// infof writes an informational line to stderr (kept off stdout so that
// --json output and pipes stay clean).
func (c *cli) infof(format string, a ...any) {
	fmt.Fprintf(c.env.Stderr, "claudemesh: %s\n", fmt.Sprintf(format, a...))
}

func (c *cli) printVersion() error {
	if c.jsonMode() {
		return c.printJSON(map[string]string{"version": version})
	}
	c.printf("claudemesh %s\n", version)
	return nil
}

// Help.

// runHelp prints the help of the verb args name, or of the group its first
// word names; words after a verb's name (`help completions bash`) are the
// verb's own arguments and change nothing.
func runHelp(ctx context.Context, c *cli, args []string) error {
	if len(args) == 0 {
		return c.printHelp(nil)
	}
	cmd, _ := findCommand(c.commands, args)
	if cmd == nil {
		if text := groupHelp(c.commands, args[0]); text != "" && len(args) == 1 {
			c.printf("%s", text)
			return nil
		}
		return unknownVerbError(c.commands, args)
	}
	return c.printHelp(cmd)
}

// groupHelp is the usage of a group word such as "daemon" or "peer": its
// subcommands with their summaries; "" when word is no group.
func groupHelp(table []*command, word string) string {
	var rows []*command
	for _, cmd := range table {
		if strings.HasPrefix(cmd.name, word+" ") {
			rows = append(rows, cmd)
		}
	}
	if len(rows) == 0 {
		return ""
	}
	width := 0
	for _, cmd := range rows {
		width = max(width, len(synopsis(cmd)))
	}
	var b strings.Builder
	b.WriteString("Usage: claudemesh " + word + " <subcommand> [args] [flags]\n\nSubcommands:\n")
	for _, cmd := range rows {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, synopsis(cmd), cmd.summary)
	}
	b.WriteString("\nRun 'claudemesh help " + word + " <subcommand>' for its flags.\n")
	return b.String()
}

func (c *cli) printHelp(cmd *command) error {
	if cmd == nil {
		c.printf("%s", generalHelp(c.commands))
		return nil
	}
	c.printf("%s", verbHelp(cmd))
	return nil
}

func generalHelp(table []*command) string {
	var b strings.Builder
	b.WriteString("claudemesh " + version + " — Claude Code sessions that find each other and talk\n\n")
	b.WriteString("Usage: claudemesh <verb> [args] [flags]\n")
	width := 0
	for _, cmd := range table {
		width = max(width, len(synopsis(cmd)))
	}
	for _, g := range helpGroups {
		var rows []*command
		for _, cmd := range table {
			if cmd.group == g || (cmd.group == "" && g == groupOther) {
				rows = append(rows, cmd)
			}
		}
		if len(rows) == 0 {
			continue
		}
		b.WriteString("\n" + g + ":\n")
		for _, cmd := range rows {
			line := fmt.Sprintf("  %-*s  %s", width, synopsis(cmd), cmd.summary)
			if len(cmd.aliases) > 0 {
				line += " (also: " + strings.Join(cmd.aliases, ", ") + ")"
			}
			b.WriteString(line + "\n")
		}
	}
	b.WriteString("\nGlobal flags:\n")
	b.WriteString(flagHelp(globalFlagSet()))
	b.WriteString("\nRun 'claudemesh help <verb>' for a verb's flags.\n")
	return b.String()
}

func synopsis(cmd *command) string {
	if cmd.args == "" {
		return cmd.name
	}
	return cmd.name + " " + cmd.args
}

func globalFlagSet() *flagSet {
	fs := flag.NewFlagSet("global", flag.ContinueOnError)
	var g globalFlags
	g.register(fs)
	return fs
}

func verbHelp(cmd *command) string {
	var b strings.Builder
	b.WriteString("Usage: claudemesh " + synopsis(cmd) + " [flags]\n\n")
	b.WriteString(cmd.summary + "\n")
	if cmd.detail != "" {
		b.WriteString("\n" + strings.TrimSpace(cmd.detail) + "\n")
	}
	if len(cmd.aliases) > 0 {
		b.WriteString("\nAlso: " + strings.Join(cmd.aliases, ", ") + "\n")
	}
	fs, _ := newVerbFlagSet(cmd, &globalFlags{})
	global := globalFlagSet()
	own := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	fs.VisitAll(func(f *flag.Flag) {
		if global.Lookup(f.Name) == nil {
			own.Var(f.Value, f.Name, f.Usage)
		}
	})
	if hasFlags(own) {
		b.WriteString("\nFlags:\n")
		b.WriteString(flagHelp(own))
	}
	b.WriteString("\nGlobal flags:\n")
	b.WriteString(flagHelp(global))
	return b.String()
}

func hasFlags(fs *flagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// flagHelp lists flags one per line; single-letter names are folded into
// the long flag that shares their value.
func flagHelp(fs *flagSet) string {
	type row struct{ names, usage string }
	var rows []row
	byUsage := map[string]int{}
	fs.VisitAll(func(f *flag.Flag) {
		name := "--" + f.Name
		if len(f.Name) == 1 {
			name = "-" + f.Name
		}
		if !isBoolFlag(f) {
			name += " <" + valueName(f) + ">"
		}
		if i, ok := byUsage[f.Usage]; ok {
			if len(f.Name) == 1 {
				rows[i].names = name + ", " + rows[i].names
			} else {
				rows[i].names += ", " + name
			}
			return
		}
		byUsage[f.Usage] = len(rows)
		rows = append(rows, row{names: name, usage: f.Usage})
	})
	width := 0
	for _, r := range rows {
		width = max(width, len(r.names))
	}
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, r.names, r.usage)
	}
	return b.String()
}

func valueName(f *flag.Flag) string {
	name, _ := flag.UnquoteUsage(f)
	if name == "" || name == "value" {
		return "value"
	}
	return name
}
