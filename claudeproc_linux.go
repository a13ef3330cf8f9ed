// The parent chain on Linux: /proc/<pid>/stat for the parent and
// /proc/<pid>/cmdline for the command line, plain file reads.
package main

import (
	"bytes"
	"os"
	"strconv"
)

func newProcLookup() func(pid int) (procEntry, bool) {
	return func(pid int) (procEntry, bool) {
		dir := "/proc/" + strconv.Itoa(pid)
		stat, err := os.ReadFile(dir + "/stat")
		if err != nil {
			return procEntry{}, false
		}
		ppid, ok := statParent(stat)
		if !ok {
			return procEntry{}, false
		}
		e := procEntry{ppid: ppid}
		if cmd, err := os.ReadFile(dir + "/cmdline"); err == nil {
			for _, a := range bytes.Split(bytes.TrimRight(cmd, "\x00"), []byte{0}) {
				e.argv = append(e.argv, string(a))
			}
		}
		return e, true
	}
}

// statParent extracts field 4 (ppid), counting from the last ')' as
// statStartTime does.
func statParent(stat []byte) (int, bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	fields := bytes.Fields(stat[i+1:])
	if len(fields) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(string(fields[1]))
	return ppid, err == nil
}
