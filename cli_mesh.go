// Mesh verbs without a web account: `mesh create`, `invite`,
// `join`, `mesh list` and `leave`, and the small HTTP client they share to
// talk to a broker. Keys are made here and saved in config.json; only public
// keys and signatures leave the machine.
package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Verb setups; the rows are in main.go's verb table.

func setupMeshCreate(fs *flagSet) runFunc {
	var f meshCreateFlags
	fs.StringVar(&f.broker, "broker", "", "broker WebSocket URL, ws://host:port/ws")
	fs.StringVar(&f.name, "name", "", "your display name in the mesh")
	fs.StringVar(&f.createToken, "create-token", "", "the broker's mesh-creation token (non-loopback brokers)")
	return func(ctx context.Context, c *cli, args []string) error { return runMeshCreate(ctx, c, f, args) }
}

func setupMeshList(fs *flagSet) runFunc { return runMeshList }

func setupInvite(fs *flagSet) runFunc {
	var f inviteFlags
	fs.StringVar(&f.mesh, "mesh", "", "mesh slug (default: the only joined mesh)")
	fs.StringVar(&f.role, "role", roleMember, "role of who joins: member or admin")
	fs.IntVar(&f.uses, "uses", 1, "how many keys may join with it")
	fs.StringVar(&f.expires, "expires", "7d", "lifetime: 30m, 12h, 7d …")
	fs.BoolVar(&f.short, "short", false, "a short code to read aloud (a v2 invite) instead of a link")
	return func(ctx context.Context, c *cli, args []string) error {
		if f.short {
			return runInviteShort(ctx, c, f, args)
		}
		return runInvite(ctx, c, f, args)
	}
}

type joinFlags struct {
	name, slug, broker string
	brokerURLs, caFile string
}

func setupJoin(fs *flagSet) runFunc {
	var f joinFlags
	fs.StringVar(&f.name, "name", "", "your display name in the mesh")
	fs.StringVar(&f.slug, "slug", "", "the name this machine gives the mesh (default: the invite's, or a free one like it)")
	fs.StringVar(&f.broker, "broker", "", "the broker a short invite code belongs to, ws://host:port/ws")
	fs.StringVar(&f.brokerURLs, "broker-urls", "", "more URLs of the same broker (its replicas), comma-separated, tried after the invite's")
	fs.StringVar(&f.caFile, "ca-file", "", "a PEM file of the CA that signed a wss:// broker's certificate, trusted besides the system roots")
	return func(ctx context.Context, c *cli, args []string) error { return runJoin(ctx, c, f, args) }
}

func setupLeave(fs *flagSet) runFunc {
	var yes bool
	yesFlag(fs, &yes, "leave a mesh you own without asking, deleting its owner key")
	return func(ctx context.Context, c *cli, args []string) error { return runLeave(ctx, c, yes, args) }
}

type meshCreateFlags struct {
	broker, name, createToken string
}

type inviteFlags struct {
	mesh, role, expires string
	uses                int
	short               bool
}

// brokerHTTPTimeout bounds one CLI request to a broker.
const brokerHTTPTimeout = 15 * time.Second

// brokerError is a refusal from a broker's HTTP API.
type brokerError struct {
	Status  int
	Code    string
	Message string
}

func (e *brokerError) Error() string {
	if e.Message != "" {
		return e.Code + ": " + e.Message
	}
	return e.Code
}

// brokerReach is what join learns besides the invite: the broker's other
// URLs and the CA file of a team broker's certificate.
type brokerReach struct {
	urls   []string
	caFile string
}

// reachFromFlags checks --broker-urls and --ca-file.
func reachFromFlags(urls, caFile string) (brokerReach, error) {
	var r brokerReach
	for _, u := range strings.Split(urls, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		if !strings.HasPrefix(u, "ws://") && !strings.HasPrefix(u, "wss://") {
			return r, usageError("--broker-urls wants ws:// or wss:// URLs, not %q", u)
		}
		r.urls = append(r.urls, u)
	}
	if caFile != "" {
		abs, err := filepath.Abs(caFile)
		if err != nil {
			return r, usageError("--ca-file %q: %v", caFile, err)
		}
		if _, err := os.Stat(abs); err != nil {
			return r, usageError("--ca-file: %v", err)
		}
		r.caFile = abs
	}
	return r, nil
}

