// Shared state, memory, skills and profile verbs. Each goes through the
// daemon when it can and otherwise straight to the mesh's broker (the cold
// path), except profile: a profile lives on a live connection, so changing
// it from a throw-away connection would do nothing, and it needs the daemon.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// State.

func setupStateGet(fs *flagSet) runFunc {
	var mesh string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) != 1 {
			return usageError("usage: claudemesh state get <key>")
		}
		key := args[0]
		var entry *MeshRow[StateEntry]
		err := c.warmOrCold(ctx, mesh, func(cl *DaemonClient) error {
			resp, err := callIPC(ctx, cl, apiState, StateQuery{Key: &key, Mesh: mesh})
			var ie *IPCError
			if errors.As(err, &ie) && ie.Code == "state_not_found" {
				return c.stateNotSet(key)
			}
			if err != nil {
				return ipcFailure(err)
			}
			entry = resp.State
			return nil
		}, func(m Mesh, cl *ColdLink) error {
			raw, err := coldRequest(ctx, cl, GetStateFrame{Type: frameGetState, Key: key}, frameStateResult)
			if err != nil {
				return err
			}
			var r StateResultFrame
			if err := json.Unmarshal(raw, &r); err != nil {
				return err
			}
			if !stateMissing(r.StateEntry) {
				entry = ptr(meshRowOf(r.StateEntry, m.Slug))
			}
			return nil
		})
		if err != nil {
			return err
		}
		if entry == nil {
			return c.stateNotSet(key)
		}
		if c.jsonMode() {
			return c.printJSON(entry)
		}
		e := entry.Row
		c.printf("%s = %s\n", key, terminalLine(compactJSON(e.Value)))
		c.printf("  set by %s at %s (%s)\n", terminalLine(e.UpdatedBy), terminalLine(e.UpdatedAt), entry.Mesh)
		return nil
	}
}

func (c *cli) stateNotSet(key string) error {
	if c.jsonMode() {
		_ = c.printJSON(nil)
		return silentExit(exitNotFound)
	}
	c.printf("%s: (not set)\n", key)
	return silentExit(exitNotFound)
}

// parseStateValue reads a value as JSON when it is JSON, else as a string.
func parseStateValue(s string) json.RawMessage {
	if json.Valid([]byte(s)) {
		return json.RawMessage(s)
	}
	b, _ := json.Marshal(s)
	return b
}

func setupStateSet(fs *flagSet) runFunc {
	var mesh string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) < 2 {
			return usageError("usage: claudemesh state set <key> <value>")
		}
		key, value := args[0], parseStateValue(strings.Join(args[1:], " "))
		var meshUsed string
		err := c.warmOrCold(ctx, mesh, func(cl *DaemonClient) error {
			resp, err := callIPC(ctx, cl, apiStateSet, StateSetRequest{Key: key, Value: value, Mesh: mesh})
			if err != nil {
				return ipcFailure(err)
			}
			meshUsed = resp.Mesh
			return nil
		}, func(m Mesh, cl *ColdLink) error {
			meshUsed = m.Slug
			// Written, then read back: not every broker answers set_state.
			if err := cl.Write(ctx, SetStateFrame{Type: frameSetState, Key: key, Value: value}); err != nil {
				return err
			}
			raw, err := coldRequest(ctx, cl, GetStateFrame{Type: frameGetState, Key: key}, frameStateResult)
			if err != nil {
				return err
			}
			var r StateResultFrame
			if json.Unmarshal(raw, &r) != nil || !sameJSON(r.Value, value) {
				return errors.New("the broker did not confirm the write")
			}
			return nil
		})
		if err != nil {
			return err
		}
		if c.jsonMode() {
			return c.printJSON(map[string]any{"ok": true, "key": key, "value": value, "mesh": meshUsed})
		}
		c.printf("%s %s = %s (%s)\n", c.paint(colorGreen, "✔"), key, value, meshUsed)
		return nil
	}
}

