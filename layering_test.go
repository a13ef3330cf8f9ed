// The layers of the flat package: every production file belongs to one, and
// a file may use only names declared in its own layer or a lower one. The
// layers, lowest first:
//
//	wire      values, keys and signatures, frames, config and paths
//	storage   SQLite and the broker's store
//	broker    the broker
//	daemon    the daemon: links, sessions, outbox, inbox, the IPC contract and
//	          its server
//	client    the daemon's clients: the IPC client and the event stream reader
//	mcp       the MCP stdio server
//	cli       verbs, launch, install, demo, the entry point
//
// The test parses the package with go/parser (no type checking): a name a
// file uses but does not declare itself is looked up among the package's
// top-level declarations.
package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

var layerNames = []string{"wire", "storage", "broker", "daemon", "client", "mcp", "cli"}

// fileLayers places the files a prefix rule does not.
var fileLayers = map[string]string{
	"values.go": "wire", "version.go": "wire", "charclass.go": "wire", "canonjson.go": "wire", "termtext.go": "wire",
	"crypto.go": "wire", "protocol.go": "wire", "invite.go": "wire", "paths.go": "wire",
	"config.go": "wire", "procstart_linux.go": "wire", "procstart_other.go": "wire", "childproc_linux.go": "wire", "childproc_other.go": "wire",
	"grants.go": "wire", "memberrequest.go": "wire", "audit.go": "wire", "invitecode.go": "wire",
	"safetynumber.go": "wire",

	"sqlite.go": "storage", "brokerstore.go": "storage", "brokerstore_sqlite.go": "storage",

	"link.go": "daemon", "inbound.go": "daemon", "events.go": "daemon", "session.go": "daemon",
	"sessionkeys.go": "daemon", "outbox.go": "daemon", "drain.go": "daemon", "inbox.go": "daemon",
	"target.go": "daemon", "meshops.go": "daemon", "ipc.go": "daemon", "daemon.go": "daemon",
	"daemon_broker.go": "daemon", "api.go": "daemon", "sendernames.go": "daemon", "storeadopt.go": "daemon",
	"surfaced.go": "daemon", "members.go": "daemon",
	"receiptsend.go": "daemon", "ladder.go": "daemon", "daemonmetrics.go": "daemon", "unsurfaced.go": "daemon",
	"history.go": "daemon", "ui.go": "daemon",
	"sessionstate.go": "daemon", "hookroutes.go": "daemon", "sessionpresence.go": "daemon",
	"claudeproc.go": "wire", "claudeproc_linux.go": "wire", "claudeproc_other.go": "wire",

	"ipcclient.go": "client", "ipctransport.go": "client", "sseclient.go": "client",

	"channel.go": "mcp", "hookframe.go": "mcp",

	"main.go": "cli", "launch.go": "cli", "install.go": "cli", "service.go": "cli", "demo.go": "cli",
	"doctor.go": "cli", "bench.go": "cli", "bench_broker.go": "cli", "hook.go": "cli", "claudesettings.go": "cli", "doctorclaude.go": "cli", "completions.go": "cli", "skill.go": "cli",
}

// layerOf is a file's layer: its entry in fileLayers, else its prefix.
func layerOf(file string) (int, bool) {
	name, ok := fileLayers[file]
	switch {
	case ok:
	case strings.HasPrefix(file, "brokerstore"):
		name = "storage"
	case strings.HasPrefix(file, "broker"):
		name = "broker"
	case strings.HasPrefix(file, "mcp"):
		name = "mcp"
	case strings.HasPrefix(file, "cli"):
		name = "cli"
	default:
		return 0, false
	}
	for i, n := range layerNames {
		if n == name {
			return i, true
		}
	}
	return 0, false
}

// layerViolation is one use of a higher layer's name.
type layerViolation struct {
	file, name, declFile string
	line                 int
}