// postBroker POSTs body as JSON to base+path and decodes a 2xx answer into
// out. Network failures exit 4; refusals come back as *brokerError.
func postBroker(ctx context.Context, base, path string, headers map[string]string, body, out any) error {
	return postBrokerTLS(ctx, nil, base, path, headers, body, out)
}

// postBrokerTLS is postBroker verifying an https:// broker with tlsConf
// (nil: the system roots).
func postBrokerTLS(ctx context.Context, tlsConf *tls.Config, base, path string, headers map[string]string, body, out any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, brokerHTTPTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(data))
	if err != nil {
		return exitError(exitUsage, fmt.Errorf("bad broker URL %s: %w", base, err))
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	client := http.DefaultClient
	if tlsConf != nil {
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf, Proxy: http.ProxyFromEnvironment}}
	}
	resp, err := client.Do(req)
	var unknownCA x509.UnknownAuthorityError
	if errors.As(err, &unknownCA) {
		return exitError(exitNetwork, fmt.Errorf("the broker at %s has a TLS certificate signed by an authority this machine does not trust: %w", base, err),
			"for a team broker with its own CA, pass --ca-file with the CA's PEM (join), or set caFile in the mesh's config")
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "connection refused") {
			return exitError(exitNetwork, fmt.Errorf("cannot reach the broker at %s: %w", base, err), "is the broker running? start one with 'claudemesh broker serve'")
		}
		return exitError(exitNetwork, fmt.Errorf("cannot reach the broker at %s: %w", base, err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return exitError(exitNetwork, fmt.Errorf("reading the broker's answer: %w", err))
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("http_%d", resp.StatusCode)
			e.Message = strings.TrimSpace(string(raw))
		}
		return &brokerError{Status: resp.StatusCode, Code: e.Error, Message: e.Message}
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("the broker answered with unexpected JSON: %w", err)
	}
	return nil
}

// brokerExit gives a broker refusal its exit code.
func brokerExit(err error, action string) error {
	var be *brokerError
	if !errors.As(err, &be) {
		return err
	}
	wrapped := fmt.Errorf("%s: %w", action, be)
	switch be.Status {
	case http.StatusUnauthorized:
		return exitError(exitAuth, wrapped)
	case http.StatusForbidden:
		return exitError(exitPermission, wrapped)
	case http.StatusNotFound:
		return exitError(exitNotFound, wrapped)
	case http.StatusConflict:
		return exitError(exitExists, wrapped)
	}
	return exitError(exitFailure, wrapped)
}

// displayNameFor picks the name a new member key is known by.
func displayNameFor(c *cli, flagName, fallback string) string {
	if flagName != "" {
		return flagName
	}
	if n := c.env.Getenv("CLAUDEMESH_DISPLAY_NAME"); n != "" {
		return n
	}
	return fallback
}

func runMeshCreate(ctx context.Context, c *cli, f meshCreateFlags, args []string) error {
	if len(args) != 1 {
		return usageError("mesh create needs exactly one <slug>")
	}
	slug := args[0]
	if !validSlug(slug) {
		return usageError("slug %q must be 2-32 of a-z, 0-9 and '-', starting with a letter or digit", slug)
	}
	path := c.Paths().ConfigFile()
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	if _, ok := cfg.MeshBySlug(slug); ok {
		return exitError(exitExists, fmt.Errorf("this machine already has a mesh %q", slug), "pick another slug")
	}
	brokerURL := cmp.Or(f.broker, c.env.Getenv("CLAUDEMESH_BROKER_URL"))
	if brokerURL == "" && cfg.Broker != nil && cfg.Broker.Listen != "" {
		brokerURL, _ = embeddedBrokerURLs(cfg.Broker.Listen)
	}
	if brokerURL == "" {
		return withHint(usageError("mesh create needs a broker"), "pass --broker ws://HOST:PORT/ws (run one with 'claudemesh broker serve')")
	}
	display := displayNameFor(c, f.name, hostnameOr(slug+"-owner"))
	token := cmp.Or(f.createToken, c.env.Getenv("CLAUDEMESH_CREATE_TOKEN"))
	m, err := createMesh(ctx, meshCreation{ConfigFile: path, Slug: slug, BrokerURL: brokerURL, Display: display, CreateToken: token})
	if err != nil {
		return err
	}
	c.reloadDaemon(ctx)
	if c.jsonMode() {
		return c.printJSON(map[string]string{"slug": slug, "id": m.MeshID, "member_id": m.MemberID, "broker_url": brokerURL, "role": "owner"})
	}
	c.printf("%s created mesh %s on %s\n", c.paint(colorGreen, "✓"), slug, brokerURL)
	c.printf("  mesh id    %s\n  member id  %s\n  you are    %s (owner, admin)\n", m.MeshID, m.MemberID, display)
	c.printf("hint: invite someone with 'claudemesh invite --mesh %s'\n", slug)
	return nil
}

