// What lets several brokers share one PostgreSQL store as replicas: a
// replica table with heartbeats, the live presences each replica holds (for
// peers_list, members_list and moderation across replicas), and one
// notification channel per store carrying replica events — the ids of
// messages just committed, and control messages (kick, ban, presence events,
// state changes). Events carry ids, never message bodies: a replica reads
// what it pushes from the store.
//
// Policy:
//   - A replica heartbeats every interval; one whose heartbeat is older than
//     the expiry is dead, and the next heartbeat of any replica removes its
//     live presences (its peers leave peers_list). Its stored presences end
//     one grace window later, as a single broker's do across a restart
//     (multicasts then fall back to members' links), unless their keys came
//     back on another replica. Its connections' leases lived in its memory
//     and died with it; their deliveries are still pending in the store and
//     go out when the recipients reconnect to a replica that lives.
//   - A replica that stops cleanly removes its live presences at once.
//   - A replica found missing at its heartbeat (reaped while cut off from
//     the database) registers again and rewrites what it holds.
package main

import (
	"context"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"
)

// replicaStore is a store that several brokers share. A broker whose store
// implements it runs as one replica among them (broker_replicas.go).
type replicaStore interface {
	// Heartbeat registers or refreshes this replica, records its
	// connections' last activity, removes the live presences of replicas
	// silent past expiry (or stopped), and ends their stored presences once
	// grace has passed too.
	Heartbeat(ctx context.Context, now time.Time, expiry, grace time.Duration, activity map[string]time.Time) (heartbeatResult, error)
	// LeaveReplicas is a clean stop: this replica's live presences go at once.
	LeaveReplicas(ctx context.Context, now time.Time) error
	// PutLivePresences writes presences this replica holds; DropLivePresences
	// removes them by presence id.
	PutLivePresences(ctx context.Context, ps []livePresence) error
	DropLivePresences(ctx context.Context, presenceIDs []string) error
	// RemoteLivePresences lists the presences other live replicas hold in a mesh.
	RemoteLivePresences(ctx context.Context, meshID string, now time.Time, expiry time.Duration) ([]livePresence, error)
	// PublishReplicaEvent sends an event to every replica (this one ignores it).
	PublishReplicaEvent(ctx context.Context, e replicaEvent) error
	// ListenReplicaEvents delivers other replicas' events to handle until ctx
	// ends, reconnecting when the connection drops; connected runs on each
	// (re)connection, since events sent meanwhile are lost.
	ListenReplicaEvents(ctx context.Context, handle func(replicaEvent), connected func()) error
	// PendingAmong returns the deliveries still pending among messages ids
	// for keys: what another replica's commit left for this one to push.
	PendingAmong(ctx context.Context, meshID string, ids, keys []string, now time.Time) ([]pendingDelivery, error)
	ReplicaID() string
}

// heartbeatResult is what one heartbeat found.
type heartbeatResult struct {
	Reaped []string // replicas found dead and removed
	// Registered says this replica's row was missing (first heartbeat, or
	// reaped while cut off): what it holds must be written again.
	Registered bool
	Live       int // replicas alive, this one included
}

// livePresence is one presence a replica holds, as other replicas see it.
type livePresence struct {
	ReplicaID     string
	PresenceID    string
	MeshID        string
	Key           string
	MemberID      string
	MemberPubkey  string
	SessionPubkey string
	DisplayName   string
	Role          string
	Visible       bool
	OneShot       bool
	Connected     bool
	ConnectedAt   time.Time
	LastActiveAt  time.Time
	Row           PeerRow // what peers_list shows of it
}

// pendingDelivery is one pending delivery of a stored message.
type pendingDelivery struct {
	Msg storedMessage
	Key string
}

// Replica event kinds.
const (
	replicaEventPush   = "push"   // Mesh, IDs: messages committed with deliveries
	replicaEventRemove = "remove" // To, Presences, Code, Reason: close and remove these presences
	replicaEventBan    = "ban"    // Mesh, Member: close every presence of the member
	replicaEventSystem = "system" // Mesh, Event, Data, SkipMember: a presence event for every peer
	replicaEventState  = "state"  // Mesh, Key, SkipPresence: a shared-state change to announce
	replicaEventMember = "member" // Mesh, Member: the member's role or grants changed; read them again
)

// replicaEvent is one notification between replicas: ids only, nothing a
// replica could not read back from the store.
type replicaEvent struct {
	Kind         string          `json:"k"`
	From         string          `json:"from"`
	To           string          `json:"to,omitempty"`
	Mesh         string          `json:"mesh,omitempty"`
	IDs          []string        `json:"ids,omitempty"`
	Presences    []string        `json:"presences,omitempty"`
	Member       string          `json:"member,omitempty"`
	Code         int             `json:"code,omitempty"`
	Reason       string          `json:"reason,omitempty"`
	Event        string          `json:"event,omitempty"`
	Data         json.RawMessage `json:"data,omitempty"`
	SkipMember   string          `json:"skip_member,omitempty"`
	Key          string          `json:"key,omitempty"`
	SkipPresence string          `json:"skip_presence,omitempty"`
}

