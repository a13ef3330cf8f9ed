// TLS for a team broker: wss:// and https:// on the broker's one port,
// from a certificate and key on disk or from an ACME CA (Let's Encrypt)
// through autocert. A broker that listens beyond loopback without TLS is
// told what travels in clear.
package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"

	"golang.org/x/crypto/acme/autocert"
)

// brokerTLSFlags are how `broker serve` gets its certificate.
type brokerTLSFlags struct {
	certFile, keyFile string
	acmeHost          string
}

// brokerTLSConfig builds the broker's TLS, or nil without any flag. An
// ACME certificate is kept in cacheDir; getting one needs the CA to reach
// this host on port 443 under acmeHost.
func brokerTLSConfig(f brokerTLSFlags, cacheDir string) (*tls.Config, error) {
	switch {
	case f.acmeHost != "" && (f.certFile != "" || f.keyFile != ""):
		return nil, errors.New("--acme-host gets its own certificate: drop --tls-cert and --tls-key, or --acme-host")
	case f.acmeHost != "":
		m := &autocert.Manager{Prompt: autocert.AcceptTOS, HostPolicy: autocert.HostWhitelist(f.acmeHost),
			Cache: autocert.DirCache(filepath.Join(cacheDir, "acme"))}
		conf := m.TLSConfig()
		conf.MinVersion = tls.VersionTLS12
		return conf, nil
	case f.certFile == "" && f.keyFile == "":
		return nil, nil
	case f.certFile == "" || f.keyFile == "":
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	cert, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// beyondLoopback reports whether a listen address is reachable from other
// machines: every interface, or an address that is not loopback.
func beyondLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return true
	}
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// clearTextWarning is what a broker beyond loopback without TLS says.
const clearTextWarning = "listening on %s without TLS: broadcast and group bodies, presence (names, status, summaries, " +
	"working directories), shared state, memory and skills travel in clear (DMs stay encrypted end to end); " +
	"use --tls-cert/--tls-key or --acme-host, or put a TLS-terminating proxy in front"
