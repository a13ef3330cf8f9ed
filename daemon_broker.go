// The daemon's embedded broker: when config.json has a `broker`
// block, the daemon serves that broker in-process, with the same code as
// `claudemesh broker serve`, so a machine with a local mesh runs one
// process. Its /health and /metrics answer on the broker's own address.
//
// Policy:
//   - It starts before the member links, so a link to a mesh on it
//     connects at once; at shutdown it stops after the links, which close
//     against a live broker.
//   - A listen address that is taken (another broker, a second daemon of
//     another user) does not stop the daemon: it logs
//     embedded_broker_failed with the address, keeps serving IPC and its
//     links to other brokers, and shows the failure in /v1/health (status,
//     doctor). The next reload (SIGHUP, POST /v1/reload, `claudemesh init`)
//     tries again.
//   - A reload with the same block leaves a serving broker alone; a
//     changed block restarts it; a removed block stops it.
//   - `data` relative to the config dir; empty means <config dir>/broker.
package main

import (
	"cmp"
	"errors"
	"path/filepath"
)

// embeddedBroker is the broker a daemon serves for its config's block.
type embeddedBroker struct {
	conf BrokerConf     // the block as configured
	data string         // its data dir, resolved
	sb   *ServingBroker // nil when it could not start
	err  error          // why it could not start
}

// Embedded broker states.
const (
	embeddedServing = "serving"
	embeddedFailed  = "failed"
)

// brokerDataDir resolves the block's data dir against the config file's dir.
func brokerDataDir(conf BrokerConf, configFile string) string {
	dir := filepath.Dir(configFile)
	switch {
	case conf.Data == "":
		return filepath.Join(dir, "broker")
	case filepath.IsAbs(conf.Data):
		return conf.Data
	}
	return filepath.Join(dir, conf.Data)
}

// applyBrokerConf brings the embedded broker in line with the config's
// block (nil: none).
func (d *Daemon) applyBrokerConf(conf *BrokerConf) {
	d.brokerMu.Lock()
	defer d.brokerMu.Unlock()
	cur := d.embedded
	if conf != nil && cur != nil && cur.conf == *conf && cur.sb != nil {
		return
	}
	if cur != nil {
		d.stopEmbedded(cur)
		d.embedded = nil
	}
	if conf == nil {
		return
	}
	e := &embeddedBroker{conf: *conf, data: brokerDataDir(*conf, d.opts.ConfigFile)}
	listen := cmp.Or(conf.Listen, defaultBrokerListen)
	sb, err := startServingBroker(BrokerOptions{DataDir: e.data, Logger: d.log.With("component", "broker")}, listen)
	if err != nil {
		e.err = err
		hint := "fix the broker block in " + d.opts.ConfigFile
		var le *BrokerListenError
		if errors.As(err, &le) && le.InUse() {
			hint = "another process listens on " + listen + "; stop it or change broker.listen, then restart the daemon"
		}
		d.log.Error("embedded_broker_failed", "listen", listen, "data", e.data, "err", err.Error(), "hint", hint)
	} else {
		e.sb = sb
		d.log.Info("embedded_broker_started", "url", sb.URL(), "data", e.data)
		go func() {
			<-sb.Done()
			if err := sb.ServeErr(); err != nil {
				d.log.Error("embedded_broker_stopped_serving", "url", sb.URL(), "err", err.Error())
			}
		}()
	}
	d.embedded = e
}

func (d *Daemon) stopEmbedded(e *embeddedBroker) {
	if e.sb == nil {
		return
	}
	if err := e.sb.Stop(); err != nil {
		d.log.Warn("embedded_broker_stop_failed", "err", err.Error())
	}
	d.log.Info("embedded_broker_stopped", "url", e.sb.URL())
}

// closeEmbeddedBroker stops the embedded broker, if any (shutdown).
func (d *Daemon) closeEmbeddedBroker() {
	d.brokerMu.Lock()
	defer d.brokerMu.Unlock()
	if d.embedded != nil {
		d.stopEmbedded(d.embedded)
		d.embedded = nil
	}
}

// embeddedHealth is the embedded broker's row in /v1/health (nil without
// a broker block).
func (d *Daemon) embeddedHealth() *EmbeddedBrokerHealth {
	d.brokerMu.Lock()
	defer d.brokerMu.Unlock()
	e := d.embedded
	if e == nil {
		return nil
	}
	h := &EmbeddedBrokerHealth{Listen: e.conf.Listen, Data: e.data, State: embeddedServing}
	if e.sb != nil {
		h.URL = e.sb.URL()
	} else {
		h.State = embeddedFailed
		h.Error = e.err.Error()
	}
	return h
}
