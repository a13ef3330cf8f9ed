// Browser tests of the web UI: a real headless Chromium, driven through
// chromedp, against real daemons, a real broker and the CLI. They skip with
// a logged reason where no Chromium is installed; CLAUDEMESH_REQUIRE_BROWSER=1
// (set in CI) makes them mandatory.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath finds a Chromium to drive, or skips the test.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CLAUDEMESH_REQUIRE_BROWSER") == "1" {
		t.Fatal("CLAUDEMESH_REQUIRE_BROWSER=1 but no chromium, chromium-browser or google-chrome is on PATH")
	}
	t.Skip("no Chromium on PATH (chromium, chromium-browser, google-chrome): the browser tests skip; 'apt-get install chromium' runs them")
	return ""
}

// newBrowser starts a headless Chromium of its own (fresh profile; no
// background connections, which this machine's closed network refuses)
// and returns a tab's context; it ends with the test.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // the tests run as root, where Chromium's sandbox will not start
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTime(); cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", chromiumPath(t), err)
	}
	return ctx
}

// pageTrue waits until a JavaScript expression is true in the page.
func pageTrue(t *testing.T, ctx context.Context, what, expr string, within time.Duration) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(within))); err != nil {
		t.Fatalf("%s: %s did not hold within %v: %v", what, expr, within, err)
	}
}

