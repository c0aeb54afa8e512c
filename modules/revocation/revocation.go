package revocation

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/verify"
)

// Revocation checks every certificate of a verified chain but the trust
// anchor against the CRLs that cover it (crl_files of its issuer, and with
// distribution_points the http(s) CRLs it names, fetched on first use,
// cached, refreshed) and, with ocsp, with its CA's OCSP responder (see
// OCSP), during the handshake. A CRL counts only when its signature
// verifies against the issuer from the verified chain and it has not
// passed its NextUpdate; a new one takes over only under the successor
// rule (README.md). A revoked certificate is refused (shadow mode: logged
// only); one whose CRL cannot be had is refused unless soft_fail; one that
// no configured CRL covers passes.
type Revocation struct {
	// CRLFiles are CRL files: PEM ("X509 CRL" blocks, several per file
	// allowed) or DER. Loaded in Provision (a bad file fails the config
	// load), then watched like truststores: a replaced file is in force
	// within 2 seconds. A new version that does not parse is refused, the
	// last good CRLs kept (trustline_material_reloads_total{kind="crl"});
	// one that parses is taken issuer by issuer under the successor rule
	// (an older CRL, or one left out, is refused and counted in
	// trustline_peer_crl_refused_total; the one in force stays).
	CRLFiles []string `json:"crl_files,omitempty"`

	// DistributionPoints fetches the CRLs named in the certificates' CRL
	// distribution points (http and https URLs only). The first handshake
	// that needs a CRL waits for its download (at most fetch_timeout);
	// afterwards it is served from memory and refreshed in the background.
	// Default false.
	DistributionPoints bool `json:"distribution_points,omitempty"`

	// Refresh is how often CRLs fetched from distribution points are
	// fetched again; one past its NextUpdate is fetched again at once. A
	// fetched CRL takes over under the successor rule only. (CRL files are
	// watched instead.) Default 1h.
	Refresh caddy.Duration `json:"refresh,omitempty"`

	// Expired says what a CRL past its NextUpdate is still good for:
	// "refuse" (the default: the certificates it covers are refused as if
	// it were unavailable, unless soft_fail) or "use" (those it lists are
	// still refused, the others pass; logged once per CRL). Either way
	// the trustline_material_not_after_timestamp_seconds gauge of the file
	// holds its NextUpdate, to alert on.
	Expired string `json:"expired,omitempty"`

	// FetchTimeout bounds one CRL download. Default 10s.
	FetchTimeout caddy.Duration `json:"fetch_timeout,omitempty"`

	// SoftFail lets a certificate through, with a warning in the log, when
	// the CRL that covers it cannot be had. Revoked certificates are always
	// refused. Default false.
	SoftFail bool `json:"soft_fail,omitempty"`

	// OCSP checks client certificates with OCSP; see OCSP. Optional; it
	// applies in addition to the CRLs, if any.
	OCSP *OCSP `json:"ocsp,omitempty"`

	logger  *zap.Logger
	client  *http.Client
	now     func() time.Time
	files   []*crlFile
	mu      sync.Mutex             // guards fetched
	fetched map[string]*fetchEntry // by URL; never shrinks
	stop    chan struct{}
	done    chan struct{}
}

// CaddyfileOptions lists the Caddyfile options of Revocation, for the
// verifier's unknown-option error.
const CaddyfileOptions = "crl, crl_distribution_points, crl_refresh, crl_fetch_timeout, crl_soft_fail, crl_expired, " + ocspOptions

// errCRLUnavailable marks failures to obtain a usable CRL (soft_fail
// applies); a revocation is never wrapped in it.
var errCRLUnavailable = errors.New("CRL unavailable")

const (
	maxCRLSize    = 32 << 20
	maxFetchedCRL = 1000
)

// crlEntry is one parsed CRL.
type crlEntry struct {
	source  string
	list    *x509.RevocationList
	revoked map[string]struct{} // serial numbers, big-endian bytes
	sig     atomic.Pointer[sigMemo]
	stale   atomic.Bool // past NextUpdate and logged as such
}

// sigMemo is the outcome of the last signature check, against one issuer:
// a CRL is checked once per issuer, not per handshake.
type sigMemo struct {
	issuerRaw []byte
	err       error
}

func newCRLEntry(source string, list *x509.RevocationList) *crlEntry {
	e := &crlEntry{source: source, list: list, revoked: make(map[string]struct{}, len(list.RevokedCertificateEntries))}
	for _, rc := range list.RevokedCertificateEntries {
		if rc.SerialNumber != nil {
			e.revoked[string(rc.SerialNumber.Bytes())] = struct{}{}
		}
	}
	return e
}

