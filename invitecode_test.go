package main

import (
	"errors"
	"strings"
	"testing"
)

func TestInviteCodes(t *testing.T) {
	for i := 0; i < 50; i++ {
		code := newInviteCode()
		if got, err := normalizeInviteCode(displayInviteCode(code)); err != nil || got != code {
			t.Fatalf("code %s reads back as %s, %v", code, got, err)
		}
	}
	cases := []struct{ in, want string }{
		{"K7M2X-Q9PRT", "K7M2XQ9PRT"},
		{" k7m2x q9prt ", "K7M2XQ9PRT"},
		{"k7m2x-q9prt", "K7M2XQ9PRT"},
		{"IL0O0-11111", "1100011111"}, // the letters read as digits
		{"K7M2XQ9PR", ""},             // too short
		{"K7M2XQ9PRTT", ""},           // too long
		{"K7M2X-Q9PRU", ""},           // U is not a symbol
		{"ic://join/abc", ""},
	}
	for _, tc := range cases {
		got, err := normalizeInviteCode(tc.in)
		if tc.want == "" {
			if !errors.Is(err, errNotInviteCode) {
				t.Errorf("normalizeInviteCode(%q) = %q, %v; want not a code", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("normalizeInviteCode(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if d := displayInviteCode("K7M2XQ9PRT"); d != "K7M2X-Q9PRT" || strings.ContainsAny(d, "ILOU") {
		t.Errorf("displayInviteCode = %q", d)
	}
}