// meshCreation is one mesh to create on a broker and save in a config file.
type meshCreation struct {
	ConfigFile  string
	Slug        string
	BrokerURL   string // saved in the mesh: what links and invites use
	PostURL     string // where the creation request goes when not BrokerURL (a broker on every interface, reached on loopback)
	Display     string // the owner's display name
	CreateToken string
}

// createMesh makes a new owner key, asks the broker to create the mesh
// (signed by that key) and saves the mesh in the config file. Shared by
// `mesh create` and `init`.
func createMesh(ctx context.Context, mc meshCreation) (Mesh, error) {
	post := cmp.Or(mc.PostURL, mc.BrokerURL)
	base, err := brokerHTTPBase(post)
	if err != nil {
		return Mesh{}, usageError("%v", err)
	}
	kp, err := newKeypair()
	if err != nil {
		return Mesh{}, err
	}
	ts := time.Now().UnixMilli()
	req := MeshCreateRequest{Slug: mc.Slug, Name: mc.Slug, Pubkey: kp.PublicHex(), DisplayName: mc.Display, Timestamp: ts,
		Signature: kp.sign(meshCreateSignedString(mc.Slug, kp.PublicHex(), ts))}
	headers := map[string]string{}
	if mc.CreateToken != "" {
		headers["Authorization"] = "Bearer " + mc.CreateToken
	}
	var resp MeshCreateResponse
	if err := postBroker(ctx, base, "/cli/mesh/create", headers, req, &resp); err != nil {
		var be *brokerError
		if errors.As(err, &be) && be.Status == http.StatusForbidden {
			return Mesh{}, withHint(brokerExit(err, "the broker refused to create the mesh"), "a remote broker needs its create token: --create-token T")
		}
		return Mesh{}, brokerExit(err, "the broker refused to create the mesh")
	}
	m := Mesh{MeshID: resp.ID, MemberID: resp.MemberID, Slug: mc.Slug, Name: resp.Name, Pubkey: kp.PublicHex(),
		SecretKey: kp.SecretHex(), BrokerURL: mc.BrokerURL, JoinedAt: isoTime(time.Now()), RootKey: resp.RootKey, InviteVersion: 1,
		Role: roleOwner}
	return m, addNewMesh(mc.ConfigFile, m)
}

// pickMesh resolves --mesh, else the only joined mesh.
func pickMesh(cfg *Config, slug string) (*Mesh, error) {
	if slug != "" {
		m, ok := cfg.MeshBySlug(slug)
		if !ok {
			return nil, exitError(exitNotFound, fmt.Errorf("no mesh %q on this machine", slug), "joined: "+strings.Join(orNone(cfg.Slugs()), ", "))
		}
		return m, nil
	}
	switch len(cfg.Meshes) {
	case 0:
		return nil, errNoMeshJoined()
	case 1:
		return &cfg.Meshes[0], nil
	}
	return nil, withHint(usageError("several meshes are joined; say which with --mesh"), "joined: "+strings.Join(cfg.Slugs(), ", "))
}

// errNoMeshJoined is the error of a verb that needs a mesh on a machine
// that has none: the first thing a new user meets.
func errNoMeshJoined() error {
	return exitError(exitNotFound, errors.New("no mesh joined yet"),
		"set this machine up with 'claudemesh init', or join a mesh with 'claudemesh join <invite>'")
}

func orNone(s []string) []string {
	if len(s) == 0 {
		return []string{"(none)"}
	}
	return s
}

