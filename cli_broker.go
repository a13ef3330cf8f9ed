// `claudemesh broker serve`: run a broker in the foreground until SIGINT or
// SIGTERM, then shut it down gracefully (sockets get 1001 and reconnect
// elsewhere or later; queued messages stay in the store).
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
)

// setupBrokerServe declares the verb's flags; its row is in main.go.
func setupBrokerServe(fs *flagSet) runFunc {
	var f brokerServeFlags
	fs.StringVar(&f.listen, "listen", defaultBrokerListen, "address to listen on")
	fs.StringVar(&f.data, "data", "", "data directory of the SQLite store (default <config dir>/broker)")
	fs.StringVar(&f.store, "store", "", "a postgres://… URL: the store several replicas share (default $"+envBrokerStore+", else SQLite in --data)")
	fs.StringVar(&f.replicaID, "replica-id", "", "this replica's name among those sharing a PostgreSQL store (default <host>-<random>)")
	fs.StringVar(&f.publicURL, "public-url", "", "the ws(s):// URL clients use, when behind a proxy")
	fs.StringVar(&f.createToken, "create-token", "", "the broker's mesh-creation token (non-loopback brokers)")
	fs.IntVar(&f.maxMessageBytes, "max-message-bytes", defaultMaxMessageBytes, "largest message accepted, in bytes")
	fs.IntVar(&f.maxConns, "max-connections-per-mesh", defaultMaxConnectionsPerMesh, "live connections allowed per mesh")
	fs.IntVar(&f.sendBurst, "send-burst", defaultSendBurst, "sends a member may make at once before the per-minute rate applies")
	fs.IntVar(&f.sendPerMinute, "send-per-minute", defaultSendPerMinute, "sends per minute per member, sustained")
	fs.IntVar(&f.handshakeBurst, "handshake-burst", defaultHandshakeBurst, "handshakes and joins an address may make at once")
	fs.IntVar(&f.handshakePerMinute, "handshake-per-minute", defaultHandshakePerMinute, "handshakes and joins per minute per address, sustained")
	fs.StringVar(&f.tls.certFile, "tls-cert", "", "PEM certificate (chain) to serve wss:// and https:// with")
	fs.StringVar(&f.tls.keyFile, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&f.tls.acmeHost, "acme-host", "", "get the certificate for this host name from Let's Encrypt (the CA must reach it on port 443)")
	fs.StringVar(&f.logFormat, "log-format", logFormatText, "log lines on stderr: text (key=value) or json (one object a line)")
	fs.StringVar(&f.pprof, "pprof", "", "serve Go's profiler (/debug/pprof/) on this loopback address, such as 127.0.0.1:6060; off by default")
	return func(ctx context.Context, c *cli, args []string) error { return runBrokerServe(ctx, c, f, args) }
}

// The log formats broker serve writes.
const (
	logFormatText = "text"
	logFormatJSON = "json"
)

// envBrokerStore names the store when --store is not given.
const envBrokerStore = "CLAUDEMESH_BROKER_STORE"

type brokerServeFlags struct {
	listen, data, publicURL, createToken string
	store, replicaID                     string
	tls                                  brokerTLSFlags
	logFormat                            string
	pprof                                string
	maxMessageBytes, maxConns            int
	sendBurst, sendPerMinute             int
	handshakeBurst, handshakePerMinute   int
}

