package main

import (
	"slices"
	"testing"
)

// The lookup rules, on a sender with member key M that sent with session
// key S (or, on its member link, with M itself).
func TestGrantLookup(t *testing.T) {
	const M, S, other = "member-key", "session-key", "someone-else"
	cases := []struct {
		name      string
		grants    grantMap
		senderKey string
		want      []string
	}{
		{"no grants: the defaults", nil, S, defaultCapabilities},
		{"an entry for someone else: the defaults", grantMap{other: {}}, S, defaultCapabilities},
		{"the member entry", grantMap{M: {capRead}}, S, []string{capRead}},
		{"the member entry on the member link", grantMap{M: {capDM}}, M, []string{capDM}},
		{"an empty member entry blocks", grantMap{M: {}}, S, []string{}},
		{"the session entry when the member has none", grantMap{S: {capDM}}, S, []string{capDM}},
		{"the member entry wins over the session entry", grantMap{M: {}, S: {capDM, capBroadcast}}, S, []string{}},
		{"a session entry does not apply on the member link", grantMap{S: {capDM}}, M, defaultCapabilities},
		{"another session's entry does not apply", grantMap{"other-session": {}}, S, defaultCapabilities},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.grants.capsFor(M, tc.senderKey)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("capsFor(%s, %s) = %v, want %v", M, tc.senderKey, got, tc.want)
			}
			for _, c := range allCapabilities {
				if tc.grants.allows(M, tc.senderKey, c) != slices.Contains(tc.want, c) {
					t.Fatalf("allows(%s) disagrees with capsFor %v", c, got)
				}
			}
		})
	}
}

func TestNormalizeCaps(t *testing.T) {
	cases := []struct {
		in      []string
		want    []string
		wantErr bool
	}{
		{nil, []string{}, false},
		{[]string{"skills", "DM", "dm", " read "}, []string{capRead, capDM, capSkills}, false},
		{[]string{"all"}, allCapabilities, false},
		{[]string{"dm", "write"}, nil, true},
	}
	for _, tc := range cases {
		got, err := normalizeCaps(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && !slices.Equal(got, tc.want)) {
			t.Errorf("normalizeCaps(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
	if got := withCaps(defaultCapabilities, []string{capMemory, capDM}); !slices.Equal(got, []string{capRead, capDM, capBroadcast, capStateRead, capMemory}) {
		t.Errorf("withCaps = %v", got)
	}
	if got := withoutCaps(defaultCapabilities, []string{capDM, capSkills}); !slices.Equal(got, []string{capRead, capBroadcast, capStateRead}) {
		t.Errorf("withoutCaps = %v", got)
	}
}
