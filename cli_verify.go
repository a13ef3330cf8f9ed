// `claudemesh verify <peer>` and the key memory behind `peer list`'s
// warnings: trust on first use.
//
// Policy: the first time this machine sees a name on a mesh (a peer list
// row, or a member verify names) it remembers the member key behind it, in
// known_peers.json in the machine's config dir (0600). When that name later
// comes with another member key, peer list marks the row until someone
// checks the new key with `verify <name>` and accepts it with --trust. The
// machine's own member is never tracked. verify prints the safety number
// of this machine's member key and the peer's (safetynumber.go): the two
// people read it to each other to know no one stands between them.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// knownPeersFile is where this machine remembers the keys behind names.
const knownPeersFile = "known_peers.json"

// knownPeers is known_peers.json: per mesh id, per name, the member key
// first seen (or last accepted) with it.
type knownPeers struct {
	Version int                                `json:"version"`
	Meshes  map[string]map[string]knownPeerKey `json:"meshes"`
}

// knownPeerKey is one name's remembered key.
type knownPeerKey struct {
	Key       string `json:"key"`
	FirstSeen string `json:"first_seen"`
}

func (c *cli) knownPeersPath() string {
	return filepath.Join(c.Paths().MachineConfigDir, knownPeersFile)
}

// loadKnownPeers reads the file; a missing one is empty.
func loadKnownPeers(path string) (*knownPeers, error) {
	k := &knownPeers{Version: 1, Meshes: map[string]map[string]knownPeerKey{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return k, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, k); err != nil {
		return nil, fmt.Errorf("%s: %w (delete it to start remembering keys afresh)", path, err)
	}
	if k.Meshes == nil {
		k.Meshes = map[string]map[string]knownPeerKey{}
	}
	return k, nil
}

func (k *knownPeers) save(path string) error {
	if err := ensurePrivateDir(filepath.Dir(path)); err != nil {
		return err
	}
	data, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(data, '\n'), 0o600)
}

// see checks a name's key against what was remembered, remembering it when
// the name is new; it returns the remembered key when it differs.
func (k *knownPeers) see(meshID, name, key string, now time.Time) (was string, changed, added bool) {
	names := k.Meshes[meshID]
	if names == nil {
		names = map[string]knownPeerKey{}
		k.Meshes[meshID] = names
	}
	known, ok := names[name]
	switch {
	case !ok:
		names[name] = knownPeerKey{Key: key, FirstSeen: isoTime(now)}
		return "", false, true
	case known.Key != key:
		return known.Key, true, false
	}
	return "", false, false
}

// trust makes key the remembered one for name.
func (k *knownPeers) trust(meshID, name, key string, now time.Time) {
	if k.Meshes[meshID] == nil {
		k.Meshes[meshID] = map[string]knownPeerKey{}
	}
	k.Meshes[meshID][name] = knownPeerKey{Key: key, FirstSeen: isoTime(now)}
}

// markKeyChanges checks every peer row's name and member key against the
// machine's memory, marks rows whose key changed (keyChanged, and the key
// remembered as knownMemberPubkey) and remembers new names. A memory that
// cannot be read or written is warned about and changes nothing.
func (c *cli) markKeyChanges(cfg *Config, groups []meshPeers, self selfKeys) {
	path := c.knownPeersPath()
	known, err := loadKnownPeers(path)
	if err != nil {
		c.warnf("cannot check peers' keys: %v", err)
		return
	}
	now, added := time.Now(), false
	for _, g := range groups {
		m, ok := cfg.MeshBySlug(g.Mesh)
		if !ok {
			continue
		}
		for _, r := range g.Peers {
			name, key := r.str("displayName"), r.str("memberPubkey")
			if name == "" || key == "" || self.members[key] {
				continue
			}
			was, changed, isNew := known.see(m.MeshID, name, key, now)
			added = added || isNew
			if changed {
				r["keyChanged"], r["knownMemberPubkey"] = true, was
			}
		}
	}
	if added {
		if err := known.save(path); err != nil {
			c.warnf("cannot remember peers' keys in %s: %v", path, err)
		}
	}
}

type verifyFlags struct {
	mesh  string
	trust bool
}

func setupVerify(fs *flagSet) runFunc {
	var f verifyFlags
	fs.StringVar(&f.mesh, "mesh", "", "mesh slug")
	fs.BoolVar(&f.trust, "trust", false, "after comparing the number, remember this key as the peer's (clears peer list's warning)")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) != 1 {
			return usageError("usage: claudemesh verify <peer> (a name, or a member or session key prefix)")
		}
		return runVerify(ctx, c, f, args[0])
	}
}

