// Small generic helpers for plain values, used by every layer: option
// defaults and slices that encode as JSON arrays.
package main

import "time"

// setDefault puts d in *v unless *v is positive: options structs leave a
// number at zero to mean "the default", so the zero value of an options
// struct is always a working configuration.
func setDefault[T int | int64 | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}
