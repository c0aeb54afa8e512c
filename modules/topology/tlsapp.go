package topology

import (
	"cmp"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/trustline/trustline/modules/keystore"
	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/spiffeworkload"
)

// tlsInfo is what the tls app says about server certificates.
type tlsInfo struct {
	loaded        []*loadedCert
	automate      []string
	policies      []*autoPolicy
	onDemand      bool
	renewInterval time.Duration // automation.renew_interval
}

// loadedCert is a certificate loaded by the tls app (load_files, load_pem,
// load_folders, load_storage).
type loadedCert struct {
	cert *Certificate
	leaf *x509.Certificate // nil when not read
	tags []string
}

// autoPolicy is an automation policy: the names it manages and how it gets
// their certificates.
type autoPolicy struct {
	subjects []string
	how      string   // "internal CA local", "ACME", "keystore pkcs12 /x.p12"
	certs    []string // certificate IDs (get_certificate keystores)
	onDemand bool
	ratio    float64 // renewal_window_ratio; 0: certmagic's default
}

// tlsApp reads the tls app's certificate loaders and automation policies.
func (a *analyzer) tlsApp(app map[string]any, path string) {
	loaders := obj(app["certificates"])
	for _, name := range keys(loaders) {
		p, v := field(field(path, "certificates"), name), loaders[name]
		switch name {
		case "load_files":
			for i, e := range arr(v) {
				e, ep := obj(e), index(p, i)
				file := expandPath(str(e["certificate"]))
				if format := str(e["format"]); format != "" && format != "pem" {
					a.load(e, a.addUnread(RoleServer, "file "+file, false, "format "+format+" not read", ep), nil)
					continue
				}
				c, leaf := a.leafFile(RoleServer, file, false, ep)
				a.keyFile(str(e["key"]), field(ep, "key"))
				a.load(e, c, leaf)
			}
		case "load_pem":
			for i, e := range arr(v) {
				e, ep := obj(e), index(p, i)
				if certs, err := material.ParsePEMCertificates([]byte(str(e["certificate"]))); err != nil {
					a.load(e, a.unreadable(RoleServer, "load_pem "+ep, false, err, ep), nil)
				} else {
					a.load(e, a.addCert(RoleServer, "load_pem (inline)", false, certs[0], ep), certs[0])
				}
			}
		case "load_folders":
			for i, dir := range strs(v) {
				a.loadFolder(expandPath(dir), index(p, i))
			}
		case "load_storage":
			for i, e := range arr(obj(v)["pairs"]) {
				e := obj(e)
				a.load(e, a.addUnread(RoleServer, "storage key "+str(e["certificate"]), false, "in Caddy's storage", index(field(p, "pairs"), i)), nil)
			}
		case "automate":
			a.tls.automate = append(a.tls.automate, strs(v)...)
		default:
			a.notAnalysed(p, "tls.certificates."+name, "certificate loader not analysed")
		}
	}

	auto := obj(app["automation"])
	a.tls.onDemand = auto["on_demand"] != nil
	a.tls.renewInterval = duration(auto["renew_interval"])
	for i, pol := range arr(auto["policies"]) {
		pol, pp := obj(pol), index(field(path, "automation.policies"), i)
		ap := &autoPolicy{subjects: strs(pol["subjects"]), onDemand: boolean(pol["on_demand"])}
		if r, ok := pol["renewal_window_ratio"].(float64); ok && r > 0 && r < 1 {
			ap.ratio = r
		}
		ap.how = a.policyIssuance(pol, pp, ap)
		a.tls.policies = append(a.tls.policies, ap)
	}
}

// load records a certificate the tls app loads, with the tags of its
// loader entry e.
func (a *analyzer) load(e map[string]any, c *Certificate, leaf *x509.Certificate) {
	a.tls.loaded = append(a.tls.loaded, &loadedCert{cert: c, leaf: leaf, tags: strs(e["tags"])})
}

// loadFolder reads the .pem files of a load_folders directory (each holds
// a certificate and its key).
func (a *analyzer) loadFolder(dir, path string) {
	if a.opts.NoFiles {
		a.load(nil, a.addUnread(RoleServer, "folder "+dir, false, "files not read", path), nil)
		return
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		a.load(nil, a.unreadable(RoleServer, "folder "+dir, false, err, path), nil)
		return
	}
	n := 0
	for _, e := range entries {
		if e.IsDir() || !strings.EqualFold(filepath.Ext(e.Name()), ".pem") {
			continue
		}
		if n++; n > 1000 {
			break
		}
		c, leaf := a.leafFile(RoleServer, filepath.Join(dir, e.Name()), false, path)
		a.load(nil, c, leaf)
	}
}