// usable reports why e cannot vouch for certificates of issuer (nil: it
// can). A CRL past its NextUpdate can with expired "use", logged once.
func (r *Revocation) usable(e *crlEntry, issuer *x509.Certificate, now time.Time) error {
	if e.expired(now) {
		if r.Expired != "use" {
			return fmt.Errorf("CRL from %s expired at %s", e.source, material.TimeString(e.list.NextUpdate))
		}
		if e.stale.CompareAndSwap(false, true) {
			r.logger.Warn("using a CRL past its nextUpdate (crl_expired use)", zap.String("source", e.source),
				zap.String("issuer", e.list.Issuer.String()), material.TimeField("next_update", e.list.NextUpdate))
		}
	}
	if err := e.signedBy(issuer); err != nil {
		return fmt.Errorf("CRL from %s: signature does not verify against issuer %q: %v", e.source, issuer.Subject, err)
	}
	return nil
}

func (e *crlEntry) expired(now time.Time) bool {
	return !e.list.NextUpdate.IsZero() && now.After(e.list.NextUpdate)
}

// signedBy checks e's signature against issuer, once per issuer in a row.
func (e *crlEntry) signedBy(issuer *x509.Certificate) error {
	m := e.sig.Load()
	if m == nil || !bytes.Equal(m.issuerRaw, issuer.Raw) {
		m = &sigMemo{issuerRaw: issuer.Raw, err: e.list.CheckSignatureFrom(issuer)}
		e.sig.Store(m)
	}
	return m.err
}

func (e *crlEntry) isRevoked(serial *big.Int) bool {
	_, ok := e.revoked[string(serial.Bytes())]
	return ok
}

// fetchEntry is the CRL of one distribution point URL.
type fetchEntry struct {
	line      *crlLine          // the CRL in force (successor rule)
	mu        sync.Mutex        // held during a fetch (single flight)
	issuer    *x509.Certificate // of the first chain that named the URL
	err       error             // of the last fetch
	attempted time.Time
}

// Provision sets the defaults, checks the options, loads the CRL files
// and starts the refresh of distribution points. logger is the verifier's.
func (r *Revocation) Provision(ctx caddy.Context, logger *zap.Logger) error {
	RegisterMetrics(ctx)
	r.logger = logger
	if r.now == nil {
		r.now = time.Now
	}
	if r.Refresh <= 0 {
		r.Refresh = caddy.Duration(time.Hour)
	}
	if r.FetchTimeout <= 0 {
		r.FetchTimeout = caddy.Duration(10 * time.Second)
	}
	if !r.hasCRL() && r.OCSP == nil {
		return errors.New("no revocation source: give crl files, enable distribution points, or enable ocsp")
	}
	switch r.Expired {
	case "", "refuse", "use":
	default:
		return fmt.Errorf("expired %q: want refuse or use", r.Expired)
	}
	if r.OCSP != nil {
		if err := r.OCSP.provision(logger); err != nil {
			return fmt.Errorf("ocsp: %w", err)
		}
	}
	r.client = &http.Client{Timeout: time.Duration(r.FetchTimeout)}
	if r.Refresh != caddy.Duration(time.Hour) && !r.DistributionPoints {
		logger.Warn("crl_refresh applies to CRLs fetched from distribution points only; CRL files are watched and in force within 2 seconds",
			zap.Duration("crl_refresh", time.Duration(r.Refresh)))
	}
	r.fetched = map[string]*fetchEntry{}
	for _, path := range r.CRLFiles {
		f, err := acquireCRLFile(ctx, path, logger)
		if err != nil {
			return err
		}
		r.files = append(r.files, f)
	}
	if r.DistributionPoints {
		r.stop, r.done = make(chan struct{}), make(chan struct{})
		go r.loop()
	}
	return nil
}

// hasCRL reports whether a CRL source is configured.
func (r *Revocation) hasCRL() bool { return len(r.CRLFiles) > 0 || r.DistributionPoints }

// Cleanup releases the CRL files and stops the refresh loop and the OCSP
// client.
func (r *Revocation) Cleanup() {
	if r.OCSP != nil && r.OCSP.client != nil {
		r.OCSP.client.CloseIdleConnections()
	}
	for _, f := range r.files {
		f.Release()
	}
	if r.stop != nil {
		close(r.stop)
		<-r.done
		r.stop = nil
	}
}

// loop refreshes the CRLs fetched from distribution points until cleanup.
func (r *Revocation) loop() {
	defer close(r.done)
	defer func() {
		if v := recover(); v != nil {
			r.logger.Error("CRL refresh loop panicked; CRLs are no longer refreshed", zap.Any("panic", v))
		}
	}()
	t := time.NewTicker(min(time.Duration(r.Refresh), time.Minute))
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		r.refreshFetched(r.now())
	}
}

