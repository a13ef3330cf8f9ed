// Child processes that must not outlive the process that started them.
package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill cmd's process when this one exits, even
// by a panic or SIGKILL, so a load run that dies leaves no broker behind
// holding its ports and data directory.
func dieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