// policyIssuance describes how an automation policy gets certificates.
func (a *analyzer) policyIssuance(pol map[string]any, path string, ap *autoPolicy) string {
	var hows []string
	for i, m := range arr(pol["get_certificate"]) {
		m, mp := obj(m), index(field(path, "get_certificate"), i)
		switch via := str(m["via"]); via {
		case "tailscale":
			hows = append(hows, "Tailscale")
		case "http":
			hows = append(hows, "HTTP certificate manager "+str(m["url"]))
		default:
			id := "tls.get_certificate." + via
			switch s := suiteModule(id, "via", m).(type) {
			case *keystore.CertGetter:
				id, how := a.keystoreSource(RoleServer, obj(generic(s.KeystoreRaw)), field(mp, "keystore"))
				if id != "" {
					ap.certs = append(ap.certs, id)
				}
				hows = append(hows, "keystore "+how)
			default:
				a.notAnalysed(mp, id, why(s, "certificate manager not analysed"))
				hows = append(hows, "certificate manager "+via+" (not analysed)")
			}
		}
	}
	for i, is := range arr(pol["issuers"]) {
		is := obj(is)
		switch mod := str(is["module"]); mod {
		case "internal":
			hows = append(hows, "internal CA "+cmp.Or(str(is["ca"]), "local"))
		case "acme":
			hows = append(hows, "ACME "+cmp.Or(str(is["ca"]), "(Let's Encrypt)"))
		case "zerossl":
			hows = append(hows, "ZeroSSL")
		default:
			a.notAnalysed(index(field(path, "issuers"), i), "tls.issuance."+mod, "issuer not analysed")
			hows = append(hows, "issuer "+mod+" (not analysed)")
		}
	}
	if len(hows) == 0 {
		return "ACME (Let's Encrypt, ZeroSSL)"
	}
	return strings.Join(hows, ", then ")
}

// serverCertFor says which certificate Caddy serves for host (the SNI;
// "" for any) under a connection policy's certificate_selection. autoCerts
// says whether automatic HTTPS manages the host's certificate (HTTP sites);
// otherwise only names the tls app is told to manage have one.
func (a *analyzer) serverCertFor(host string, selection map[string]any, usedBy string, autoCerts bool) (string, []string) {
	// a certificate_selection picks among the loaded certificates
	if selection != nil {
		anyTag, allTags := strs(selection["any_tag"]), strs(selection["all_tags"])
		var ids []string
		for _, lc := range a.tls.loaded {
			if len(anyTag) > 0 && !hasAny(lc.tags, anyTag) {
				continue
			}
			if len(allTags) > 0 && !hasAll(lc.tags, allTags) {
				continue
			}
			lc.cert.use(usedBy)
			ids = append(ids, lc.cert.ID)
		}
		desc := "certificate_selection"
		if len(anyTag)+len(allTags) > 0 {
			desc = "files (by tag " + strings.Join(append(anyTag, allTags...), ", ") + ")"
		}
		if len(ids) == 0 {
			return desc + ": no loaded certificate matches", nil
		}
		return desc, ids
	}
	// loaded certificates whose names match the host come first: Caddy
	// does not manage a name it has a loaded certificate for
	var ids []string
	for _, lc := range a.tls.loaded {
		if lc.leaf != nil && (host == "" || certMatches(lc.leaf, host)) {
			lc.cert.use(usedBy)
			ids = append(ids, lc.cert.ID)
		}
	}
	if len(ids) > 0 {
		return "files", ids
	}
	if host == "" {
		if a.tls.onDemand {
			return "on-demand TLS", nil
		}
		return "by SNI among the tls app's certificates", nil
	}
	// the names the tls app is told to manage: automate, a policy's
	// subjects, on-demand
	pol := a.policyFor(host)
	explicit := a.tls.onDemand || slices.ContainsFunc(a.tls.automate, func(s string) bool { return nameMatches(s, host) }) ||
		pol != nil && (len(pol.subjects) > 0 || pol.onDemand)
	if !autoCerts && !explicit {
		a.finding(SeverityWarning, KindCertNotFound, usedBy,
			"no certificate for "+host+": no loaded certificate covers it and the tls app is not told to manage it, so handshakes for it fail",
			"load one (`tls.certificates.load_files`), or add the name to `tls.certificates.automate` (in a Caddyfile: a site for it, or `tls { ... }` automation)")
		return "none for " + host, nil
	}
	how := "internal CA local"
	switch {
	case pol != nil:
		how = pol.how
		ids = append(ids, pol.certs...)
		for _, id := range pol.certs {
			a.rep.Certificate(id).use(usedBy)
		}
	case certmagic.SubjectQualifiesForPublicCert(host):
		how = "ACME (Let's Encrypt, ZeroSSL)"
	}
	if len(ids) == 0 {
		ids = a.liveServerCerts(host, how, pol, usedBy)
	}
	if len(ids) == 0 {
		c := a.addUnread(RoleServer, "managed by Caddy for "+host+" ("+how+")", false, "managed by Caddy: see the running instance's report", usedBy)
		ids = []string{c.ID}
	}
	return "managed: " + how, ids
}

// policyFor is the automation policy that manages name: the first with no
// subjects or a subject covering it; nil for none.
func (a *analyzer) policyFor(name string) *autoPolicy {
	for _, ap := range a.tls.policies {
		if len(ap.subjects) == 0 || slices.ContainsFunc(ap.subjects, func(s string) bool { return nameMatches(s, name) }) {
			return ap
		}
	}
	return nil
}

