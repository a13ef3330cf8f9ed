// `claudemesh ui`: opens the daemon's web UI in a browser, logged in by a
// one-time link.
//
// Policy: the link logs one browser in once, within two minutes, so it is
// shown only with --no-open (or when no browser could be started); opening
// a browser prints the UI's address without the code.
package main

import (
	"context"
	"errors"
	"os/exec"
	"runtime"
	"time"
)

// openerWait is how long `ui` waits to hear that the browser opener failed;
// an opener still running then has most likely opened the page.
const openerWait = 3 * time.Second

func setupUI(fs *flagSet) runFunc {
	var noOpen bool
	fs.BoolVar(&noOpen, "no-open", false, "print the login link instead of opening a browser")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usageError("'ui' takes no arguments")
		}
		cl, err := c.daemonOnly(ctx, "the UI")
		if err != nil {
			return err
		}
		open, err := callIPC(ctx, cl, apiUIOpen, noRequest{})
		if err != nil {
			return ipcFailure(err)
		}
		if c.jsonMode() {
			if !noOpen {
				if err := c.openBrowser(ctx, open.URL); err != nil {
					return exitError(exitFailure, err, "claudemesh ui --no-open prints the link to open yourself")
				}
				open.URL = "" // the browser has it, and it works once
			}
			return c.printJSON(open)
		}
		if noOpen {
			c.printf("%s\n", open.URL)
			c.infof("the link logs one browser in, once, until %s", open.ExpiresAt)
			return nil
		}
		if err := c.openBrowser(ctx, open.URL); err != nil {
			c.warnf("could not open a browser (%v): open this link yourself", err)
			c.printf("%s\n", open.URL)
			return nil
		}
		c.printf("%s opened the mesh UI in your browser: %s\n", c.paint(colorGreen, "✔"), open.Page)
		return nil
	}
}

// openBrowser runs the platform's opener on url: xdg-open, or open on
// macOS, found on the caller's PATH. It fails when the opener is missing
// or exits with an error within openerWait.
func (c *cli) openBrowser(ctx context.Context, url string) error {
	name := "xdg-open"
	if runtime.GOOS == "darwin" {
		name = "open"
	}
	path, err := lookPathIn(name, c.env.Getenv("PATH"))
	if err != nil {
		return errors.New(name + " not found")
	}
	cmd := exec.Command(path, url)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return errors.New(name + ": " + err.Error())
		}
		return nil
	case <-time.After(openerWait):
		return nil // still starting the browser: leave it be
	case <-ctx.Done():
		return ctx.Err()
	}
}