func pageValue[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// jsString is s as a JavaScript string literal.
func jsString(s string) string { return strconv.Quote(s) }

// bodyShown is the expression that holds when a message body equal to text
// is in the page.
func bodyShown(text string) string {
	return `[...document.querySelectorAll(".msg .body")].some(e => e.textContent === ` + jsString(text) + `)`
}

// One page, logged in with the link, through a working day: two sessions,
// a DM from the CLI shown at once, a send from the page, a requeue, a
// search, hostile text, a page of another origin refused, a screenshot.
func TestUIInABrowser(t *testing.T) {
	ctx := newBrowser(t)
	f := newUIFixture(t)
	waitFor(t, "bert's surfacing path in alice's peer list", func() bool {
		peers, err := callIPC(context.Background(), f.d1.client(""), apiPeers, MeshQuery{Mesh: "alpha"})
		for _, p := range peers.Peers {
			if err == nil && p.Row.Pubkey == f.bert.pub() && p.Row.Profile != nil && p.Row.Profile.Surfacing == surfacedViaPull {
				return true
			}
		}
		return false
	})
	open := f.openUI(t)

	if err := chromedp.Do(ctx, chromedp.Navigate(open.URL)); err != nil {
		t.Fatal(err)
	}
	pageTrue(t, ctx, "the stream is live", `document.querySelector("#live").dataset.state === "live"`, 20*time.Second)
	if loc := pageValue[string](t, ctx, `location.pathname + location.search`); loc != "/ui/" {
		t.Fatalf("after login the page is at %q, want /ui/ (the code gone from the address)", loc)
	}
	if c := pageValue[string](t, ctx, `document.cookie`); c != "" {
		t.Fatalf("the page can read its cookie: %q", c)
	}

	t.Run("two sessions of the mesh", func(t *testing.T) {
		pageTrue(t, ctx, "alice's session", `!!document.querySelector('.session[data-session="`+f.alice.reg.SessionID+`"]')`, 10*time.Second)
		pageTrue(t, ctx, "bert among the peers", `(document.querySelector('.peer[data-pubkey="`+f.bert.pub()+`"]') || {}).textContent?.includes("bert")`, 10*time.Second)
		// bert runs neither an MCP server nor hooks: it sees messages only
		// when it asks.
		pageTrue(t, ctx, "bert's surfacing path", `document.querySelector('.peer[data-pubkey="`+f.bert.pub()+`"] .surfacing')?.textContent === "receives by pull"`, 10*time.Second)
	})

	t.Run("a DM from the CLI shows within a second, without a reload", func(t *testing.T) {
		pageValue[bool](t, ctx, `(window.__sameDocument = true)`)
		text := "hello alice, from bert's shell"
		r := runCLI(t, f.h2.env("CLAUDEMESH_IPC_TOKEN", f.bert.reg.Token), "send", "alice", text)
		if r.code != 0 {
			t.Fatalf("send = %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		sent := time.Now()
		pageTrue(t, ctx, "the DM in the page", bodyShown(text), time.Second)
		t.Logf("the DM showed %v after the send returned", time.Since(sent).Round(time.Millisecond))
		if !pageValue[bool](t, ctx, `window.__sameDocument === true`) {
			t.Fatal("the page was reloaded")
		}
	})

	t.Run("a send from the page reaches the recipient's inbox", func(t *testing.T) {
		text := "on it — sent from the page"
		err := chromedp.Do(ctx,
			chromedp.SetValue("#send-as", f.alice.reg.SessionID),
			chromedp.Evaluate[chromedp.Void](`document.querySelector("#send-as").dispatchEvent(new Event("change"))`),
			chromedp.SetValue("#send-to", "bert"),
			chromedp.SetValue("#send-text", text),
			chromedp.Click("#send-button"),
		)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the page's DM in bert's inbox", func() bool {
			for _, it := range inboxItems(t, f.bert.cl) {
				if deref(it.Body) == text && it.SenderPubkey == f.alice.pub() {
					return true
				}
			}
			return false
		})
		// Its receipts climb the ladder in the page: bert's daemon stored it
		// (bert is pull-only, so no further), then bert's own inbox showed it.
		state := `[...document.querySelectorAll(".msg.out")].find(e => e.querySelector(".body").textContent === ` + jsString(text) + `)?.querySelector(".state")`
		pageTrue(t, ctx, "the page shows it delivered", state+`?.textContent === "delivered"`, 10*time.Second)
		if title := pageValue[string](t, ctx, state+`.title`); !strings.Contains(title, "delivered to bert's daemon") {
			t.Fatalf("the delivered state's title = %q", title)
		}
		if r := runCLI(t, f.h2.env("CLAUDEMESH_IPC_TOKEN", f.bert.reg.Token), "inbox", "--unread"); r.code != 0 || !strings.Contains(r.stdout, text) {
			t.Fatalf("bert's inbox = %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		pageTrue(t, ctx, "the page shows it shown to bert", state+`?.textContent === "shown"`, 10*time.Second)
		if title := pageValue[string](t, ctx, state+`.title`); !strings.Contains(title, "shown to bert via claudemesh inbox") {
			t.Fatalf("the shown state's title = %q", title)
		}
	})

	t.Run("requeue a dead row", func(t *testing.T) {
		dead := ipcSend(t, f.d1.client(""), map[string]any{"to": mustNewKeypair().PublicHex(), "message": "to a key nobody has", "wait_ms": 5000})
		if dead.Status != "dead" {
			t.Fatalf("send to an unknown key = %+v", dead)
		}
		row := `document.querySelector('#outbox-table tr[data-id="` + dead.ID + `"]')`
		err := chromedp.Do(ctx, chromedp.Click(`.tabs button[data-tab="outbox"]`), chromedp.Click(`#outbox-filter button[data-filter="dead"]`))
		if err != nil {
			t.Fatal(err)
		}
		pageTrue(t, ctx, "the dead row", row+`?.dataset.status === "dead"`, 10*time.Second)
		// Clicked inside the page: the table is redrawn as events come, so a
		// node found by one protocol call may be gone by the next.
		pageValue[bool](t, ctx, `(document.querySelector('#outbox-table tr[data-id="`+dead.ID+`"] button.requeue').click(), true)`)
		if err := chromedp.Do(ctx, chromedp.Click(`#outbox-filter button[data-filter="all"]`)); err != nil {
			t.Fatal(err)
		}
		pageTrue(t, ctx, "the row requeued", row+`?.dataset.status === "aborted"`, 10*time.Second)
		out, err := callIPC(context.Background(), f.d1.client(""), apiOutbox, OutboxQuery{})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range out.Items {
			if it.ID == dead.ID && (it.Status != outboxAborted || it.SupersededBy == nil) {
				t.Fatalf("the requeued row = %+v", it)
			}
		}
		if err := chromedp.Do(ctx, chromedp.Click(`.tabs button[data-tab="conversations"]`)); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("search finds a message", func(t *testing.T) {
		err := chromedp.Do(ctx, chromedp.SetValue("#search", "shell"),
			chromedp.Evaluate[chromedp.Void](`document.querySelector("#search-form").requestSubmit()`))
		if err != nil {
			t.Fatal(err)
		}
		pageTrue(t, ctx, "the hit", `[...document.querySelectorAll("#search-results .msg mark")].some(m => m.textContent === "shell")`, 10*time.Second)
		if n := pageValue[int](t, ctx, `document.querySelectorAll("#search-results .msg").length`); n != 1 {
			t.Fatalf("%d hits, want 1", n)
		}
		if err := chromedp.Do(ctx, chromedp.Click(`.tabs button[data-tab="conversations"]`)); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("hostile text is shown as text", func(t *testing.T) {
		hostile := `<script>window.__pwned = 1</script></div></article><img src=x onerror="window.__pwned = 2"><b>bold?</b>`
		evil := registerTestSession(t, f.d2, f.bob, `<img src=x onerror="window.__pwned = 3">`)
		sendAndSettle(t, evil.cl, f.alice.pub(), hostile)
		pageTrue(t, ctx, "the hostile body", bodyShown(hostile), 10*time.Second)
		pageTrue(t, ctx, "the hostile name", `[...document.querySelectorAll(".msg .who")].some(e => e.textContent === `+jsString(evil.reg.DisplayName)+`)`, 10*time.Second)
		if got := pageValue[string](t, ctx, `String(window.__pwned)`); got != "undefined" {
			t.Fatalf("a peer's text ran as script: __pwned = %s", got)
		}
		if n := pageValue[int](t, ctx, `document.querySelectorAll(".msg .body :not(mark), .msg .who *, img, script:not([src])").length`); n != 0 {
			t.Fatalf("a peer's text became %d element(s)", n)
		}
	})

	t.Run("a page of another origin cannot act", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		target := "http://127.0.0.1:" + strconv.Itoa(f.d1.tcpPort) + "/ui/api/v1/ui/send"
		evilPage := fmt.Sprintf(`<!doctype html><script>
fetch(%[1]q, {method: "POST", credentials: "include", headers: {"Content-Type": "text/plain"},
  body: JSON.stringify({to: "bert", message: "forged by another page"})})
  .then(r => { document.title = "status " + r.status }, e => { document.title = "blocked" });
</script>`, target)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, evilPage)
		})}
		go srv.Serve(l)
		defer srv.Close()
		tab, cancel := chromedp.NewContext(ctx) // a second tab of the same browser, cookie and all
		defer cancel()
		if err := chromedp.Do(tab, chromedp.Navigate("http://"+l.Addr().String()+"/")); err != nil {
			t.Fatal(err)
		}
		pageTrue(t, tab, "the forged request answered", `document.title !== ""`, 10*time.Second)
		if title := pageValue[string](t, tab, `document.title`); title != "blocked" {
			t.Fatalf("the other page read an answer: %s", title)
		}
		if hist := history(t, f.d1.client(""), HistoryQuery{}); strings.Contains(strings.Join(bodiesOf(hist.Messages), "|"), "forged") {
			t.Fatal("a page of another origin sent a message")
		}
	})

	// A screenshot of the main page, kept as the run's artifact.
	t.Run("screenshot", func(t *testing.T) {
		shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		dir, err := os.MkdirTemp("", "claudemesh-ui-")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "main-page.png")
		if err := os.WriteFile(path, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot of the main page: %s", path)
	})
}

// TestUIScreenshotForREADME redraws the README's picture of the UI: a
// demo-like mesh (alice and bob, a thread, a group message, a broadcast, a
// dead row, shared state) as alice's daemon shows it. It runs only when
// asked: CLAUDEMESH_UI_SCREENSHOT=docs/ui.png go test -run UIScreenshot .
func TestUIScreenshotForREADME(t *testing.T) {
	out := os.Getenv("CLAUDEMESH_UI_SCREENSHOT")
	if out == "" {
		t.Skip("set CLAUDEMESH_UI_SCREENSHOT to a PNG path to redraw the README's screenshot")
	}
	ctx := demoUIPage(t)
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", out)
}

// demoUIPage is a browser tab on alice's UI, logged in, over a demo-like
// mesh with a little of everything.
func demoUIPage(t *testing.T) context.Context {
	ctx := newBrowser(t)
	b, wsURL := startTestBrokerWith(t, msgBrokerOptions())
	alice := newTestMesh(t, b, wsURL, "local", "alice-laptop")
	bob := addTestMember(t, b, alice, "bob-desktop", "member")
	ha, hb := newTestHome(t), newTestHome(t)
	if err := saveConfig(ha.Paths.MachineConfigFile(), &Config{Version: 1, DisplayName: "alice-laptop", Meshes: []Mesh{alice}}); err != nil {
		t.Fatal(err)
	}
	hb.writeConfig(t, bob)
	da, db := startTestDaemon(t, ha, withTCP), startTestDaemon(t, hb, nil)
	da.waitLink(t, "local", LinkOpen)
	db.waitLink(t, "local", LinkOpen)
	register := func(td *testDaemon, m Mesh, name, role string, groups ...string) testSession {
		reg, key := registration(t, m, name, os.Getpid())
		reg.Role, reg.Groups, reg.Cwd = role, groups, "/home/"+name+"/src/parser"
		if err := td.client("").RegisterSession(context.Background(), reg); err != nil {
			t.Fatal(err)
		}
		waitFor(t, name+" online", func() bool {
			s := td.sessions.Resolve(reg.Token)
			return s != nil && td.sessionLinkState(s) == LinkOpen
		})
		return testSession{reg: reg, key: key, cl: td.client(reg.Token)}
	}
	sa := register(da, alice, "alice", "writer", "reviewers")
	sb := register(db, bob, "bob", "reviewer", "reviewers:lead")
	if _, err := callIPC(context.Background(), sb.cl, apiProfile, ProfileRequest{Summary: ptr("reviewing the parser change"), Status: ptr(statusWorking)}); err != nil {
		t.Fatal(err)
	}
	first := sendAndSettle(t, sa.cl, sb.pub(), "hi bob, can you review the parser change?")
	answer := ipcSend(t, sb.cl, map[string]any{"to": sa.pub(), "message": "on it, alice: the tests pass here too", "reply_to_id": deref(first.BrokerMessageID), "wait_ms": 5000})
	ipcSend(t, sa.cl, map[string]any{"to": sb.pub(), "message": "thanks! ping me when it is merged", "reply_to_id": deref(answer.BrokerMessageID), "wait_ms": 5000})
	sendAndSettle(t, sa.cl, "@reviewers", "reviewers: the branch is ready")
	sendAndSettle(t, sb.cl, "*", "lunch in 10?")
	ipcSend(t, da.client(""), map[string]any{"to": mustNewKeypair().PublicHex(), "message": "to a key that left the mesh", "wait_ms": 5000})
	if _, err := callIPC(context.Background(), da.client(""), apiStateSet, StateSetRequest{Key: "build", Value: json.RawMessage(`"green"`), Mesh: "local"}); err != nil {
		t.Fatal(err)
	}
	open, err := callIPC(context.Background(), da.client(""), apiUIOpen, noRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(open.URL)); err != nil {
		t.Fatal(err)
	}
	pageTrue(t, ctx, "the stream is live", `document.querySelector("#live").dataset.state === "live"`, 20*time.Second)
	pageTrue(t, ctx, "the thread", bodyShown("thanks! ping me when it is merged"), 10*time.Second)
	pageTrue(t, ctx, "bob's summary", `!!document.querySelector(".peer .summary")`, 10*time.Second)
	return ctx
}
