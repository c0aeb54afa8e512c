package topology

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/trustline/trustline/modules/passthrough"
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
	StaleWorkloads func() []StaleWorkload
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

	findingSeen map[Finding]bool
	naSeen      map[NotAnalysed]bool
}

// Analyze reads a Caddy JSON config (what `caddy adapt` prints, or GET
// /config/ returns) and reports where TLS ends. It returns an error only
// when cfg is not JSON; whatever the config holds, it does not panic, and
// modules it does not know are listed in Report.NotAnalysed.
func Analyze(cfg []byte, opts Options) (*Report, error) {
	var root any
	dec := json.NewDecoder(bytes.NewReader(cfg))
	if err := dec.Decode(&root); err != nil {
		return nil, fmt.Errorf("reading the config: %w", err)
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if opts.ExpiryWindow <= 0 {
		opts.ExpiryWindow = DefaultExpiryWindow
	}
	a := &analyzer{
		opts:        opts,
		rep:         &Report{Generated: opts.Now.UTC(), Listeners: []*Listener{}, Certificates: []*Certificate{}, Findings: []Finding{}},
		certs:       map[certKey]*Certificate{},
		files:       map[string]fileResult{},
		httpPort:    80,
		httpsPort:   443,
		findingSeen: map[Finding]bool{},
		naSeen:      map[NotAnalysed]bool{},
	}
	a.config(obj(root))
	a.certificateFindings()
	a.notReadFindings()
	a.firstHourFindings()
	sortFindings(a.rep.Findings)
	return a.rep, nil
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
	f := Finding{Severity: sev, Kind: kind, Path: path, Message: msg, Fix: fix}
	if a.findingSeen[f] {
		return
	}
	a.findingSeen[f] = true
	a.rep.Findings = append(a.rep.Findings, f)
}

// notAnalysed records a module the report does not understand.
func (a *analyzer) notAnalysed(path, module, reason string) {
	n := NotAnalysed{Path: path, Module: module, Reason: reason}
	if a.naSeen[n] {
		return
	}
	a.naSeen[n] = true
	a.rep.NotAnalysed = append(a.rep.NotAnalysed, n)
}

// sortFindings orders findings by severity (most severe first), then by
// config path, keeping the analysis order otherwise.
func sortFindings(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		if fs[i].Severity.Rank() != fs[j].Severity.Rank() {
			return fs[i].Severity.Rank() > fs[j].Severity.Rank()
		}
		return fs[i].Path < fs[j].Path
	})
}
