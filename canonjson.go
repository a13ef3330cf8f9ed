// Canonical JSON for request fingerprints. It must produce the same bytes as
// JavaScript's JSON.stringify over an object rebuilt with sorted keys, since
// claudemesh peers compute fingerprints that way: keys sorted by UTF-16 code
// units, except that array-index keys ("0", "7", "42") come first in numeric
// order because JavaScript objects always enumerate them first.
package main

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// canonicalJSON encodes v (as produced by encoding/json into any, or plain
// Go maps, slices and scalars) in the canonical form.
func canonicalJSON(v any) (string, error) {
	var b strings.Builder
	if err := writeCanonical(&b, v); err != nil {
		return "", err
	}
	return b.String(), nil
}

func writeCanonical(b *strings.Builder, v any) error {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case string:
		writeJSString(b, x)
	case float64:
		writeJSNumber(b, x)
	case int:
		writeJSNumber(b, float64(x))
	case int64:
		writeJSNumber(b, float64(x))
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return fmt.Errorf("canonical json: bad number %q", x)
		}
		writeJSNumber(b, f)
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeCanonical(b, e); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case map[string]any:
		b.WriteByte('{')
		for i, k := range jsObjectKeyOrder(x) {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSString(b, k)
			b.WriteByte(':')
			if err := writeCanonical(b, x[k]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case json.RawMessage:
		var decoded any
		dec := json.NewDecoder(strings.NewReader(string(x)))
		dec.UseNumber()
		if err := dec.Decode(&decoded); err != nil {
			return fmt.Errorf("canonical json: %w", err)
		}
		return writeCanonical(b, decoded)
	default:
		return fmt.Errorf("canonical json: unsupported type %T", v)
	}
	return nil
}

// jsObjectKeyOrder returns the keys in the order JSON.stringify would emit
// them for an object whose keys were inserted in sorted order.
func jsObjectKeyOrder(m map[string]any) []string {
	var indexKeys, other []string
	for k := range m {
		if isArrayIndexKey(k) {
			indexKeys = append(indexKeys, k)
		} else {
			other = append(other, k)
		}
	}
	sort.Slice(indexKeys, func(i, j int) bool {
		a, _ := strconv.ParseUint(indexKeys[i], 10, 64)
		c, _ := strconv.ParseUint(indexKeys[j], 10, 64)
		return a < c
	})
	sort.Slice(other, func(i, j int) bool { return lessUTF16(other[i], other[j]) })
	return append(indexKeys, other...)
}

// isArrayIndexKey: the canonical decimal form of an integer in [0, 2^32-2].
func isArrayIndexKey(k string) bool {
	if k == "" || (len(k) > 1 && k[0] == '0') {
		return false
	}
	n, err := strconv.ParseUint(k, 10, 64)
	return err == nil && n < math.MaxUint32
}

// lessUTF16 compares strings by UTF-16 code units, as Array.prototype.sort does.
func lessUTF16(a, b string) bool {
	ua, ub := utf16.Encode([]rune(a)), utf16.Encode([]rune(b))
	for i := 0; i < len(ua) && i < len(ub); i++ {
		if ua[i] != ub[i] {
			return ua[i] < ub[i]
		}
	}
	return len(ua) < len(ub)
}

// writeJSNumber formats like Number.prototype.toString; encoding/json already
// follows the ECMAScript rules for float64.
func writeJSNumber(b *strings.Builder, f float64) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		b.WriteString("null")
		return
	}
	out, _ := json.Marshal(f)
	b.Write(out)
}

// writeJSString quotes s as JSON.stringify does: only quote, backslash and
// control characters are escaped; everything else is written as is.
func writeJSString(b *strings.Builder, s string) {
	const hexDigits = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hexDigits[r>>4])
			b.WriteByte(hexDigits[r&0xF])
		case r == utf8.RuneError && size == 1:
			// Invalid UTF-8 cannot come from JSON input; mirror what a JS
			// string decoded from these bytes would hold.
			b.WriteString("\ufffd")
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	b.WriteByte('"')
}