// refreshFetched fetches again the CRLs due: every Refresh, and, at most
// every retryAfter, those missing or past their NextUpdate.
func (r *Revocation) refreshFetched(now time.Time) {
	r.mu.Lock()
	fetched := maps.Clone(r.fetched)
	r.mu.Unlock()
	for url, fe := range fetched {
		es := fe.line.view.Load().entries
		fe.mu.Lock()
		since := now.Sub(fe.attempted)
		due := since >= time.Duration(r.Refresh) || (since >= r.retryAfter() && (len(es) == 0 || es[0].expired(now)))
		if due && fe.issuer != nil {
			r.fetch(fe, url, fe.issuer)
		}
		fe.mu.Unlock()
	}
}

// fetch downloads the CRL of url and offers it to fe's line (checked
// against the line's issuer, or issuer: the chain's that named the URL),
// and records the attempt; fe.mu is held. A failed download is logged
// here, a refused CRL by the line.
func (r *Revocation) fetch(fe *fetchEntry, url string, issuer *x509.Certificate) {
	entry, err := r.download(url)
	if err != nil {
		r.logger.Error("fetching CRL failed; keeping the last good one", zap.String("url", url), zap.Error(err))
	} else if ref := fe.line.offer([]*crlEntry{entry}, issuer); ref != nil {
		err = fmt.Errorf("CRL from %s refused: %w", url, ref)
	}
	fe.attempted, fe.err = r.now(), err
}

// retryAfter is how soon a failed download is tried again.
func (r *Revocation) retryAfter() time.Duration { return min(time.Duration(r.Refresh), 30*time.Second) }

func (r *Revocation) download(url string) (*crlEntry, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	data, err := fetchBody(r.client, req, url, "CRL", maxCRLSize)
	if err != nil {
		return nil, err
	}
	lists, err := material.ParseCRLs(data)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if len(lists) != 1 {
		return nil, fmt.Errorf("GET %s: %d CRLs, want one", url, len(lists))
	}
	return newCRLEntry(url, lists[0]), nil
}

// fetchBody sends req with client (whose Timeout bounds it, body
// included) and reads the answer: a 200 of at most limit bytes (what
// names it in errors, which start with req's method and name).
func fetchBody(client *http.Client, req *http.Request, name, what string, limit int) ([]byte, error) {
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: HTTP %d", req.Method, name, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, name, err)
	}
	if len(data) > limit {
		return nil, fmt.Errorf("%s %s: %s larger than %d bytes", req.Method, name, what, limit)
	}
	return data, nil
}

// fetchedCRL returns the CRL in force of url for certificates of issuer,
// downloading it on first use (and after a failure, at most every
// retryAfter). With fetch false (explain) it downloads nothing: what was
// not fetched before is errNotFetched.
func (r *Revocation) fetchedCRL(url string, issuer *x509.Certificate, fetch bool) ([]*crlEntry, error) {
	r.mu.Lock()
	fe := r.fetched[url]
	if fe == nil && fetch {
		if len(r.fetched) >= maxFetchedCRL {
			r.mu.Unlock()
			return nil, fmt.Errorf("too many CRL distribution points (%d) cached; not fetching %s", maxFetchedCRL, url)
		}
		fe = &fetchEntry{line: newCRLLine("distribution_point", url, r.logger)}
		r.fetched[url] = fe
	}
	r.mu.Unlock()
	if fe == nil {
		return nil, fmt.Errorf("CRL of %s %w", url, errNotFetched)
	}
	if es := fe.line.inForce(issuer); len(es) > 0 {
		return es, nil
	}
	fe.mu.Lock()
	defer fe.mu.Unlock()
	switch {
	case !fetch && fe.err != nil:
		return nil, fmt.Errorf("CRL of %s: the last fetch failed (%v); %w", url, fe.err, errNotFetched)
	case !fetch:
		return nil, fmt.Errorf("CRL of %s %w", url, errNotFetched)
	}
	if fe.issuer == nil {
		fe.issuer = issuer
	}
	es := fe.line.inForce(issuer)
	if len(es) == 0 && (fe.attempted.IsZero() || r.now().Sub(fe.attempted) >= r.retryAfter()) {
		r.fetch(fe, url, issuer)
		es = fe.line.inForce(issuer)
	}
	if len(es) == 0 {
		return nil, fe.err
	}
	return es, nil
}

