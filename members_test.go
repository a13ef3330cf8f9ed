// Tests of the member list: derived from a peer list for brokers without
// list_members, and asked of the daemon against such a broker.
package main

import (
	"context"
	"testing"
)

func TestMembersFromPeers(t *testing.T) {
	gone := false
	rows := []PeerRow{
		{Pubkey: "s1", MemberPubkey: "m1", DisplayName: "ann-laptop-session", PeerRole: peerRoleSession},
		{Pubkey: "m1", MemberPubkey: "m1", DisplayName: "ann", PeerRole: peerRoleControlPlane},
		{Pubkey: "cli-key", MemberPubkey: "m1", DisplayName: "ann-cli", PeerRole: peerRoleControlPlane},
		{Pubkey: "s2", MemberPubkey: "m2", DisplayName: "bob-session", PeerRole: peerRoleSession, Connected: &gone},
		{Pubkey: "orphan", DisplayName: "no member key"},
	}
	got := membersFromPeers(rows)
	want := []MemberRow{
		{Pubkey: "m1", DisplayName: "ann", Online: true},          // named by its daemon's row
		{Pubkey: "m2", DisplayName: "bob-session", Online: false}, // no daemon row: its session's name; only in its grace
	}
	if len(got) != len(want) {
		t.Fatalf("membersFromPeers = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("member %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// Against a broker that does not name list_members in its hello_ack (and
// would ignore the frame), the daemon never asks it: the member list comes
// from the peer list, marked partial, and a name still finds a member whose
// daemon alone is online.
func TestMembersOnABrokerWithoutTheFrame(t *testing.T) {
	fb, _, td := startFakeBrokerDaemon(t)
	dana := mustNewKeypair().PublicHex()
	fb.setPeers(PeerRow{Pubkey: dana, MemberPubkey: dana, DisplayName: "dana", PeerRole: peerRoleControlPlane})

	reply, err := callIPC(context.Background(), td.client(""), apiMembers, MeshQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(reply.Partial) != 1 || reply.Partial[0] != "fake" || len(reply.Members) != 1 || reply.Members[0].Row.Pubkey != dana {
		t.Fatalf("members = %+v", reply)
	}
	if out := sendAndSettle(t, td.client(""), "dana", "to your daemon"); out.Target != dana {
		t.Fatalf("send dana went to %s, want her member key", shortKey(out.Target))
	}
	if n := fb.received(frameListMembers); n != 0 {
		t.Fatalf("the daemon sent list_members %d times to a broker that does not know it", n)
	}
}
