//go:build !linux

// Child processes that must not outlive the process that started them.
package main

import "os/exec"

// dieWithParent is best effort: without Linux's parent-death signal a child
// is stopped only by the paths that end it explicitly.
func dieWithParent(cmd *exec.Cmd) {}
