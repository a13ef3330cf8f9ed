//go:build !linux

// Process start times where there is no /proc (macOS, the BSDs): one `ps`
// for the whole batch, so a sweep costs one child process whatever the
// number of sessions.
package main

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

func processStartTimes(pids []int) map[int]string {
	out := make(map[int]string, len(pids))
	if len(pids) == 0 {
		return out
	}
	list := make([]string, len(pids))
	for i, p := range pids {
		list[i] = strconv.Itoa(p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// A pid that is gone makes ps exit non-zero but still print the others.
	data, _ := exec.CommandContext(ctx, "ps", "-o", "pid=,lstart=", "-p", strings.Join(list, ",")).Output()
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		out[pid] = strings.Join(f[1:], " ")
	}
	return out
}
