// The README stays in step: the pasted help is generated, the file map
// names every file, and the metrics table lists every series.
package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	readmeHelpBegin = "<!-- help:begin"
	readmeHelpEnd   = "<!-- help:end -->"
)

// readmeHelpBlock splits the README around its pasted `claudemesh help`:
// the text before the block's fence, the block, the text after it.
func readmeHelpBlock(t *testing.T, readme string) (before, block, after string) {
	t.Helper()
	i := strings.Index(readme, readmeHelpBegin)
	j := strings.Index(readme, readmeHelpEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md has no %s … %s block", readmeHelpBegin, readmeHelpEnd)
	}
	start := i + strings.Index(readme[i:], "\n```text\n") + len("\n```text\n")
	end := strings.LastIndex(readme[:j], "```\n")
	if start < i || end < start {
		t.Fatal("the help block in README.md is not a ```text fence")
	}
	return readme[:start], readme[start:end], readme[end:]
}

// The verb list in the README is `claudemesh help`, so it never drifts.
func TestREADMEHelpIsGenerated(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	before, block, after := readmeHelpBlock(t, string(data))
	want := generalHelp(commands)
	if *updateGolden {
		if err := os.WriteFile("README.md", []byte(before+want+after), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if block != want {
		t.Errorf("README.md's verb list differs from 'claudemesh help' (go test -run README -update . rewrites it)\n--- README ---\n%s\n--- help ---\n%s", block, want)
	}
}

// Every source file has its line in the README's file map.
func TestREADMEFileMap(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		if !strings.Contains(string(data), "`"+f+"`") {
			t.Errorf("README.md's file map does not mention %s", f)
		}
	}
}

// Every series the broker's /metrics serves has its row in the README.
func TestREADMEListsEveryMetric(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, url := startTestBroker(t)
	base, _ := brokerHTTPBase(url)
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	n := 0
	for _, line := range strings.Split(string(body), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 3 || fields[0] != "#" || fields[1] != "TYPE" {
			continue
		}
		n++
		if !strings.Contains(string(data), "| `"+fields[2]+"`") && !strings.Contains(string(data), "| `"+fields[2]+"{") {
			t.Errorf("README.md's metrics table does not list %s", fields[2])
		}
	}
	if n == 0 {
		t.Fatalf("/metrics served no series:\n%s", body)
	}
}
