// Shared state, memory, skills and profile verbs. Each goes through the
// daemon when it can and otherwise straight to the mesh's broker (the cold
// path), except profile: a profile lives on a live connection, so changing
// it from a throw-away connection would do nothing, and it needs the daemon.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
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
		var entry map[string]any
		err := c.warmOrCold(ctx, mesh, func(cl *DaemonClient) error {
			var resp struct {
				State map[string]any `json:"state"`
			}
			err := cl.Do(ctx, "GET", ipcPath("/v1/state", "key", key, "mesh", mesh), nil, &resp)
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
				entry = map[string]any{"key": r.Key, "value": r.Value, "updatedBy": r.UpdatedBy, "updatedAt": r.UpdatedAt, "mesh": m.Slug}
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
		v, _ := json.Marshal(entry["value"])
		c.printf("%s = %s\n", key, v)
		c.printf("  set by %v at %v (%v)\n", entry["updatedBy"], entry["updatedAt"], entry["mesh"])
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
			var resp struct {
				Mesh string `json:"mesh"`
			}
			if err := cl.Do(ctx, "POST", "/v1/state", map[string]any{"key": key, "value": value, "mesh": mesh}, &resp); err != nil {
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

// listItems reads a list through the daemon (every mesh, or mesh) or, on
// the cold path, from mesh's broker; each item says its mesh. The daemon's
// path answers with the items under key and the meshes it could not ask
// under "errors"; the broker answers frame with a reply frame that holds
// the items under field.
func (c *cli) listItems(ctx context.Context, mesh, path, key string, frame any, reply, field string) (items []map[string]any, failed map[string]string, err error) {
	err = c.warmOrCold(ctx, mesh, func(cl *DaemonClient) error {
		var resp map[string]json.RawMessage
		if err := cl.Do(ctx, "GET", path, nil, &resp); err != nil {
			return ipcFailure(err)
		}
		if err := errors.Join(unmarshalField(resp, "errors", &failed), unmarshalField(resp, key, &items)); err != nil {
			return fmt.Errorf("daemon sent a bad answer: %w", err)
		}
		return nil
	}, func(m Mesh, cl *ColdLink) error {
		raw, err := coldRequest(ctx, cl, frame, reply)
		if err != nil {
			return err
		}
		var f map[string]json.RawMessage
		if err := json.Unmarshal(raw, &f); err != nil {
			return err
		}
		if err := unmarshalField(f, field, &items); err != nil {
			return err
		}
		for _, it := range items {
			it["mesh"] = m.Slug
		}
		return nil
	})
	return nonNil(items), failed, err
}

// unmarshalField decodes obj[name], when obj has it, into v.
func unmarshalField(obj map[string]json.RawMessage, name string, v any) error {
	if raw, ok := obj[name]; ok {
		return json.Unmarshal(raw, v)
	}
	return nil
}

func setupStateList(fs *flagSet) runFunc {
	var mesh string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	return func(ctx context.Context, c *cli, args []string) error {
		entries, failed, err := c.listItems(ctx, mesh, ipcPath("/v1/state", "mesh", mesh), "entries",
			ListStateFrame{Type: frameListState}, frameStateList, "entries")
		if err != nil {
			return err
		}
		if c.jsonMode() {
			return c.printJSON(entries)
		}
		c.printf("%s\n", c.paint(colorBold, fmt.Sprintf("state (%d)", len(entries))))
		for _, e := range entries {
			v, _ := json.Marshal(e["value"])
			c.printf("  %v: %s\n    by %v at %v (%v)\n", e["key"], v, e["updatedBy"], e["updatedAt"], e["mesh"])
		}
		printFailedMeshes(c, failed)
		return nil
	}
}

func printFailedMeshes(c *cli, failed map[string]string) {
	for slug, e := range failed {
		c.warnf("mesh %s: %s", slug, e)
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
			var resp struct {
				ID   string `json:"id"`
				Mesh string `json:"mesh"`
			}
			if err := cl.Do(ctx, "POST", "/v1/memory", map[string]any{"content": content, "tags": tagList, "mesh": mesh}, &resp); err != nil {
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
		matches, failed, err := c.listItems(ctx, mesh, ipcPath("/v1/memory", "q", query, "mesh", mesh), "matches",
			RecallFrame{Type: frameRecall, Query: query}, frameMemoryResults, "memories")
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
			tags := ""
			if list, ok := x["tags"].([]any); ok && len(list) > 0 {
				var s []string
				for _, t := range list {
					s = append(s, fmt.Sprint(t))
				}
				tags = " [" + strings.Join(s, ", ") + "]"
			}
			c.printf("  %v%s\n    %v\n    by %v at %v (%v)\n", x["id"], tags, x["content"], x["rememberedBy"], x["rememberedAt"], x["mesh"])
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
			if err := cl.Do(ctx, "DELETE", ipcPath("/v1/memory/"+url.PathEscape(id), "mesh", mesh), nil, nil); err != nil {
				return ipcFailure(err)
			}
			return nil
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
		skills, failed, err := c.listItems(ctx, mesh, ipcPath("/v1/skills", "query", query, "mesh", mesh), "skills",
			ListSkillsFrame{Type: frameListSkills, Query: query}, frameSkillList, "skills")
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
			c.printf("  %s (by %v, %v)\n", c.skillTitle(s["name"], s["description"]), s["author"], s["mesh"])
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
		var skill map[string]any
		err := c.warmOrCold(ctx, mesh, func(cl *DaemonClient) error {
			var resp struct {
				Skill map[string]any `json:"skill"`
			}
			if err := cl.Do(ctx, "GET", ipcPath("/v1/skills/"+url.PathEscape(name), "mesh", mesh), nil, &resp); err != nil {
				return ipcFailure(err)
			}
			skill = resp.Skill
			return nil
		}, func(m Mesh, cl *ColdLink) error {
			raw, err := coldRequest(ctx, cl, SkillNameFrame{Type: frameGetSkill, Name: name}, frameSkillData)
			if err != nil {
				return err
			}
			var f struct {
				Skill map[string]any `json:"skill"`
			}
			if err := json.Unmarshal(raw, &f); err != nil {
				return err
			}
			if f.Skill == nil {
				return exitError(exitNotFound, fmt.Errorf("no skill named %q on %s", name, m.Slug))
			}
			f.Skill["mesh"] = m.Slug
			skill = f.Skill
			return nil
		})
		if err != nil {
			return notFoundHint(err, "see 'claudemesh skill list'")
		}
		if c.jsonMode() {
			return c.printJSON(skill)
		}
		c.printf("%s\n  by %v (%v)\n\n%v\n", c.skillTitle(name, skill["description"]), skill["author"], skill["mesh"], skill["instructions"])
		return nil
	}
}

// skillTitle is a skill's name, and " — description" when it has one.
func (c *cli) skillTitle(name, description any) string {
	title := c.paint(colorBold, fmt.Sprint(name))
	if d, _ := description.(string); d != "" {
		title += " — " + d
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
			var resp struct {
				Mesh   string `json:"mesh"`
				Action string `json:"action"`
			}
			body := map[string]any{"name": f.Name, "description": f.Description, "instructions": f.Instructions, "tags": f.Tags, "mesh": mesh}
			if err := cl.Do(ctx, "POST", "/v1/skills", body, &resp); err != nil {
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
			if err := cl.Do(ctx, "DELETE", ipcPath("/v1/skills/"+url.PathEscape(name), "mesh", mesh), nil, nil); err != nil {
				return ipcFailure(err)
			}
			return nil
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
	mesh, summary, status, visible, avatar, title, bio, capabilities string
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
	return func(ctx context.Context, c *cli, args []string) error {
		body := map[string]any{}
		set := func(name, key, v string) {
			fs.Visit(func(fl *flag.Flag) {
				if fl.Name == name {
					body[key] = v
				}
			})
		}
		set("summary", "summary", f.summary)
		set("status", "status", f.status)
		set("avatar", "avatar", f.avatar)
		set("title", "title", f.title)
		set("bio", "bio", f.bio)
		fs.Visit(func(fl *flag.Flag) {
			switch fl.Name {
			case "capabilities":
				body["capabilities"] = nonNil(splitTags(f.capabilities))
			case "visible":
				switch strings.ToLower(f.visible) {
				case "yes", "y", "true", "1", "on":
					body["visible"] = true
				case "no", "n", "false", "0", "off":
					body["visible"] = false
				}
			}
		})
		if _, ok := body["visible"]; !ok && f.visible != "" {
			return usageError("--visible takes yes or no")
		}
		if len(body) == 0 {
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
		body["mesh"] = f.mesh
		var resp struct {
			Applied []string `json:"applied"`
			Meshes  []string `json:"meshes"`
			Via     string   `json:"via"`
		}
		if err := cl.Do(ctx, "POST", "/v1/profile", body, &resp); err != nil {
			return ipcFailure(err)
		}
		if c.jsonMode() {
			return c.printJSON(map[string]any{"ok": true, "applied": resp.Applied, "meshes": resp.Meshes, "via": resp.Via})
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
			c.printf("     profile: %s\n", data)
		}
	}
	return nil
}
