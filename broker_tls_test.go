// Tests of the broker's TLS: a generated CA and certificate, a daemon
// linking over wss:// with the mesh's caFile, a wrong CA refused with a
// clear error, and which listen addresses count as beyond loopback.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemFile string
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	path := filepath.Join(t.TempDir(), name+".pem")
	writePEM(t, path, "CERTIFICATE", der)
	return testCA{cert: cert, key: key, pemFile: path}
}

// issue makes a certificate for 127.0.0.1 signed by the CA and returns the
// certificate and key files.
func (ca testCA) issue(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "broker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	kder, _ := x509.MarshalECPrivateKey(key)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startTLSBroker serves a broker on wss:// with a certificate of ca.
func startTLSBroker(t *testing.T, ca testCA) *ServingBroker {
	t.Helper()
	certFile, keyFile := ca.issue(t)
	conf, err := brokerTLSConfig(brokerTLSFlags{certFile: certFile, keyFile: keyFile}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sb, err := startServingBroker(BrokerOptions{DataDir: t.TempDir(), TLS: conf}, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Stop() })
	if !strings.HasPrefix(sb.URL(), "wss://") {
		t.Fatalf("a TLS broker's URL is %s", sb.URL())
	}
	return sb
}

func TestDaemonLinksOverTLS(t *testing.T) {
	ca := newTestCA(t, "team-ca")
	sb := startTLSBroker(t, ca)
	mesh := newTestMesh(t, sb.Broker, sb.URL(), "team", "alice")

	t.Run("the mesh's CA", func(t *testing.T) {
		m := mesh
		m.CAFile = ca.pemFile
		h := newTestHome(t)
		h.writeConfig(t, m)
		td := startTestDaemon(t, h, nil)
		td.waitLink(t, "team", LinkOpen)
		// The CLI's HTTPS calls trust the same CA.
		if r := runCLI(t, h.env(), "invite", "--mesh", "team", "--json"); r.code != 0 {
			t.Fatalf("invite over https = %d\n%s", r.code, r.stderr)
		}
	})
	t.Run("a wrong CA", func(t *testing.T) {
		m := mesh
		m.CAFile = newTestCA(t, "other-ca").pemFile
		h := newTestHome(t)
		h.writeConfig(t, m)
		td := startTestDaemon(t, h, nil)
		waitFor(t, "the link to say why it cannot connect", func() bool {
			l := td.MemberLink("team")
			return l != nil && l.LastError() != ""
		})
		l := td.MemberLink("team")
		if l.State() == LinkOpen || !strings.Contains(l.LastError(), "not trust") || !strings.Contains(l.LastError(), "caFile") {
			t.Fatalf("link with a wrong CA: %s, %q; want refused, naming the untrusted certificate and caFile", l.State(), l.LastError())
		}
	})
}

func TestBrokerTLSFlags(t *testing.T) {
	ca := newTestCA(t, "ca")
	cert, key := ca.issue(t)
	cases := []struct {
		name    string
		flags   brokerTLSFlags
		wantTLS bool
		wantErr string
	}{
		{"none", brokerTLSFlags{}, false, ""},
		{"cert and key", brokerTLSFlags{certFile: cert, keyFile: key}, true, ""},
		{"cert alone", brokerTLSFlags{certFile: cert}, false, "go together"},
		{"acme", brokerTLSFlags{acmeHost: "broker.example"}, true, ""},
		{"acme and files", brokerTLSFlags{acmeHost: "broker.example", certFile: cert, keyFile: key}, false, "drop"},
		{"missing file", brokerTLSFlags{certFile: cert + ".gone", keyFile: key}, false, "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conf, err := brokerTLSConfig(tc.flags, t.TempDir())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("brokerTLSConfig(%+v) = %v, want an error with %q", tc.flags, err, tc.wantErr)
				}
				return
			}
			if err != nil || (conf != nil) != tc.wantTLS {
				t.Fatalf("brokerTLSConfig(%+v) = %v, %v; want TLS %v", tc.flags, conf, err, tc.wantTLS)
			}
		})
	}
}

func TestBeyondLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7900": false, "[::1]:7900": false, "localhost:7900": false,
		"0.0.0.0:7900": true, ":7900": true, "[::]:7900": true, "192.0.2.10:7900": true, "broker.example:7900": true,
	} {
		if got := beyondLoopback(addr); got != want {
			t.Errorf("beyondLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