// listItems reads a list through the daemon (every mesh, or mesh) with
// warm, which returns the rows and the meshes it could not ask, or, on the
// cold path, from mesh's broker, which answers frame with a reply frame
// that holds the items under field; each row says its mesh.
func listItems[T any](ctx context.Context, c *cli, mesh string, warm func(cl *DaemonClient) ([]MeshRow[T], map[string]string, error),
	frame any, reply, field string) (items []MeshRow[T], failed map[string]string, err error) {
	err = c.warmOrCold(ctx, mesh, func(cl *DaemonClient) error {
		items, failed, err = warm(cl)
		return ipcFailureOrNil(err)
	}, func(m Mesh, cl *ColdLink) error {
		raw, err := coldRequest(ctx, cl, frame, reply)
		if err != nil {
			return err
		}
		list, err := replyItems(raw, field)
		if err != nil {
			return err
		}
		for _, it := range list {
			var row MeshRow[T]
			if err := json.Unmarshal(it, &row); err != nil {
				return err
			}
			row.Mesh = m.Slug
			items = append(items, row)
		}
		return nil
	})
	return nonNil(items), failed, err
}

// ipcFailureOrNil is ipcFailure(err), or nil for nil.
func ipcFailureOrNil(err error) error {
	if err == nil {
		return nil
	}
	return ipcFailure(err)
}

// compactJSON is a JSON value on one line, as it is shown to a person.
func compactJSON(v json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, v) != nil {
		return string(v)
	}
	return b.String()
}

func setupStateList(fs *flagSet) runFunc {
	var mesh string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	return func(ctx context.Context, c *cli, args []string) error {
		entries, failed, err := listItems(ctx, c, mesh, func(cl *DaemonClient) ([]MeshRow[StateEntry], map[string]string, error) {
			resp, err := callIPC(ctx, cl, apiState, StateQuery{Mesh: mesh})
			return deref(resp.Entries), resp.Errors, err
		}, ListStateFrame{Type: frameListState}, frameStateList, "entries")
		if err != nil {
			return err
		}
		if c.jsonMode() {
			return c.printJSON(entries)
		}
		c.printf("%s\n", c.paint(colorBold, fmt.Sprintf("state (%d)", len(entries))))
		for _, e := range entries {
			c.printf("  %s: %s\n    by %s at %s (%s)\n", terminalLine(e.Row.Key), terminalLine(compactJSON(e.Row.Value)),
				terminalLine(e.Row.UpdatedBy), terminalLine(e.Row.UpdatedAt), e.Mesh)
		}
		printFailedMeshes(c, failed)
		return nil
	}
}

func printFailedMeshes(c *cli, failed map[string]string) {
	for slug, e := range failed {
		c.warnf("mesh %s: %s", slug, terminalLine(e))
	}
}

// Memory.

