// Tests of client frame decoding and validation, and fuzzing of it.
package main

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestDecodeClientFrame(t *testing.T) {
	cases := []struct {
		name, in string
		ok       bool
		unknown  bool
	}{
		{"send", `{"type":"send","id":"1","targetSpec":"*","priority":"now","nonce":"n","ciphertext":"c"}`, true, false},
		{"send bad priority", `{"type":"send","targetSpec":"*","priority":"soon","nonce":"n","ciphertext":"c"}`, false, false},
		{"send without target", `{"type":"send","priority":"now","nonce":"n","ciphertext":"c"}`, false, false},
		{"send system subtype", `{"type":"send","targetSpec":"*","priority":"now","nonce":"n","ciphertext":"c","subtype":"system"}`, false, false},
		{"send wrong type", `{"type":"send","targetSpec":5}`, false, false},
		{"summary empty is allowed", `{"type":"set_summary","summary":""}`, true, false},
		{"summary missing", `{"type":"set_summary"}`, false, false},
		{"state null value", `{"type":"set_state","key":"k","value":null}`, true, false},
		{"state no value", `{"type":"set_state","key":"k"}`, false, false},
		{"stats not object", `{"type":"set_stats","stats":[1]}`, false, false},
		{"kick stale", `{"type":"kick","stale":60000}`, true, false},
		{"kick negative stale", `{"type":"kick","stale":-1}`, false, false},
		{"kick nothing", `{"type":"kick"}`, false, false},
		{"skill manifest array", `{"type":"share_skill","name":"a","instructions":"b","manifest":[1]}`, false, false},
		{"client_ack", `{"type":"client_ack","brokerMessageId":"x"}`, true, false},
		{"unknown", `{"type":"warp"}`, false, true},
		{"no type", `{"x":1}`, false, false},
		{"array", `[1,2]`, false, false},
		{"reqId must be a string", `{"type":"list_peers","_reqId":7}`, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, f, err := decodeClientFrame([]byte(tc.in))
			if (err == nil) != tc.ok || errors.Is(err, errUnknownFrameType) != tc.unknown {
				t.Fatalf("decodeClientFrame(%s) = %v, %v; want ok=%v unknown=%v", tc.in, f, err, tc.ok, tc.unknown)
			}
		})
	}
}

func FuzzDecodeClientFrame(f *testing.F) {
	for _, seed := range []string{
		`{"type":"send","id":"1","targetSpec":"*","priority":"now","nonce":"n","ciphertext":"c"}`,
		`{"type":"hello","meshId":"m","pubkey":"aa","timestamp":1,"signature":"bb"}`,
		`{"type":"session_hello","parentAttestation":{"expiresAt":1}}`,
		`{"type":"set_state","key":"k","value":{"a":[1,2]}}`,
		`{"type":"kick","stale":1}`,
		`{"type":"set_profile","capabilities":["x"]}`,
		`{"type":"x","_reqId":"r"}`,
		`nul`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		head, fr, err := decodeClientFrame(data)
		if err != nil {
			return
		}
		if head.Type == "" || fr == nil {
			t.Fatalf("accepted a frame without type: %q", data)
		}
		// What validates must survive a round trip and validate again.
		again, err := json.Marshal(fr)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var m map[string]any
		if json.Unmarshal(again, &m) != nil {
			t.Fatalf("re-encoded frame is not an object: %s", again)
		}
	})
}

func TestDecodeBrokerHead(t *testing.T) {
	cases := []struct {
		name, in string
		want     frameHead
		ok       bool
	}{
		{"push by its prefix", `{"type":"push","messageId":"m"}`, frameHead{Type: framePush}, true},
		{"batch by its prefix", `{"type":"system_batch","meshId":"x","events":[]}`, frameHead{Type: frameSystemBatch}, true},
		{"a longer type is not push", `{"type":"pushed","_reqId":"r"}`, frameHead{Type: "pushed", ReqID: "r"}, true},
		{"type not first", `{"_reqId":"r","type":"push"}`, frameHead{Type: framePush, ReqID: "r"}, true},
		{"a reply keeps its request id", `{"type":"ack","_reqId":"r","id":"1"}`, frameHead{Type: frameAck, ReqID: "r"}, true},
		{"spaced push falls back", `{ "type" : "push" }`, frameHead{Type: framePush}, true},
		{"no type", `{"_reqId":"r"}`, frameHead{}, false},
		{"not JSON", `push`, frameHead{}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, err := decodeBrokerHead([]byte(c.in))
			if (err == nil) != c.ok {
				t.Fatalf("err = %v, want ok %v", err, c.ok)
			}
			if c.ok && h != c.want {
				t.Fatalf("head = %+v, want %+v", h, c.want)
			}
		})
	}
}
