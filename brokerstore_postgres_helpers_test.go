// Test helpers for the PostgreSQL store: a real server for the tests, found
// or started, and a fresh schema per test. The server is
// CLAUDEMESH_TEST_POSTGRES_URL when set (CI starts one), else a private
// cluster this test binary starts with initdb in a temp dir and stops when
// it ends. Without either the PostgreSQL tests skip with the reason, or fail
// when CLAUDEMESH_REQUIRE_POSTGRES=1.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// testPostgres is the server the tests share, set up once.
var testPostgres struct {
	once    sync.Once
	url     string
	cluster *pgCluster
	err     error
}

// testPostgresURL returns the URL of a server the test may create schemas
// on, or skips the test.
func testPostgresURL(t testing.TB) string {
	t.Helper()
	testPostgres.once.Do(func() {
		if u := os.Getenv("CLAUDEMESH_TEST_POSTGRES_URL"); u != "" {
			testPostgres.url = u
			return
		}
		c, err := startPGCluster()
		testPostgres.cluster, testPostgres.err = c, err
		if err == nil {
			testPostgres.url = c.URL()
		}
	})
	if testPostgres.err != nil {
		skipWithoutPostgres(t, testPostgres.err.Error())
	}
	return testPostgres.url
}

// skipWithoutPostgres skips, or fails where PostgreSQL is required.
func skipWithoutPostgres(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CLAUDEMESH_REQUIRE_POSTGRES") == "1" {
		t.Fatalf("CLAUDEMESH_REQUIRE_POSTGRES=1 but no PostgreSQL server: %s", reason)
	}
	t.Skipf("no PostgreSQL server (%s); set CLAUDEMESH_TEST_POSTGRES_URL or install postgresql", reason)
}

// stopTestPostgres stops the private cluster, if this binary started one.
func stopTestPostgres() {
	if c := testPostgres.cluster; c != nil {
		c.Stop()
	}
}

// testPostgresSchemaURL creates a fresh schema for the test and returns a
// URL whose connections use it; the schema is dropped when the test ends.
func testPostgresSchemaURL(t testing.TB) string {
	t.Helper()
	base := testPostgresURL(t)
	schema := "t_" + strings.ToLower(newID()[:16])
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to %s: %v", base, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		defer cancel()
		if conn, err := pgx.Connect(ctx, base); err == nil {
			_, _ = conn.Exec(ctx, `DROP SCHEMA `+schema+` CASCADE`)
			conn.Close(ctx)
		}
	})
	return withSearchPath(base, schema)
}

// withSearchPath is base with its connections' search_path set to schema.
func withSearchPath(base, schema string) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// openTestPostgresStore opens a store in a fresh schema, closed at test end.
func openTestPostgresStore(t testing.TB) *postgresBrokerStore {
	t.Helper()
	s, err := openPostgresBrokerStore(context.Background(), testPostgresSchemaURL(t), "replica-"+newID()[:8])
	if err != nil {
		t.Fatalf("open postgres store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// pgCluster is a private PostgreSQL cluster in a temp dir.
type pgCluster struct {
	bin, dir string
	port     int
	asUser   string // run as this user (PostgreSQL refuses root), or "" for ourselves
}

// pgBinDir finds the directory holding initdb and pg_ctl.
func pgBinDir() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Strings(dirs)
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "pg_ctl")); err == nil {
			return dirs[i], nil
		}
	}
	return "", errors.New("no pg_ctl on PATH or in /usr/lib/postgresql/*/bin")
}

// startPGCluster makes a cluster with initdb and starts it on a free
// loopback port. As root it runs everything as the postgres system user.
func startPGCluster() (*pgCluster, error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	c := &pgCluster{bin: bin}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			return nil, errors.New("running as root and there is no postgres user to run the server as")
		}
		c.asUser = "postgres"
	}
	root, err := os.MkdirTemp("", "cmpg")
	if err != nil {
		return nil, err
	}
	c.dir = filepath.Join(root, "data")
	if err := os.Chmod(root, 0o755); err != nil {
		return nil, err
	}
	if c.asUser != "" {
		if out, err := exec.Command("chown", c.asUser, root).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("chown: %v: %s", err, out)
		}
	}
	if out, err := c.run("initdb", "-D", c.dir, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"); err != nil {
		os.RemoveAll(root)
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	if err := c.Start(); err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	return c, nil
}

// run runs one of the server's programs, as the cluster's user.
func (c *pgCluster) run(prog string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bin, prog)
	cmd := exec.Command(path, args...)
	if c.asUser != "" {
		cmd = exec.Command("runuser", append([]string{"-u", c.asUser, "--", path}, args...)...)
	}
	cmd.Dir = "/"
	return cmd.CombinedOutput()
}

// serverOptions: loopback only, the socket in the data dir, fsync off (a
// test cluster need not survive the machine), room for many test brokers.
func (c *pgCluster) serverOptions() string {
	return fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -k %s -c fsync=off -c synchronous_commit=off -c max_connections=300",
		c.port, c.dir)
}

// Start starts the server and waits until it accepts connections.
func (c *pgCluster) Start() error {
	out, err := c.run("pg_ctl", "-D", c.dir, "-l", filepath.Join(c.dir, "server.log"), "-o", c.serverOptions(), "-w", "-t", "60", "start")
	if err != nil {
		return fmt.Errorf("pg_ctl start: %v: %s", err, out)
	}
	return nil
}

// Stop stops the server (fast: open sessions are ended) and removes the
// cluster's files.
func (c *pgCluster) Stop() {
	c.StopServer()
	os.RemoveAll(filepath.Dir(c.dir))
}

// StopServer stops the server and keeps its files, for a later Start.
func (c *pgCluster) StopServer() error {
	out, err := c.run("pg_ctl", "-D", c.dir, "-m", "fast", "-w", "-t", "60", "stop")
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %v: %s", err, out)
	}
	return nil
}

// URL is the cluster's superuser URL on loopback.
func (c *pgCluster) URL() string {
	return "postgres://postgres@127.0.0.1:" + strconv.Itoa(c.port) + "/postgres?sslmode=disable"
}

// startTestPGCluster starts a cluster of the test's own (one it may stop
// and restart), stopped when the test ends.
func startTestPGCluster(t testing.TB) *pgCluster {
	t.Helper()
	if _, err := pgBinDir(); err != nil {
		skipWithoutPostgres(t, err.Error())
	}
	c, err := startPGCluster()
	if err != nil {
		skipWithoutPostgres(t, err.Error())
	}
	t.Cleanup(c.Stop)
	return c
}

// waitPostgres waits until url accepts connections.
func waitPostgres(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, url)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres at %s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