// parseLifetime reads 30s, 30m, 12h or 7d (or any Go duration).
func parseLifetime(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 {
			return 0, fmt.Errorf("invalid lifetime %q", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("invalid lifetime %q (try 30m, 12h or 7d)", s)
	}
	return d, nil
}

// inviteTerms checks the flags both kinds of invite take and returns the
// mesh it is for and its lifetime.
func inviteTerms(c *cli, f inviteFlags, args []string) (*Mesh, time.Duration, error) {
	if len(args) > 0 {
		return nil, 0, usageError("invite takes no arguments (got %q)", strings.Join(args, " "))
	}
	if f.role != roleMember && f.role != roleAdmin {
		return nil, 0, usageError("--role must be member or admin, not %q", f.role)
	}
	if f.uses < 1 || f.uses > maxInviteUses {
		return nil, 0, usageError("--uses must be 1..%d", maxInviteUses)
	}
	life, err := parseLifetime(f.expires)
	if err != nil {
		return nil, 0, usageError("--expires: %v", err)
	}
	cfg, err := loadConfig(c.Paths().ConfigFile())
	if err != nil {
		return nil, 0, err
	}
	m, err := pickMesh(cfg, f.mesh)
	return m, life, err
}

// usesLabel is "1 use" or "N uses".
func usesLabel(n int) string {
	if n == 1 {
		return "1 use"
	}
	return fmt.Sprintf("%d uses", n)
}

func runInvite(ctx context.Context, c *cli, f inviteFlags, args []string) error {
	m, life, err := inviteTerms(c, f, args)
	if err != nil {
		return err
	}
	kp, err := m.Keypair()
	if err != nil {
		return exitError(exitIO, err)
	}
	if m.RootKey == "" {
		return exitError(exitPermission, fmt.Errorf("mesh %s has no root key on this machine, so it cannot sign invites", m.Slug), "ask the mesh owner for an invite")
	}
	base, err := brokerHTTPBase(m.BrokerURL)
	if err != nil {
		return exitError(exitIO, err)
	}
	tlsConf, err := meshTLSConfig(*m)
	if err != nil {
		return exitError(exitUsage, err)
	}
	// Equal payloads sign to equal tokens, so a second invite made within the
	// same second gets its expiry nudged instead of colliding.
	expiresAt := time.Now().Add(life)
	var resp InviteCreateResponse
	for attempt := 0; ; attempt++ {
		_, token, err := buildInvite(kp, m.MeshID, m.Slug, m.BrokerURL, m.RootKey, f.role, expiresAt)
		if err != nil {
			return exitError(exitIO, fmt.Errorf("mesh %s: %w", m.Slug, err))
		}
		ts := time.Now().UnixMilli()
		req := InviteCreateRequest{Token: token, MaxUses: f.uses, Timestamp: ts, Signature: kp.sign(inviteCreateSignedString(m.Slug, token, f.uses, ts))}
		err = postBrokerTLS(ctx, tlsConf, base, "/cli/mesh/"+m.Slug+"/invite", nil, req, &resp)
		var be *brokerError
		if errors.As(err, &be) && be.Code == "invite_exists" && attempt < 5 {
			expiresAt = expiresAt.Add(time.Second)
			continue
		}
		if errors.As(err, &be) && be.Status == http.StatusForbidden {
			return withHint(brokerExit(err, "the broker refused the invite"), "only the key that created the mesh can invite")
		}
		if err != nil {
			return brokerExit(err, "the broker refused the invite")
		}
		break
	}
	if c.jsonMode() {
		return c.printJSON(map[string]string{"url": resp.URL, "expires_at": resp.ExpiresAt, "id": resp.ID})
	}
	c.printf("invite %s to %s as %s, %s, expires %s\n", resp.ID, m.Slug, f.role, usesLabel(f.uses), resp.ExpiresAt)
	c.printf("join with: claudemesh join <link>\n")
	c.printf("%s\n", resp.URL)
	return nil
}

func runJoin(ctx context.Context, c *cli, f joinFlags, args []string) error {
	if len(args) != 1 {
		return usageError("join needs exactly one <invite>")
	}
	if f.slug != "" && !validSlug(f.slug) {
		return usageError("--slug %q is not a slug: lowercase letters, digits and '-'", f.slug)
	}
	reach, err := reachFromFlags(f.brokerURLs, f.caFile)
	if err != nil {
		return err
	}
	var j joined
	if code, cerr := normalizeInviteCode(args[0]); cerr == nil && !isInviteLink(args[0]) {
		j, err = joinByCode(ctx, c, f, code, reach)
	} else {
		if f.broker != "" {
			return usageError("--broker is for a short invite code; a link carries its broker")
		}
		j, err = joinInvite(ctx, c, f.name, f.slug, args[0], reach)
	}
	if err != nil {
		return err
	}
	m := j.Mesh
	if j.Already {
		if c.jsonMode() {
			return c.printJSON(map[string]any{"slug": m.Slug, "meshId": m.MeshID, "memberId": m.MemberID, "alreadyJoined": true})
		}
		c.printf("already in %s on this machine\n", m.Slug)
		return nil
	}
	if c.jsonMode() {
		return c.printJSON(map[string]any{"slug": m.Slug, "meshId": m.MeshID, "memberId": m.MemberID, "pubkey": m.Pubkey,
			"brokerUrl": m.BrokerURL, "role": j.Role})
	}
	c.printf("%s joined %s as %s (%s)\n", c.paint(colorGreen, "✓"), m.Slug, j.Display, j.Role)
	c.printf("  member id  %s\n  pubkey     %s…\n  broker     %s\n  config     %s\n", m.MemberID, m.Pubkey[:16], m.BrokerURL, c.Paths().ConfigFile())
	return nil
}

// joined is what joinInvite did: the mesh now in config.json, and whether
// this machine was in it already (then nothing was changed).
type joined struct {
	Mesh    Mesh
	Display string // the new member's display name
	Role    string // the invite's role
	Already bool
}

// joinInvite verifies an invite, enrolls a new member key with the broker
// and saves the mesh in config.json under slug, else the invite's slug, or
// when this machine has a mesh of that name already, a free one like it
// (said on stderr). Shared by `join` and `launch --join`.
func joinInvite(ctx context.Context, c *cli, name, slug, invite string, reach brokerReach) (joined, error) {
	p, token, err := parseInvite(invite)
	if err != nil {
		return joined{}, exitError(exitFailure, fmt.Errorf("not a valid invite: %w", err),
			"an invite is one long ic://join/… line: copy all of it, as 'claudemesh invite' printed it")
	}
	if p.expired(time.Now()) {
		return joined{}, exitError(exitFailure, fmt.Errorf("this invite expired at %s", isoTime(time.Unix(p.ExpiresAt, 0))), "ask for a new one")
	}
	path := c.Paths().ConfigFile()
	cfg, err := loadConfig(path)
	if err != nil {
		return joined{}, err
	}
	for _, m := range cfg.Meshes {
		if m.MeshID == p.MeshID {
			return joined{Mesh: m, Role: p.Role, Already: true}, nil
		}
	}
	local := cmp.Or(slug, p.MeshSlug)
	if _, taken := cfg.MeshBySlug(local); taken {
		if slug != "" {
			return joined{}, exitError(exitExists, fmt.Errorf("this machine already has a mesh called %q", slug), "choose another with --slug")
		}
		local = freeSlug(cfg, p.MeshSlug)
		c.infof("this machine already has a mesh called %q, so this one is %q here (choose the name with --slug)", p.MeshSlug, local)
	}
	base, err := brokerHTTPBase(p.BrokerURL)
	if err != nil {
		return joined{}, exitError(exitFailure, err)
	}
	kp, err := newKeypair()
	if err != nil {
		return joined{}, err
	}
	display := displayNameFor(c, name, fmt.Sprintf("%s-%d", hostnameOr("peer"), os.Getpid()))
	payload, _ := json.Marshal(p)
	req := JoinRequest{InviteToken: token, InvitePayload: payload, PeerPubkey: kp.PublicHex(), DisplayName: display}
	var resp JoinResponse
	// The invite's URL stays first; the others are fallbacks.
	m := Mesh{MeshID: p.MeshID, Slug: local, Name: p.MeshSlug, Pubkey: kp.PublicHex(),
		SecretKey: kp.SecretHex(), BrokerURL: p.BrokerURL, JoinedAt: isoTime(time.Now()), RootKey: p.MeshRootKey, InviteVersion: 1,
		Role: p.Role, CAFile: reach.caFile}
	for _, u := range reach.urls {
		if u != p.BrokerURL {
			m.BrokerURLs = append(m.BrokerURLs, u)
		}
	}
	tlsConf, err := meshTLSConfig(m)
	if err != nil {
		return joined{}, exitError(exitUsage, err)
	}
	if err := postBrokerTLS(ctx, tlsConf, base, "/join", nil, req, &resp); err != nil {
		return joined{}, brokerExit(err, "the broker refused the join")
	}
	m.MemberID = resp.MemberID
	if err := addNewMesh(path, m); err != nil {
		return joined{}, err
	}
	c.reloadDaemon(ctx)
	return joined{Mesh: m, Display: display, Role: p.Role}, nil
}

// freeSlug is slug with the lowest suffix -2, -3, … that no mesh here has.
func freeSlug(cfg *Config, slug string) string {
	for n := 2; ; n++ {
		s := fmt.Sprintf("%s-%d", slug, n)
		if _, taken := cfg.MeshBySlug(s); !taken {
			return s
		}
	}
}

// addNewMesh saves a mesh just created or joined in the config file,
// unless a mesh with its slug got there first.
func addNewMesh(configFile string, m Mesh) error {
	return updateConfig(configFile, func(cfg *Config) error {
		if _, ok := cfg.MeshBySlug(m.Slug); ok {
			return exitError(exitExists, fmt.Errorf("this machine already has a mesh %q", m.Slug))
		}
		cfg.SetMesh(m)
		return nil
	})
}

// reloadDaemon tells a running daemon that config.json changed, so that it
// links to a mesh just joined or created at once (messages to the new
// member arrive without waiting for a restart) and lets go of one just
// left. A daemon that is not running reads the config when it starts.
func (c *cli) reloadDaemon(ctx context.Context) {
	cl := c.runningDaemon(ctx)
	if cl == nil {
		return
	}
	defer cl.http.CloseIdleConnections()
	if _, err := cl.Reload(ctx); err != nil {
		c.warnf("the running daemon did not take the change (%v); restart it: claudemesh daemon down && claudemesh daemon up", err)
	}
}

// meshListRow is one mesh in `mesh list --json`: never the secret key.
type meshListRow struct {
	Slug      string `json:"slug"`
	Name      string `json:"name"`
	MeshID    string `json:"meshId"`
	MemberID  string `json:"memberId"`
	Pubkey    string `json:"pubkey"`
	BrokerURL string `json:"brokerUrl"`
	JoinedAt  string `json:"joinedAt"`
}

func runMeshList(ctx context.Context, c *cli, args []string) error {
	if len(args) > 0 {
		return usageError("mesh list takes no arguments")
	}
	cfg, err := loadConfig(c.Paths().ConfigFile())
	if err != nil {
		return err
	}
	rows := make([]meshListRow, 0, len(cfg.Meshes))
	for _, m := range cfg.Meshes {
		rows = append(rows, meshListRow{Slug: m.Slug, Name: m.Name, MeshID: m.MeshID, MemberID: m.MemberID, Pubkey: m.Pubkey,
			BrokerURL: m.BrokerURL, JoinedAt: m.JoinedAt})
	}
	if c.jsonMode() {
		return c.printJSON(rows)
	}
	if len(rows) == 0 {
		c.printf("no meshes joined yet\n")
		c.printf("hint: 'claudemesh mesh create <slug> --broker ws://HOST:PORT/ws' or 'claudemesh join <invite>'\n")
		return nil
	}
	width := 0
	for _, r := range rows {
		width = max(width, len(r.Slug))
	}
	for _, r := range rows {
		c.printf("● %-*s  %s  key %s…  joined %s\n", width, r.Slug, r.BrokerURL, r.Pubkey[:min(12, len(r.Pubkey))], r.JoinedAt)
	}
	return nil
}

func runLeave(ctx context.Context, c *cli, yes bool, args []string) error {
	if len(args) != 1 {
		return usageError("leave needs exactly one <slug>")
	}
	slug := args[0]
	path := c.Paths().ConfigFile()
	if err := updateConfig(path, func(cfg *Config) error {
		m, ok := cfg.MeshBySlug(slug)
		if !ok {
			return exitError(exitNotFound, fmt.Errorf("no mesh %q on this machine", slug), "joined: "+strings.Join(orNone(cfg.Slugs()), ", "))
		}
		if m.Role == roleOwner && !yes && !c.confirm(fmt.Sprintf("you own %s: leaving deletes its owner key. Leave it?", slug)) {
			return exitError(exitFailure, fmt.Errorf("not leaving %s: this machine's member owns it, and leaving deletes the owner key, "+
				"the only key that can invite anyone to %s; its members stay, but no one can add more", slug, slug),
				"if that is what you want: claudemesh leave "+slug+" --yes")
		}
		cfg.RemoveMesh(slug)
		return nil
	}); err != nil {
		return err
	}
	c.reloadDaemon(ctx)
	if c.jsonMode() {
		return c.printJSON(map[string]any{"slug": slug, "left": true})
	}
	c.printf("left %s on this machine; its member key is deleted\n", slug)
	c.printf("hint: the mesh still lists the member until an admin bans it\n")
	return nil
}
