package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/pki"
)

// Reload implements control.Backend and is what SIGHUP runs: it reads and
// validates the configuration file, builds what the reloadable keys need
// (config.Reloadable: log.level, firewall, join.coordinators, pki.crl,
// ice.stun_servers, ice.turn_servers), then swaps them in on the control
// loop. Anything invalid — the file, the CRL, a firewall the overlay refuses
// — leaves the running state untouched and is the returned error. Changed
// keys that need a restart are listed in NeedsRestart and keep their
// running values.
func (d *Daemon) Reload(ctx context.Context) (*control.ReloadResult, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	res := &control.ReloadResult{Changed: []string{}, NeedsRestart: []string{}}
	if !d.isStarted() {
		return res, control.ErrUnavailable
	}
	res, err := d.reload(ctx, res)
	if err != nil {
		d.stats.reloadsFailed.Add(1)
		d.log.Error("reload refused; the running configuration is unchanged", "file", d.cfgPath, "error", err)
		d.events.publish(control.Event{Kind: control.EventReload, Message: "refused: " + err.Error()})
		return res, err
	}
	d.stats.reloads.Add(1)
	if len(res.Changed) == 0 && len(res.NeedsRestart) == 0 {
		d.log.Info("configuration reloaded: nothing changed", "file", d.cfgPath)
	} else {
		d.log.Info("configuration reloaded", "file", d.cfgPath, "applied", res.Changed, "needsRestart", res.NeedsRestart)
	}
	if len(res.NeedsRestart) > 0 {
		d.log.Warn("changed settings take effect only after a restart", "keys", res.NeedsRestart)
	}
	msg := "applied: " + orNone(res.Changed)
	if len(res.NeedsRestart) > 0 {
		msg += "; needs restart: " + strings.Join(res.NeedsRestart, ", ")
	}
	d.events.publish(control.Event{Kind: control.EventReload, Message: msg})
	return res, nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "nothing"
	}
	return strings.Join(s, ", ")
}

func (d *Daemon) reload(ctx context.Context, res *control.ReloadResult) (*control.ReloadResult, error) {
	if d.cfgPath == "" {
		return res, errors.New("reload: the daemon was not started from a configuration file")
	}
	newCfg, err := config.Load(d.cfgPath)
	if err != nil {
		return res, fmt.Errorf("config: %w", err)
	}
	for _, w := range newCfg.Warnings {
		d.log.Warn("configuration", "warning", w.Error())
	}
	// The whole file must be one the daemon could start with.
	p, err := prepare(newCfg)
	if err != nil {
		return res, err
	}
	old := d.run.Load()
	for _, k := range config.Changes(old.cfg, newCfg) {
		if config.Reloadable(k) {
			res.Changed = append(res.Changed, k)
		} else {
			res.NeedsRestart = append(res.NeedsRestart, k)
		}
	}
	renew, why := renewal(d.cred(), p.creds, res.NeedsRestart)
	if renew {
		// A renewed certificate (same path or a new one) is applied now:
		// links re-handshake with it and keep their traffic.
		res.NeedsRestart = slices.DeleteFunc(res.NeedsRestart, func(k string) bool { return k == "pki.cert" || k == "pki.key" })
		res.Changed = append(res.Changed, "pki.cert")
		if d.coord != nil {
			// The embedded coordinator's TLS listener keeps the certificate
			// it started with (valid until it expires).
			res.NeedsRestart = append(res.NeedsRestart, "pki.cert")
		}
	} else if why != "" && !slices.Contains(res.NeedsRestart, "pki.cert") {
		d.log.Warn("the new certificate is not a renewal of the running one", "reason", why)
		res.NeedsRestart = append(res.NeedsRestart, "pki.cert")
	}
	if p.crl != nil {
		// Checked against the running CA: a CRL of another CA is refused
		// here, before anything is swapped.
		if _, err := d.verifier.UpdateCRL(p.crl); err != nil {
			return res, credErr("CRL", fmt.Errorf("%s: %w", newCfg.PKI.CRL, err))
		}
	}

	eff := *old.cfg
	eff.Log.Level = newCfg.Log.Level
	eff.Firewall = newCfg.Firewall
	eff.Join.Coordinators = slices.Clone(newCfg.Join.Coordinators)
	eff.PKI.CRL = newCfg.PKI.CRL
	eff.ICE.STUNServers = slices.Clone(newCfg.ICE.STUNServers)
	eff.ICE.TURNServers = slices.Clone(newCfg.ICE.TURNServers)
	if renew {
		eff.PKI.Cert, eff.PKI.Key = newCfg.PKI.Cert, newCfg.PKI.Key
	}
	next, err := newRunConfig(&eff)
	if err != nil {
		return res, err
	}
	var newClient *discovery.Client
	if !slices.Equal(old.cfg.Join.Coordinators, eff.Join.Coordinators) {
		if newClient, err = d.newClient(d.coordinatorList(eff.Join.Coordinators)); err != nil {
			return res, configErr("join.coordinators: %v", err)
		}
	}

	var applyErr error
	if err := d.do(ctx, func() { applyErr = d.swapRun(old, next, newClient) }); err != nil {
		if newClient != nil {
			_ = newClient.Close()
		}
		return res, err
	}
	if applyErr != nil {
		return res, applyErr
	}
	if d.opts.LogLevel != nil {
		d.opts.LogLevel.Set(eff.Log.Level.Slog())
	}
	if renew {
		d.renew(p.creds)
	}
	if !slices.Equal(old.cfg.ICE.STUNServers, eff.ICE.STUNServers) {
		d.kickNetcheck() // the NAT verdict depends on which STUN servers answer
	}
	if p.crl != nil {
		// Pass it on: the coordinator session announces it to the mesh, and
		// the client's CRLUpdated change recomputes the peer set.
		if c := d.client.Load(); c != nil {
			if err := c.PublishCRL(p.crl); err != nil {
				d.log.Warn("could not pass the reloaded CRL on", "error", err)
			}
		}
		if d.coord != nil {
			if err := d.coord.PublishCRL(p.crl); err != nil {
				d.log.Warn("could not pass the reloaded CRL to the coordinator", "error", err)
			}
		}
	}
	return res, nil
}

