package cluster

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddypki"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/trustline/trustline/internal/caddyinternals"
	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/material/castore"
)

// caState coordinates one CA.
type caState struct {
	id      string
	ca      *caddypki.CA
	storage certmagic.Storage
	ratio   float64
	logger  *zap.Logger
	mem     *caddyinternals.PKICA // nil: Caddy's in-memory copy cannot be kept in step
	done    <-chan struct{}       // closed when the app stops
	wake    chan struct{}

	mu      sync.Mutex // one check or renewal at a time on this node
	current atomic.Pointer[castore.CA]
	synced  atomic.Pointer[castore.CA] // what Caddy's in-memory copy was last set to
	lastErr atomic.Pointer[string]
	failing atomic.Bool
	checked atomic.Int64 // Unix nanoseconds of the last successful check
	stats   *caStats
}

// lockName is the storage lock that one node holds while it renews.
func (s *caState) lockName() string {
	return "trustline_cluster_ca_" + certmagic.StorageKeys.Safe(s.id)
}

// load reads the CA from storage; a root configured from files in the pki
// app (the same file on every node) stands in for one storage lacks.
func (s *caState) load(ctx context.Context) (*castore.CA, error) {
	var fallbackRoot *x509.Certificate
	if s.ca.Root != nil {
		fallbackRoot = s.ca.RootCertificate()
	}
	return castore.Load(ctx, s.storage, s.id, fallbackRoot, true)
}

// provision reads the CA from storage and brings Caddy's copy in step.
func (s *caState) provision(ctx caddy.Context) error {
	mem, err := caddyinternals.OpenPKICA(s.ca)
	if err != nil {
		s.logger.Warn("Caddy's in-memory copy of the CA cannot be kept in step with storage on this Caddy version; "+
			"`tls internal` and acme_server issue from the intermediate loaded at start, and Caddy's own maintenance "+
			"may replace the shared intermediate without a lock (the cluster follows it)",
			zap.Error(err))
	}
	s.mem = mem
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stored, err := s.load(lctx)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("Caddy's storage does not hold this CA's certificates (%s); a pki CA with a storage of its own cannot be coordinated: %w",
			caddyinternals.PKIPrefix(s.id), err)
	}
	if err != nil {
		// e.g. a renewal caught half-way for longer than the retries:
		// the periodic check repairs or follows it
		s.logger.Warn("reading the CA from storage", zap.Error(err))
		return nil
	}
	if mem, _ := s.inMemory(); mem != nil && !mem.Equal(stored.Root) {
		s.logger.Warn("this node's pki CA had a root of its own (several nodes created the CA at once); following the root in storage",
			zap.String("own_root_serial", material.SerialString(mem)),
			zap.String("stored_root_serial", material.SerialString(stored.Root)))
	}
	s.follow(stored, false)
	return nil
}

// inMemory is Caddy's in-memory copy of the CA (root, intermediate chain).
func (s *caState) inMemory() (*x509.Certificate, []*x509.Certificate) {
	if s.mem != nil {
		root, chain, _ := s.mem.Get()
		return root, chain
	}
	return s.ca.RootCertificate(), s.ca.IntermediateCertificateChain()
}

