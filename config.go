// config.json: the meshes this machine has joined, with their member keys.
// The shape is claudemesh's, so either implementation can read the other's
// file; fields we do not know are kept on rewrite. Writes are atomic (temp
// file + rename), the file is 0600 and a directory we create is 0700.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"syscall"
)

// Config is the whole config.json.
type Config struct {
	Version     int         `json:"version"`
	Meshes      []Mesh      `json:"meshes"`
	DisplayName string      `json:"displayName,omitempty"`
	Role        string      `json:"role,omitempty"`
	Groups      []GroupRef  `json:"groups,omitempty"`
	MessageMode string      `json:"messageMode,omitempty"`
	Broker      *BrokerConf `json:"broker,omitempty"` // our addition: the embedded broker
	// UnsurfacedWarnAfter is how long a sent message may stay unshown to
	// its recipient's model before the sending session is told ("10m" by
	// default; "off" for never).
	UnsurfacedWarnAfter string `json:"unsurfacedWarnAfter,omitempty"`

	extra map[string]json.RawMessage
}

// Mesh is one joined mesh and this machine's member identity in it.
type Mesh struct {
	MeshID        string `json:"meshId"`
	MemberID      string `json:"memberId"`
	Slug          string `json:"slug"`
	Name          string `json:"name"`
	Pubkey        string `json:"pubkey"`
	SecretKey     string `json:"secretKey"`
	BrokerURL     string `json:"brokerUrl"`
	JoinedAt      string `json:"joinedAt"`
	RootKey       string `json:"rootKey,omitempty"`
	InviteVersion int    `json:"inviteVersion,omitempty"`
	// Role is this machine's member's role: owner for a mesh created here,
	// the invite's role for one joined; empty in configs written before
	// it was kept.
	Role string `json:"role,omitempty"`
	// BrokerURLs are more URLs of the same broker (its other replicas),
	// tried in turn after BrokerURL when it cannot be reached. Older
	// clients ignore the field.
	BrokerURLs []string `json:"brokerUrls,omitempty"`
	// CAFile is a PEM file of certificate authorities trusted for this
	// mesh's wss:// broker besides the system roots: a team broker's own CA.
	CAFile string `json:"caFile,omitempty"`

	extra map[string]json.RawMessage
}

// BrokerURLList is every URL of the mesh's broker in the order a link tries
// them: BrokerURL first, then the others of BrokerURLs, once each.
func (m Mesh) BrokerURLList() []string {
	var out []string
	for _, u := range append([]string{m.BrokerURL}, m.BrokerURLs...) {
		if u != "" && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

// GroupRef is a group membership with an optional role in it.
type GroupRef struct {
	Name string `json:"name"`
	Role string `json:"role,omitempty"`
}

// groupSpecs renders groups as the daemon's registration takes them:
// "@name" or "@name:role".
func groupSpecs(groups []GroupRef) []string {
	var out []string
	for _, g := range groups {
		s := "@" + g.Name
		if g.Role != "" {
			s += ":" + g.Role
		}
		out = append(out, s)
	}
	return out
}

// BrokerConf asks the daemon to serve a broker in-process.
type BrokerConf struct {
	Listen string `json:"listen"`
	Data   string `json:"data"`
}

// defaultBrokerListen is where a broker listens unless told otherwise: `broker
// serve`, the embedded broker and `init`.
const defaultBrokerListen = "127.0.0.1:7900"

// Keypair returns the member identity of this mesh.
func (m Mesh) Keypair() (Keypair, error) {
	kp, err := keypairFromHex(m.Pubkey, m.SecretKey)
	if err != nil {
		return Keypair{}, fmt.Errorf("mesh %q: %w", m.Slug, err)
	}
	return kp, nil
}

// MeshBySlug finds a joined mesh.
func (c *Config) MeshBySlug(slug string) (*Mesh, bool) {
	for i := range c.Meshes {
		if c.Meshes[i].Slug == slug {
			return &c.Meshes[i], true
		}
	}
	return nil, false
}

// SetMesh adds m, replacing a mesh with the same slug.
func (c *Config) SetMesh(m Mesh) {
	if old, ok := c.MeshBySlug(m.Slug); ok {
		*old = m
		return
	}
	c.Meshes = append(c.Meshes, m)
}

// RemoveMesh drops the mesh with this slug and reports whether it was there.
func (c *Config) RemoveMesh(slug string) bool {
	for i := range c.Meshes {
		if c.Meshes[i].Slug == slug {
			c.Meshes = append(c.Meshes[:i], c.Meshes[i+1:]...)
			return true
		}
	}
	return false
}

// Slugs lists the joined meshes' slugs in file order.
func (c *Config) Slugs() []string {
	out := make([]string, len(c.Meshes))
	for i, m := range c.Meshes {
		out[i] = m.Slug
	}
	return out
}

// ConfigError says which file is broken and why.
type ConfigError struct {
	Path string
	Err  error
}

func (e *ConfigError) Error() string { return fmt.Sprintf("config file %s: %v", e.Path, e.Err) }
func (e *ConfigError) Unwrap() error { return e.Err }

// loadConfig reads config.json; a missing file is an empty config.
func loadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Config{Version: 1}, nil
	}
	if err != nil {
		return nil, &ConfigError{Path: path, Err: err}
	}
	var c Config
	if len(bytes.TrimSpace(data)) == 0 {
		return &Config{Version: 1}, nil
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, &ConfigError{Path: path, Err: fmt.Errorf("not valid JSON: %w", err)}
	}
	if c.Version == 0 {
		c.Version = 1
	}
	return &c, nil
}