func (v layerViolation) String() string {
	return fmt.Sprintf("%s:%d uses %s, declared in %s", v.file, v.line, v.name, v.declFile)
}

// layerViolations parses the production files of dir and returns every use
// of a name declared in a higher layer, and the files no layer claims.
func layerViolations(t *testing.T, dir string) (bad []layerViolation, unplaced []string) {
	t.Helper()
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]*ast.File{}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = f
	}
	declaredIn := map[string]string{} // top-level name → file
	for name, f := range files {
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil {
					declaredIn[d.Name.Name] = name
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						declaredIn[s.Name.Name] = name
					case *ast.ValueSpec:
						for _, n := range s.Names {
							declaredIn[n.Name] = name
						}
					}
				}
			}
		}
	}
	for name, f := range files {
		layer, ok := layerOf(name)
		if !ok {
			unplaced = append(unplaced, name)
			continue
		}
		for _, id := range externalNames(f) {
			declFile, ok := declaredIn[id.Name]
			if !ok || declFile == name {
				continue
			}
			if declLayer, _ := layerOf(declFile); declLayer > layer {
				bad = append(bad, layerViolation{file: name, line: fset.Position(id.Pos()).Line, name: id.Name, declFile: declFile})
			}
		}
	}
	sort.Slice(bad, func(i, j int) bool { return bad[i].String() < bad[j].String() })
	sort.Strings(unplaced)
	return bad, unplaced
}

// externalNames is every identifier f uses that f does not declare: not a
// selector's field or method, not a struct literal's field key, not a
// method's own name, not a local.
func externalNames(f *ast.File) []*ast.Ident {
	skip := map[*ast.Ident]bool{f.Name: true} // the package clause
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.SelectorExpr:
			skip[n.Sel] = true
		case *ast.KeyValueExpr:
			if id, ok := n.Key.(*ast.Ident); ok {
				skip[id] = true // a field name (a map keyed by a constant is missed)
			}
		case *ast.Field:
			for _, id := range n.Names {
				skip[id] = true
			}
		case *ast.FuncDecl:
			if n.Recv != nil {
				skip[n.Name] = true // a method's name is not in the package scope
			}
		case *ast.LabeledStmt:
			skip[n.Label] = true
		case *ast.BranchStmt:
			if n.Label != nil {
				skip[n.Label] = true
			}
		}
		return true
	})
	var out []*ast.Ident
	ast.Inspect(f, func(n ast.Node) bool {
		id, ok := n.(*ast.Ident)
		if ok && !skip[id] && id.Obj == nil && id.Name != "_" {
			out = append(out, id)
		}
		return true
	})
	return out
}

func TestLayering(t *testing.T) {
	bad, unplaced := layerViolations(t, ".")
	for _, f := range unplaced {
		t.Errorf("%s belongs to no layer: add it to fileLayers in layering_test.go (layers: %s)", f, strings.Join(layerNames, " < "))
	}
	for _, v := range bad {
		t.Errorf("%s: a lower layer may not use a higher one; move the name down or the code up", v)
	}
}

// The test catches what it is for: a lower file made to use a name of a
// higher one fails it.
func TestLayeringCatchesUpwardUse(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("crypto.go", "package main\n\nfunc sign() string { return cliBanner() + version }\n")
	write("cli.go", "package main\n\nfunc cliBanner() string { return \"x\" }\n")
	write("version.go", "package main\n\nconst version = \"1\"\n")
	write("stray.go", "package main\n")
	bad, unplaced := layerViolations(t, dir)
	if len(bad) != 1 || bad[0].file != "crypto.go" || bad[0].name != "cliBanner" || bad[0].declFile != "cli.go" {
		t.Fatalf("violations = %v, want crypto.go using cliBanner from cli.go", bad)
	}
	if len(unplaced) != 1 || unplaced[0] != "stray.go" {
		t.Fatalf("unplaced = %v, want [stray.go]", unplaced)
	}
}
