// Process start times on Linux, from /proc/<pid>/stat: plain file reads,
// no child process, so a sweep over any number of sessions stays cheap.
package main

import (
	"bytes"
	"os"
	"strconv"
)

// processStartTimes returns an opaque start-time token per live pid; a pid
// that is gone is absent from the map.
func processStartTimes(pids []int) map[int]string {
	out := make(map[int]string, len(pids))
	for _, pid := range pids {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		if st, ok := statStartTime(data); ok {
			out[pid] = st
		}
	}
	return out
}

// statStartTime extracts field 22 (starttime, in clock ticks since boot).
// The command name (field 2) is in parentheses and may itself contain
// spaces or parentheses, so fields are counted from the last ')'.
func statStartTime(stat []byte) (string, bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return "", false
	}
	fields := bytes.Fields(stat[i+1:])
	// fields[0] is field 3 (state); starttime is field 22.
	if len(fields) < 20 {
		return "", false
	}
	return string(fields[19]), true
}