func runBrokerServe(ctx context.Context, c *cli, f brokerServeFlags, args []string) error {
	if len(args) > 0 {
		return usageError("broker serve takes no arguments")
	}
	if f.maxMessageBytes <= 0 || f.maxConns <= 0 || f.sendBurst <= 0 || f.sendPerMinute <= 0 ||
		f.handshakeBurst <= 0 || f.handshakePerMinute <= 0 {
		return usageError("--max-message-bytes, --max-connections-per-mesh and the --send-… and --handshake-… limits must be positive")
	}
	if f.logFormat != logFormatText && f.logFormat != logFormatJSON {
		return usageError("--log-format is text or json, not %q", f.logFormat)
	}
	if _, _, err := net.SplitHostPort(f.listen); err != nil {
		return usageError("--listen wants host:port, such as 127.0.0.1:7900 (or 0.0.0.0:7900 for every interface), not %q", f.listen)
	}
	if f.pprof != "" {
		if err := checkLoopbackAddr(f.pprof); err != nil {
			return usageError("--pprof: %v", err)
		}
	}
	data := f.data
	if data == "" {
		data = filepath.Join(c.Paths().ConfigDir, "broker")
	}
	storeURL := cmp.Or(f.store, c.env.Getenv(envBrokerStore))
	if storeURL != "" && !isPostgresURL(storeURL) {
		return usageError("--store (or $%s) wants a postgres://user@host/db URL, not %q; leave it unset for SQLite in --data", envBrokerStore, redactURL(storeURL))
	}
	storeName := "sqlite " + data
	if storeURL != "" {
		storeName = "postgres " + redactURL(storeURL)
	}
	tlsConf, err := brokerTLSConfig(f.tls, data)
	if err != nil {
		return usageError("%v", err)
	}
	if tlsConf == nil && beyondLoopback(f.listen) {
		c.warnf(clearTextWarning, f.listen)
	}
	level := slog.LevelInfo
	if c.global.verbose {
		level = slog.LevelDebug
	}
	var handler slog.Handler = slog.NewTextHandler(c.env.Stderr, &slog.HandlerOptions{Level: level})
	if f.logFormat == logFormatJSON {
		handler = slog.NewJSONHandler(c.env.Stderr, &slog.HandlerOptions{Level: level})
	}
	logger := slog.New(handler)
	sb, err := startServingBroker(BrokerOptions{DataDir: data, StoreURL: storeURL, ReplicaID: f.replicaID, TLS: tlsConf, PublicURL: f.publicURL, CreateToken: f.createToken,
		MaxMessageBytes: f.maxMessageBytes, MaxConnectionsPerMesh: f.maxConns, SendBurst: f.sendBurst,
		SendPerMinute: f.sendPerMinute, HandshakeBurst: f.handshakeBurst, HandshakePerMinute: f.handshakePerMinute,
		Logger: logger}, f.listen)
	var le *BrokerListenError
	switch {
	case errors.As(err, &le) && le.InUse():
		return exitError(exitFailure, err, "another broker (or the daemon's embedded one) may be running; pick another --listen")
	case errors.As(err, &le):
		return exitError(exitFailure, err)
	case err != nil:
		return exitError(exitIO, err)
	}
	if f.pprof != "" {
		ps, err := startProfiler(f.pprof)
		if err != nil {
			sb.Stop()
			return exitError(exitFailure, err)
		}
		defer ps.Close()
		logger.Info("profiler listening", "addr", ps.Addr().String(), "path", "/debug/pprof/")
	}
	url := sb.URL()
	if c.jsonMode() {
		c.printJSON(map[string]string{"url": url, "listen": sb.Addr, "data": data, "store": storeName, "replica": sb.opts.ReplicaID, "version": version})
	} else {
		c.printf("claudemesh broker %s listening on %s (store %s, replica %s)\n", version, url, storeName, sb.opts.ReplicaID)
	}
	logger.Info("broker_started", "version", version, "listen", sb.Addr, "store", storeName, "replica", sb.opts.ReplicaID)
	select {
	case <-ctx.Done():
		logger.Info("broker stopping")
	case <-sb.Done():
	}
	if err := sb.Stop(); err != nil {
		var se *BrokerStoreError
		if errors.As(err, &se) {
			return exitError(exitIO, fmt.Errorf("closing the broker store: %w", err))
		}
		return exitError(exitFailure, fmt.Errorf("broker: %w", err))
	}
	logger.Info("broker stopped")
	return nil
}

// setupBrokerMigrate declares `broker migrate`; its row is in main.go.
func setupBrokerMigrate(fs *flagSet) runFunc {
	var from, to string
	fs.StringVar(&from, "from", "", "the SQLite broker's data directory (its --data)")
	fs.StringVar(&to, "to", "", "the PostgreSQL store, postgres://… (default $"+envBrokerStore+")")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("broker migrate takes no arguments")
		}
		to = cmp.Or(to, c.env.Getenv(envBrokerStore))
		if from == "" || to == "" {
			return usageError("%v", errMigrateUsage)
		}
		if !isPostgresURL(to) {
			return usageError("--to wants a postgres:// URL, not %q", redactURL(to))
		}
		rep, err := migrateSQLiteToPostgres(ctx, from, to)
		if err != nil {
			return exitError(exitFailure, fmt.Errorf("migrate %s to %s: %w", from, redactURL(to), err),
				"stop the broker first; the target must be an empty PostgreSQL store")
		}
		if c.jsonMode() {
			return c.printJSON(rep)
		}
		c.printf("copied %s to %s:\n", from, redactURL(to))
		for _, t := range migrateTables {
			c.printf("  %-12s %d rows\n", t, rep.Rows[t])
		}
		c.printf("start the broker with --store %s; the SQLite store in %s is unchanged\n", redactURL(to), from)
		return nil
	}
}
