package topology

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddytls"

	"github.com/trustline/trustline/internal/caddyinternals"
	"github.com/trustline/trustline/modules/spiffeworkload"
)

// maxReports bounds the reports of the running config made at once (admin
// endpoint, trustline_topology handler and metrics together): a page a
// site may expose must not let its clients make more. A request over the
// bound waits up to reportWait, then is refused with errReportsBusy.
const maxReports = 2

var (
	reportSlots = make(chan struct{}, maxReports)
	reportWait  = time.Second
)

// errReportsBusy: maxReports reports are being made, and none ended within
// reportWait.
var errReportsBusy = fmt.Errorf("%d topology reports are being made; try again shortly", maxReports)

// retryAfter is the Retry-After of an answer refused with errReportsBusy.
const retryAfter = "2"

// runningReport analyses the running config, with the server certificates
// Caddy manages itself read from its certificate cache. At most maxReports
// run at once; over that it returns errReportsBusy after reportWait.
func runningReport() (rep *Report, err error) {
	wait := time.NewTimer(reportWait)
	defer wait.Stop()
	select {
	case reportSlots <- struct{}{}:
	case <-wait.C:
		return nil, errReportsBusy
	}
	defer func() { <-reportSlots }()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("analysing the running config: %v", r)
		}
	}()
	cfg, err := caddyinternals.RunningConfig()
	if err != nil {
		return nil, err
	}
	return Analyze(cfg, Options{LiveCertificates: cachedCertificates, StaleWorkloads: spiffeworkload.Stale})
}

// cachedCertificates returns the leaves of the certificates in Caddy's
// certificate cache that could serve name.
func cachedCertificates(name string) (leaves []*x509.Certificate) {
	// the cache exists once a tls app was provisioned; before that,
	// caddytls.AllMatchingCertificates dereferences nil
	defer func() {
		if recover() != nil {
			leaves = nil
		}
	}()
	for _, c := range caddytls.AllMatchingCertificates(name) {
		if leaf := leafOf(&c.Certificate); leaf != nil {
			leaves = append(leaves, leaf)
		}
	}
	return leaves
}