// swapRun installs next as the running configuration and applies it at
// once; if the overlay refuses the result it puts old back. newClient, if
// not nil, replaces the coordinator session (join.coordinators changed).
// Control loop only.
func (d *Daemon) swapRun(old, next *runConfig, newClient *discovery.Client) error {
	d.run.Store(next)
	if err := d.applyDesired(computeDesired(d.desiredInput())); err != nil {
		d.run.Store(old)
		if newClient != nil {
			_ = newClient.Close()
		}
		return fmt.Errorf("the overlay refused the new configuration: %w", err)
	}
	if newClient != nil {
		prev := d.client.Load()
		if d.loop.unsubClient != nil {
			d.loop.unsubClient()
		}
		// Close first: it writes the registry cache the new client loads,
		// so the peer set carries over.
		_ = prev.Close()
		if err := d.startClient(newClient); err != nil {
			d.log.Error("could not start the new coordinator session", "error", err)
		}
		d.log.Info("coordinator list changed; new session started", "coordinators", d.coordinatorList(next.cfg.Join.Coordinators))
		d.kickLoop()
	}
	return nil
}

// renewal reports whether next can replace the running certificate cur
// without a restart: a new certificate for the same identity (name,
// addresses, groups, subnets), under the same CA file. why says what stops
// it when next is a different certificate; both are zero when nothing
// changed.
func renewal(cur, next *pki.Credentials, needsRestart []string) (ok bool, why string) {
	if next.Cert.Fingerprint == cur.Cert.Fingerprint {
		return false, ""
	}
	a, b := cur.Cert.Identity, next.Cert.Identity
	switch {
	case slices.Contains(needsRestart, "pki.ca"):
		return false, "pki.ca changed too (a CA change takes a restart)"
	case a.Name != b.Name || a.Addr != b.Addr || a.Addr6 != b.Addr6:
		return false, fmt.Sprintf("it names %s %s, the running one %s %s", b.Name, b.Addr, a.Name, a.Addr)
	case !slices.Equal(a.Groups, b.Groups) || !slices.Equal(a.Subnets, b.Subnets):
		return false, "its groups or subnets differ from the running certificate's"
	}
	return true, ""
}

// renew makes the links and the coordinator session present creds (a
// renewed certificate). Neither drops traffic: links re-handshake through a
// rekey, and the session re-registers at once.
func (d *Daemon) renew(creds *pki.Credentials) {
	d.creds.Store(creds)
	if err := d.tm.SetCredentials(creds); err != nil {
		d.log.Error("links keep the old certificate", "error", err)
	}
	if c := d.client.Load(); c != nil {
		if err := c.SetCredentials(creds); err != nil {
			d.log.Error("the coordinator session keeps the old certificate", "error", err)
		}
	}
	d.log.Info("certificate renewed", "fingerprint", creds.Cert.Fingerprint, "notAfter", creds.Cert.Cert.NotAfter)
}