// SoftFailure is a revocation status that could not be had and that a
// soft_fail option let through.
type SoftFailure struct {
	// Msg is the log message (it names the soft_fail option).
	Msg string
	// Err says which certificate and why.
	Err error
}

// VerifyTraced runs the CRL and OCSP checks on chain (leaf first, trust
// anchor last). refuse is the error that refuses the client (nil: let it
// through) and msg the log message for it; soft lists the problems a
// soft_fail option let through. With t nil (the handshake) each method's
// outcome is counted in trustline_peer_revocation_checks_total; with t
// set (`caddy trustline explain`) it fetches nothing (the CRLs of
// distribution points and the OCSP answers come from the cache only, and
// what is not cached is unavailable: "not cached; explain fetches
// nothing"), counts nothing, and adds one step per method to t.
func (r *Revocation) VerifyTraced(chain []*x509.Certificate, t *verify.Trace) (refuse error, msg string, soft []SoftFailure) {
	type method struct {
		name     string // crl, ocsp: the metric label and the soft_fail option's prefix
		check    func(notes *[]verify.Check) error
		softFail bool
		refused  string // the log message of a refusal
		softMsg  string // the log message of a soft failure
	}
	var methods []method
	if r.hasCRL() {
		methods = append(methods, method{"crl", func(notes *[]verify.Check) error { return r.checkNoted(chain, notes) }, r.SoftFail,
			"client certificate revoked or its CRL unavailable", "CRL unavailable; letting the client through (crl_soft_fail)"})
	}
	if r.OCSP != nil {
		methods = append(methods, method{"ocsp", func(notes *[]verify.Check) error { return r.OCSP.checkNoted(chain, notes) }, r.OCSP.SoftFail,
			"client certificate revoked or unknown by OCSP, or its OCSP status unavailable", "OCSP status unavailable; letting the client through (ocsp_soft_fail)"})
	}
	for _, m := range methods {
		var notes *[]verify.Check
		if t != nil {
			notes = new([]verify.Check)
		}
		err := m.check(notes)
		result := revocationResult(err, m.softFail)
		if t == nil {
			revocationChecks.WithLabelValues(m.name, result).Inc()
		} else {
			t.Add(revocationStep(m.name, result, err, m.name+"_soft_fail", *notes))
		}
		switch result {
		case "good":
		case "soft_fail":
			soft = append(soft, SoftFailure{m.softMsg, err})
		default:
			return err, m.refused, soft
		}
	}
	return nil, "", soft
}

// revocationResult names the outcome of one method's check: good,
// revoked, unavailable (refused) or soft_fail.
func revocationResult(err error, softFail bool) string {
	switch {
	case err == nil:
		return "good"
	case !Unavailable(err):
		return "revoked"
	case softFail:
		return "soft_fail"
	default:
		return "unavailable"
	}
}

// checkNoted checks every certificate of chain (leaf first) but its last
// (the trust anchor) against the CRLs. It returns an error naming the
// revoked certificate, or one wrapping errCRLUnavailable. With notes set
// (explain) it fetches nothing and notes each CRL it consults.
func (r *Revocation) checkNoted(chain []*x509.Certificate, notes *[]verify.Check) error {
	now := r.now()
	for i := 0; i+1 < len(chain); i++ {
		if err := r.checkOne(chain[i], chain[i+1], now, notes); err != nil {
			return err
		}
	}
	return nil
}

func (r *Revocation) checkOne(cert, issuer *x509.Certificate, now time.Time, notes *[]verify.Check) error {
	covered, usable, notFetched := false, false, false
	var problems []string
	consider := func(es []*crlEntry) error {
		for _, e := range es {
			covered = true
			if err := r.usable(e, issuer, now); err != nil {
				problems = append(problems, err.Error())
				note(notes, cert, crlName(e), err.Error(), false)
				continue
			}
			usable = true
			if e.isRevoked(cert.SerialNumber) {
				note(notes, cert, crlName(e), "revoked", false)
				return fmt.Errorf("certificate %q (serial %s) is revoked by the CRL from %s", cert.Subject, material.SerialString(cert), e.source)
			}
			note(notes, cert, crlName(e), "not listed", true)
		}
		return nil
	}
	for _, f := range r.files {
		if l := f.Src.Current()[string(cert.RawIssuer)]; l != nil {
			if err := consider(l.inForce(issuer)); err != nil {
				return err
			}
		}
	}
	for _, dp := range cert.CRLDistributionPoints {
		if !r.DistributionPoints || (!strings.HasPrefix(dp, "http://") && !strings.HasPrefix(dp, "https://")) {
			continue
		}
		covered = true
		es, err := r.fetchedCRL(dp, issuer, notes == nil)
		if err != nil {
			problems = append(problems, err.Error())
			notFetched = notFetched || NotFetched(err)
			note(notes, cert, "CRL of distribution point "+dp, err.Error(), false)
		} else if err := consider(es); err != nil {
			return err
		}
	}
	if !covered {
		note(notes, cert, "CRLs", "no configured CRL covers it: it passes", true)
	}
	if covered && !usable {
		err := fmt.Errorf("%w for certificate %q: %s", errCRLUnavailable, cert.Subject, strings.Join(problems, "; "))
		if notFetched {
			err = &unfetched{err}
		}
		return err
	}
	return nil
}