func runVerify(ctx context.Context, c *cli, f verifyFlags, target string) error {
	cfg, err := c.loadUserConfig()
	if err != nil {
		return err
	}
	m, err := c.coldMesh(f.mesh)
	if err != nil {
		return err
	}
	name, key, err := c.resolveVerifyPeer(ctx, cfg, m, target)
	if err != nil {
		return err
	}
	path := c.knownPeersPath()
	known, err := loadKnownPeers(path)
	if err != nil {
		return exitError(exitIO, err)
	}
	now := time.Now()
	was, changed, added := known.see(m.MeshID, name, key, now)
	if f.trust {
		known.trust(m.MeshID, name, key, now)
	}
	if added || f.trust {
		if err := known.save(path); err != nil {
			return exitError(exitIO, fmt.Errorf("cannot remember %s's key in %s: %w", name, path, err))
		}
	}
	number := safetyNumber(m.Pubkey, key)
	if c.jsonMode() {
		doc := map[string]any{"mesh": m.Slug, "peer": name, "peer_key": key, "self_key": m.Pubkey, "safety_number": number,
			"key_changed": changed, "trusted": f.trust}
		if changed {
			doc["known_key"] = was
		}
		return c.printJSON(doc)
	}
	shown := terminalLine(name)
	c.printf("safety number for you and %s on %s:\n", c.paint(colorBold, shown), m.Slug)
	groups := strings.Fields(number)
	c.printf("    %s\n    %s\n", strings.Join(groups[:3], " "), strings.Join(groups[3:], " "))
	c.printf("  %s's member key  %s\n  your member key   %s\n", shown, key, m.Pubkey)
	switch {
	case changed && f.trust:
		c.printf("%s %s's key had changed (it was %s); this machine now remembers the new one\n", c.paint(colorYellow, "⚠"), shown, shortKey(was))
	case changed:
		c.printf("%s %s's key changed since this machine first saw the name (it was %s)\n", c.paint(colorYellow, "⚠"), shown, shortKey(was))
		c.printf("  if the digits match on both sides, accept it: claudemesh verify %s --trust --mesh %s\n", shellQuote(target), m.Slug)
	}
	c.printf("read the digits to %s over a channel you trust (in person, a call); on their machine 'claudemesh verify <your name>' shows the same ones.\n", shown)
	c.printf("if they differ, someone other than %s holds the key this mesh gives you for them\n", shown)
	return nil
}

// resolveVerifyPeer finds the member a verify names: a member by display
// name (any case) or key prefix, else a session on the peer list by name or
// key prefix, whose member it is. This machine's own member is refused.
func (c *cli) resolveVerifyPeer(ctx context.Context, cfg *Config, m Mesh, target string) (name, key string, err error) {
	type candidate struct{ name, key string }
	found := map[string]candidate{}
	matches := func(name, k string) bool {
		return strings.EqualFold(name, target) || (isKeyPrefix(target) && len(target) >= 8 && strings.HasPrefix(k, strings.ToLower(target)))
	}
	var members MembersReply
	err = c.warmOrCold(ctx, m.Slug, func(cl *DaemonClient) error {
		r, err := callIPC(ctx, cl, apiMembers, MeshQuery{Mesh: m.Slug})
		if err != nil {
			return ipcFailure(err)
		}
		members = r
		return nil
	}, func(_ Mesh, cl *ColdLink) error {
		list, _, err := coldMembers(ctx, cl)
		for _, r := range list {
			members.Members = append(members.Members, meshRowOf(r, m.Slug))
		}
		return err
	})
	if err != nil {
		return "", "", err
	}
	for _, r := range members.Members {
		if r.Mesh == m.Slug && matches(r.Row.DisplayName, r.Row.Pubkey) {
			found[r.Row.Pubkey] = candidate{r.Row.DisplayName, r.Row.Pubkey}
		}
	}
	if len(found) == 0 {
		groups, _, err := c.peersWithSelf(ctx, cfg, m.Slug)
		if err != nil {
			return "", "", err
		}
		for _, g := range groups {
			for _, p := range g.Peers {
				if g.Mesh == m.Slug && p.str("memberPubkey") != "" && matches(p.str("displayName"), p.str("pubkey")) {
					found[p.str("memberPubkey")] = candidate{p.str("displayName"), p.str("memberPubkey")}
				}
			}
		}
	}
	switch len(found) {
	case 0:
		return "", "", exitError(exitNotFound, fmt.Errorf("no member or peer on %s matches %q", m.Slug, target), "see 'claudemesh members' and 'claudemesh peer list'")
	case 1:
	default:
		var names []string
		for _, cd := range found {
			names = append(names, fmt.Sprintf("%s (%s)", terminalLine(cd.name), shortKey(cd.key)))
		}
		sort.Strings(names)
		return "", "", exitError(exitFailure, fmt.Errorf("%q matches several members on %s: %s", target, m.Slug, strings.Join(names, ", ")), "use a longer key prefix")
	}
	for _, cd := range found {
		name, key = cd.name, cd.key
	}
	if key == m.Pubkey {
		return "", "", usageError("%s is this machine's own member on %s: verify someone else", target, m.Slug)
	}
	return name, key, nil
}
