// claudemesh: one binary that lets Claude Code sessions on one machine or
// many find each other and talk — a broker, a per-machine daemon, the CLI,
// an MCP stdio server and `launch`.
//
// This file holds the entry point and the verb table; help is generated
// from the table.
package main

import (
	"context"
	"os"
	"sort"
	"strings"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], processEnv()))
}

// Help sections, in the order help prints them.
const (
	groupStart   = "Start here"
	groupMesh    = "Meshes"
	groupMessage = "Messages"
	groupPeers   = "Peers and moderation"
	groupShared  = "Shared state, memory and skills"
	groupSession = "Claude Code"
	groupDaemon  = "Daemon and broker"
	groupOther   = "Other"
)

var helpGroups = []string{groupStart, groupMesh, groupMessage, groupPeers, groupShared, groupSession, groupDaemon, groupOther}

// workspaceVerbs is the `workspace <verb>` alias surface: other names for
// the mesh and launch verbs, as claudemesh users know them.
var workspaceVerbs = map[string]string{
	"launch": "launch", "connect": "launch", "open": "launch",
	"list": "mesh list", "ls": "mesh list",
	"create": "mesh create", "new": "mesh create",
	"join": "join", "add": "join",
	"share": "invite", "invite": "invite",
	"leave": "leave", "rm": "leave", "delete": "leave",
}