// liveServerCerts asks the running instance's certificate cache for the
// certificates Caddy manages for host under automation policy pol (nil:
// the default one).
func (a *analyzer) liveServerCerts(host, how string, pol *autoPolicy, usedBy string) []string {
	if a.opts.LiveCertificates == nil {
		return nil
	}
	ratio := 0.0
	if pol != nil {
		ratio = pol.ratio
	}
	var ids []string
	for _, leaf := range a.opts.LiveCertificates(host) {
		c := a.addCert(RoleServer, "managed by Caddy ("+how+")", false, leaf, usedBy)
		if c.RenewBy == nil {
			by := renewBy(leaf.NotBefore, leaf.NotAfter, ratio, a.tls.renewInterval).UTC()
			c.RenewBy = &by
		}
		ids = append(ids, c.ID)
	}
	return ids
}

// renewBy is when Caddy should have renewed a certificate it manages: its
// renewal window opens when ratio of its lifetime is left; Caddy checks
// every renewInterval and retries, so the renewal is overdue once the
// window has been open for a tenth of its length or three checks,
// whichever is longer. ARI can only make Caddy renew earlier.
func renewBy(notBefore, notAfter time.Time, ratio float64, renewInterval time.Duration) time.Time {
	if ratio <= 0 || ratio >= 1 {
		ratio = certmagic.DefaultRenewalWindowRatio
	}
	if renewInterval <= 0 {
		renewInterval = certmagic.DefaultRenewCheckInterval
	}
	window := time.Duration(float64(notAfter.Sub(notBefore)) * ratio)
	return notAfter.Add(-window).Add(max(window/10, 3*renewInterval))
}

// duration reads a caddy.Duration: nanoseconds, or a string like "10m".
func duration(v any) time.Duration {
	switch d := v.(type) {
	case float64:
		if d > 0 && d < float64(1<<62) {
			return time.Duration(d)
		}
	case string:
		if p, err := caddy.ParseDuration(d); err == nil && p > 0 {
			return p
		}
	}
	return 0
}

// keystoreSource describes (and reads) one of the suite's keystore sources
// (namespace trustline.keystore), the identity Caddy presents: the ID of
// its certificate ("" for none) and how it is had.
func (a *analyzer) keystoreSource(role string, src map[string]any, path string) (string, string) {
	kind := str(src["source"])
	id := keystore.Namespace + "." + kind
	switch s := suiteModule(id, "source", src).(type) {
	case *keystore.PEM:
		file := expandPath(s.Certificate)
		c, _ := a.leafFile(role, file, true, path)
		a.keyFile(s.Key, field(path, "key"))
		return c.ID, "pem " + file
	case *keystore.PKCS12:
		st := storeRef{kind: "pkcs12", path: s.Path, password: s.Password}
		return a.store(role, st, path)[0], st.source()
	case *keystore.JKS:
		st := storeRef{kind: "jks", path: s.Path, password: s.Password, keyPassword: s.KeyPassword}
		if s.Alias != "" {
			st.aliases = []string{s.Alias}
		}
		return a.store(role, st, path)[0], st.source()
	case *keystore.Internal:
		names := s.DNSNames
		if s.SPIFFEID != "" {
			names = append([]string{s.SPIFFEID}, names...)
		}
		desc := "internal CA " + cmp.Or(s.CA, "local") + " for " + strings.Join(names, ", ")
		return a.addUnread(role, "issued by "+desc, true, "issued at run time, kept in Caddy's storage", path).ID, "internal " + strings.Join(names, ", ")
	case *spiffeworkload.Keystore:
		svid := cmp.Or(s.SPIFFEID, "the default SVID")
		a.workloadStale(false, s.Socket, path)
		return a.addUnread(role, "X509-SVID "+svid+" from the SPIFFE Workload API "+workloadSocket(s.Socket), true, "streamed by the agent at run time", path).ID, "spiffe_workload " + svid
	default:
		a.notAnalysed(path, id, why(s, "keystore source not analysed"))
		return "", kind + " (not analysed)"
	}
}

func hasAny(have, want []string) bool {
	return slices.ContainsFunc(want, func(w string) bool { return slices.Contains(have, w) })
}

func hasAll(have, want []string) bool {
	return !slices.ContainsFunc(want, func(w string) bool { return !slices.Contains(have, w) })
}

// certMatches reports whether a certificate is valid for host.
func certMatches(c *x509.Certificate, host string) bool {
	if c.VerifyHostname(host) == nil {
		return true
	}
	// a host matcher that is itself a wildcard matches the same wildcard SAN
	for _, n := range c.DNSNames {
		if strings.EqualFold(n, host) {
			return true
		}
	}
	return false
}

// nameMatches reports whether a subject (possibly a wildcard) covers host.
func nameMatches(subject, host string) bool {
	subject, host = strings.ToLower(subject), strings.ToLower(host)
	if subject == host {
		return true
	}
	if rest, ok := strings.CutPrefix(subject, "*."); ok {
		if i := strings.IndexByte(host, '.'); i > 0 && host[i+1:] == rest {
			return true
		}
	}
	return false
}
