// Safety numbers: a short fingerprint of two member keys that two people
// read to each other over a channel they trust (in person, a call) to know
// that each holds the key the other's machine talks to. Both sides compute
// the same digits, whoever runs it: the keys are taken in sorted order.
//
// The number is 30 decimal digits in six groups of five, from SHA-512 over
// a domain-separated line of the two keys: each group is five bytes of the
// digest as a big-endian number, modulo 100000. Thirty digits hold about
// 100 bits: finding a key that shows the same number as someone else's is
// out of reach.
package main

import (
	"crypto/sha512"
	"fmt"
	"strings"
)

// safetyNumber is the safety number of two member keys (hex).
func safetyNumber(keyA, keyB string) string {
	a, b := strings.ToLower(keyA), strings.ToLower(keyB)
	if b < a {
		a, b = b, a
	}
	sum := sha512.Sum512([]byte("claudemesh-safety-number|1|" + a + "|" + b))
	groups := make([]string, 6)
	for i := range groups {
		var n uint64
		for _, c := range sum[i*5 : i*5+5] {
			n = n<<8 | uint64(c)
		}
		groups[i] = fmt.Sprintf("%05d", n%100000)
	}
	return strings.Join(groups, " ")
}
