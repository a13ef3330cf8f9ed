// Who a sender key is, per mesh, for pushes that do not say: a broker may
// push a queued message with only the sender's key (no name, no member
// key). The daemon learns names from every peer list it reads and from
// every push that carries them, and asks the broker for its peer list when
// a push names a key it does not know.
//
// Policy: at most one peer-list request per mesh is in flight, and a mesh
// is not asked again within senderRefreshInterval, so a burst of pushes
// from someone who has left costs one request, not one each. A key nobody
// can name keeps its short-key fallback.
package main

import (
	"sync"
	"time"
)

// senderRefreshInterval is the least time between two peer-list requests
// made to name senders on one mesh.
const senderRefreshInterval = 5 * time.Second

// knownSender is what a key is known as.
type knownSender struct {
	Name         string
	MemberPubkey string
}

// senderNames is the per-mesh directory of sender keys. Safe for
// concurrent use.
type senderNames struct {
	mu       sync.Mutex
	byMesh   map[string]map[string]knownSender
	inflight map[string]chan struct{}
	asked    map[string]time.Time // when each mesh was last asked
}

func newSenderNames() *senderNames {
	return &senderNames{byMesh: map[string]map[string]knownSender{}, inflight: map[string]chan struct{}{},
		asked: map[string]time.Time{}}
}

// learn records what key is known as; an empty name teaches nothing.
func (n *senderNames) learn(mesh, key string, s knownSender) {
	if key == "" || s.Name == "" {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	m := n.byMesh[mesh]
	if m == nil {
		m = map[string]knownSender{}
		n.byMesh[mesh] = m
	}
	m[key] = s
}

// learnPeers records every row of a peer list: a session row under its
// session key, every row under its member key too.
func (n *senderNames) learnPeers(mesh string, rows []PeerRow) {
	for _, r := range rows {
		s := knownSender{Name: r.DisplayName, MemberPubkey: r.MemberPubkey}
		n.learn(mesh, r.Pubkey, s)
		if r.PeerRole == peerRoleControlPlane || r.Pubkey == r.MemberPubkey {
			n.learn(mesh, r.MemberPubkey, s)
		}
	}
}

// lookup says what key is known as on mesh.
func (n *senderNames) lookup(mesh, key string) (knownSender, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s, ok := n.byMesh[mesh][key]
	return s, ok
}

// refresh asks fetch for mesh's peers and learns them, unless a request is
// already in flight (then it waits for that one) or the mesh was asked
// within senderRefreshInterval (then it returns at once).
func (n *senderNames) refresh(mesh string, now time.Time, fetch func() ([]PeerRow, error)) {
	n.mu.Lock()
	if ch, ok := n.inflight[mesh]; ok {
		n.mu.Unlock()
		<-ch
		return
	}
	if last, ok := n.asked[mesh]; ok && now.Sub(last) < senderRefreshInterval {
		n.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	n.inflight[mesh], n.asked[mesh] = ch, now
	n.mu.Unlock()

	rows, err := fetch()
	if err == nil {
		n.learnPeers(mesh, rows)
	}
	n.mu.Lock()
	delete(n.inflight, mesh)
	n.mu.Unlock()
	close(ch)
}