// maxPushIDs bounds the ids one push event carries, inside PostgreSQL's
// 8000-byte notification payload.
const maxPushIDs = 150

func (s *postgresBrokerStore) ReplicaID() string { return s.replicaID }

// channel is the store's notification channel.
func (s *postgresBrokerStore) channel() string { return "claudemesh_" + s.schema }

// pushEvents are the push events for a committed batch: per mesh, the ids of
// the messages it stored.
func (s *postgresBrokerStore) pushEvents(appends []appendOp, results []appendResult) [][]byte {
	byMesh := map[string][]string{}
	var meshes []string
	for i, a := range appends {
		if results[i].Err != nil || results[i].Dup || len(results[i].Recipients) == 0 {
			continue
		}
		if byMesh[a.Msg.MeshID] == nil {
			meshes = append(meshes, a.Msg.MeshID)
		}
		byMesh[a.Msg.MeshID] = append(byMesh[a.Msg.MeshID], results[i].ID)
	}
	var out [][]byte
	for _, mesh := range meshes {
		ids := byMesh[mesh]
		for len(ids) > 0 {
			n := min(len(ids), maxPushIDs)
			data, _ := json.Marshal(replicaEvent{Kind: replicaEventPush, From: s.replicaID, Mesh: mesh, IDs: ids[:n]})
			out = append(out, data)
			ids = ids[n:]
		}
	}
	return out
}

func (s *postgresBrokerStore) Heartbeat(ctx context.Context, now time.Time, expiry, grace time.Duration, activity map[string]time.Time) (heartbeatResult, error) {
	var out heartbeatResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Registered: no row, or one another replica had reaped.
		if err := tx.QueryRow(ctx, `WITH old AS (SELECT reaped_at FROM replicas WHERE id = $1)
			INSERT INTO replicas (id, started_at, heartbeat_at) VALUES ($1, $2, $2)
			ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, stopped_at = NULL, reaped_at = NULL
			RETURNING NOT EXISTS (SELECT 1 FROM old WHERE reaped_at IS NULL)`,
			s.replicaID, ms(now)).Scan(&out.Registered); err != nil {
			return err
		}
		if len(activity) > 0 {
			ids := make([]string, 0, len(activity))
			ats := make([]int64, 0, len(activity))
			for id, at := range activity {
				ids, ats = append(ids, id), append(ats, ms(at))
			}
			if _, err := tx.Exec(ctx, `UPDATE live_presences l SET last_active_at = u.at
				FROM unnest($1::text[], $2::bigint[]) AS u(id, at) WHERE l.replica_id = $3 AND l.presence_id = u.id`,
				ids, ats, s.replicaID); err != nil {
				return err
			}
		}
		// Replicas silent past the expiry, or stopped, are dead: their
		// live presences go now.
		rows, err := tx.Query(ctx, `UPDATE replicas SET reaped_at = $1
			WHERE reaped_at IS NULL AND id <> $2 AND (heartbeat_at < $3 OR stopped_at IS NOT NULL) RETURNING id`,
			ms(now), s.replicaID, ms(now.Add(-expiry)))
		reaped, err := pgCollect(rows, err, func(r rowScanner) (string, error) {
			var id string
			return id, r.Scan(&id)
		})
		if err != nil {
			return err
		}
		out.Reaped = reaped
		if _, err := tx.Exec(ctx, `DELETE FROM live_presences WHERE replica_id NOT IN (SELECT id FROM replicas WHERE reaped_at IS NULL)`); err != nil {
			return err
		}
		// Their stored presences end one grace window after they went
		// quiet, as a single broker's do after a restart: a key that
		// reconnected to another replica meanwhile is present there.
		if _, err := tx.Exec(ctx, `WITH gone AS (
				DELETE FROM replicas WHERE reaped_at IS NOT NULL AND coalesce(stopped_at, heartbeat_at) < $2 RETURNING id)
			UPDATE presences SET present = FALSE, seen_at = $1 WHERE present AND replica_id IN (SELECT id FROM gone)`,
			ms(now), ms(now.Add(-grace))); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT count(*) FROM replicas WHERE reaped_at IS NULL`).Scan(&out.Live)
	})
	return out, err
}

// LeaveReplicas marks this replica stopped and removes its live presences
// at once; its stored presences end after the grace window (Heartbeat).
func (s *postgresBrokerStore) LeaveReplicas(ctx context.Context, now time.Time) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`UPDATE replicas SET stopped_at = $1, heartbeat_at = $1 WHERE id = $2`, ms(now), s.replicaID)
		b.Queue(`DELETE FROM live_presences WHERE replica_id = $1`, s.replicaID)
		return tx.SendBatch(ctx, b).Close()
	})
}

func (s *postgresBrokerStore) PutLivePresences(ctx context.Context, ps []livePresence) error {
	b := &pgx.Batch{}
	for _, p := range ps {
		b.Queue(`INSERT INTO live_presences (replica_id, presence_id, mesh_id, key, member_id, member_pubkey, session_pubkey,
				display_name, role, visible, one_shot, connected, connected_at, last_active_at, peer_row)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
			ON CONFLICT (replica_id, presence_id) DO UPDATE SET key = excluded.key, display_name = excluded.display_name,
				visible = excluded.visible, connected = excluded.connected, last_active_at = excluded.last_active_at,
				peer_row = excluded.peer_row`,
			s.replicaID, p.PresenceID, p.MeshID, p.Key, p.MemberID, p.MemberPubkey, p.SessionPubkey, p.DisplayName, p.Role,
			p.Visible, p.OneShot, p.Connected, ms(p.ConnectedAt), ms(p.LastActiveAt), jsonText(p.Row))
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() })
}

func (s *postgresBrokerStore) DropLivePresences(ctx context.Context, presenceIDs []string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM live_presences WHERE replica_id = $1 AND presence_id = ANY($2)`, s.replicaID, presenceIDs)
	return err
}

