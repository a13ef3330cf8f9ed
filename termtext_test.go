// Tests of the terminal escaping of other people's text, alone and in the
// verbs that print it.
package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func TestTerminalEscaping(t *testing.T) {
	for _, tc := range []struct {
		name, in, line, block string
	}{
		{"plain text is left alone", "héllo wörld", "héllo wörld", "héllo wörld"},
		{"ANSI colour", "\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`, `\x1b[31mred\x1b[0m`},
		{"bell", "ding\a", `ding\x07`, `ding\x07`},
		{"OSC title and clipboard", "\x1b]0;pwned\x07\x1b]52;c;aGk=\x07", `\x1b]0;pwned\x07\x1b]52;c;aGk=\x07`, `\x1b]0;pwned\x07\x1b]52;c;aGk=\x07`},
		{"carriage return overwrites a line", "ok\rfake", `ok\x0dfake`, `ok\x0dfake`},
		{"lines and tabs", "a\n\tb", `a\x0a\x09b`, "a\n\tb"},
		{"DEL", "x\x7f", `x\x7f`, `x\x7f`},
		{"C1 CSI", "x\u009b31m", `x\u009b31m`, `x\u009b31m`},
		{"a byte that is not UTF-8", "caf\xe9", `caf\xe9`, `caf\xe9`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := terminalLine(tc.in); got != tc.line {
				t.Errorf("terminalLine(%q) = %q, want %q", tc.in, got, tc.line)
			}
			if got := terminalBlock(tc.in); got != tc.block {
				t.Errorf("terminalBlock(%q) = %q, want %q", tc.in, got, tc.block)
			}
		})
	}
}

// A peer's name, summary and message reach the terminal escaped in
// `inbox` and `peer list`; --json keeps them as they came.
func TestVerbsEscapePeersControlCharacters(t *testing.T) {
	f := newMsgFixture(t, nil)
	nasty := "\x1b]0;pwned\x07\x1b[31mred\x1b[0m"
	evil := registerTestSession(t, f.d2, f.bob, "bob"+nasty)
	if _, err := callIPC(context.Background(), evil.cl, apiProfile, ProfileRequest{Summary: ptr("busy" + nasty)}); err != nil {
		t.Fatal(err)
	}
	streamMine := subscribe(t, f.d1, "")
	if _, err := callIPC(context.Background(), evil.cl, apiSend, SendRequest{To: f.me.Pubkey, Message: "hello" + nasty + "\nsecond line",
		WaitMs: int(testWait.Milliseconds())}); err != nil {
		t.Fatal(err)
	}
	streamMine.next(t, "bob's message", messageWith("hello"+nasty+"\nsecond line"))
	env := f.h1.env()

	for _, argv := range [][]string{{"inbox"}, {"peer", "list"}} {
		r := runCLI(t, env, argv...)
		if r.code != 0 || strings.ContainsAny(r.stdout+r.stderr, "\x1b\x07") || !strings.Contains(r.stdout, `\x1b]0;pwned\x07`) {
			t.Fatalf("claudemesh %q = %d, control characters reach the terminal or are not shown escaped:\n%q", argv, r.code, r.stdout)
		}
	}
	r := runCLI(t, env, "inbox", "--json")
	var items []inboxItem
	if err := json.Unmarshal([]byte(r.stdout), &items); err != nil || len(items) != 1 || deref(items[0].Body) != "hello"+nasty+"\nsecond line" ||
		items[0].SenderName != "bob"+nasty {
		t.Fatalf("inbox --json = %d %v\n%s", r.code, err, r.stdout)
	}
	r = runCLI(t, env, "peer", "list", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `busy\u001b]0;pwned\u0007`) {
		t.Fatalf("peer list --json does not keep the raw summary:\n%s", r.stdout)
	}
}