// workspaceSummary lists the workspace verbs, sorted.
func workspaceSummary() string {
	names := make([]string, 0, len(workspaceVerbs))
	for k := range workspaceVerbs {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// commands is the verb table. A verb's flags live in a struct set up by its
// setup func, which returns the function that runs it.
var commands = []*command{
	{
		name:    "demo",
		signals: true,
		summary: "see it work: two daemons, two sessions and their messages, in a temp dir on loopback",
		detail: `Runs a broker and two daemons (members alice and bob, each with its own
home) inside this process, on 127.0.0.1 and in a temp dir: alice creates a
mesh and invites bob, each registers a session, then they send a DM each way,
a group message and a broadcast. Prints each message's arrival and latency,
the peer list and an inbox. Exits 0 only if every message arrived exactly
once. Nothing is left running or on disk unless --keep. Your own
~/.claudemesh is never touched.`,
		group: groupStart,
		setup: setupDemo,
	},
	{
		name:    "init",
		signals: true,
		summary: "set up this machine: a broker in the daemon, a mesh 'local' on it, the daemon running",
		detail: `Safe to run again: what exists is kept, and a second run changes nothing.
If this machine has joined meshes already, init creates no 'local' mesh and
reports what is there. The broker is served by the daemon (config.json's
"broker" block; data in ~/.claudemesh/broker) and answers this machine only.
To let other machines join the mesh with 'claudemesh invite', run init on a
fresh machine with --listen 0.0.0.0:7900 --public-url ws://<this host>:7900/ws
(and open that port), or run 'claudemesh broker serve' on a host everyone
can reach and 'claudemesh mesh create' there instead.`,
		group: groupStart,
		setup: setupInit,
	},
	{
		name:    "doctor",
		summary: "check this machine's set-up and say how to fix what is wrong",
		detail: `Checks the binary, the config dir and file (modes 0700/0600, valid JSON and
keys), the daemon (running, its version, the embedded broker, each mesh's
link), claude on PATH, the MCP server in ~/.claude.json (it must run this
binary), the skill and the daemon service. Exits 1 when something needs
fixing; warnings do not change the exit code. It changes nothing.`,
		group: groupStart,
		setup: setupDoctor,
	},
	{
		name:       "peer list",
		aliases:    []string{"peers"},
		summary:    "list the peers online on your meshes",
		detail:     "Control-plane connections (daemons, one-shot CLI links) are hidden unless --all. Inside a launched session the session's mesh is listed, marked and first.",
		group:      groupPeers,
		jsonFields: true,
		setup:      setupPeerList,
	},
	{
		name:    "members",
		aliases: []string{"peer members"},
		summary: "list the members of your meshes, online or not",
		detail:  "A member who is offline can still be written to by name: 'claudemesh send <name> …' queues the message for them. A broker that cannot list members shows only those online, and the list says so.",
		group:   groupPeers,
		setup:   setupMembers,
	},
	{
		name:    "send",
		aliases: []string{"message send"},
		args:    "<to> <message…|->",
		summary: "send a message to a peer (name, key or key prefix), @group, * or #topic",
		detail: `Names and key prefixes (4+ hex characters) are resolved against the peer list;
no match and several matches are errors that list the candidates. Your own
member key needs --self, which sends one copy to each of your other live
sessions. The output says whether the recipient is online, whether the
broker holds the message for later, or whether it is still in the daemon's
outbox, then how far it got within --wait (default 2s; 0 returns once it is
queued): delivered to the recipient's daemon, surfaced to its model and how,
replied (see 'claudemesh message status'). Without the daemon the message
goes over a direct broker connection.
A lone - reads the message from stdin; --file <path> sends a file's text. A
message holds about 48 KB of text (the broker's limit, once encrypted).`,
		group: groupMessage,
		setup: setupSend,
	},
	{
		name:    "message status",
		args:    "<id>",
		summary: "how far a message you sent got: queued, sent, delivered, surfaced (and how), replied — per recipient",
		detail: `The receipt ladder of one message this machine sent, named by the msg id
'send' printed (or its client id, or its outbox row id, or 6+ characters of
any): queued in the outbox, sent (the broker has it), delivered (the
recipient's daemon stored it), surfaced (shown to the recipient's model: by
its channel, a hook, or its own 'claudemesh inbox'), replied; or dead and
why, or expired. A broadcast or group message has one ladder per recipient
session and a summary ("3/4 surfaced"). --wait waits for the ladder to climb
as far as it can. A broker that does not relay receipts stops the ladder at
sent, and a recipient that runs 'profile --receipts delivered' at delivered.`,
		group: groupMessage,
		setup: setupMessageStatus,
	},
	{
		name:    "inbox",
		aliases: []string{"message inbox"},
		summary: "read the messages this machine received (marks them seen)",
		detail:  "Inside a launched session only that session's messages (and its member's) are shown.",
		group:   groupMessage,
		setup:   setupInbox,
	},
	{
		name:    "inbox flush",
		aliases: []string{"message inbox flush"},
		summary: "delete received messages: --mesh, --before <iso> or --all (required)",
		group:   groupMessage,
		setup:   setupInboxFlush,
	},
	{
		name:    "inbox delete",
		aliases: []string{"inbox rm", "message inbox delete", "message inbox rm"},
		args:    "<id>",
		summary: "delete one received message",
		group:   groupMessage,
		setup:   setupInboxDelete,
	},
	{
		name:    "search",
		args:    "<query…>",
		summary: "search the messages this machine sent and received (every word, as a word or its start)",
		detail: `Searches the daemon's inbox and outbox with SQLite full-text search: a message
matches when it has every word of the query, each as a whole word or as the
start of one. --from takes a sender's name or a key prefix; --since an ISO
time or an age (90m, 12h, 7d). Inside a launched session only that
session's messages are searched.`,
		group: groupMessage,
		setup: setupSearch,
	},
	{
		name:    "export",
		summary: "write the message history as a transcript: --format md (readable) or jsonl",
		detail: `Writes every message this machine sent and received, oldest first, to stdout
(or --output FILE): md is a transcript grouped by day, jsonl one JSON object a
line with each message's full record (outbox state, deliveries to this
machine's sessions). A message sent between two sessions of this machine is
written once.`,
		group: groupMessage,
		setup: setupExport,
	},
	{
		name:    "ui",
		summary: "open the mesh in your browser: peers, conversations, the outbox, live",
		detail: `Opens the daemon's web UI (served on its loopback TCP port; nothing is
loaded from elsewhere) with a one-time login link, which it exchanges for a
cookie. The page shows the meshes and their links, peers, conversations by
peer and thread, broadcasts and groups, the outbox (with requeue), shared
state and memory, search, and a send box; it follows the daemon's event
stream, so what happens shows at once. --no-open prints the link instead:
it logs one browser in, once, within two minutes.`,
		group: groupMessage,
		setup: setupUI,
	},
	{
		name:    "peer kick",
		aliases: []string{"kick"},
		args:    "<peer> | --all | --stale <duration>",
		summary: "end peers' sessions (owner or admin); daemons are refused — use ban",
		group:   groupPeers,
		setup:   setupKick,
	},
	{
		name:    "peer disconnect",
		args:    "<peer> | --all | --stale <duration>",
		summary: "drop peers' connections (owner or admin); they reconnect on their own",
		group:   groupPeers,
		setup:   setupDisconnect,
	},
	{
		name:    "peer ban",
		aliases: []string{"ban"},
		args:    "<peer>",
		summary: "revoke a member (owner or admin): all its connections close and stay out",
		group:   groupPeers,
		setup:   setupBan,
	},
	{
		name:    "peer unban",
		aliases: []string{"unban"},
		args:    "<peer>",
		summary: "let a banned member back in",
		group:   groupPeers,
		setup:   setupUnban,
	},
	{
		name:    "peer bans",
		aliases: []string{"bans"},
		summary: "list the banned members of a mesh",
		group:   groupPeers,
		setup:   setupBans,
	},
	{
		name:    "grant",
		args:    "<peer> <capability…>",
		summary: "let a peer do more to you: read, dm, broadcast, state-read, state-write, memory, skills, all",
		detail: `A peer is a member (a name, its key or a key prefix) or one session (its name
or key); a member's entry wins over its sessions'. A peer with no entry has
the defaults: read, dm, broadcast, state-read. grant adds to the peer's entry
(a new entry starts from the defaults); --reset removes the entry. The broker
keeps the grants and enforces them: a DM from a peer without dm is refused
(the sender's daemon gives it up, saying why), and a broadcast or group
message from a peer without broadcast skips you.`,
		group: groupPeers,
		setup: setupGrant,
	},
	{
		name:    "revoke",
		args:    "<peer> [capability…]",
		summary: "take capabilities from a peer; with none named, all of them: the peer is blocked",
		group:   groupPeers,
		setup:   setupRevoke,
	},
	{
		name:    "grants",
		summary: "list who you granted what on a mesh",
		group:   groupPeers,
		setup:   setupGrants,
	},
	{
		name:    "role",
		aliases: []string{"member role"},
		args:    "<member> admin|member",
		summary: "make a member an admin or a plain member again (the mesh owner only)",
		detail: `An admin may moderate (kick, disconnect, ban, unban), list and revoke invites
and read the audit log. Only the mesh owner changes roles, and the owner is
always an admin. The member's live connections take the new role at once;
the change is recorded in the audit log (role_changed).`,
		group: groupPeers,
		setup: setupRole,
	},
	{
		name:    "audit",
		summary: "the mesh's audit log of joins, invites, moderation, grants and roles (owner or admin); --verify checks its hash chain",
		detail: `Each entry's hash covers the previous entry's hash, the mesh, the event, who
did it, its payload (canonical JSON) and its time, so an entry changed, removed
or reordered on the broker breaks every hash after it. --verify fetches the
whole log and recomputes the chain on this machine; it names the first entry
that does not hold and exits 1.`,
		group: groupPeers,
		setup: setupAudit,
	},
	{
		name:    "verify",
		aliases: []string{"peer verify"},
		args:    "<peer>",
		summary: "show the safety number of your member key and a peer's, to compare out of band",
		detail: `Thirty digits from both member keys, the same on both machines: read them to
the peer over a channel you trust (in person, a call). This machine remembers
the key behind each name it sees (trust on first use, in known_peers.json);
'peer list' marks a peer whose key changed since, and --trust, once the
digits match, makes this machine remember the new key.`,
		group: groupPeers,
		setup: setupVerify,
	},
	{
		name:    "whoami",
		summary: "show this machine's identities and, in a session, the session's (never a secret)",
		group:   groupPeers,
		setup:   setupWhoami,
	},
	{
		name:    "state get",
		args:    "<key>",
		summary: "read a shared state key",
		group:   groupShared,
		setup:   setupStateGet,
	},
	{
		name:    "state set",
		args:    "<key> <value>",
		summary: "set a shared state key (the value is JSON if it parses, else text)",
		group:   groupShared,
		setup:   setupStateSet,
	},
	{
		name:    "state list",
		summary: "list the shared state keys",
		group:   groupShared,
		setup:   setupStateList,
	},
	{
		name:    "remember",
		args:    "<text…>",
		summary: "store a memory for the mesh",
		group:   groupShared,
		setup:   setupRemember,
	},
	{
		name:    "recall",
		args:    "<query…>",
		summary: "search the mesh's memories",
		group:   groupShared,
		setup:   setupRecall,
	},
	{
		name:    "forget",
		args:    "<memory-id>",
		summary: "delete a memory",
		group:   groupShared,
		setup:   setupForget,
	},
	{
		name:    "skill list",
		args:    "[query]",
		summary: "list the skills shared on the mesh",
		group:   groupShared,
		setup:   setupSkillList,
	},
	{
		name:    "skill get",
		args:    "<name>",
		summary: "print a shared skill",
		group:   groupShared,
		setup:   setupSkillGet,
	},
	{
		name:    "skill share",
		args:    "<name>",
		summary: "share a skill (instructions from --file or stdin)",
		group:   groupShared,
		setup:   setupSkillShare,
	},
	{
		name:    "skill remove",
		args:    "<name>",
		summary: "remove a shared skill",
		group:   groupShared,
		setup:   setupSkillRemove,
	},
	{
		name:    "profile",
		summary: "show or change your presence: summary, status, visibility, profile fields",
		detail:  "Without flags, shows your live rows. In a launched session changes apply to that session; elsewhere to your member connection on each mesh (or --mesh).",
		group:   groupPeers,
		setup:   setupProfile,
	},
	{
		name:        "launch",
		signals:     true,
		aliases:     []string{"connect"},
		args:        "[slug] [-- claude args…]",
		summary:     "start claude in a mesh, as a session with its own identity",
		passthrough: true,
		detail: `Ensures the daemon, registers the session (its keypair is kept, so --resume
and --continue keep its identity), prints the mesh status and runs claude with
claudemesh's channel loaded. Arguments after -- go to claude. The claude
executable is CLAUDEMESH_CLAUDE_BIN, else claude on PATH. launch exits with
claude's status.`,
		group: groupSession,
		setup: setupLaunch,
	},
	{
		name:    "install",
		signals: true,
		summary: "set up Claude Code: the MCP server, the claudemesh skill and the daemon service",
		detail: `Registers mcpServers.claudemesh in ~/.claude.json (a backup of the file goes
to ~/.claude/backups first; nothing else in it changes), writes the skill to
~/.claude/skills/claudemesh/SKILL.md, installs the daemon as a systemd user
unit or launchd agent and starts it, then reports each mesh's broker link.
Where no user service manager runs (a container, WSL, SSH without lingering)
the service is skipped with a warning and the daemon starts on demand. Run it
again after moving the binary. Under CI it refuses the service unless
--allow-ci-persistent.`,
		group: groupSession,
		setup: setupInstall,
	},
	{
		name:    "uninstall",
		signals: true,
		summary: "undo install: the MCP server entry, the skill and the daemon service",
		detail:  "Meshes, keys and the inbox in ~/.claudemesh are kept.",
		group:   groupSession,
		setup:   setupUninstall,
	},
	{
		name:    "mcp",
		signals: true,
		summary: "the MCP stdio server Claude Code runs: delivers mesh messages into the session",
		detail: `Claude Code starts it (registered by 'claudemesh install', loaded by
'claudemesh launch'); you do not run it by hand. It speaks JSON-RPC on
stdin/stdout, starts the daemon when it is not running (as every verb does),
and logs to mcp-<pid>.log in the daemon dir. --tools adds send, message_status,
peers and inbox tools for clients that have no shell to run the CLI in.`,
		group: groupSession,
		setup: setupMCP,
	},
	{
		name:    "hook",
		args:    "<event>",
		summary: "what Claude Code's hooks run: the welcome and new messages as context, wake-ups (install registers them)",
		detail: `Claude Code runs it at its hook events, once 'claudemesh install' has put
them in ~/.claude/settings.json; you do not run it by hand. <event> is
session-start (the welcome), user-prompt-submit and post-tool-use (the
session's new messages as context for the model) or stop (keep the session
going once with messages that arrived while it finished; with --wake, wait
at rest and wake the session when one comes). It reads Claude Code's hook
JSON on stdin, answers on stdout in Claude Code's format, never fails the
prompt, and logs each run to hooks.log in the daemon dir. A plain 'claude'
session becomes a peer at its first hook.`,
		group: groupSession,
		setup: setupHook,
	},
	{
		name:    "status",
		summary: "the daemon, its broker links and sessions at a glance",
		group:   groupDaemon,
		setup:   setupStatus,
	},
	{
		name:    "daemon up",
		signals: true,
		aliases: []string{"daemon start"},
		summary: "start the daemon (detached unless --foreground)",
		detail:  "The daemon serves every mesh in ~/.claudemesh/config.json. It re-reads the config on SIGHUP and when asked about a mesh it does not know yet.",
		group:   groupDaemon,
		setup:   setupDaemonUp,
	},
	{
		name:    "daemon down",
		signals: true,
		aliases: []string{"daemon stop"},
		summary: "stop the daemon",
		group:   groupDaemon,
		setup:   setupDaemonDown,
	},
	{
		name:    "daemon status",
		summary: "whether the daemon runs, its links and sessions",
		group:   groupDaemon,
		setup:   setupDaemonStatus,
	},
	{
		name:    "daemon version",
		summary: "the running daemon's version and IPC API",
		group:   groupDaemon,
		setup:   setupDaemonVersion,
	},
	{
		name:    "daemon install-service",
		signals: true,
		summary: "run the daemon as a systemd user unit / launchd agent, started at login",
		detail: `The unit runs this binary's absolute path with 'daemon up --foreground'. A
running daemon is replaced by the service's. Without systemctl / launchctl the
unit is written and the commands to start it are printed.`,
		group: groupDaemon,
		setup: setupInstallService,
	},
	{
		name:    "daemon uninstall-service",
		signals: true,
		summary: "stop and remove the daemon service",
		group:   groupDaemon,
		setup:   setupUninstallService,
	},
	{
		name:    "daemon outbox list",
		aliases: []string{"daemon outbox"},
		summary: "the daemon's outgoing messages and their state",
		group:   groupDaemon,
		setup:   setupOutboxList,
	},
	{
		name:    "daemon outbox requeue",
		args:    "<id>",
		summary: "send a pending, stuck or dead outbox row again under a new client id",
		group:   groupDaemon,
		setup:   setupOutboxRequeue,
	},
	{
		name:    "mesh create",
		aliases: []string{"mesh new", "new", "create"},
		args:    "<slug>",
		summary: "create a mesh on a broker, owned by a new key on this machine",
		detail: `The broker URL comes from --broker, else CLAUDEMESH_BROKER_URL, else the embedded
broker in config.json. Creating a mesh is open to loopback clients; a remote
broker needs its create token (--create-token).`,
		group: groupMesh,
		setup: setupMeshCreate,
	},
	{
		name:    "mesh list",
		aliases: []string{"mesh ls", "list", "ls"},
		summary: "list the meshes this machine has joined",
		group:   groupMesh,
		setup:   setupMeshList,
	},
	{
		name:    "invite",
		aliases: []string{"share"},
		summary: "make a signed invite link for a mesh you own (--short: a code to read aloud)",
		detail: `Prints the ic://join/… link as its last line; --json prints {"url", "expires_at", "id"}.
--short makes a v2 invite instead: a ten-symbol code (K7M2X-Q9PRT) that the
broker holds under your signed capability; whoever joins with it gets the
mesh root key sealed to a key made for that join. The code names no broker,
so the joiner runs the printed 'claudemesh join <code> --broker <url>'.`,
		group: groupMesh,
		setup: setupInvite,
	},
	{
		name:    "invite list",
		summary: "list a mesh's invites: id, kind, role, state, uses, expiry (owner or admin)",
		group:   groupMesh,
		setup:   setupInviteList,
	},
	{
		name:    "invite revoke",
		args:    "<id|link|code>",
		summary: "stop an invite from being used (owner or admin); joins with it get invite_revoked",
		group:   groupMesh,
		setup:   setupInviteRevoke,
	},
	{
		name:    "join",
		args:    "<invite>",
		summary: "join a mesh with an invite link, or a short code and --broker",
		detail: `The mesh keeps the invite's name on this machine unless --slug names it; when
this machine has a mesh of that name already, it gets a free one such as
local-2, and join says so. A bare invite link as the only argument
(claudemesh ic://join/…) joins too.`,
		group: groupMesh,
		setup: setupJoin,
	},
	{
		name:    "leave",
		args:    "<slug>",
		summary: "forget a mesh on this machine (its member key is deleted)",
		detail: `Leaving a mesh created on this machine deletes its owner key, the only key that
can invite anyone to it, so leave asks first on a terminal and otherwise
refuses without --yes.`,
		group: groupMesh,
		setup: setupLeave,
	},
	{
		name:    "workspace",
		args:    "<verb>",
		summary: "the mesh verbs under another name: " + workspaceSummary(),
		group:   groupMesh,
		setup: func(fs *flagSet) runFunc {
			return func(ctx context.Context, c *cli, args []string) error {
				if len(args) == 0 {
					return withHint(usageError("'workspace' needs a verb"), "one of: "+workspaceSummary())
				}
				return withHint(usageError("unknown verb \"workspace %s\"", args[0]), "one of: "+workspaceSummary())
			}
		},
	},
	{
		name:    "broker serve",
		signals: true,
		summary: "run a broker (WebSocket + HTTP on one port)",
		detail: `Serves /ws, /health, /metrics, /join and the mesh-creation routes. Mesh
creation is open to loopback clients; others need --create-token. --pprof
127.0.0.1:PORT also serves Go's profiler (/debug/pprof/) on that loopback
address, for measuring the broker under load; it is off unless asked for. With --store postgres://… several brokers share
one store as replicas.`,
		group: groupDaemon,
		setup: setupBrokerServe,
	},
	{
		name:    "broker migrate",
		signals: true,
		summary: "copy a SQLite broker's store into an empty PostgreSQL one",
		detail: `Copies every mesh, member, invite, message and delivery, state, memory,
skill, presence and the audit log in one transaction. Stop the broker first;
the SQLite store is only read.`,
		group: groupDaemon,
		setup: setupBrokerMigrate,
	},
	{
		name:        "broker install-service",
		signals:     true,
		args:        "-- [broker serve flags]",
		passthrough: true,
		summary:     "run a broker as a systemd unit (a system unit as root), started at boot",
		detail: `The unit runs this binary's absolute path with 'broker serve' and the flags
after --, checked first. A store URL (--store or $CLAUDEMESH_BROKER_STORE) goes
to an environment file only its owner can read, never into the unit. Without
systemctl the files are written and the commands to start it are printed.`,
		group: groupDaemon,
		setup: setupBrokerInstallService,
	},
	{
		name:    "broker uninstall-service",
		signals: true,
		summary: "stop and remove the broker service",
		group:   groupDaemon,
		setup:   setupBrokerUninstallService,
	},
	{
		name:    "bench",
		signals: true,
		summary: "load-test a broker: N peers each send M DMs, every one checked to arrive exactly once",
		detail: `The project's load tool (its standard shape: 100 peers × 1,000 DMs, all
delivered, p99 under 100 ms). By default it starts a broker in this process on 127.0.0.1:0
with a temp data dir and its rate limits raised; --broker process starts that
broker as a process of its own (its CPU and memory then measured apart from the
peers), and --broker ws://HOST:PORT/ws measures a running broker (give it
--send-burst, --send-per-minute and --handshake-burst for the run). The peers
speak the real wire protocol: hello, crypto_box DMs, push, client_ack. Sends are
paced to --rate messages a second in total (open loop); --inflight N keeps N
unacked sends per peer instead (closed loop); --curve 2000,4000,8000 runs one
open-loop step per rate on the same mesh and prints offered against achieved.
It reports delivered %, p50/p95/p99/max latency from send to push, throughput
and the broker's CPU and RSS where it can tell them apart. It exits 1 when a
message is lost, duplicated, misdelivered or refused.`,
		group: groupOther,
		setup: setupBench,
	},
	{
		name:    "help",
		args:    "[verb]",
		summary: "show help for claudemesh or for one verb",
		group:   groupOther,
		setup: func(fs *flagSet) runFunc {
			return runHelp
		},
	},
	{
		name:    "version",
		summary: "print claudemesh's version (also --version, -V)",
		group:   groupOther,
		setup: func(fs *flagSet) runFunc {
			return func(ctx context.Context, c *cli, args []string) error {
				if len(args) > 0 {
					return usageError("'version' takes no arguments")
				}
				return c.printVersion()
			}
		},
	},
	{
		name:    "completions",
		args:    "bash|zsh|fish",
		summary: "print a shell completion script",
		detail: `Load the script for the current shell session:
  bash:  source <(claudemesh completions bash)
  zsh:   source <(claudemesh completions zsh)     (after compinit)
  fish:  claudemesh completions fish | source
or save it where the shell loads completions: bash-completion's completions
directory, a directory on zsh's $fpath as _claudemesh, or
~/.config/fish/completions/claudemesh.fish. The script is generated from the
verb table, so regenerate it after upgrading claudemesh.`,
		group: groupOther,
		setup: func(fs *flagSet) runFunc {
			return runCompletions
		},
	},
}
