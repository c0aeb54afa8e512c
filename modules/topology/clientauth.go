package topology

import (
	"strconv"
	"strings"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/peer"
	"github.com/trustline/trustline/modules/revocation"
	"github.com/trustline/trustline/modules/truststore"
)

// clientAuth analyses a connection policy's client_authentication: its
// effective mode, what verifies a presented certificate, against which
// pools, and the findings (requests but does not verify; optional
// certificates; verification against the system roots).
func (a *analyzer) clientAuth(ca map[string]any, path string) *ClientAuth {
	out := &ClientAuth{Path: path}
	if src := obj(ca["ca"]); src != nil {
		out.Pools = append(out.Pools, a.pool(src, field(path, "ca")))
	}
	if inline := strs(ca["trusted_ca_certs"]); len(inline) > 0 {
		out.Pools = append(out.Pools, a.inlinePool(inline, "trusted_ca_certs", field(path, "trusted_ca_certs")))
	}
	if files := strs(ca["trusted_ca_certs_pem_files"]); len(files) > 0 {
		out.Pools = append(out.Pools, a.filePool(files, field(path, "trusted_ca_certs_pem_files")))
	}
	caPools := len(out.Pools) // what crypto/tls verifies against; verifiers' pools follow
	hasCA := caPools > 0
	leafPinned := len(strs(ca["trusted_leaf_certs"])) > 0

	// the verifiers, and what each contributes
	var liveTrust, refuses, unknown bool // refuses: a peer verifier not in shadow mode
	var names []string
	for i, v := range arr(ca["verifiers"]) {
		v, vp := obj(v), index(field(path, "verifiers"), i)
		name := str(v["verifier"])
		names = append(names, name)
		id := "tls.client_auth.verifier." + name
		switch s := suiteModule(id, "verifier", v).(type) {
		case *truststore.LiveTrust:
			liveTrust = true
			p := a.pool(obj(generic(s.TrustPoolRaw)), field(vp, "trust_pool"))
			out.Pools = append(out.Pools, p)
			out.Verifiers = append(out.Verifiers, "live_trust: chain verified against "+p.describe()+" at every handshake")
		case *peer.Verifier:
			pats := s.Describe()
			out.Patterns = append(out.Patterns, pats...)
			desc := "peer: identity must match " + strings.Join(pats, "; ")
			if s.Revocation != nil {
				desc += "; revocation: " + revocationSummary(s.Revocation)
				a.crls(s.Revocation, field(vp, "revocation"), s.Shadow, out)
			}
			out.Verifiers = append(out.Verifiers, desc+shadow(s.Shadow))
			refuses = refuses || !s.Shadow
		default:
			if s == nil && name == "leaf" { // Caddy's
				leafPinned = true
				out.Verifiers = append(out.Verifiers, "leaf: only the pinned leaf certificates")
				a.leafLoaders(arr(v["leaf_certs_loaders"]), field(vp, "leaf_certs_loaders"))
				break
			}
			unknown = true
			out.Verifiers = append(out.Verifiers, name+" (not analysed)")
			a.notAnalysed(vp, id, why(s, "client certificate verifier not analysed"))
		}
	}

	mode := str(ca["mode"])
	if mode == "" {
		mode = "require"
		if hasCA || leafPinned {
			mode = "require_and_verify"
		}
	}
	out.Mode = mode
	chain := (mode == "verify_if_given" || mode == "require_and_verify")
	a.liveTrustUse(path, mode, hasCA, names)

	var how []string
	if chain {
		if hasCA {
			var ps []string
			for _, p := range out.Pools[:caPools] {
				ps = append(ps, p.describe())
			}
			how = append(how, "chain verified by crypto/tls against "+strings.Join(ps, " + ")+" (read at config load)")
		} else {
			how = append(how, "chain verified by crypto/tls against the system roots")
		}
	}
	if liveTrust {
		how = append(how, "chain verified by live_trust at every handshake")
	}
	if leafPinned {
		how = append(how, "pinned leaf certificates")
	}
	if unknown {
		how = append(how, "verifiers not analysed")
	}
	out.Verified = strings.Join(how, "; ")
	if len(how) == 0 {
		out.Verified = "not verified"
		if hasCA {
			out.Verified += " (mode " + mode + " does not use the trust pool)"
		}
	}

	modePath := field(path, "mode")
	verifies := chain || liveTrust || leafPinned || unknown
	switch {
	case !verifies && refuses:
		a.finding(SeverityWarning, KindClientAuthNoVerify, modePath,
			"client_auth mode "+mode+" does not verify client certificates, and the peer verifier refuses every certificate nothing verified: clients presenting one are all refused",
			"add a trust_pool (or `verifier live_trust <source>`) and use mode require_and_verify (the default with a trust_pool)")
	case !verifies:
		a.finding(SeverityError, KindClientAuthNoVerify, modePath,
			"client_auth mode "+mode+" requests client certificates but does not verify them: any self-signed certificate is accepted, and whatever it claims reaches placeholders, matchers and headers",
			"verify them: add `trust_pool <source>` with mode require_and_verify (the default with a trust_pool), or `verifier live_trust <source>`")
	case chain && !hasCA && !liveTrust && !leafPinned && !unknown:
		a.finding(SeverityWarning, KindClientAuthSystem, modePath,
			"client certificates are verified against the system roots: a certificate from any public CA is accepted",
			"name the CA that issues your clients' certificates: `trust_pool file ca.pem` or `verifier live_trust bundle ca.pem`")
	}
	if mode == "request" || mode == "verify_if_given" {
		a.finding(SeverityInfo, KindClientAuthOptional, modePath,
			"client_auth mode "+mode+" lets clients without a certificate in, with no identity",
			"if every client must authenticate, use mode require_and_verify; otherwise make sure the routes that need an identity check it (a peer matcher)")
	}
	return out
}

// revocationSummary describes a peer verifier's revocation block: its
// sources and whether it fails open.
func revocationSummary(rev *revocation.Revocation) string {
	var parts []string
	if n := len(rev.CRLFiles); n > 0 {
		parts = append(parts, strconv.Itoa(n)+" CRL file(s)")
	}
	if rev.DistributionPoints {
		parts = append(parts, "CRL distribution points")
	}
	if rev.SoftFail {
		parts = append(parts, "CRL soft fail")
	}
	if rev.Expired != "" {
		parts = append(parts, "expired CRL: "+rev.Expired)
	}
	if rev.OCSP != nil {
		o := "OCSP"
		if rev.OCSP.SoftFail {
			o += " (soft fail)"
		}
		parts = append(parts, o)
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// leafLoaders reads the pinned leaves of a leaf verifier.
func (a *analyzer) leafLoaders(loaders []any, path string) {
	for i, l := range loaders {
		l, lp := obj(l), index(path, i)
		switch name := str(l["loader"]); name {
		case "file":
			for _, f := range strs(l["files"]) {
				a.leafFile(RoleClient, f, false, lp)
			}
		case "pem":
			for _, s := range strs(l["certificates"]) {
				if certs, err := material.ParsePEMCertificates([]byte(s)); err == nil {
					a.addCert(RoleClient, "pinned leaf (inline)", false, certs[0], lp)
				}
			}
		case "folder", "storage":
			a.addUnread(RoleClient, "pinned leaves ("+name+" loader)", false, "not read", lp)
		default:
			a.notAnalysed(lp, "tls.leaf_cert_loader."+name, "leaf certificate loader not analysed")
		}
	}
}
