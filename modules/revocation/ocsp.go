package revocation

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
	"golang.org/x/crypto/ocsp"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/verify"
)

// OCSP checks client certificates with their CA's OCSP responder
// (RFC 6960) during the handshake, as nginx's `ssl_ocsp` does. An answer
// counts only if signed by the certificate's issuer from the verified
// chain (or a delegated OCSPSigning responder it issued, valid now),
// about the certificate (serial, issuer name and key hashes), current (5
// minutes of clock skew) and, when good, fresh (MaxAge: requests carry no
// nonce). good passes; revoked and unknown are always refused; no usable
// answer is refused unless soft_fail. Answers are cached per issuer and
// serial (good and revoked until nextUpdate, an hour without one; unknown
// and failures for 10 seconds), and concurrent handshakes of one
// certificate share one query. The user's view: modules/peer/README.md,
// "OCSP".
type OCSP struct {
	// LeafOnly checks only the client's own certificate, not the
	// intermediates of its chain (nginx `ssl_ocsp leaf`). Default false:
	// the whole chain but the trust anchor (nginx `ssl_ocsp on`).
	LeafOnly bool `json:"leaf_only,omitempty"`

	// Responder is the http or https URL of the OCSP responder asked about
	// every certificate, instead of the one each certificate names in its
	// authority information access extension (nginx `ssl_ocsp_responder`).
	// Default: the certificate's own; a certificate that names none cannot
	// be checked (see soft_fail).
	Responder string `json:"responder,omitempty"`

	// FetchTimeout bounds one query to the responder (connection, request
	// and response); the handshake waits at most this long per
	// certificate. Default 5s.
	FetchTimeout caddy.Duration `json:"fetch_timeout,omitempty"`

	// CacheSize is the most answers kept in memory; when it is full,
	// expired answers are dropped first, then arbitrary ones. -1 disables
	// the cache: every handshake asks the responder (concurrent handshakes
	// of one certificate still share one query), as nginx does without
	// `ssl_ocsp_cache`. Default 10000.
	CacheSize int `json:"cache_size,omitempty"`

	// SoftFail lets a certificate through, with a warning in the log, when
	// no usable answer about it can be had. Revoked and unknown
	// certificates are always refused. Default false.
	SoftFail bool `json:"soft_fail,omitempty"`

	// MaxAge is how old the thisUpdate of a good answer may be (5 minutes
	// of clock skew allowed); an older one is no usable answer (see
	// soft_fail). It bounds the replay of an old good answer after a
	// revocation. Default: an hour for an answer without nextUpdate
	// (signed on request), none beyond nextUpdate for the others
	// (pre-signed answers are days old by design). Set, it bounds every
	// good answer. Revoked answers are taken whatever their age.
	MaxAge caddy.Duration `json:"max_age,omitempty"`

	enabled    bool // the Caddyfile had `ocsp` (not only ocsp_* options)
	logger     *zap.Logger
	client     *http.Client
	now        func() time.Time
	retryAfter time.Duration

	mu       sync.Mutex
	cache    map[string]*ocspAnswer // by issuer + serial
	inflight map[string]*ocspCall
	joined   atomic.Int64 // handshakes that joined a query in flight (tests)
}

// errOCSPUnavailable marks failures to obtain a usable OCSP answer
// (soft_fail applies); a revoked or unknown status is never wrapped in it.
var errOCSPUnavailable = errors.New("OCSP status unavailable")

const (
	ocspDefaultTimeout   = 5 * time.Second
	ocspDefaultCacheSize = 10000
	ocspRetryAfter       = 10 * time.Second // failures and unknown answers
	ocspNoNextUpdateTTL  = time.Hour        // good/revoked without nextUpdate (nginx)
	ocspDefaultMaxAge    = time.Hour        // good without nextUpdate: thisUpdate age
	ocspClockSkew        = 5 * time.Minute  // as nginx: OCSP_check_validity(..., 300, -1)
	maxOCSPResponseSize  = 1 << 20
	maxOCSPGetURL        = 255 // RFC 5019: GET when the URL is at most 255 bytes
)

