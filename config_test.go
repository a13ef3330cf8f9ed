// Tests of config.json: unknown fields kept, modes, a corrupt file left
// alone, concurrent updates.
package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestConfigMissingIsEmpty(t *testing.T) {
	c, err := loadConfig(filepath.Join(t.TempDir(), "config.json"))
	if err != nil || c.Version != 1 || len(c.Meshes) != 0 {
		t.Fatalf("loadConfig(missing) = %+v, %v", c, err)
	}
}

func TestConfigKeepsUnknownFields(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cfg")
	path := filepath.Join(dir, "config.json")
	original := `{"version":1,"accountId":"acct_1","future":{"x":[1,2]},
	  "meshes":[{"meshId":"m1","memberId":"u1","slug":"team","name":"Team","pubkey":"aa","secretKey":"bb",
	             "brokerUrl":"ws://127.0.0.1:7900/ws","joinedAt":"2026-01-01T00:00:00Z","inviteVersion":1,"meshColor":"blue"}]}`
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(original), 0o600); err != nil {
		t.Fatal(err)
	}
	err := updateConfig(path, func(c *Config) error {
		c.DisplayName = "alice"
		c.Meshes[0].Name = "Team Renamed"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["accountId"] != "acct_1" || raw["future"] == nil || raw["displayName"] != "alice" {
		t.Fatalf("top-level fields after rewrite: %s", data)
	}
	mesh := raw["meshes"].([]any)[0].(map[string]any)
	if mesh["meshColor"] != "blue" || mesh["name"] != "Team Renamed" || mesh["inviteVersion"] != 1.0 {
		t.Fatalf("mesh fields after rewrite: %v", mesh)
	}
	if _, ok := raw["broker"]; ok {
		t.Fatalf("empty optional fields must be omitted: %s", data)
	}
}

func TestConfigModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "cfg")
	path := filepath.Join(dir, "config.json")
	if err := updateConfig(path, func(c *Config) error {
		c.SetMesh(Mesh{Slug: "a", MeshID: "1"})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %o, want %o", p, got, want)
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".config.json.*.tmp"))
	if len(leftovers) != 0 {
		t.Errorf("temp files left behind: %v", leftovers)
	}
}

func TestConfigCorruptNamesFileAndChangesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(`{"version":1,"meshes":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig(path)
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), path) {
		t.Fatalf("loadConfig(corrupt) = %v, want a ConfigError naming %s", err, path)
	}
	if err := updateConfig(path, func(*Config) error { return nil }); err == nil {
		t.Fatal("updateConfig over a corrupt file must fail")
	}
	if data, _ := os.ReadFile(path); string(data) != `{"version":1,"meshes":[` {
		t.Fatalf("corrupt file was rewritten: %s", data)
	}
	if code := exitCodeOf(err); code != exitIO {
		t.Fatalf("exit code = %d, want %d", code, exitIO)
	}
}

func TestConfigConcurrentUpdatesKeepEveryMesh(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := updateConfig(path, func(c *Config) error {
				c.SetMesh(Mesh{Slug: string(rune('a' + i))})
				return nil
			}); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	c, err := loadConfig(path)
	if err != nil || len(c.Meshes) != 8 {
		t.Fatalf("after 8 concurrent updates: %v meshes, %v", len(c.Meshes), err)
	}
}

func TestConfigMeshHelpers(t *testing.T) {
	var c Config
	c.SetMesh(Mesh{Slug: "a", Name: "one"})
	c.SetMesh(Mesh{Slug: "b"})
	c.SetMesh(Mesh{Slug: "a", Name: "two"})
	if got := strings.Join(c.Slugs(), ","); got != "a,b" {
		t.Fatalf("slugs = %s", got)
	}
	if m, ok := c.MeshBySlug("a"); !ok || m.Name != "two" {
		t.Fatalf("MeshBySlug(a) = %+v", m)
	}
	if !c.RemoveMesh("a") || c.RemoveMesh("a") {
		t.Fatal("RemoveMesh must report presence once")
	}
	kp := mustNewKeypair()
	m := Mesh{Slug: "k", Pubkey: kp.PublicHex(), SecretKey: kp.SecretHex()}
	if got, err := m.Keypair(); err != nil || got.PublicHex() != kp.PublicHex() {
		t.Fatalf("Keypair() = %v", err)
	}
}
