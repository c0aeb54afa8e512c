package topology

import (
	"cmp"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/spiffeworkload"
	"github.com/trustline/trustline/modules/truststore"
)

// pool analyses a trust pool source (namespace tls.ca_pool.source):
// Caddy's own (file, inline, pki_root, pki_intermediate, storage, http,
// lazy, combined, system) and the suite's (suitePool). It reads the
// anchors it can.
func (a *analyzer) pool(src map[string]any, path string) *Pool {
	p := &Pool{Path: path, Source: str(src["provider"])}
	switch p.Source {
	case "file":
		return a.filePool(strs(src["pem_files"]), path)
	case "inline":
		return a.inlinePool(strs(src["trusted_ca_certs"]), "certificates in the config", path)
	case "pki_root", "pki_intermediate":
		auth := orElse(strs(src["authority"]), "local")
		what := strings.TrimPrefix(p.Source, "pki_")
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
	default:
		a.suitePool(p, src, path)
	}
	return p
}

// suitePool analyses the suite's trust pool sources (truststore, bundle,
// pki_live, spiffe_bundle, spiffe_workload), which reload live.
func (a *analyzer) suitePool(p *Pool, src map[string]any, path string) {
	id := "tls.ca_pool.source." + p.Source
	p.Live = true
	switch s := suiteModule(id, "provider", src).(type) {
	case *truststore.TrustStore:
		p.Description = s.Path
		p.Anchors = a.store(RoleTrustAnchor, storeRef{kind: "truststore", path: s.Path, password: s.Password, aliases: s.Aliases}, path)
	case *truststore.Bundle:
		p.Description = strings.Join(s.Paths, ", ")
		if s.SystemRoots {
			p.Description += " + the system roots"
		}
		p.Anchors = a.bundleAnchors(s.Paths, path)
	case *truststore.PKILive:
		ca := cmp.Or(s.Authority, "local")
		p.Description = "root and current intermediate of Caddy's internal CA " + ca + " (followed live)"
		p.Anchors = append(p.Anchors, a.addUnread(RoleTrustAnchor, "internal CA "+ca+" (pki_live)", true, "in Caddy's storage", path).ID)
	case *truststore.SPIFFEBundle:
		var descs []string
		for i, b := range s.Bundles {
			bp := index(field(path, "bundles"), i)
			if b.File != "" {
				descs = append(descs, b.TrustDomain+" "+b.File)
				p.Anchors = append(p.Anchors, a.spiffeBundleFile(b.TrustDomain, expandPath(b.File), bp)...)
			} else {
				descs = append(descs, b.TrustDomain+" "+b.URL)
				p.Anchors = append(p.Anchors, a.addUnread(RoleTrustAnchor, "SPIFFE bundle endpoint "+b.URL, true, "fetched at run time", bp).ID)
			}
		}
		p.Description = strings.Join(descs, ", ")
	case *spiffeworkload.Pool:
		sock := workloadSocket(s.Socket)
		p.Description = "SPIFFE Workload API " + sock
		if len(s.TrustDomains) > 0 {
			p.Description += " (trust domains " + strings.Join(s.TrustDomains, ", ") + ")"
		}
		p.Anchors = append(p.Anchors, a.addUnread(RoleTrustAnchor, "X.509 bundles from the SPIFFE Workload API "+sock, true, "streamed by the agent at run time", path).ID)
		a.workloadStale(true, s.Socket, path)
	default:
		p.Live, p.Description = false, "not analysed"
		a.notAnalysed(path, id, why(s, "trust pool source not analysed"))
	}
}

// filePool is a pool of PEM files (Caddy's pem_files, root_ca_pem_files,
// trusted_ca_certs_pem_files) at path.
func (a *analyzer) filePool(files []string, path string) *Pool {
	p := &Pool{Path: path, Source: "file", Description: strings.Join(files, ", ")}
	for _, f := range files {
		f = expandPath(f)
		p.Anchors = append(p.Anchors, a.anchorsFile(f, "file "+f, false, path)...)
	}
	return p
}

// inlinePool is a pool of base64-DER certificates (Caddy's inline form)
// at path.
func (a *analyzer) inlinePool(certs []string, desc, path string) *Pool {
	p := &Pool{Path: path, Source: "inline", Description: desc}
	for i, s := range certs {
		der, err := base64.StdEncoding.DecodeString(s)
		var c *x509.Certificate
		if err != nil {
			err = fmt.Errorf("not base64: %w", err)
		} else {
			c, err = x509.ParseCertificate(der)
		}
		if err != nil {
			p.Anchors = append(p.Anchors, a.unreadable(RoleTrustAnchor, "inline certificate "+index(path, i), false, err, path).ID)
			continue
		}
		p.Anchors = append(p.Anchors, a.addCert(RoleTrustAnchor, "inline", false, c, path).ID)
	}
	return p
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
	for _, f := range files[:min(len(files), 1000)] {
		ids = append(ids, a.anchorsFile(f, "bundle file "+f, true, path)...)
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
	var data []byte
	if err == nil {
		data, err = a.readFile(file)
	}
	var b *spiffebundle.Bundle
	if err == nil {
		b, err = spiffebundle.Parse(trustDomain, data)
	}
	if err != nil {
		return []string{a.unreadable(RoleTrustAnchor, source, true, err, path).ID}
	}
	return a.addCerts(RoleTrustAnchor, b.X509Authorities(), source, true, path)
}

// describe is a pool's one-line description with its anchor IDs.
func (p *Pool) describe() string {
	if p == nil {
		return "the system roots"
	}
	s := p.name()
	if len(p.Anchors) > 0 {
		s += " [" + strings.Join(p.Anchors, " ") + "]"
	}
	if p.Live {
		s += " (live)"
	}
	return s
}

// name is a pool's source and description.
func (p *Pool) name() string {
	if p.Source == "system" {
		return p.Description
	}
	return p.Source + " " + p.Description
}

// workloadSocket names the Workload API socket a spiffe_workload source
// reads.
func workloadSocket(socket string) string { return cmp.Or(socket, "$SPIFFE_ENDPOINT_SOCKET") }