// ocspAnswer is the outcome of one query, cached until `until`.
type ocspAnswer struct {
	err   error // nil: good
	until time.Time
}

// ocspCall is a query in flight that concurrent handshakes wait on.
type ocspCall struct {
	done   chan struct{}
	answer *ocspAnswer
}

// checkResponderURL validates a configured responder URL.
func checkResponderURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("bad URL %q: %v", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("bad URL %q: want an http:// or https:// URL", s)
	}
	if u.Host == "" {
		return fmt.Errorf("bad URL %q: no host", s)
	}
	return nil
}

func (o *OCSP) provision(logger *zap.Logger) error {
	o.logger = logger
	if o.now == nil {
		o.now = time.Now
	}
	if o.retryAfter == 0 {
		o.retryAfter = ocspRetryAfter
	}
	if o.Responder != "" {
		if err := checkResponderURL(o.Responder); err != nil {
			return fmt.Errorf("responder: %w", err)
		}
	}
	switch {
	case o.FetchTimeout < 0:
		return fmt.Errorf("fetch_timeout %s: must be positive", time.Duration(o.FetchTimeout))
	case o.FetchTimeout == 0:
		o.FetchTimeout = caddy.Duration(ocspDefaultTimeout)
	}
	if o.MaxAge < 0 {
		return fmt.Errorf("max_age %s: must be positive", time.Duration(o.MaxAge))
	}
	switch {
	case o.CacheSize < -1:
		return fmt.Errorf("cache_size %d: want a positive number of entries, or -1 for no cache", o.CacheSize)
	case o.CacheSize == 0:
		o.CacheSize = ocspDefaultCacheSize
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	o.client = &http.Client{Timeout: time.Duration(o.FetchTimeout), Transport: transport}
	o.cache = map[string]*ocspAnswer{}
	o.inflight = map[string]*ocspCall{}
	return nil
}

// checkNoted checks every certificate of chain (leaf first) but its last
// (the trust anchor), or only the leaf. It returns an error naming the
// revoked or unknown certificate, or one wrapping errOCSPUnavailable. With
// notes set (explain) it asks no responder: only cached answers count, and
// it notes each.
func (o *OCSP) checkNoted(chain []*x509.Certificate, notes *[]verify.Check) error {
	n := len(chain) - 1
	if o.LeafOnly && n > 1 {
		n = 1
	}
	for i := 0; i < n; i++ {
		var err error
		if notes != nil {
			err = o.cached(chain[i], chain[i+1], notes)
		} else {
			err = o.checkOne(chain[i], chain[i+1])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// ocspKey identifies a certificate: its issuer (name and key) and serial.
func ocspKey(cert, issuer *x509.Certificate) string {
	h := sha256.New()
	h.Write(issuer.RawSubject)
	h.Write(issuer.RawSubjectPublicKeyInfo)
	return string(h.Sum(cert.SerialNumber.Bytes()))
}

func (o *OCSP) checkOne(cert, issuer *x509.Certificate) error {
	key := ocspKey(cert, issuer)
	o.mu.Lock()
	if a, ok := o.cache[key]; ok {
		if o.now().Before(a.until) {
			o.mu.Unlock()
			return a.err
		}
		delete(o.cache, key)
	}
	if c, ok := o.inflight[key]; ok {
		o.mu.Unlock()
		o.joined.Add(1)
		<-c.done
		return c.answer.err
	}
	c := &ocspCall{done: make(chan struct{})}
	o.inflight[key] = c
	o.mu.Unlock()

	defer close(c.done)
	c.answer = o.query(cert, issuer)
	o.mu.Lock()
	delete(o.inflight, key)
	o.store(key, c.answer)
	o.mu.Unlock()
	return c.answer.err
}

// store caches a; o.mu is held.
func (o *OCSP) store(key string, a *ocspAnswer) {
	if o.CacheSize < 0 {
		return
	}
	now := o.now()
	if !now.Before(a.until) {
		return
	}
	if len(o.cache) >= o.CacheSize {
		for k, e := range o.cache {
			if !now.Before(e.until) {
				delete(o.cache, k)
			}
		}
		// still full: drop a tenth, arbitrary (map order), so that the
		// sweep above runs once per many insertions, not on every one
		for k := range o.cache {
			if len(o.cache) < o.CacheSize-o.CacheSize/10 {
				break
			}
			delete(o.cache, k)
		}
	}
	o.cache[key] = a
}

// query asks the responder about cert and returns the answer to cache.
func (o *OCSP) query(cert, issuer *x509.Certificate) (a *ocspAnswer) {
	who := fmt.Sprintf("certificate %q (serial %s)", cert.Subject, material.SerialString(cert))
	responder := ""
	fail := func(err error) *ocspAnswer {
		if ce := o.logger.Check(zap.ErrorLevel, "OCSP query failed"); ce != nil {
			ce.Write(zap.String("responder", responder), zap.String("subject", cert.Subject.String()),
				zap.String("serial", material.SerialString(cert)), zap.Error(err))
		}
		return &ocspAnswer{err: fmt.Errorf("%w for %s: %v", errOCSPUnavailable, who, err), until: o.now().Add(o.retryAfter)}
	}
	defer func() {
		if v := recover(); v != nil {
			a = fail(fmt.Errorf("panic: %v", v))
		}
	}()
	responder = o.responderURL(cert)
	if responder == "" {
		return fail(errors.New("no OCSP responder URL in the certificate (authority information access) and no ocsp_responder configured"))
	}
	req, err := ocsp.CreateRequest(cert, issuer, &ocsp.RequestOptions{Hash: crypto.SHA1})
	if err != nil {
		return fail(fmt.Errorf("creating the OCSP request: %v", err))
	}
	body, err := o.fetch(responder, req)
	if err != nil {
		return fail(err)
	}
	now := o.now()
	resp, err := parseOCSP(body, cert, issuer, now, time.Duration(o.MaxAge))
	if err != nil {
		return fail(fmt.Errorf("response from %s: %v", responder, err))
	}
	// cached until nextUpdate, or an hour without one (as nginx)
	a = &ocspAnswer{until: resp.NextUpdate}
	if resp.NextUpdate.IsZero() {
		a.until = now.Add(ocspNoNextUpdateTTL)
	}
	switch resp.Status {
	case ocsp.Good:
		if age := goodMaxAge(resp, time.Duration(o.MaxAge)); age > 0 && resp.ThisUpdate.Add(age).Before(a.until) {
			a.until = resp.ThisUpdate.Add(age)
		}
	case ocsp.Revoked:
		a.err = fmt.Errorf("%s is revoked by the OCSP responder %s (revoked at %s, reason %s)",
			who, responder, material.TimeString(resp.RevokedAt), revocationReason(resp.RevocationReason))
	default:
		a.err = fmt.Errorf("%s: the OCSP responder %s answered status unknown (it does not know the certificate)", who, responder)
		if retry := now.Add(o.retryAfter); retry.Before(a.until) {
			a.until = retry
		}
	}
	return a
}

// responderURL is the configured responder or the certificate's first
// http(s) OCSP URL ("" if none).
func (o *OCSP) responderURL(cert *x509.Certificate) string {
	if o.Responder != "" {
		return o.Responder
	}
	for _, u := range cert.OCSPServer {
		if l := strings.ToLower(u); strings.HasPrefix(l, "http://") || strings.HasPrefix(l, "https://") {
			return u
		}
	}
	return ""
}

// fetch sends an OCSP request: GET when the URL stays within 255 bytes
// (RFC 5019; HTTP caches can serve it), POST otherwise.
func (o *OCSP) fetch(responder string, req []byte) ([]byte, error) {
	get := strings.TrimSuffix(responder, "/") + "/" + ocspPathEscaper.Replace(base64.StdEncoding.EncodeToString(req))
	hreq, err := http.NewRequest(http.MethodGet, get, nil)
	if len(get) > maxOCSPGetURL || strings.Contains(responder, "?") {
		hreq, err = http.NewRequest(http.MethodPost, responder, bytes.NewReader(req))
	}
	if err != nil {
		return nil, err
	}
	if hreq.Method == http.MethodPost {
		hreq.Header.Set("Content-Type", "application/ocsp-request")
	}
	hreq.Header.Set("Accept", "application/ocsp-response")
	return fetchBody(o.client, hreq, responder, "response", maxOCSPResponseSize)
}

// ocspPathEscaper URL-encodes the base64 characters that are not safe in a
// path segment.
var ocspPathEscaper = strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D")

// goodMaxAge is how old the thisUpdate of resp, a good answer, may be:
// maxAge when set, else an hour without nextUpdate, else 0 (bounded by
// nextUpdate only).
func goodMaxAge(resp *ocsp.Response, maxAge time.Duration) time.Duration {
	if maxAge == 0 && resp.NextUpdate.IsZero() {
		return ocspDefaultMaxAge
	}
	return maxAge
}

// parseOCSP parses and verifies an OCSP response about cert, issued by
// issuer, at time now; maxAge is the OCSP's MaxAge (0: the default).
func parseOCSP(der []byte, cert, issuer *x509.Certificate, now time.Time, maxAge time.Duration) (*ocsp.Response, error) {
	resp, err := ocsp.ParseResponseForCert(der, cert, nil)
	if err != nil {
		var re ocsp.ResponseError
		if errors.As(err, &re) {
			return nil, fmt.Errorf("the responder answered %q", re.Status.String())
		}
		return nil, err
	}
	// who signed it: ParseResponseForCert checked the signature against
	// the embedded certificate, if any, but not who that certificate is
	switch rc := resp.Certificate; {
	case rc == nil:
		if err := resp.CheckSignatureFrom(issuer); err != nil {
			return nil, fmt.Errorf("signature does not verify against the issuer %q: %v", issuer.Subject, err)
		}
	case bytes.Equal(rc.Raw, issuer.Raw):
		// signed by the issuer itself, which it enclosed
	default:
		if err := rc.CheckSignatureFrom(issuer); err != nil {
			return nil, fmt.Errorf("responder certificate %q is not issued by the certificate's issuer %q: %v", rc.Subject, issuer.Subject, err)
		}
		if !slices.Contains(rc.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
			return nil, fmt.Errorf("responder certificate %q lacks the OCSPSigning extended key usage", rc.Subject)
		}
		if now.Before(rc.NotBefore) || now.After(rc.NotAfter) {
			return nil, fmt.Errorf("responder certificate %q is not valid now (valid %s to %s)", rc.Subject,
				material.TimeString(rc.NotBefore), material.TimeString(rc.NotAfter))
		}
	}
	if err := matchCertID(resp, issuer); err != nil {
		return nil, err
	}
	if resp.ThisUpdate.After(now.Add(ocspClockSkew)) {
		return nil, fmt.Errorf("response not yet valid (thisUpdate %s)", material.TimeString(resp.ThisUpdate))
	}
	if !resp.NextUpdate.IsZero() && now.After(resp.NextUpdate.Add(ocspClockSkew)) {
		return nil, fmt.Errorf("response expired (nextUpdate %s)", material.TimeString(resp.NextUpdate))
	}
	if age := goodMaxAge(resp, maxAge); resp.Status == ocsp.Good && age > 0 && now.Sub(resp.ThisUpdate) > age+ocspClockSkew {
		next := "no nextUpdate"
		if !resp.NextUpdate.IsZero() {
			next = "nextUpdate " + material.TimeString(resp.NextUpdate)
		}
		return nil, fmt.Errorf("good answer too old: thisUpdate %s is more than %s ago (ocsp_max_age; %s); an old answer may be a replay",
			material.TimeString(resp.ThisUpdate), age, next)
	}
	return resp, nil
}

// ocspResponseData is what golang.org/x/crypto/ocsp does not expose of a
// response's TBSResponseData: the issuer hashes of each answer's CertID
// (asn1 ignores trailing fields).
type ocspResponseData struct {
	Version     int `asn1:"optional,explicit,tag:0,default:0"`
	ResponderID asn1.RawValue
	ProducedAt  time.Time `asn1:"generalized"`
	Responses   []struct {
		CertID struct {
			HashAlgorithm pkix.AlgorithmIdentifier
			NameHash      []byte
			IssuerKeyHash []byte
			SerialNumber  *big.Int
		}
	}
}

// matchCertID checks that the answer resp (chosen by serial number) is
// about a certificate of issuer: RFC 6960 identifies a certificate by its
// issuer's name and key hashes and its serial number.
func matchCertID(resp *ocsp.Response, issuer *x509.Certificate) error {
	var data ocspResponseData
	if _, err := asn1.Unmarshal(resp.TBSResponseData, &data); err != nil {
		return fmt.Errorf("parsing the response: %v", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(issuer.RawSubjectPublicKeyInfo, &spki); err != nil {
		return fmt.Errorf("parsing the issuer's public key: %v", err)
	}
	if !resp.IssuerHash.Available() {
		return fmt.Errorf("unsupported issuer hash %v", resp.IssuerHash)
	}
	hash := func(b []byte) []byte { h := resp.IssuerHash.New(); h.Write(b); return h.Sum(nil) }
	for _, r := range data.Responses {
		id := r.CertID
		if id.SerialNumber == nil || id.SerialNumber.Cmp(resp.SerialNumber) != 0 {
			continue
		}
		// the first with this serial is the one ParseResponseForCert chose
		if !bytes.Equal(id.NameHash, hash(issuer.RawSubject)) || !bytes.Equal(id.IssuerKeyHash, hash(spki.PublicKey.RightAlign())) {
			return fmt.Errorf("the answer for serial %s is about a certificate of another issuer", material.FormatSerial(resp.SerialNumber))
		}
		return nil
	}
	return errors.New("no answer about the certificate's serial number")
}

// revocationReason names an RFC 5280 CRLReason.
func revocationReason(r int) string {
	names := []string{"unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
		"cessationOfOperation", "certificateHold", "", "removeFromCRL", "privilegeWithdrawn", "aACompromise"}
	if r >= 0 && r < len(names) && names[r] != "" {
		return names[r]
	}
	return strconv.Itoa(r)
}

// ocspOptions are the Caddyfile options of OCSP, for errors.
const ocspOptions = "ocsp, ocsp_responder, ocsp_fetch_timeout, ocsp_cache, ocsp_max_age, ocsp_soft_fail"

// unmarshalOption parses one ocsp option (opt) of the verifier block.
func (o *OCSP) unmarshalOption(d *caddyfile.Dispenser, directive, opt string) error {
	switch opt {
	case "ocsp":
		if o.enabled {
			return d.Errf("%s: duplicate option 'ocsp'", directive)
		}
		o.enabled = true
		if d.NextArg() {
			switch d.Val() {
			case "leaf":
				o.LeafOnly = true
			case "on", "chain":
			default:
				return d.Errf("%s: ocsp: unknown argument %q (write `ocsp` for the whole chain or `ocsp leaf` for the client certificate only)", directive, d.Val())
			}
			if d.NextArg() {
				return d.Errf("%s: ocsp takes at most one argument (leaf)", directive)
			}
		}
	case "ocsp_responder":
		return argOption(d, directive, opt, "a URL", "URL", o.Responder != "", func(val string) error {
			if err := checkResponderURL(val); err != nil {
				return d.Errf("%s: ocsp_responder: %v", directive, err)
			}
			o.Responder = val
			return nil
		})
	case "ocsp_fetch_timeout":
		return durationOption(d, directive, opt, &o.FetchTimeout)
	case "ocsp_max_age":
		return durationOption(d, directive, opt, &o.MaxAge)
	case "ocsp_cache":
		return argOption(d, directive, opt, "a number of entries or off", "value", o.CacheSize != 0, func(val string) error {
			n, err := strconv.Atoi(val)
			switch {
			case val == "off":
				o.CacheSize = -1
			case err != nil || n <= 0:
				return d.Errf("%s: ocsp_cache: bad value %q (want a positive number of entries, or off)", directive, val)
			default:
				o.CacheSize = n
			}
			return nil
		})
	case "ocsp_soft_fail":
		return flagOption(d, directive, opt, &o.SoftFail)
	default:
		return d.Errf("%s: unknown option %q", directive, opt)
	}
	return nil
}
