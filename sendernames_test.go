// Tests of the sender-name directory: what peer lists teach, and how often
// a mesh is asked.
package main

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSenderNamesLearnPeers(t *testing.T) {
	n := newSenderNames()
	n.learnPeers("m", []PeerRow{
		{Pubkey: "s1", MemberPubkey: "m1", DisplayName: "ann", PeerRole: peerRoleSession},
		{Pubkey: "m2", MemberPubkey: "m2", DisplayName: "bob-daemon", PeerRole: peerRoleControlPlane},
		{Pubkey: "s3", MemberPubkey: "m3", DisplayName: "", PeerRole: peerRoleSession},
	})
	cases := []struct {
		mesh, key string
		want      knownSender
		ok        bool
	}{
		{"m", "s1", knownSender{"ann", "m1"}, true},
		{"m", "m1", knownSender{}, false}, // a session row does not name its member key
		{"m", "m2", knownSender{"bob-daemon", "m2"}, true},
		{"m", "s3", knownSender{}, false}, // nameless rows teach nothing
		{"other", "s1", knownSender{}, false},
	}
	for _, tc := range cases {
		if got, ok := n.lookup(tc.mesh, tc.key); got != tc.want || ok != tc.ok {
			t.Errorf("lookup(%s, %s) = %v, %v; want %v, %v", tc.mesh, tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

// Concurrent refreshes of one mesh make one request; another within the
// interval makes none; one after it asks again.
func TestSenderNamesRefreshIsBounded(t *testing.T) {
	n := newSenderNames()
	var calls atomic.Int32
	release := make(chan struct{})
	fetch := func() ([]PeerRow, error) {
		calls.Add(1)
		<-release
		return []PeerRow{{Pubkey: "s1", MemberPubkey: "m1", DisplayName: "ann"}}, nil
	}
	now := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); n.refresh("m", now, fetch) }()
	}
	waitFor(t, "the first request", func() bool { return calls.Load() == 1 })
	close(release)
	wg.Wait()
	if got := calls.Load(); got != 1 {
		t.Fatalf("8 concurrent refreshes made %d requests, want 1", got)
	}
	if _, ok := n.lookup("m", "s1"); !ok {
		t.Fatal("the refresh taught nothing")
	}
	n.refresh("m", now.Add(senderRefreshInterval/2), fetch)
	if got := calls.Load(); got != 1 {
		t.Fatalf("a refresh within the interval asked again (%d requests)", got)
	}
	n.refresh("m", now.Add(senderRefreshInterval), fetch)
	if got := calls.Load(); got != 2 {
		t.Fatalf("a refresh after the interval made %d requests in all, want 2", got)
	}
}
