// Invites beyond the v1 link: `invite --short` (a v2 invite: a code to
// read aloud, registered with the broker under the owner's signed
// capability), `join <code> --broker URL` (claims it: a new member key is
// enrolled and the mesh root key comes back sealed to a throwaway X25519
// key made for the claim), `invite list` and `invite revoke`.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/nacl/box"
)

func runInviteShort(ctx context.Context, c *cli, f inviteFlags, args []string) error {
	m, life, err := inviteTerms(c, f, args)
	if err != nil {
		return err
	}
	kp, err := m.Keypair()
	if err != nil {
		return exitError(exitIO, err)
	}
	expiresAt := time.Now().Add(life).Unix()
	var resp InviteV2CreateResponse
	for attempt := 0; ; attempt++ {
		id := newInviteID()
		req := InviteV2CreateRequest{Code: newInviteCode(), InviteID: id, ExpiresAt: expiresAt, Role: f.role, MaxUses: f.uses,
			Capability: kp.sign(inviteV2SignedString(m.MeshID, id, expiresAt, f.role, kp.PublicHex()))}
		err = memberPost(ctx, *m, "invite/v2", &req, &resp)
		var be *brokerError
		if errors.As(err, &be) && be.Code == "invite_exists" && attempt < 5 {
			continue // a code or id someone has: another
		}
		if errors.As(err, &be) && be.Status == http.StatusForbidden {
			return withHint(brokerExit(err, "the broker refused the invite"), "only the key that created the mesh can invite")
		}
		if err != nil {
			return brokerExit(err, "the broker refused the invite")
		}
		break
	}
	join := fmt.Sprintf("claudemesh join %s --broker %s", resp.Code, m.BrokerURL)
	if c.jsonMode() {
		return c.printJSON(map[string]any{"code": resp.Code, "id": resp.ID, "broker_url": m.BrokerURL, "expires_at": resp.ExpiresAt,
			"max_uses": resp.MaxUses, "role": resp.Role, "join": join})
	}
	c.printf("invite %s to %s as %s, %s, expires %s\n", resp.ID, m.Slug, f.role, usesLabel(f.uses), resp.ExpiresAt)
	c.printf("code: %s\n", c.paint(colorBold, resp.Code))
	c.printf("join with: %s\n", join)
	return nil
}

// joinByCode claims a v2 invite on the broker --broker names and saves the
// mesh, as joinInvite does for a link.
func joinByCode(ctx context.Context, c *cli, f joinFlags, code string, reach brokerReach) (joined, error) {
	brokerURL := cmp.Or(f.broker, c.env.Getenv("CLAUDEMESH_BROKER_URL"))
	if brokerURL == "" {
		return joined{}, withHint(usageError("a short invite code needs its broker"),
			"claudemesh join "+displayInviteCode(code)+" --broker ws://HOST:PORT/ws (the inviter's 'join with' line has it)")
	}
	base, err := brokerHTTPBase(brokerURL)
	if err != nil {
		return joined{}, usageError("--broker: %v", err)
	}
	member, err := newKeypair()
	if err != nil {
		return joined{}, err
	}
	xpub, xsec, err := box.GenerateKey(rand.Reader)
	if err != nil {
		return joined{}, err
	}
	display := displayNameFor(c, f.name, fmt.Sprintf("%s-%d", hostnameOr("peer"), os.Getpid()))
	req := InviteClaimRequest{RecipientX25519Pubkey: b64url(xpub[:]), PeerPubkey: member.PublicHex(), DisplayName: display}
	var resp InviteClaimResponse
	// The URL given stays first; the others are fallbacks.
	m := Mesh{BrokerURL: brokerURL, CAFile: reach.caFile}
	for _, u := range reach.urls {
		if u != brokerURL {
			m.BrokerURLs = append(m.BrokerURLs, u)
		}
	}
	tlsConf, err := meshTLSConfig(m)
	if err != nil {
		return joined{}, exitError(exitUsage, err)
	}
	if err := postBrokerTLS(ctx, tlsConf, base, "/invites/"+code+"/claim", nil, req, &resp); err != nil {
		var be *brokerError
		if errors.As(err, &be) && be.Status == http.StatusGone {
			return joined{}, exitError(exitFailure, fmt.Errorf("this invite cannot be used: %s", be.Message), "ask for a new one")
		}
		return joined{}, brokerExit(err, "the broker refused the code")
	}
	want := inviteV2SignedString(resp.MeshID, inviteIDOf(resp.CanonicalV2), capExpiry(resp.CanonicalV2), resp.Role, resp.OwnerPubkey)
	if resp.CanonicalV2 != want || !verifySignature(resp.OwnerPubkey, resp.CanonicalV2, resp.Capability) {
		return joined{}, exitError(exitFailure, errors.New("the broker's answer is not an invite signed by the mesh's owner key; nothing was saved"))
	}
	root, err := openAnonymous(resp.SealedRootKey, xpub, xsec)
	if err != nil || len(root) != 32 {
		return joined{}, exitError(exitFailure, errors.New("the mesh root key in the broker's answer does not open with this claim's key; nothing was saved"))
	}
	path := c.Paths().ConfigFile()
	cfg, err := loadConfig(path)
	if err != nil {
		return joined{}, err
	}
	for _, m := range cfg.Meshes {
		if m.MeshID == resp.MeshID {
			return joined{Mesh: m, Role: resp.Role, Already: true}, nil
		}
	}
	local := cmp.Or(f.slug, resp.MeshSlug)
	if _, taken := cfg.MeshBySlug(local); taken {
		if f.slug != "" {
			return joined{}, exitError(exitExists, fmt.Errorf("this machine already has a mesh called %q", f.slug), "choose another with --slug")
		}
		local = freeSlug(cfg, resp.MeshSlug)
		c.infof("this machine already has a mesh called %q, so this one is %q here (choose the name with --slug)", resp.MeshSlug, local)
	}
	m.MeshID, m.MemberID, m.Slug, m.Name, m.Pubkey, m.SecretKey = resp.MeshID, resp.MemberID, local, resp.MeshSlug, member.PublicHex(), member.SecretHex()
	m.JoinedAt, m.RootKey, m.InviteVersion, m.Role = isoTime(time.Now()), b64url(root), 2, resp.Role
	if err := addNewMesh(path, m); err != nil {
		return joined{}, err
	}
	c.reloadDaemon(ctx)
	return joined{Mesh: m, Display: display, Role: resp.Role}, nil
}

