// Tests of the embedded claudemesh skill: front matter, what it teaches, and
// its installation.
package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// skillFrontMatter returns the key: value lines between the leading "---"
// lines.
func skillFrontMatter(t *testing.T, doc string) map[string]string {
	t.Helper()
	rest, ok := strings.CutPrefix(doc, "---\n")
	if !ok {
		t.Fatal("SKILL.md does not start with front matter")
	}
	fm, _, ok := strings.Cut(rest, "\n---\n")
	if !ok {
		t.Fatal("SKILL.md front matter is not closed")
	}
	out := map[string]string{}
	for _, line := range strings.Split(fm, "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("front matter line %q is not key: value", line)
		}
		out[k] = v
	}
	return out
}

func TestSkillFrontMatter(t *testing.T) {
	fm := skillFrontMatter(t, string(skillMarkdown))
	if fm["name"] != "claudemesh" {
		t.Errorf("name = %q, want claudemesh", fm["name"])
	}
	if len(fm["description"]) < 40 || !strings.Contains(fm["description"], `<channel source="claudemesh">`) {
		t.Errorf("description %q should say when to use the skill, naming the channel reminders", fm["description"])
	}
	if len(fm) != 2 {
		t.Errorf("front matter keys = %v, want name and description", fm)
	}
}

// TestSkillExplainsEveryMetaKey keeps SKILL.md in step with the
// notifications: every attribute a reminder can carry is explained.
func TestSkillExplainsEveryMetaKey(t *testing.T) {
	body := "hi"
	keys := map[string]bool{}
	collect := func(n channelNotification) {
		for k := range n.Meta {
			keys[k] = true
		}
	}
	collect(channelFromMessage(MessageEvent{ID: "r", Topic: "t", ReplyToID: "x", Subtype: "s", Body: &body}))
	collect(channelFromSystem("peer_join", []byte(`{"event":"peer_returned","name":"n","pubkey":"p","groups":["g"],"lastSeenAt":"t","summary":"s"}`)))
	collect(welcomeChannel(welcomeInput{}))
	for k := range keys {
		if !strings.Contains(string(skillMarkdown), "`"+k+"`") {
			t.Errorf("SKILL.md does not explain the %s attribute", k)
		}
	}
}

func TestSkillTeachesTheRules(t *testing.T) {
	doc := string(skillMarkdown)
	for _, want := range []string{
		`<channel source="claudemesh"`,
		"**reply right away**", "`from_name`",
		`kind="welcome"`, `kind="system"`, "never reply", "Do not reply",
		"claudemesh peer list", "claudemesh send", "--priority now", "--reply-to", "--self", "'*'", "@frontend",
		"claudemesh inbox", "--unread", "inbox flush", "inbox delete",
		"claudemesh state set", "claudemesh remember", "claudemesh recall", "claudemesh forget",
		"claudemesh skill list", "claudemesh profile", "claudemesh whoami", "claudemesh status",
		"claudemesh kick", "claudemesh ban", "claudemesh unban", "claudemesh bans",
		"Do not poll the inbox", "Do not broadcast trivia", "Groups need the `@`", "matched whole",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("SKILL.md lacks %q", want)
		}
	}
}

// TestSkillStaysWithinTheProduct: the skill must not teach verbs or
// features this claudemesh does not have.
func TestSkillStaysWithinTheProduct(t *testing.T) {
	doc := strings.ToLower(string(skillMarkdown))
	for _, word := range []string{"vault", "task create", "schedule", "remind", "webhook", "vector", "graph query",
		"sql", "login", "check_messages", "mcp__", "topic create", "topic post", "file share", "bridge", "claudemesh.com"} {
		if regexp.MustCompile(`\b` + regexp.QuoteMeta(word) + `\b`).MatchString(doc) {
			t.Errorf("SKILL.md mentions %q, which claudemesh does not have", word)
		}
	}
	// Every `claudemesh <verb>` it shows as code is one of claudemesh's
	// verbs.
	verbs := map[string]bool{}
	for _, v := range []string{"init", "demo", "broker", "mesh", "invite", "join", "leave", "workspace", "launch", "mcp",
		"install", "uninstall", "peer", "peers", "send", "message", "inbox", "kick", "ban", "unban", "bans", "state",
		"remember", "recall", "forget", "skill", "profile", "whoami", "status", "doctor", "daemon", "completions", "help"} {
		verbs[v] = true
	}
	inline := regexp.MustCompile("`claudemesh ([a-z][a-z-]*)")
	inFence := false
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
			continue
		}
		var used []string
		if inFence {
			if rest, ok := strings.CutPrefix(line, "claudemesh "); ok {
				used = append(used, strings.Fields(rest)[0])
			}
		} else {
			for _, m := range inline.FindAllStringSubmatch(line, -1) {
				used = append(used, m[1])
			}
		}
		for _, v := range used {
			if !verbs[v] {
				t.Errorf("SKILL.md uses `claudemesh %s`, which is not a verb", v)
			}
		}
	}
}

func TestInstallSkillFile(t *testing.T) {
	home := t.TempDir()
	path := skillInstallPath(home)
	if want := filepath.Join(home, ".claude", "skills", "claudemesh", "SKILL.md"); path != want {
		t.Fatalf("skillInstallPath = %q, want %q", path, want)
	}
	for _, want := range []string{fileAdded, fileUnchanged} {
		if got, err := installSkillFile(home); err != nil || got != want {
			t.Fatalf("installSkillFile = %q, %v; want %q", got, err, want)
		}
	}
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := installSkillFile(home); err != nil || got != fileUpdated {
		t.Fatalf("installSkillFile over an old copy = %q, %v; want %q", got, err, fileUpdated)
	}
	data, err := os.ReadFile(path)
	if err != nil || string(data) != string(skillMarkdown) {
		t.Fatalf("installed skill differs from the embedded one: %v", err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("skill mode = %v, want 0644", st.Mode().Perm())
	}
	if removed, err := uninstallSkillFile(home); !removed || err != nil {
		t.Fatalf("uninstallSkillFile = %v, %v", removed, err)
	}
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Errorf("empty skill dir left behind: %v", err)
	}
	if removed, err := uninstallSkillFile(home); removed || err != nil {
		t.Fatalf("second uninstallSkillFile = %v, %v; want false, nil", removed, err)
	}
	// A file the user put beside the skill keeps its directory.
	if _, err := installSkillFile(home); err != nil {
		t.Fatal(err)
	}
	mine := filepath.Join(filepath.Dir(path), "notes.md")
	if err := os.WriteFile(mine, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := uninstallSkillFile(home); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mine); err != nil {
		t.Errorf("user's file was removed: %v", err)
	}
}
