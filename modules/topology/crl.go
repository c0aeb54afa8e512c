package topology

import (
	"crypto/x509"
	"fmt"
	"strconv"
	"time"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/revocation"
)

// CRL is one certificate revocation list a client_auth verifier checks
// client certificates against (`verifier peer { crl <file> }`): revocation
// in force on the inbound leg. A file holding several CRLs gives one entry
// each.
type CRL struct {
	// Path is the config path of the file's entry in crl_files.
	Path string `json:"path"`
	// File is the CRL file.
	File string `json:"file"`
	// Issuer is the CRL's issuer (RFC 2253), when read.
	Issuer string `json:"issuer,omitempty"`
	// Number is the CRL number extension, when present.
	Number string `json:"number,omitempty"`
	// ThisUpdate, NextUpdate: when the CRL was issued and when the next
	// one is due; past NextUpdate the verifier no longer trusts it.
	ThisUpdate *time.Time `json:"this_update,omitempty"`
	NextUpdate *time.Time `json:"next_update,omitempty"`
	// Revoked is the number of certificates it lists.
	Revoked int `json:"revoked"`
	// NotRead says why the file gave no CRL (file error, not a CRL).
	NotRead string `json:"not_read,omitempty"`
}

// Finding kinds of CRL files.
const (
	KindCRLExpired  = "crl_expired"
	KindCRLNotRead  = "crl_not_read"
	KindCRLNoExpiry = "crl_without_next_update"
)

// crlTime is how the report writes a CRL's next update (UTC): CRLs are
// issued by the hour, so the day alone would not do.
const crlTime = "2006-01-02 15:04Z"

// crlExpiringWindow is when a CRL's nextUpdate is drawn as close (orange):
// CRLs are reissued every few days, so the certificates' 14 days would
// colour every one of them.
const crlExpiringWindow = 24 * time.Hour

// crls reads the crl_files of a peer verifier's revocation block, adds
// them to out and makes the findings: a file that gives no CRL, a CRL past
// its nextUpdate. What a CRL past its nextUpdate does follows the
// verifier: refused certificates (the default, an error), accepted
// unchecked (soft_fail), checked against the stale list (expired "use"),
// or only logged (shadow); those three are warnings.
func (a *analyzer) crls(rev *revocation.Revocation, path string, shadow bool, out *ClientAuth) {
	filesPath := field(path, "crl_files")
	for i, file := range rev.CRLFiles {
		fp := index(filesPath, i)
		data, err := a.readFile(file)
		var lists []*x509.RevocationList
		if err == nil {
			lists, err = material.ParseCRLs(data) // as the peer verifier does
		}
		if err != nil {
			out.CRLs = append(out.CRLs, &CRL{Path: fp, File: file, NotRead: err.Error()})
			a.finding(SeverityError, KindCRLNotRead, fp,
				fmt.Sprintf("CRL file %s gives no CRL: %v: Caddy refuses to load this config (the verifier reads its CRL files at start); a running instance keeps the CRLs it read last", file, err),
				"publish the CRL to "+file+" (PEM \"X509 CRL\" blocks or DER), readable by Caddy")
			continue
		}
		for _, l := range lists {
			c := &CRL{Path: fp, File: file, Issuer: l.Issuer.String(), Revoked: len(l.RevokedCertificateEntries)}
			if l.Number != nil {
				c.Number = l.Number.String()
			}
			if !l.ThisUpdate.IsZero() {
				t := l.ThisUpdate.UTC()
				c.ThisUpdate = &t
			}
			out.CRLs = append(out.CRLs, c)
			if l.NextUpdate.IsZero() {
				a.finding(SeverityInfo, KindCRLNoExpiry, fp,
					fmt.Sprintf("CRL %s of %s has no nextUpdate: nothing tells when it is stale", file, c.Issuer),
					"have the CA set nextUpdate (RFC 5280 requires it), and replace the file as the CA publishes")
				continue
			}
			t := l.NextUpdate.UTC()
			c.NextUpdate = &t
			late := a.opts.Now.Sub(t)
			if late <= 0 {
				continue
			}
			sev, effect, until := SeverityWarning, "", ""
			switch {
			case shadow:
				effect = "the verifier is in shadow mode, so the handshakes it would refuse are only logged"
			case rev.Expired == "use":
				effect = "with crl_expired use the certificates it lists are still refused, but one revoked since is accepted"
			case rev.SoftFail:
				effect = "with crl_soft_fail the certificates it covers are accepted without a revocation check (a warning is logged per handshake), so a revoked certificate gets in"
			default:
				sev, effect = SeverityError, "every client certificate it covers (issued by "+c.Issuer+") is refused at the handshake"
				until = "; until then those handshakes fail, unless crl_soft_fail (which accepts them unchecked)"
			}
			a.finding(sev, KindCRLExpired, fp,
				fmt.Sprintf("CRL %s of %s (%d revoked) is past its nextUpdate %s (%s ago): %s", file, c.Issuer, c.Revoked, t.Format(crlTime), days(late), effect),
				"publish a fresh CRL from "+c.Issuer+" to "+file+" (the verifier follows the file)"+until)
		}
	}
}

// describe says what a CRL is for a line of the table or the picture:
// its file, issuer, size and next update (the picture adds the time
// left).
func (c *CRL) describe() string {
	if c.NotRead != "" {
		return "CRL " + c.File + ": not read: " + c.NotRead
	}
	s := "CRL " + c.File + ": " + c.Issuer + ", " + strconv.Itoa(c.Revoked) + " revoked"
	if c.Number != "" {
		s += ", number " + c.Number
	}
	if c.NextUpdate == nil {
		return s + ", no next update"
	}
	return s + ", next update " + c.NextUpdate.Format(crlTime)
}
