package topology

import (
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trustline/trustline/modules/material"
)

// pool analyses a trust pool source (namespace tls.ca_pool.source): Caddy's
// own (file, inline, pki_root, pki_intermediate, storage, http, lazy,
// combined, system) and the suite's (truststore, bundle, pki_live,
// spiffe_bundle). It reads the anchors it can.
func (a *analyzer) pool(src map[string]any, path string) *Pool {
	provider := str(src["provider"])
	p := &Pool{Path: path, Source: provider}
	switch provider {
	case "file":
		files := strs(src["pem_files"])
		p.Description = strings.Join(files, ", ")
		for _, f := range files {
			p.Anchors = append(p.Anchors, a.anchorsFile(f, false, path)...)
		}
	case "inline":
		p.Description = "certificates in the config"
		p.Anchors = a.inlineAnchors(strs(src["trusted_ca_certs"]), path)
	case "pki_root", "pki_intermediate":
		auth := strs(src["authority"])
		if len(auth) == 0 {
			auth = []string{"local"}
		}
		what := "root"
		if provider == "pki_intermediate" {
			what = "intermediate"
		}
		p.Description = what + " of Caddy's internal CA " + strings.Join(auth, ", ") + " (read once per config load)"
		for _, ca := range auth {
			p.Anchors = append(p.Anchors, a.addUnread(RoleTrustAnchor, what+" of internal CA "+ca, false, "in Caddy's storage", path).ID)
		}
	case "storage":
		p.Description = "storage keys " + strings.Join(strs(src["pem_keys"]), ", ")
		p.Anchors = append(p.Anchors, a.addUnread(RoleTrustAnchor, p.Description, false, "in storage", path).ID)
	case "http":
		p.Description = "fetched from " + strings.Join(strs(src["endpoints"]), ", ")
		p.Anchors = append(p.Anchors, a.addUnread(RoleTrustAnchor, p.Description, false, "fetched at run time", path).ID)
	case "system":
		p.Description = "the system roots"
	case "lazy":
		inner := a.pool(obj(src["backend"]), field(path, "backend"))
		p.Description = "(loaded on first use) " + inner.Source + " " + inner.Description
		p.Anchors = inner.Anchors
		p.Live = inner.Live
	case "combined":
		var descs []string
		for i, s := range arr(src["sources"]) {
			inner := a.pool(obj(s), index(field(path, "sources"), i))
			descs = append(descs, inner.Source+" "+inner.Description)
			p.Anchors = append(p.Anchors, inner.Anchors...)
		}
		p.Description = "of " + strings.Join(descs, "; ")
	case "truststore":
		s := storeRef{kind: "truststore", path: str(src["path"]), password: str(src["password"]), aliases: strs(src["aliases"])}
		p.Description = s.path
		p.Live = true
		p.Anchors = a.trustStore(s, path)
	case "bundle":
		paths := strs(src["paths"])
		p.Description = strings.Join(paths, ", ")
		if boolean(src["system_roots"]) {
			p.Description += " + the system roots"
		}
		p.Live = true
		p.Anchors = a.bundleAnchors(paths, path)
	case "pki_live":
		ca := str(src["authority"])
		if ca == "" {
			ca = "local"
		}
		p.Description = "root and current intermediate of Caddy's internal CA " + ca + " (followed live)"
		p.Live = true
		p.Anchors = append(p.Anchors, a.addUnread(RoleTrustAnchor, "internal CA "+ca+" (pki_live)", true, "in Caddy's storage", path).ID)
	case "spiffe_bundle":
		p.Live = true
		var descs []string
		for i, b := range arr(src["bundles"]) {
			b := obj(b)
			bp := index(field(path, "bundles"), i)
			td := str(b["trust_domain"])
			if file := str(b["file"]); file != "" {
				descs = append(descs, td+" "+file)
				p.Anchors = append(p.Anchors, a.spiffeBundleFile(td, expandPath(file), bp)...)
			} else {
				descs = append(descs, td+" "+str(b["url"]))
				p.Anchors = append(p.Anchors, a.addUnread(RoleTrustAnchor, "SPIFFE bundle endpoint "+str(b["url"]), true, "fetched at run time", bp).ID)
			}
		}
		p.Description = strings.Join(descs, ", ")
	case "spiffe_workload":
		p.Live = true
		sock := workloadSocket(src)
		p.Description = "SPIFFE Workload API " + sock
		if tds := strs(src["trust_domains"]); len(tds) > 0 {
			p.Description += " (trust domains " + strings.Join(tds, ", ") + ")"
		}
		p.Anchors = append(p.Anchors, a.addUnread(RoleTrustAnchor, "X.509 bundles from the SPIFFE Workload API "+sock, true, "streamed by the agent at run time", path).ID)
		a.workloadStale(true, str(src["socket"]), path)
	default:
		p.Description = "not analysed"
		a.notAnalysed(path, "tls.ca_pool.source."+provider, "trust pool source not analysed")
	}
	return p
}

