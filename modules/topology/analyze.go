package topology

import (
	"bytes"
	"cmp"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/trustline/trustline/modules/passthrough"
	"github.com/trustline/trustline/modules/spiffeworkload"
)

// DefaultExpiryWindow is how close to its not-after a server or client
// certificate gets a warning.
const DefaultExpiryWindow = 14 * 24 * time.Hour

// Options tune an analysis.
type Options struct {
	// Now is the reference time for expiry findings. Default: time.Now().
	Now time.Time
	// ExpiryWindow: a certificate expiring within it gets a warning.
	// Default: DefaultExpiryWindow (14 days).
	ExpiryWindow time.Duration
	// NoFiles: read no certificate file or store, only what the config
	// holds inline.
	NoFiles bool
	// LiveCertificates, when set, returns the certificates Caddy's
	// certificate cache holds for a host name: in a running instance,
	// the managed certificates (internal CA, ACME) that no file names.
	LiveCertificates func(name string) []*x509.Certificate
	// StaleWorkloads, when set, lists the spiffe_workload sources of the
	// running instance whose last answer counts as stale (workload.go).
	StaleWorkloads func() []spiffeworkload.StaleSource
}

// analyzer holds the state of one analysis.
type analyzer struct {
	opts   Options
	rep    *Report
	certs  map[certKey]*Certificate
	nextID int
	files  map[string]fileResult

	tls       tlsInfo
	httpPort  int
	httpsPort int
}

// Analyze reads a Caddy JSON config (what `caddy adapt` prints, or GET
// /config/ returns) and reports where TLS ends. It returns an error only
// when cfg is not JSON; whatever the config holds, it does not panic, and
// modules it does not know are listed in Report.NotAnalysed.
func Analyze(cfg []byte, opts Options) (*Report, error) {
	root, err := decodeConfig(cfg)
	if err != nil {
		return nil, err
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if opts.ExpiryWindow <= 0 {
		opts.ExpiryWindow = DefaultExpiryWindow
	}
	a := &analyzer{
		opts:  opts,
		rep:   &Report{Generated: opts.Now.UTC(), Listeners: []*Listener{}, Certificates: []*Certificate{}, Findings: []Finding{}},
		certs: map[certKey]*Certificate{},
		files: map[string]fileResult{},
	}
	a.config(obj(root))
	a.certificateFindings()
	a.notReadFindings()
	a.firstHourFindings()
	// most severe first, then by config path, else in analysis order
	slices.SortStableFunc(a.rep.Findings, func(x, y Finding) int {
		return cmp.Or(cmp.Compare(y.Severity.Rank(), x.Severity.Rank()), strings.Compare(x.Path, y.Path))
	})
	return a.rep, nil
}

// decodeConfig reads a JSON config as generic JSON (jsonval.go).
func decodeConfig(cfg []byte) (any, error) {
	var root any
	if err := json.NewDecoder(bytes.NewReader(cfg)).Decode(&root); err != nil {
		return nil, fmt.Errorf("reading the config: %w", err)
	}
	return root, nil
}

// config analyses the whole config: the tls app first (the certificates
// the servers use), then the servers.
func (a *analyzer) config(cfg map[string]any) {
	apps := obj(cfg["apps"])
	if tlsApp := obj(apps["tls"]); tlsApp != nil {
		a.tlsApp(tlsApp, "apps.tls")
	}
	if httpApp := obj(apps["http"]); httpApp != nil {
		a.httpApp(httpApp, "apps.http")
	}
	if l4 := obj(apps["layer4"]); l4 != nil {
		a.layer4Servers(obj(l4["servers"]), "apps.layer4.servers", "layer4")
	}
	switch s := suiteModule("passthrough", "", apps["passthrough"]).(type) {
	case *passthrough.App: // its servers are caddy-l4's
		a.layer4Servers(obj(generic(s.Servers)), "apps.passthrough.servers", "passthrough")
	case undecoded:
		a.notAnalysed("apps.passthrough", "passthrough", why(s, ""))
	}
	for _, name := range keys(apps) {
		switch name {
		case "tls", "http", "layer4", "passthrough":
		case "pki", "events", "trustline_cluster":
			// the internal CAs (used through issuers and pools), the
			// event bus and the cluster's CA coordination carry no TLS leg
			// of their own
		default:
			a.notAnalysed(field("apps", name), name, "app not analysed")
		}
	}
}

// finding records a finding once.
func (a *analyzer) finding(sev Severity, kind, path, msg, fix string) {
	a.rep.Findings = appendNew(a.rep.Findings, Finding{Severity: sev, Kind: kind, Path: path, Message: msg, Fix: fix})
}

// notAnalysed records a module the report does not understand, once.
func (a *analyzer) notAnalysed(path, module, reason string) {
	a.rep.NotAnalysed = appendNew(a.rep.NotAnalysed, NotAnalysed{Path: path, Module: module, Reason: reason})
}