// inviteIDOf and capExpiry read a canonical_v2 string's fields, for
// rebuilding it from the answer's own fields.
func inviteIDOf(canonical string) string { return capField(canonical, 2) }

func capExpiry(canonical string) int64 {
	var n int64
	_, _ = fmt.Sscan(capField(canonical, 3), &n)
	return n
}

func capField(canonical string, i int) string {
	parts := strings.Split(canonical, "|")
	if len(parts) != 6 {
		return ""
	}
	return parts[i]
}

func setupInviteList(fs *flagSet) runFunc {
	var mesh string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("'invite list' takes no arguments")
		}
		m, err := c.coldMesh(mesh)
		if err != nil {
			return err
		}
		var resp InviteListResponse
		if err := memberPost(ctx, m, "invites", &InviteListRequest{}, &resp); err != nil {
			return brokerExit(err, "the broker refused the list")
		}
		if c.jsonMode() {
			return c.printJSON(map[string]any{"mesh": m.Slug, "invites": resp.Invites})
		}
		if len(resp.Invites) == 0 {
			c.printf("no invites on %s\nhint: make one with 'claudemesh invite' (a link) or 'claudemesh invite --short' (a code)\n", m.Slug)
			return nil
		}
		c.printf("%s\n", c.paint(colorBold, fmt.Sprintf("invites on %s (%d, newest first)", m.Slug, len(resp.Invites))))
		for _, inv := range resp.Invites {
			kind := "link"
			if inv.Version == 2 {
				kind = "code"
			}
			c.printf("  %-12s  %-4s  %-6s  %-9s  used %d/%d  expires %s\n", inv.ID, kind, inv.Role, inv.State, inv.UsedCount, inv.MaxUses, inv.ExpiresAt)
		}
		c.printf("hint: 'claudemesh invite revoke <id>' stops one from being used\n")
		return nil
	}
}

func setupInviteRevoke(fs *flagSet) runFunc {
	var mesh string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) != 1 {
			return usageError("usage: claudemesh invite revoke <id|link|code> (ids are in 'claudemesh invite list')")
		}
		ref := args[0]
		if isInviteLink(ref) || strings.HasPrefix(ref, "eyJ") {
			_, token, err := parseInvite(ref)
			if token == "" {
				return usageError("not an invite link: %v", err)
			}
			ref = token // a link whose signature fails is still the broker's to revoke
		}
		m, err := c.coldMesh(mesh)
		if err != nil {
			return err
		}
		var resp InviteRevokeResponse
		if err := memberPost(ctx, m, "invite/revoke", &InviteRevokeRequest{Invite: ref}, &resp); err != nil {
			var be *brokerError
			wrapped := brokerExit(err, "the broker refused the revocation")
			if errors.As(err, &be) && be.Code == codeNotFound {
				wrapped = withHint(wrapped, "see 'claudemesh invite list --mesh "+m.Slug+"'")
			}
			return wrapped
		}
		if c.jsonMode() {
			return c.printJSON(map[string]any{"mesh": m.Slug, "invite": resp.Invite, "already_revoked": resp.AlreadyRevoked})
		}
		if resp.AlreadyRevoked {
			c.printf("invite %s on %s was revoked already (%s)\n", resp.Invite.ID, m.Slug, deref(resp.Invite.RevokedAt))
			return nil
		}
		c.printf("%s revoked invite %s on %s: it was used %d of %d times; no one can join with it now\n", c.paint(colorGreen, "✔"),
			resp.Invite.ID, m.Slug, resp.Invite.UsedCount, resp.Invite.MaxUses)
		return nil
	}
}