// inlineAnchors adds base64-DER certificates (Caddy's inline form).
func (a *analyzer) inlineAnchors(certs []string, path string) []string {
	var ids []string
	for i, s := range certs {
		c, err := base64DER(s)
		if err != nil {
			ids = append(ids, a.unreadable(RoleTrustAnchor, "inline certificate "+index(path, i), false, err, path).ID)
			continue
		}
		ids = append(ids, a.addCert(RoleTrustAnchor, "inline", false, c, path).ID)
	}
	return ids
}

// bundleAnchors reads the suite's bundle source: PEM files, directories,
// globs.
func (a *analyzer) bundleAnchors(patterns []string, path string) []string {
	expanded := make([]string, len(patterns))
	for i, p := range patterns {
		expanded[i] = expandPath(p)
	}
	source := "bundle " + strings.Join(expanded, ", ")
	if a.opts.NoFiles {
		return []string{a.addUnread(RoleTrustAnchor, source, true, "files not read", path).ID}
	}
	files, err := material.ExpandPaths(expanded)
	if err != nil {
		return []string{a.unreadable(RoleTrustAnchor, source, true, err, path).ID}
	}
	var ids []string
	for i, f := range files {
		if i >= 1000 {
			break
		}
		certs, err := a.pemFile(f)
		if err != nil {
			ids = append(ids, a.unreadable(RoleTrustAnchor, "bundle file "+f, true, err, path).ID)
			continue
		}
		ids = append(ids, a.anchors(certs, "bundle file "+f, true, path)...)
	}
	return ids
}

// spiffeBundleFile reads the X.509 authorities of a SPIFFE bundle file.
func (a *analyzer) spiffeBundleFile(td, file, path string) []string {
	source := "SPIFFE bundle " + file
	if a.opts.NoFiles {
		return []string{a.addUnread(RoleTrustAnchor, source, true, "files not read", path).ID}
	}
	trustDomain, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return []string{a.unreadable(RoleTrustAnchor, source, true, err, path).ID}
	}
	data, err := a.readFile(file)
	if err != nil {
		return []string{a.unreadable(RoleTrustAnchor, source, true, err, path).ID}
	}
	b, err := spiffebundle.Parse(trustDomain, data)
	if err != nil {
		return []string{a.unreadable(RoleTrustAnchor, source, true, err, path).ID}
	}
	return a.anchors(b.X509Authorities(), source, true, path)
}

// describe is a pool's one-line description with its anchor IDs.
func (p *Pool) describe() string {
	if p == nil {
		return "the system roots"
	}
	s := p.Source + " " + p.Description
	if p.Source == "system" {
		s = p.Description
	}
	if len(p.Anchors) > 0 {
		s += " [" + strings.Join(p.Anchors, " ") + "]"
	}
	if p.Live {
		s += " (live)"
	}
	return s
}

// workloadSocket is the Workload API socket a spiffe_workload source reads.
func workloadSocket(src map[string]any) string {
	if sock := str(src["socket"]); sock != "" {
		return sock
	}
	return "$SPIFFE_ENDPOINT_SOCKET"
}
