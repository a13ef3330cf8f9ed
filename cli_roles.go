// `claudemesh role <member> admin|member`: the mesh owner makes a member an
// admin (who may moderate, list and revoke invites, and read the audit log)
// or a plain member again. One request to the mesh's broker, signed with
// this machine's member key (POST /cli/mesh/<mesh>/role); the broker
// records the change in the audit log.
package main

import (
	"context"
	"errors"
	"strings"
)

func setupRole(fs *flagSet) runFunc {
	var mesh string
	fs.StringVar(&mesh, "mesh", "", "mesh slug")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) != 2 {
			return usageError("usage: claudemesh role <member> admin|member")
		}
		role := strings.ToLower(args[1])
		if role != roleAdmin && role != roleMember {
			return usageError("role must be admin or member, not %q", args[1])
		}
		m, err := c.coldMesh(mesh)
		if err != nil {
			return err
		}
		var resp RoleResponse
		if err := memberPost(ctx, m, "role", &RoleRequest{Member: args[0], Role: role}, &resp); err != nil {
			wrapped := brokerExit(err, "the broker refused the role change")
			if be := (*brokerError)(nil); errors.As(err, &be) && be.Code == codeNotFound {
				wrapped = withHint(wrapped, "see 'claudemesh members' for who is on "+m.Slug)
			}
			return wrapped
		}
		if c.jsonMode() {
			return c.printJSON(map[string]any{"mesh": m.Slug, "displayName": resp.DisplayName, "pubkey": resp.Pubkey,
				"role": resp.Role, "previous": resp.Previous, "changed": resp.Changed})
		}
		who := terminalLine(resp.DisplayName) + " (" + shortKey(resp.Pubkey) + ")"
		if !resp.Changed {
			c.printf("%s is already %s on %s\n", who, roleLabel(resp.Role), m.Slug)
			return nil
		}
		c.printf("%s %s is now %s on %s (was %s)\n", c.paint(colorGreen, "✔"), who, roleLabel(resp.Role), m.Slug, resp.Previous)
		return nil
	}
}

// roleLabel is a role with its article: "an admin", "a member".
func roleLabel(role string) string {
	if role == roleAdmin {
		return "an admin"
	}
	return "a " + role
}
