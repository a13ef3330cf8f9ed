// Character-class checks for the short names claudemesh validates: hex
// keys and signatures, mesh slugs, group names, meta keys, completion words,
// transcript and log file names. Plain loops rather than package-level
// regexps, which compile at every process start — and every CLI invocation
// is a process start (a warm `claudemesh send` is budgeted at 5 ms).
package main

import "strings"

func isAlnumByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isLowerAlnumByte(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func isDigitByte(c byte) bool { return c >= '0' && c <= '9' }

func isHexByte(c byte) bool { return isDigitByte(c) || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func isLowerHexByte(c byte) bool { return isDigitByte(c) || c >= 'a' && c <= 'f' }

// isLowerHex reports whether s is lowercase hex (keys on the wire).
func isLowerHex(s string) bool { return matchesClass(s, 0, -1, isLowerHexByte, isLowerHexByte) }

// isHexOfLen reports whether s is n hex digits in either case, as
// libsodium-based peers may send them.
func isHexOfLen(s string, n int) bool { return matchesClass(s, n, n, isHexByte, isHexByte) }

// orBytes extends a class with a few punctuation bytes.
func orBytes(class func(byte) bool, extra string) func(byte) bool {
	return func(c byte) bool { return class(c) || strings.IndexByte(extra, c) >= 0 }
}

// matchesClass reports whether s is minLen..maxLen bytes (maxLen < 0: no
// limit), its first byte in first and every other in rest.
func matchesClass(s string, minLen, maxLen int, first, rest func(byte) bool) bool {
	if len(s) < minLen || (maxLen >= 0 && len(s) > maxLen) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if i == 0 && !first(s[i]) || i > 0 && !rest(s[i]) {
			return false
		}
	}
	return true
}

// validSlug is claudemesh's rule for mesh slugs: ^[a-z0-9][a-z0-9-]{1,31}$.
func validSlug(s string) bool {
	return matchesClass(s, 2, 32, isLowerAlnumByte, orBytes(isLowerAlnumByte, "-"))
}

// isUUID: ^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		dash := i == 8 || i == 13 || i == 18 || i == 23
		if dash != (s[i] == '-') || !dash && !isHexByte(s[i]) {
			return false
		}
	}
	return true
}

// isKeyPrefix: 4 to 64 hex characters, what a person types for a key.
func isKeyPrefix(s string) bool { return matchesClass(s, 4, 64, isHexByte, isHexByte) }

// validInviteID is what an invite id may be: it goes into the owner's
// signed capability, so never a '|'.
func validInviteID(s string) bool {
	return matchesClass(s, 8, 64, isAlnumByte, orBytes(isAlnumByte, "._-"))
}
