package main

import (
	"regexp"
	"strings"
	"testing"
)

func TestSafetyNumber(t *testing.T) {
	a, b := strings.Repeat("1", 64), strings.Repeat("2", 64)
	// Pinned: SHA-512 of "claudemesh-safety-number|1|<lower key>|<higher key>",
	// six 5-byte big-endian groups mod 100000.
	if got, want := safetyNumber(a, b), "23615 96826 88571 07084 13926 93539"; got != want {
		t.Fatalf("safetyNumber = %q, want %q", got, want)
	}
	if safetyNumber(b, a) != safetyNumber(a, b) || safetyNumber(strings.ToUpper(a), b) != safetyNumber(a, b) {
		t.Fatal("both sides must see the same number, in any order and case")
	}
	c := strings.Repeat("3", 64)
	if safetyNumber(a, c) == safetyNumber(a, b) || safetyNumber(b, c) == safetyNumber(a, c) {
		t.Fatal("another key must give another number")
	}
	for i := 0; i < 20; i++ {
		n := safetyNumber(mustNewKeypair().PublicHex(), mustNewKeypair().PublicHex())
		if !regexp.MustCompile(`^\d{5}( \d{5}){5}$`).MatchString(n) {
			t.Fatalf("safety number %q is not six groups of five digits", n)
		}
	}
}
