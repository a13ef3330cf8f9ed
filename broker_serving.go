// A broker with its listener: what `claudemesh broker serve`, the daemon's
// embedded broker and `claudemesh demo` run, so all three serve with the
// same code.
package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"syscall"
)

// ServingBroker is a Broker serving HTTP and WebSocket on one listener.
type ServingBroker struct {
	*Broker
	Addr     string        // the host:port it listens on (the real port when asked for :0)
	done     chan struct{} // closed when Serve has returned
	serveErr error         // Serve's result, readable after done
}

// BrokerListenError says the broker could not listen on Addr.
type BrokerListenError struct {
	Addr string
	Err  error
}

func (e *BrokerListenError) Error() string {
	if e.InUse() {
		return fmt.Sprintf("cannot listen on %s: the address is in use", e.Addr)
	}
	return fmt.Sprintf("cannot listen on %s: %v", e.Addr, e.Err)
}

func (e *BrokerListenError) Unwrap() error { return e.Err }

// InUse reports whether another process holds the address.
func (e *BrokerListenError) InUse() bool { return errors.Is(e.Err, syscall.EADDRINUSE) }

// storeLocation names the broker's store for messages: its PostgreSQL URL
// without the password, or its SQLite data dir.
func storeLocation(opts BrokerOptions) string {
	if opts.StoreURL != "" {
		return redactURL(opts.StoreURL)
	}
	return opts.DataDir
}

// BrokerStoreError says the broker's store could not be opened.
type BrokerStoreError struct {
	Dir string // the data dir, or the redacted PostgreSQL URL
	Err error
}

func (e *BrokerStoreError) Error() string { return fmt.Sprintf("broker store in %s: %v", e.Dir, e.Err) }
func (e *BrokerStoreError) Unwrap() error { return e.Err }

// startServingBroker opens the broker's store, listens on addr and serves
// in the background until Stop.
func startServingBroker(opts BrokerOptions, addr string) (*ServingBroker, error) {
	b, err := newBroker(opts)
	if err != nil {
		return nil, &BrokerStoreError{Dir: storeLocation(opts), Err: err}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		b.Close()
		return nil, &BrokerListenError{Addr: addr, Err: err}
	}
	if opts.TLS != nil {
		l = tls.NewListener(l, opts.TLS)
	}
	s := &ServingBroker{Broker: b, Addr: l.Addr().String(), done: make(chan struct{})}
	go func() {
		s.serveErr = b.Serve(l)
		close(s.done)
	}()
	return s, nil
}

// URL is the WebSocket URL a client on this machine connects to.
func (s *ServingBroker) URL() string {
	if s.opts.TLS != nil {
		return "wss://" + s.Addr + "/ws"
	}
	return "ws://" + s.Addr + "/ws"
}

// Done is closed when the broker has stopped serving: after Stop, or on
// its own when the listener fails (ServeErr says why).
func (s *ServingBroker) Done() <-chan struct{} { return s.done }

// ServeErr is why serving ended; nil after a Stop. Valid once Done is closed.
func (s *ServingBroker) ServeErr() error { return s.serveErr }

// Stop closes the broker (sockets get 1001, the store is closed) and waits
// for its server to return. The first error wins: serving, then the store.
func (s *ServingBroker) Stop() error {
	closeErr := s.Broker.Close()
	<-s.done
	if s.serveErr != nil {
		return s.serveErr
	}
	if closeErr != nil {
		return &BrokerStoreError{Dir: storeLocation(s.opts), Err: closeErr}
	}
	return nil
}
