// Text from other people made safe to print on a terminal.
//
// Policy: human output never passes a peer's control characters to the
// terminal. A name, summary or message can hold ANSI colour codes, a bell,
// or OSC sequences that set the window title or write the clipboard; each
// control character (C0, DEL, C1) and each byte that is not UTF-8 is shown
// as a visible escape such as \x1b instead. --json output keeps the text as
// it came: it is for programs, which JSON-encode it.
package main

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// terminalLine is s for one line of human output: every control character,
// newlines and tabs included, is escaped.
func terminalLine(s string) string { return escapeControls(s, false) }

// terminalBlock is s for a block of human output (a message body): lines
// and tabs stay, every other control character is escaped.
func terminalBlock(s string) string { return escapeControls(s, true) }

func escapeControls(s string, keepLines bool) string {
	if !needsEscape(s, keepLines) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case keepLines && (r == '\n' || r == '\t'):
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r <= 0x9f:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// needsEscape reports whether s has anything escapeControls changes.
func needsEscape(s string, keepLines bool) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r < 0x20 && !(keepLines && (r == '\n' || r == '\t')) || r == 0x7f || r >= 0x80 && r <= 0x9f {
			return true
		}
		i += size
	}
	return false
}