// saveConfig writes c atomically with mode 0600.
func saveConfig(path string, c *Config) error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(data, '\n'), 0o600)
}

// updateConfig is a locked read-modify-write of config.json, so that two
// CLI processes joining meshes at once do not lose each other's change.
func updateConfig(path string, change func(*Config) error) error {
	if err := ensurePrivateDir(filepath.Dir(path)); err != nil {
		return err
	}
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return &ConfigError{Path: path, Err: err}
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return &ConfigError{Path: path, Err: err}
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	c, err := loadConfig(path)
	if err != nil {
		return err
	}
	if err := change(c); err != nil {
		return err
	}
	return saveConfig(path, c)
}

// ensurePrivateDir creates dir (and parents) with mode 0700. An existing
// directory keeps its mode: it may be one the user chose.
func ensurePrivateDir(dir string) error {
	if dirExists(dir) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

// writeFileAtomic writes data to a temp file in path's directory, syncs it
// and renames it over path, so readers see the old or the new file, never a
// torn one.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := ensurePrivateDir(dir); err != nil {
		return err
	}
	name, err := writeTempFile(dir, "."+filepath.Base(path)+".*.tmp", data, perm)
	if err != nil {
		return err
	}
	defer os.Remove(name) // no-op after a successful rename
	if err := os.Rename(name, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// writeTempFile writes data, synced, to a new file in dir named after
// pattern (as os.CreateTemp) with mode perm, and returns its name: the
// caller moves it into place and removes the name.
func writeTempFile(dir, pattern string, data []byte, perm os.FileMode) (string, error) {
	tmp, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	err = tmp.Chmod(perm)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	return tmp.Name(), nil
}

// Unknown-field preservation: decode the known fields into the struct and
// keep every other top-level key as raw JSON to write back unchanged.

func (c *Config) UnmarshalJSON(data []byte) error {
	type plain Config
	var p plain
	extra, err := decodeKeepingUnknown(data, &p)
	if err != nil {
		return err
	}
	*c = Config(p)
	c.extra = extra
	return nil
}

func (c Config) MarshalJSON() ([]byte, error) {
	type plain Config
	c.Meshes = nonNil(c.Meshes)
	return encodeWithUnknown(plain(c), c.extra)
}

func (m *Mesh) UnmarshalJSON(data []byte) error {
	type plain Mesh
	var p plain
	extra, err := decodeKeepingUnknown(data, &p)
	if err != nil {
		return err
	}
	*m = Mesh(p)
	m.extra = extra
	return nil
}

func (m Mesh) MarshalJSON() ([]byte, error) {
	type plain Mesh
	return encodeWithUnknown(plain(m), m.extra)
}

// decodeKeepingUnknown decodes data into v (a pointer to a struct) and
// returns the keys that v's json tags do not name.
func decodeKeepingUnknown(data []byte, v any) (map[string]json.RawMessage, error) {
	if err := json.Unmarshal(data, v); err != nil {
		return nil, err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(data, &all); err != nil {
		return nil, err
	}
	for k := range jsonFieldNames(reflect.TypeOf(v).Elem()) {
		delete(all, k)
	}
	if len(all) == 0 {
		return nil, nil
	}
	return all, nil
}

// encodeWithUnknown encodes v, then appends the preserved keys after its own.
func encodeWithUnknown(v any, extra map[string]json.RawMessage) ([]byte, error) {
	known, err := json.Marshal(v)
	if err != nil || len(extra) == 0 {
		return known, err
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	b.Write(known[:len(known)-1]) // drop the closing brace
	for _, k := range keys {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(k)
		b.Write(name)
		b.WriteByte(':')
		b.Write(extra[k])
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func jsonFieldNames(t reflect.Type) map[string]bool {
	names := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		if name != "-" {
			names[name] = true
		}
	}
	return names
}

// FallbackURLs are the URLs of BrokerURLList after BrokerURL.
func (m Mesh) FallbackURLs() []string {
	var out []string
	for _, u := range m.BrokerURLList() {
		if u != m.BrokerURL {
			out = append(out, u)
		}
	}
	return out
}
