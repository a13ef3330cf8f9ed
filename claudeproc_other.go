//go:build !linux

// The parent chain where there is no /proc: one `ps` listing of every
// process, taken at the first lookup and walked in memory.
package main

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

func newProcLookup() func(pid int) (procEntry, bool) {
	var once sync.Once
	table := map[int]procEntry{}
	return func(pid int) (procEntry, bool) {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			data, _ := exec.CommandContext(ctx, "ps", "-A", "-o", "pid=,ppid=,args=").Output()
			for _, line := range strings.Split(string(data), "\n") {
				f := strings.Fields(line)
				if len(f) < 3 {
					continue
				}
				p, err1 := strconv.Atoi(f[0])
				pp, err2 := strconv.Atoi(f[1])
				if err1 == nil && err2 == nil {
					table[p] = procEntry{ppid: pp, argv: f[2:]}
				}
			}
		})
		e, ok := table[pid]
		return e, ok
	}
}