func (s *postgresBrokerStore) RemoteLivePresences(ctx context.Context, meshID string, now time.Time, expiry time.Duration) ([]livePresence, error) {
	rows, err := s.pool.Query(ctx, `SELECT l.replica_id, l.presence_id, l.mesh_id, l.key, l.member_id, l.member_pubkey, l.session_pubkey,
			l.display_name, l.role, l.visible, l.one_shot, l.connected, l.connected_at, l.last_active_at, l.peer_row
		FROM live_presences l JOIN replicas r ON r.id = l.replica_id
		WHERE l.mesh_id = $1 AND l.replica_id <> $2 AND r.heartbeat_at >= $3 AND r.reaped_at IS NULL AND r.stopped_at IS NULL
		ORDER BY l.connected_at, l.presence_id`, meshID, s.replicaID, ms(now.Add(-expiry)))
	return pgCollect(rows, err, func(r rowScanner) (livePresence, error) {
		var p livePresence
		var connected, active int64
		var row string
		err := r.Scan(&p.ReplicaID, &p.PresenceID, &p.MeshID, &p.Key, &p.MemberID, &p.MemberPubkey, &p.SessionPubkey,
			&p.DisplayName, &p.Role, &p.Visible, &p.OneShot, &p.Connected, &connected, &active, &row)
		p.ConnectedAt, p.LastActiveAt = fromMs(connected), fromMs(active)
		_ = json.Unmarshal([]byte(row), &p.Row)
		return p, err
	})
}

func (s *postgresBrokerStore) PublishReplicaEvent(ctx context.Context, e replicaEvent) error {
	e.From = s.replicaID
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, s.channel(), string(data))
	return err
}

// listenRetry is the pause before the listener connects again.
const listenRetry = 500 * time.Millisecond

func (s *postgresBrokerStore) ListenReplicaEvents(ctx context.Context, handle func(replicaEvent), connected func()) error {
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, handle, connected)
		if ctx.Err() != nil {
			break
		}
		_ = err // the connection dropped: the database restarts, or the network failed
		select {
		case <-time.After(listenRetry):
		case <-ctx.Done():
		}
	}
	return nil
}

// listenOnce holds one listening connection until it fails.
func (s *postgresBrokerStore) listenOnce(ctx context.Context, handle func(replicaEvent), connected func()) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection is LISTENing: it never goes back to the pool.
	raw := conn.Hijack()
	defer raw.Close(context.Background())
	if _, err := raw.Exec(ctx, `LISTEN `+pgx.Identifier{s.channel()}.Sanitize()); err != nil {
		return err
	}
	connected()
	for {
		n, err := raw.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		var e replicaEvent
		if err := json.Unmarshal([]byte(n.Payload), &e); err != nil || e.From == s.replicaID {
			continue
		}
		if e.To != "" && e.To != s.replicaID {
			continue
		}
		handle(e)
	}
}

func (s *postgresBrokerStore) PendingAmong(ctx context.Context, meshID string, ids, keys []string, now time.Time) ([]pendingDelivery, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+messageColumns+`, d.recipient_key FROM deliveries d JOIN messages m ON m.id = d.message_id
		WHERE d.message_id = ANY($1) AND d.recipient_key = ANY($2) AND d.mesh_id = $3 AND d.expires_at > $4
		ORDER BY m.seq`, ids, keys, meshID, ms(now))
	return pgCollect(rows, err, func(r rowScanner) (pendingDelivery, error) {
		var d pendingDelivery
		var created, expires int64
		m := &d.Msg
		err := r.Scan(&m.Seq, &m.ID, &m.MeshID, &m.SenderMemberID, &m.SenderPubkey, &m.SenderMemberPubkey, &m.SenderName, &m.TargetSpec, &m.Priority,
			&m.Nonce, &m.Ciphertext, &created, &expires, &m.ClientMessageID, &m.RequestFingerprint, &m.ReplyToID, &m.Subtype, &m.Topic, &d.Key)
		m.CreatedAt, m.ExpiresAt = fromMs(created), fromMs(expires)
		return d, err
	})
}
