// The claudemesh skill: skill/SKILL.md, embedded in the binary. It teaches
// the model in a Claude Code session how to read <channel source="claudemesh">
// reminders, when to answer them, and the CLI verbs; `claudemesh install`
// writes it where Claude Code looks for skills.
package main

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

//go:embed skill/SKILL.md
var skillMarkdown []byte

// skillInstallPath is where Claude Code finds the skill for this user.
func skillInstallPath(home string) string {
	return filepath.Join(home, ".claude", "skills", "claudemesh", "SKILL.md")
}

// installSkillFile writes the embedded skill under home (0644: a skill is
// not a secret) and reports added, updated or unchanged.
func installSkillFile(home string) (string, error) {
	return installFile(skillInstallPath(home), skillMarkdown, 0o644)
}

// uninstallSkillFile removes the skill and its directory when nothing else
// is left in it; removed is false when it was not installed.
func uninstallSkillFile(home string) (removed bool, err error) {
	path := skillInstallPath(home)
	if err := os.Remove(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("removing %s: %w", path, err)
	}
	// Only an empty directory is removed: files a user added stay.
	_ = os.Remove(filepath.Dir(path))
	return true, nil
}
