package topology

import (
	"cmp"
	"fmt"
	"strings"
	"time"
)

// certificateFindings adds the expiry findings: a server or client
// certificate expired or expiring within the window (one Caddy manages:
// past the time it should have been renewed by), a trust pool holding an
// expired CA.
func (a *analyzer) certificateFindings() {
	now, window := a.opts.Now, a.opts.ExpiryWindow
	for _, c := range a.rep.Certificates {
		if c.NotAfter == nil {
			continue
		}
		path := c.UsedBy[0] // register records a use with each certificate
		what := describeCert(c)
		left := c.NotAfter.Sub(now)
		switch c.Role {
		case RoleServer, RoleClient:
			role := roleNames[c.Role]
			fix := "renew it and replace " + c.Source + " (Caddy reads load_files at config load: reload after replacing; the suite's keystores follow the file)"
			if strings.HasPrefix(c.Source, "managed by Caddy") {
				fix = "Caddy renews managed certificates itself: check its log for renewal errors (issuer reachable, storage writable)"
			}
			switch {
			case left <= 0:
				a.finding(SeverityError, KindCertExpired, path,
					fmt.Sprintf("%s %s expired on %s", role, what, c.NotAfter.Format(time.DateOnly)), fix)
			case c.RenewBy != nil:
				// Caddy renews it: what matters is whether it did
				if !now.Before(*c.RenewBy) {
					a.finding(SeverityWarning, KindRenewalOverdue, path,
						fmt.Sprintf("%s %s, %s, is still in use although Caddy should have renewed it by %s; it expires on %s (in %s)",
							role, what, c.Source, c.RenewBy.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339), days(left)), fix)
				}
			case left <= window:
				a.finding(SeverityWarning, KindCertExpiring, path,
					fmt.Sprintf("%s %s expires on %s (in %s)", role, what, c.NotAfter.Format(time.DateOnly), days(left)), fix)
			}
		case RoleTrustAnchor:
			switch {
			case left <= 0:
				a.finding(SeverityWarning, KindTrustAnchorExpired, path,
					fmt.Sprintf("trust pool %s holds an expired CA %s (expired on %s): nothing it issued verifies any more", c.Source, what, c.NotAfter.Format(time.DateOnly)),
					"remove it from the pool once its successor is in; if certificates it issued are still in use, reissue them from the new CA")
			case left <= window:
				a.finding(SeverityInfo, KindTrustAnchorSoon, path,
					fmt.Sprintf("trust anchor %s from %s expires on %s (in %s)", what, c.Source, c.NotAfter.Format(time.DateOnly), days(left)),
					"add its successor to the pool now, and reissue the certificates it signed from the new CA")
			}
		}
	}
}

// roleNames name the certificates of each role in a message.
var roleNames = map[string]string{RoleServer: "server certificate", RoleClient: "client certificate", RoleTrustAnchor: "trust anchors"}

// describeCert names a certificate for a message: its ID, subject or first
// name.
func describeCert(c *Certificate) string {
	var first string
	if len(c.Names) > 0 {
		first = c.Names[0]
	}
	return c.ID + " (" + cmp.Or(c.Subject, first, c.Source) + ")"
}

// days formats a duration in days (or hours, under one day).
func days(d time.Duration) string {
	if d < 24*time.Hour {
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