func splitTags(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

func setupRemember(fs *flagSet) runFunc {
	var mesh, tags string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	fs.StringVar(&tags, "tags", "", "comma-separated tags")
	return func(ctx context.Context, c *cli, args []string) error {
		content := strings.TrimSpace(strings.Join(args, " "))
		if content == "" {
			return usageError("usage: claudemesh remember <text…> [--tags a,b]")
		}
		tagList := splitTags(tags)
		var id, meshUsed string
		err := c.warmOrCold(ctx, mesh, func(cl *DaemonClient) error {
			resp, err := callIPC(ctx, cl, apiRemember, RememberRequest{Content: content, Tags: tagList, Mesh: mesh})
			if err != nil {
				return ipcFailure(err)
			}
			id, meshUsed = resp.ID, resp.Mesh
			return nil
		}, func(m Mesh, cl *ColdLink) error {
			meshUsed = m.Slug
			raw, err := coldRequest(ctx, cl, RememberFrame{Type: frameRemember, Content: content, Tags: tagList}, frameMemoryStored)
			if err != nil {
				return err
			}
			var r MemoryStoredFrame
			if err := json.Unmarshal(raw, &r); err != nil || r.ID == "" {
				return errors.New("the broker did not return a memory id")
			}
			id = r.ID
			return nil
		})
		if err != nil {
			return err
		}
		if c.jsonMode() {
			return c.printJSON(map[string]any{"id": id, "content": content, "tags": tagList, "mesh": meshUsed})
		}
		c.printf("%s remembered (%s) on %s\n", c.paint(colorGreen, "✔"), id, meshUsed)
		return nil
	}
}

func setupRecall(fs *flagSet) runFunc {
	var mesh string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	return func(ctx context.Context, c *cli, args []string) error {
		query := strings.TrimSpace(strings.Join(args, " "))
		if query == "" {
			return usageError("usage: claudemesh recall <query…>")
		}
		matches, failed, err := listItems(ctx, c, mesh, func(cl *DaemonClient) ([]MeshRow[Memory], map[string]string, error) {
			resp, err := callIPC(ctx, cl, apiRecall, RecallQuery{Q: query, Mesh: mesh})
			return resp.Matches, resp.Errors, err
		}, RecallFrame{Type: frameRecall, Query: query}, frameMemoryResults, "memories")
		if err != nil {
			return err
		}
		if c.jsonMode() {
			return c.printJSON(matches)
		}
		if len(matches) == 0 {
			c.printf("no memories found.\n")
		} else {
			c.printf("%s\n", c.paint(colorBold, fmt.Sprintf("memories (%d)", len(matches))))
		}
		for _, x := range matches {
			m, tags := x.Row, ""
			if len(m.Tags) > 0 {
				tags = " [" + terminalLine(strings.Join(m.Tags, ", ")) + "]"
			}
			c.printf("  %s%s\n    %s\n    by %s at %s (%s)\n", terminalLine(m.ID), tags, strings.ReplaceAll(terminalBlock(m.Content), "\n", "\n    "),
				terminalLine(m.RememberedBy), terminalLine(m.RememberedAt), x.Mesh)
		}
		printFailedMeshes(c, failed)
		return nil
	}
}

func setupForget(fs *flagSet) runFunc {
	var mesh string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) != 1 {
			return usageError("usage: claudemesh forget <memory-id>")
		}
		id := args[0]
		err := c.warmOrCold(ctx, mesh, func(cl *DaemonClient) error {
			_, err := callIPC(ctx, cl, apiForget, ForgetRequest{ID: id, Mesh: mesh})
			return ipcFailureOrNil(err)
		}, func(m Mesh, cl *ColdLink) error {
			raw, err := coldRequest(ctx, cl, ForgetFrame{Type: frameForget, MemoryID: id}, frameAck)
			if err != nil {
				return err
			}
			var ack AckFrame
			switch {
			case json.Unmarshal(raw, &ack) != nil || ack.Error == "":
			case ack.Error == codeNotFound:
				return exitError(exitNotFound, fmt.Errorf("no memory %s on %s", id, m.Slug))
			default:
				return errors.New(ack.Error)
			}
			return nil
		})
		if err != nil {
			return notFoundHint(err, "memory ids are in 'claudemesh recall <query>'")
		}
		if c.jsonMode() {
			return c.printJSON(map[string]any{"id": id, "forgotten": true})
		}
		c.printf("%s forgot %s\n", c.paint(colorGreen, "✔"), id)
		return nil
	}
}

// Skills.

func setupSkillList(fs *flagSet) runFunc {
	var mesh string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	return func(ctx context.Context, c *cli, args []string) error {
		query := strings.Join(args, " ")
		skills, failed, err := listItems(ctx, c, mesh, func(cl *DaemonClient) ([]MeshRow[Skill], map[string]string, error) {
			resp, err := callIPC(ctx, cl, apiSkills, SkillsQuery{Query: query, Mesh: mesh})
			return resp.Skills, resp.Errors, err
		}, ListSkillsFrame{Type: frameListSkills, Query: query}, frameSkillList, "skills")
		if err != nil {
			return err
		}
		if c.jsonMode() {
			return c.printJSON(skills)
		}
		if len(skills) == 0 {
			c.printf("no skills shared.\n")
		}
		for _, s := range skills {
			c.printf("  %s (by %s, %s)\n", c.skillTitle(s.Row.Name, s.Row.Description), terminalLine(s.Row.Author), s.Mesh)
		}
		printFailedMeshes(c, failed)
		return nil
	}
}

func setupSkillGet(fs *flagSet) runFunc {
	var mesh string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) != 1 {
			return usageError("usage: claudemesh skill get <name>")
		}
		name := args[0]
		var skill MeshRow[Skill]
		err := c.warmOrCold(ctx, mesh, func(cl *DaemonClient) error {
			resp, err := callIPC(ctx, cl, apiSkill, SkillRequest{Name: name, Mesh: mesh})
			skill = resp.Skill
			return ipcFailureOrNil(err)
		}, func(m Mesh, cl *ColdLink) error {
			raw, err := coldRequest(ctx, cl, SkillNameFrame{Type: frameGetSkill, Name: name}, frameSkillData)
			if err != nil {
				return err
			}
			var f struct {
				Skill *MeshRow[Skill] `json:"skill"`
			}
			if err := json.Unmarshal(raw, &f); err != nil {
				return err
			}
			if f.Skill == nil {
				return exitError(exitNotFound, fmt.Errorf("no skill named %q on %s", name, m.Slug))
			}
			skill = *f.Skill
			skill.Mesh = m.Slug
			return nil
		})
		if err != nil {
			return notFoundHint(err, "see 'claudemesh skill list'")
		}
		if c.jsonMode() {
			return c.printJSON(skill)
		}
		c.printf("%s\n  by %s (%s)\n\n%s\n", c.skillTitle(name, skill.Row.Description), terminalLine(skill.Row.Author), skill.Mesh,
			terminalBlock(skill.Row.Instructions))
		return nil
	}
}