// UnmarshalOption parses the revocation option at the dispenser's cursor,
// in the block of directive; handled is false for another option.
func (r *Revocation) UnmarshalOption(d *caddyfile.Dispenser, directive string) (handled bool, err error) {
	switch opt := d.Val(); opt {
	case "crl":
		files := d.RemainingArgs()
		if len(files) == 0 {
			return true, d.Errf("%s: crl needs at least one file", directive)
		}
		r.CRLFiles = append(r.CRLFiles, files...)
	case "crl_distribution_points":
		return true, flagOption(d, directive, opt, &r.DistributionPoints)
	case "crl_soft_fail":
		return true, flagOption(d, directive, opt, &r.SoftFail)
	case "crl_expired":
		if !d.NextArg() || (d.Val() != "refuse" && d.Val() != "use") {
			return true, d.Errf("%s: crl_expired takes refuse or use", directive)
		}
		if r.Expired != "" {
			return true, d.Errf("%s: duplicate option 'crl_expired'", directive)
		}
		r.Expired = d.Val()
		if d.NextArg() {
			return true, d.Errf("%s: crl_expired takes one argument, refuse or use", directive)
		}
	case "crl_refresh":
		return true, durationOption(d, directive, opt, &r.Refresh)
	case "crl_fetch_timeout":
		return true, durationOption(d, directive, opt, &r.FetchTimeout)
	case "ocsp", "ocsp_responder", "ocsp_fetch_timeout", "ocsp_cache", "ocsp_max_age", "ocsp_soft_fail":
		if r.OCSP == nil {
			r.OCSP = new(OCSP)
		}
		return true, r.OCSP.unmarshalOption(d, directive, opt)
	default:
		return false, nil
	}
	return true, nil
}

// flagOption sets *v for opt, an option that takes no argument.
func flagOption(d *caddyfile.Dispenser, directive, opt string, v *bool) error {
	if d.NextArg() {
		return d.Errf("%s: %s takes no argument", directive, opt)
	}
	if *v {
		return d.Errf("%s: duplicate option '%s'", directive, opt)
	}
	*v = true
	return nil
}

// durationOption sets *v for opt, an option that takes one positive
// duration.
func durationOption(d *caddyfile.Dispenser, directive, opt string, v *caddy.Duration) error {
	return argOption(d, directive, opt, "a duration", "duration", *v != 0, func(val string) error {
		dur, err := caddy.ParseDuration(val)
		if err != nil || dur <= 0 {
			return d.Errf("%s: %s: bad duration %q", directive, opt, val)
		}
		*v = caddy.Duration(dur)
		return nil
	})
}

// argOption reads the one argument of opt with parse; opt needs what (for
// errors), and takes one of them; set says opt was given before.
func argOption(d *caddyfile.Dispenser, directive, opt, what, takes string, set bool, parse func(string) error) error {
	if !d.NextArg() {
		return d.Errf("%s: %s needs %s", directive, opt, what)
	}
	if set {
		return d.Errf("%s: duplicate option '%s'", directive, opt)
	}
	if err := parse(d.Val()); err != nil {
		return err
	}
	if d.NextArg() {
		return d.Errf("%s: %s takes one %s", directive, opt, takes)
	}
	return nil
}

// ValidateCaddyfile rejects, once the verifier block is read, options
// given without the source they tune.
func (r *Revocation) ValidateCaddyfile(d *caddyfile.Dispenser, directive string) error {
	if !r.hasCRL() && (r.Refresh != 0 || r.FetchTimeout != 0 || r.SoftFail || r.Expired != "") {
		return d.Errf("%s: crl_refresh, crl_fetch_timeout, crl_soft_fail and crl_expired need a CRL source: crl <file...> or crl_distribution_points", directive)
	}
	if r.OCSP != nil && !r.OCSP.enabled {
		return d.Errf("%s: ocsp_responder, ocsp_fetch_timeout, ocsp_cache, ocsp_max_age and ocsp_soft_fail need ocsp: add `ocsp` (whole chain) or `ocsp leaf`", directive)
	}
	return nil
}