// run checks the CA every interval, and when the storage announces a
// change, until ctx ends.
func (s *caState) run(ctx context.Context, interval time.Duration) {
	defer func() {
		if r := recover(); r != nil {
			s.logger.Error("panic in the cluster CA check; checks stopped", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	cancelWatch, _ := castore.Watch(s.storage, s.id, func() {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	})
	defer cancelWatch()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		s.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-s.wake:
		}
	}
}

// due reports whether the intermediate is within the renewal window.
func (s *caState) due(c *x509.Certificate, now time.Time) bool {
	return !now.Before(renewAt(c, s.ratio))
}

// renewAt is when ratio of the certificate's lifetime remains.
func renewAt(c *x509.Certificate, ratio float64) time.Time {
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotAfter.Add(-time.Duration(float64(life) * ratio))
}

// check reads the stored CA, follows a change, and renews when due.
func (s *caState) check(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s.mu.Lock()
	stored, err := s.load(cctx)
	rolledBack := false
	if err == nil && ctx.Err() == nil {
		// under the lock: a renewal on this node must not be overtaken
		// by an older read
		if rolledBack = s.olderThanHeld(stored); rolledBack {
			s.refuseRollback(stored, nil)
		} else {
			s.follow(stored, true)
		}
		s.ok()
	}
	s.mu.Unlock()
	if ctx.Err() != nil {
		return
	}
	switch {
	case rolledBack: // refused above: renew to repair storage
	case err == nil:
		if !s.due(stored.Issuer(), time.Now()) {
			return
		}
	case errors.Is(err, castore.ErrRolledBack):
		// the storage itself saw an older value written back
		s.refuseRollback(nil, err)
	case errors.Is(err, fs.ErrNotExist) && s.hasStoredRoot(cctx):
		// the intermediate is gone (deleted by hand?): make one
	case isInconsistent(err):
		// the stored intermediate does not match its key or the root
		s.failed("the stored intermediate is inconsistent; renewing it", err)
	default:
		s.failed("reading the CA from storage failed; keeping what this node holds", err)
		return
	}
	if _, err := s.renew(ctx, false, 0); err != nil && !errors.Is(err, errLockBusy) {
		s.failed("renewing the intermediate failed; retrying at the next check", err)
	}
}

func isInconsistent(err error) bool {
	return err != nil && !errors.Is(err, fs.ErrNotExist) && errors.Is(err, castore.ErrInconsistent)
}

func (s *caState) hasStoredRoot(ctx context.Context) bool {
	_, err := s.storage.Stat(ctx, caddyinternals.PKIKey(s.id, caddyinternals.PKIRootCert))
	return err == nil || s.ca.Root != nil
}

// ok records a successful check, logging the recovery from failures.
func (s *caState) ok() {
	s.checked.Store(time.Now().UnixNano())
	if s.failing.CompareAndSwap(true, false) {
		s.logger.Info("reading the CA from storage works again")
	}
	s.lastErr.Store(nil)
}

// failed logs a failure once until the next success.
func (s *caState) failed(msg string, err error) {
	e := err.Error()
	s.lastErr.Store(&e)
	if s.failing.CompareAndSwap(false, true) {
		s.logger.Error(msg, zap.Error(err))
	} else {
		s.logger.Debug(msg, zap.Error(err))
	}
}

// olderThanHeld reports whether stored is an intermediate made before the
// one this node holds: an older intermediate written back in storage
// (whoever can write to the storage can replay one, sealed or not; an
// intermediate replaced early because its key leaked must not come back).
func (s *caState) olderThanHeld(stored *castore.CA) bool {
	held := s.current.Load()
	return held != nil && held.Digest != stored.Digest && castore.Older(stored.Issuer(), held.Issuer())
}

// refuseRollback logs and counts a stored intermediate refused as older
// than the one held (stored), or a read the storage refused as a rollback
// (err); this node keeps what it holds, and renews under the lock so that
// storage is repaired.
func (s *caState) refuseRollback(stored *castore.CA, err error) {
	s.stats.rollbacks.Add(1)
	fields := []zap.Field{}
	if held := s.current.Load(); held != nil {
		fields = append(fields, zap.String("held_serial", material.SerialString(held.Issuer())),
			material.TimeField("held_not_before", held.Issuer().NotBefore))
	}
	if stored != nil {
		fields = append(fields, zap.String("stored_serial", material.SerialString(stored.Issuer())),
			material.TimeField("stored_not_before", stored.Issuer().NotBefore))
	}
	s.logger.Error("refusing the intermediate in storage: it is older than the one this node holds "+
		"(an older intermediate written back in storage?); keeping the one held and renewing under the storage lock to repair storage",
		append(fields, zap.Error(err))...)
}

// follow makes stored this node's view of the CA and brings Caddy's copy
// in step; announce logs a change made by another node.
func (s *caState) follow(stored *castore.CA, announce bool) {
	prev := s.current.Swap(stored)
	if prev != nil && prev.Digest != stored.Digest && announce {
		s.stats.followed.Add(1)
		s.logger.Info("following an intermediate stored by another node",
			zap.String("serial", material.SerialString(stored.Issuer())),
			material.TimeField("not_after", stored.Issuer().NotAfter),
			zap.String("previous_serial", material.SerialString(prev.Issuer())))
	}
	s.stats.notAfter.Store(stored.Issuer().NotAfter.Unix())
	s.syncCaddy(stored)
}

// syncCaddy sets Caddy's in-memory copy to stored, when it differs.
func (s *caState) syncCaddy(stored *castore.CA) {
	if s.mem == nil {
		return
	}
	if prev := s.synced.Load(); prev != nil && prev.Digest == stored.Digest && castore.KeyMatches(prev.Issuer(), stored.Key) {
		return
	}
	root, chain, key := s.mem.Get()
	if root.Equal(stored.Root) && len(chain) > 0 && chain[0].Equal(stored.Issuer()) && castore.KeyMatches(chain[0], key) {
		s.synced.Store(stored)
		return
	}
	s.mem.Set(stored.Root, stored.Intermediates, stored.Key)
	s.synced.Store(stored)
	s.logger.Debug("Caddy's in-memory CA brought in step with storage",
		zap.String("intermediate_serial", material.SerialString(stored.Issuer())))
}

// errLockBusy: another node holds the renewal lock (periodic checks do not
// wait for it).
var errLockBusy = errors.New("another node holds the renewal lock")

// renewal is what a renewal did, for the admin API.
type renewal struct {
	CA             string    `json:"ca"`
	Renewed        bool      `json:"renewed"`
	Serial         string    `json:"serial"`
	NotBefore      time.Time `json:"not_before"`
	NotAfter       time.Time `json:"not_after"`
	PreviousSerial string    `json:"previous_serial,omitempty"`
	Note           string    `json:"note,omitempty"`
}

// renew takes the renewal lock and, if the stored intermediate still
// needs it, replaces it with a new one signed by the root. A forced
// renewal (admin API) waits for the lock until ctx ends and renews
// whatever the age; a periodic check does not wait (errLockBusy). With
// hold > 0 the lock is kept that long afterwards.
func (s *caState) renew(ctx context.Context, force bool, hold time.Duration) (_ *renewal, err error) {
	if err := s.lock(ctx, force); err != nil {
		return nil, err
	}
	defer func() {
		if hold > 0 && err == nil {
			go s.unlock(hold)
		} else {
			s.unlock(0)
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// another node may have renewed while this one waited for the lock
	stored, err := s.load(rctx)
	rolledBack := (err == nil && s.olderThanHeld(stored)) || errors.Is(err, castore.ErrRolledBack)
	if err == nil && !force && !rolledBack && !s.due(stored.Issuer(), time.Now()) {
		s.follow(stored, true)
		return &renewal{CA: s.id, Serial: material.SerialString(stored.Issuer()), NotBefore: stored.Issuer().NotBefore,
			NotAfter: stored.Issuer().NotAfter, Note: "renewed by another node meanwhile"}, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !isInconsistent(err) && !errors.Is(err, castore.ErrRolledBack) {
		return nil, err
	}
	root, rootKey, err := s.rootPair(rctx)
	if err != nil {
		s.stats.renewFailed.Add(1)
		return nil, err
	}
	// the new intermediate must rank after every one this node knows of,
	// or nodes holding one of those would take it for a rollback
	var after *x509.Certificate
	if held := s.current.Load(); held != nil {
		after = held.Issuer()
	}
	if stored != nil && (after == nil || castore.Older(after, stored.Issuer())) {
		after = stored.Issuer()
	}
	cert, key, err := s.newIntermediate(root, rootKey, after)
	if err != nil {
		s.stats.renewFailed.Add(1)
		return nil, err
	}
	if err := s.store(rctx, cert, key); err != nil {
		s.stats.renewFailed.Add(1)
		return nil, err
	}
	s.stats.renewed.Add(1)
	r := &renewal{CA: s.id, Renewed: true, Serial: material.SerialString(cert), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter}
	fields := []zap.Field{zap.String("serial", r.Serial), material.TimeField("not_after", cert.NotAfter), zap.Bool("forced", force),
		zap.Bool("repair_of_rollback", rolledBack)}
	if stored != nil {
		r.PreviousSerial = material.SerialString(stored.Issuer())
		fields = append(fields, zap.String("previous_serial", r.PreviousSerial), material.TimeField("previous_not_after", stored.Issuer().NotAfter))
	}
	s.logger.Info("renewed the intermediate for the cluster", fields...)
	now := &castore.CA{ID: s.id, Root: root, Intermediates: []*x509.Certificate{cert}, Key: key}
	if fresh, err := s.load(rctx); err == nil && !castore.Older(fresh.Issuer(), cert) {
		now = fresh
	}
	s.follow(now, false)
	s.ok()
	return r, nil
}

// lock takes the renewal lock: waiting for it, or trying once.
func (s *caState) lock(ctx context.Context, wait bool) error {
	name := s.lockName()
	if wait {
		if err := s.storage.Lock(ctx, name); err != nil {
			return fmt.Errorf("waiting for the renewal lock %q: %w", name, err)
		}
		return nil
	}
	tl, ok := s.storage.(certmagic.TryLocker)
	if !ok { // a storage without TryLock: wait briefly
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if s.storage.Lock(ctx, name) != nil {
			return errLockBusy
		}
		return nil
	}
	got, err := tl.TryLock(ctx, name)
	if err != nil {
		return fmt.Errorf("taking the renewal lock %q: %w", name, err)
	}
	if !got {
		return errLockBusy
	}
	return nil
}

// unlock releases the renewal lock after holding it hold longer (cut
// short when the app stops).
func (s *caState) unlock(hold time.Duration) {
	if hold > 0 {
		t := time.NewTimer(hold)
		select {
		case <-t.C:
		case <-s.done:
		}
		t.Stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.storage.Unlock(ctx, s.lockName()); err != nil {
		s.logger.Error("releasing the renewal lock", zap.String("lock", s.lockName()), zap.Error(err))
	}
}

// rootPair is the root certificate and its key: from the pki config's
// files when the root is configured there, else from storage (checked to
// match).
func (s *caState) rootPair(ctx context.Context) (*x509.Certificate, crypto.Signer, error) {
	if s.ca.Root != nil {
		chain, key, err := s.ca.Root.Load()
		if err != nil {
			return nil, nil, fmt.Errorf("loading the root configured in the pki app: %w", err)
		}
		return chain[0], key, nil
	}
	certFile, keyFile := caddyinternals.PKIKey(s.id, caddyinternals.PKIRootCert), caddyinternals.PKIKey(s.id, caddyinternals.PKIRootKey)
	certPEM, err := s.storage.Load(ctx, certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the root certificate (never generating a new root): %w", err)
	}
	// read whole: a file cut short is refused, naming the line
	certs, err := material.ParsePEMCertificates(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certFile, err)
	}
	keyPEM, err := s.storage.Load(ctx, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the root key: %w", err)
	}
	key, err := material.ParsePEMPrivateKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	if !castore.KeyMatches(certs[0], key) {
		return nil, nil, fmt.Errorf("%s does not match %s (two nodes created the CA at once?); "+
			"stop all nodes but one, delete %s from storage and restart them one at a time",
			keyFile, certFile, caddyinternals.PKIPrefix(s.id))
	}
	return certs[0], key, nil
}