// skillTitle is a skill's name, and " — description" when it has one.
func (c *cli) skillTitle(name, description string) string {
	title := c.paint(colorBold, terminalLine(name))
	if description != "" {
		title += " — " + terminalLine(description)
	}
	return title
}

func setupSkillShare(fs *flagSet) runFunc {
	var mesh, description, tags, file string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	fs.StringVar(&description, "description", "", "one line saying what the skill is for")
	fs.StringVar(&tags, "tags", "", "comma-separated tags")
	fs.StringVar(&file, "file", "", "read the instructions from this file ('-' or absent: stdin)")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) != 1 {
			return usageError("usage: claudemesh skill share <name> [--file instructions.md] [--description …] [--tags a,b]")
		}
		var data []byte
		var err error
		if file == "" || file == "-" {
			if c.env.StdinTTY {
				c.infof("type the skill's instructions, then Ctrl-D on a line of its own (or pass --file)")
			}
			data, err = io.ReadAll(io.LimitReader(c.env.Stdin, 256<<10))
		} else {
			data, err = os.ReadFile(file)
		}
		if err != nil {
			return exitError(exitIO, err)
		}
		if strings.TrimSpace(string(data)) == "" {
			return usageError("the skill's instructions are empty (give --file or pipe them on stdin)")
		}
		f := ShareSkillFrame{Type: frameShareSkill, Name: args[0], Description: description, Instructions: string(data), Tags: splitTags(tags)}
		meshUsed, action := "", ""
		err = c.warmOrCold(ctx, mesh, func(cl *DaemonClient) error {
			resp, err := callIPC(ctx, cl, apiShareSkill, ShareSkillRequest{Name: f.Name, Description: f.Description,
				Instructions: f.Instructions, Tags: f.Tags, Mesh: mesh})
			if err != nil {
				return ipcFailure(err)
			}
			meshUsed, action = resp.Mesh, resp.Action
			return nil
		}, func(m Mesh, cl *ColdLink) error {
			meshUsed = m.Slug
			raw, err := coldRequest(ctx, cl, f, frameSkillAck)
			if err != nil {
				return err
			}
			var ack SkillAckFrame
			_ = json.Unmarshal(raw, &ack)
			action = ack.Action
			return nil
		})
		if err != nil {
			return err
		}
		if c.jsonMode() {
			return c.printJSON(map[string]any{"ok": true, "name": f.Name, "action": action, "mesh": meshUsed})
		}
		c.printf("%s shared skill %s on %s\n", c.paint(colorGreen, "✔"), f.Name, meshUsed)
		return nil
	}
}

func setupSkillRemove(fs *flagSet) runFunc {
	var mesh string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) != 1 {
			return usageError("usage: claudemesh skill remove <name>")
		}
		name := args[0]
		err := c.warmOrCold(ctx, mesh, func(cl *DaemonClient) error {
			_, err := callIPC(ctx, cl, apiRemoveSkill, SkillRequest{Name: name, Mesh: mesh})
			return ipcFailureOrNil(err)
		}, func(m Mesh, cl *ColdLink) error {
			raw, err := coldRequest(ctx, cl, SkillNameFrame{Type: frameRemoveSkill, Name: name}, frameSkillAck)
			if err != nil {
				return err
			}
			var ack SkillAckFrame
			_ = json.Unmarshal(raw, &ack)
			if ack.Action == "not_found" {
				return exitError(exitNotFound, fmt.Errorf("no skill named %q on %s", name, m.Slug))
			}
			return nil
		})
		if err != nil {
			return notFoundHint(err, "see 'claudemesh skill list'")
		}
		if c.jsonMode() {
			return c.printJSON(map[string]any{"ok": true, "name": name, "removed": true})
		}
		c.printf("%s removed skill %s\n", c.paint(colorGreen, "✔"), name)
		return nil
	}
}

