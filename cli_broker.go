// `claudemesh broker serve`: run a broker in the foreground until SIGINT or
// SIGTERM, then shut it down gracefully (sockets get 1001 and reconnect
// elsewhere or later; queued messages stay in the store).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"syscall"
)

// setupBrokerServe declares the verb's flags; its row is in main.go.
func setupBrokerServe(fs *flagSet) runFunc {
	var f brokerServeFlags
	fs.StringVar(&f.listen, "listen", "127.0.0.1:7900", "address to listen on")
	fs.StringVar(&f.data, "data", "", "data directory (default <config dir>/broker)")
	fs.StringVar(&f.publicURL, "public-url", "", "the ws(s):// URL clients use, when behind a proxy")
	fs.StringVar(&f.createToken, "create-token", "", "the broker's mesh-creation token (non-loopback brokers)")
	fs.IntVar(&f.maxMessageBytes, "max-message-bytes", defaultMaxMessageBytes, "largest message accepted, in bytes")
	fs.IntVar(&f.maxConns, "max-connections-per-mesh", defaultMaxConnectionsPerMesh, "live connections allowed per mesh")
	fs.IntVar(&f.sendBurst, "send-burst", defaultSendBurst, "sends a member may make at once before the per-minute rate applies")
	fs.IntVar(&f.sendPerMinute, "send-per-minute", defaultSendPerMinute, "sends per minute per member, sustained")
	fs.IntVar(&f.handshakeBurst, "handshake-burst", defaultHandshakeBurst, "handshakes and joins an address may make at once")
	fs.IntVar(&f.handshakePerMinute, "handshake-per-minute", defaultHandshakePerMinute, "handshakes and joins per minute per address, sustained")
	return func(ctx context.Context, c *cli, args []string) error { return runBrokerServe(ctx, c, f, args) }
}

type brokerServeFlags struct {
	listen, data, publicURL, createToken string
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
	data := f.data
	if data == "" {
		data = filepath.Join(c.Paths().ConfigDir, "broker")
	}
	level := slog.LevelInfo
	if c.global.verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(c.env.Stderr, &slog.HandlerOptions{Level: level}))
	b, err := newBroker(BrokerOptions{DataDir: data, PublicURL: f.publicURL, CreateToken: f.createToken,
		MaxMessageBytes: f.maxMessageBytes, MaxConnectionsPerMesh: f.maxConns, SendBurst: f.sendBurst,
		SendPerMinute: f.sendPerMinute, HandshakeBurst: f.handshakeBurst, HandshakePerMinute: f.handshakePerMinute, Logger: logger})
	if err != nil {
		return exitError(exitIO, fmt.Errorf("broker store in %s: %w", data, err))
	}
	l, err := net.Listen("tcp", f.listen)
	if err != nil {
		b.Close()
		if errors.Is(err, syscall.EADDRINUSE) {
			return exitError(exitFailure, fmt.Errorf("cannot listen on %s: the address is in use", f.listen), "another broker (or the daemon's embedded one) may be running; pick another --listen")
		}
		return exitError(exitFailure, fmt.Errorf("cannot listen on %s: %w", f.listen, err))
	}
	url := "ws://" + l.Addr().String() + "/ws"
	if c.jsonMode() {
		c.printJSON(map[string]string{"url": url, "listen": l.Addr().String(), "data": data, "version": version})
	} else {
		c.printf("claudemesh broker %s listening on %s (data %s)\n", version, url, data)
	}
	logger.Info("broker_started", "version", version, "listen", l.Addr().String(), "data", data)
	served := make(chan error, 1)
	go func() { served <- b.Serve(l) }()
	select {
	case <-ctx.Done():
		logger.Info("broker stopping")
	case err = <-served:
	}
	closeErr := b.Close()
	if err == nil {
		err = <-served
	}
	if err != nil {
		return exitError(exitFailure, fmt.Errorf("broker: %w", err))
	}
	if closeErr != nil {
		return exitError(exitIO, fmt.Errorf("closing the broker store: %w", closeErr))
	}
	logger.Info("broker stopped")
	return nil
}
