// Small helpers for plain values, used by every layer: option defaults,
// slices that encode as JSON arrays, and ids shortened for display.
package main

import (
	"os"
	"strconv"
	"time"
)

// setDefault puts d in *v unless *v is positive: options structs leave a
// number at zero to mean "the default", so the zero value of an options
// struct is always a working configuration.
func setDefault[T int | int64 | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

// nonNil is s, or an empty slice for nil, so that it encodes as [].
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// shortID is the first 8 characters of an id or key: enough to tell
// sessions and peers apart on a line.
func shortID(s string) string {
	if len(s) > 8 {
		return s[:8]
	}
	return s
}

// shortKey is a key cut to 16 characters and an ellipsis, for messages that
// name a key a person may want to match against a listing.
func shortKey(k string) string {
	if len(k) > 16 {
		return k[:16] + "…"
	}
	return k
}

// hostnameOr is this machine's host name, else def.
func hostnameOr(def string) string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return def
}

// plural is "1 thing" or "n things".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// isoTime formats t as JavaScript's toISOString does (UTC, milliseconds).
func isoTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}