// Profile.

type profileFlags struct {
	mesh, summary, status, visible, avatar, title, bio, capabilities, name, receipts string
}

func setupProfile(fs *flagSet) runFunc {
	var f profileFlags
	fs.StringVar(&f.mesh, "mesh", "", "mesh slug")
	fs.StringVar(&f.summary, "summary", "", "one line on what you are doing")
	fs.StringVar(&f.status, "status", "", "idle, working or dnd")
	fs.StringVar(&f.visible, "visible", "", "yes or no: whether other members see you")
	fs.StringVar(&f.avatar, "avatar", "", "avatar (emoji or URL)")
	fs.StringVar(&f.title, "title", "", "title")
	fs.StringVar(&f.bio, "bio", "", "short bio")
	fs.StringVar(&f.capabilities, "capabilities", "", "comma-separated capabilities")
	fs.StringVar(&f.name, "name", "", "this session's display name (inside a session; a plain claude session keeps it across --resume)")
	fs.StringVar(&f.receipts, "receipts", "", "what senders learn of their messages here: surfaced (the default: delivered, then when and how your model was shown them) or delivered (only that they reached this machine)")
	return func(ctx context.Context, c *cli, args []string) error {
		var body ProfileRequest
		given := map[string]bool{}
		fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
		text := func(name, v string) *string {
			if given[name] {
				return &v
			}
			return nil
		}
		body.Summary, body.Status, body.Avatar = text("summary", f.summary), text("status", f.status), text("avatar", f.avatar)
		body.Title, body.Bio, body.DisplayName = text("title", f.title), text("bio", f.bio), text("name", f.name)
		body.Receipts = text("receipts", f.receipts)
		if body.Receipts != nil && *body.Receipts != sharesDelivered && *body.Receipts != sharesSurfaced {
			return usageError("--receipts takes delivered or surfaced, not %q", f.receipts)
		}
		if given["capabilities"] {
			body.Capabilities = ptr(nonNil(splitTags(f.capabilities)))
		}
		if given["visible"] {
			switch strings.ToLower(f.visible) {
			case "yes", "y", "true", "1", "on":
				body.Visible = ptr(true)
			case "no", "n", "false", "0", "off":
				body.Visible = ptr(false)
			}
		}
		if body.Visible == nil && f.visible != "" {
			return usageError("--visible takes yes or no")
		}
		if len(body.applied()) == 0 {
			return c.showProfile(ctx, f.mesh)
		}
		cl, err := c.daemon(ctx)
		if err != nil {
			return err
		}
		if cl == nil {
			return exitError(exitFailure, errors.New("profile changes need the daemon: they apply to a live connection"),
				hintStartDaemon)
		}
		body.Mesh = f.mesh
		resp, err := callIPC(ctx, cl, apiProfile, body)
		if err != nil {
			return ipcFailure(err)
		}
		if c.jsonMode() {
			return c.printJSON(resp)
		}
		who := "member"
		if resp.Via == linkSession {
			who = "this session"
		}
		c.printf("%s updated %s on %s (%s)\n", c.paint(colorGreen, "✔"), strings.Join(resp.Applied, ", "), strings.Join(resp.Meshes, ", "), who)
		return nil
	}
}

// showProfile prints our own rows from the peer list.
func (c *cli) showProfile(ctx context.Context, mesh string) error {
	cfg, err := c.loadUserConfig()
	if err != nil {
		return err
	}
	groups, self, err := c.peersWithSelf(ctx, cfg, mesh)
	if err != nil {
		return err
	}
	var mine []peerRecord
	for _, g := range groups {
		annotatePeers(g.Peers, self)
		for _, p := range g.Peers {
			if p["isSelf"] == true {
				mine = append(mine, p)
			}
		}
	}
	if c.jsonMode() {
		mine = nonNil(mine)
		return c.printJSON(mine)
	}
	if len(mine) == 0 {
		c.printf("no live connection of yours on the mesh\n")
		return nil
	}
	for _, p := range mine {
		c.printf("%s\n", c.peerLine(p))
		if prof, ok := p["profile"].(map[string]any); ok && len(prof) > 0 {
			data, _ := json.Marshal(prof)
			c.printf("     profile: %s\n", terminalLine(string(data)))
		}
	}
	return nil
}
