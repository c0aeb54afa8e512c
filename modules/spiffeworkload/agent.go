package spiffeworkload

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trustline/trustline/modules/material"
)

// firstAnswer bounds the wait for the agent's first answer when no `wait`
// is configured: an unreachable socket fails at once, this is for an agent
// that accepts the connection and then never answers.
const firstAnswer = 15 * time.Second

// retryMin and retryMax bound the reconnection backoff of the Workload API
// watch (go-spiffe's own default is linear from 1s to 30s); gRPC's
// connection attempts under it (whose default grows to 120s) back off
// from retryMin to connRetryMax, a connect on a local socket being cheap.
// The two stack: an agent that restarts is heard from again within
// retryMax + connRetryMax (plus jitter) of being back.
const (
	retryMin     = 100 * time.Millisecond
	retryMax     = 5 * time.Second
	connRetryMax = time.Second
)

// monitorEvery is how often the SVIDs held are checked for expiry while
// the agent is unreachable.
var monitorEvery = time.Second

// socketAddress is the socket to dial: the configured one, else
// SPIFFE_ENDPOINT_SOCKET; it must be a unix:// or tcp:// address, and a
// tcp:// one must be a loopback address unless insecureTCP allows another.
func socketAddress(configured string, insecureTCP bool) (string, error) {
	addr := cmp.Or(configured, os.Getenv(workloadapi.SocketEnv))
	if addr == "" {
		return "", fmt.Errorf("no socket: set the socket option or %s", workloadapi.SocketEnv)
	}
	if err := workloadapi.ValidateAddress(addr); err != nil {
		return "", fmt.Errorf("socket %q: %w", addr, err)
	}
	if err := checkTCP(addr, insecureTCP); err != nil {
		return "", err
	}
	return addr, nil
}

// checkTCP refuses a tcp:// address that is not a loopback address unless
// insecureTCP allows it.
func checkTCP(addr string, insecureTCP bool) error {
	if remoteTCP(addr) && !insecureTCP {
		return fmt.Errorf("socket %s is plaintext, unauthenticated gRPC to another host: whoever is on the path "+
			"reads the SVIDs' private keys and can answer with bundles of their own; use a unix:// socket or a "+
			"loopback tcp:// address (127.0.0.1, ::1), or set insecure_tcp in the spiffe_workload block to accept that", addr)
	}
	return nil
}

// remoteTCP tells whether addr (valid for workloadapi) is a tcp:// address
// that is not a loopback address. go-spiffe takes IP addresses only, so
// there is no name to resolve.
func remoteTCP(addr string) bool {
	u, err := url.Parse(addr)
	if err != nil || u.Scheme != "tcp" {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return ip == nil || !ip.IsLoopback()
}

// agent is one connection to the Workload API at one socket, shared by
// every module that names that socket (through the agents usage pool). It
// keeps the last X.509 context the agent sent: when the agent goes away,
// the last SVIDs and bundles stay in force (they are only replaced by a
// newer answer), the loss is logged once and counted, and the watch
// reconnects with backoff.
type agent struct {
	addr   string
	logger *zap.Logger
	// ctx is the context of the config that created the connection, for
	// the per-bundle metric sources it acquires.
	ctx caddy.Context

	client  *workloadapi.Client
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	current atomic.Pointer[workloadapi.X509Context]
	errs    chan error // the watch's errors while the first answer is awaited
	// bundles holds a metric source per trust domain (metrics.go); only
	// the watch's goroutine uses it, then close once the watch is over.
	bundles map[string]*material.Reloadable[struct{}]

	disconnects atomic.Uint64
	up          atomic.Bool

	mu        sync.Mutex // guards the fields below
	updated   chan struct{}
	lastErr   error
	lostAt    time.Time
	followers map[*follower]bool // the modules that follow the answers (stale.go)
	warned    map[string]bool    // serials warned about (near expiry, expired)
	closed    bool

	clock atomic.Pointer[func() time.Time] // nil: time.Now (tests move it)
}

var agents = caddy.NewUsagePool()

// testLogger, when set (tests), replaces the logger of new connections.
var testLogger *zap.Logger

func agentKey(addr string) string { return "spiffe_workload|" + addr }

// provision checks f's max_stale, joins the connection to addr (opening
// it, and waiting for the first answer, when no running config holds one),
// waits up to l.Wait until load accepts the agent's answer, then acquires the
// module's source h (spec, loaded from the current answer) and follows the
// answers with f.
func provision[T any](ctx caddy.Context, l *Agent, h *material.Held[T], addr string,
	load func(*workloadapi.X509Context) (*material.Loaded[T], error), spec material.Spec[T], f *follower) error {
	if f.maxStale < 0 {
		return fmt.Errorf("max_stale %s: must be positive", f.maxStale)
	}
	deadline := time.Now().Add(time.Duration(l.Wait))
	val, _, err := agents.LoadOrNew(agentKey(addr), func() (caddy.Destructor, error) {
		return newAgent(ctx, addr, time.Duration(l.Wait))
	})
	if err != nil {
		return err
	}
	material.RegisterCollectors(ctx, "spiffe_workload", agentCollector{})
	a := val.(*agent)
	l.addr, l.agent = addr, a
	if err := a.waitFor(deadline, nil, func(x *workloadapi.X509Context) error {
		_, err := load(x)
		return err
	}); err != nil {
		return err
	}
	// the agent's answers drive the reloads; the poll is a safety net
	spec.Poll = time.Minute
	spec.Load = func() (*material.Loaded[T], error) { return load(a.current.Load()) }
	if err := h.Acquire(ctx, spec); err != nil {
		return err
	}
	f.reload = h.Src.Reload
	l.unfollow = a.follow(f)
	return nil
}

// release stops following the agent and gives the connection back; the
// last module using the socket closes it.
func (l *Agent) release() {
	if l.unfollow != nil {
		l.unfollow()
	}
	if l.agent != nil {
		l.agent = nil
		_, _ = agents.Delete(agentKey(l.addr))
	}
}

type backoffStrategy struct{}

func (backoffStrategy) NewBackoff() workloadapi.Backoff { return &expBackoff{} }

// expBackoff doubles from retryMin to retryMax; go-spiffe resets it after
// each answer.
type expBackoff struct{ next time.Duration }

func (b *expBackoff) Next() time.Duration {
	b.next = min(max(2*b.next, retryMin), retryMax)
	return b.next
}

func (b *expBackoff) Reset() { b.next = 0 }

func newAgent(ctx caddy.Context, addr string, wait time.Duration) (*agent, error) {
	logger := ctx.Logger()
	if testLogger != nil {
		logger = testLogger
	}
	logger = logger.With(zap.String("socket", addr))
	if remoteTCP(addr) {
		// a module allowed it with insecure_tcp (socketAddress)
		logger.Warn("the Workload API is reached over plaintext, unauthenticated gRPC to another host (insecure_tcp): " +
			"whoever is on the path reads the SVIDs' private keys and can answer with bundles of their own")
	}
	client, err := workloadapi.New(context.Background(),
		workloadapi.WithAddr(addr),
		workloadapi.WithBackoffStrategy(backoffStrategy{}),
		workloadapi.WithDialOptions(grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  retryMin,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   connRetryMax,
			},
			MinConnectTimeout: retryMax,
		})))
	if err != nil {
		return nil, fmt.Errorf("Workload API socket %q: %w", addr, err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	a := &agent{
		addr:      addr,
		logger:    logger,
		ctx:       ctx,
		client:    client,
		cancel:    cancel,
		errs:      make(chan error, 1),
		bundles:   map[string]*material.Reloadable[struct{}]{},
		updated:   make(chan struct{}),
		followers: map[*follower]bool{},
		warned:    map[string]bool{},
	}
	a.wg.Go(func() { a.watch(wctx) })
	a.wg.Go(func() { a.monitor(wctx) })

	// without wait, the first error fails the load at once
	limit, fail := wait, (<-chan error)(nil)
	if wait <= 0 {
		limit, fail = firstAnswer, a.errs
	}
	errNoAnswer := errors.New("no answer")
	err = a.waitFor(time.Now().Add(limit), fail, func(x *workloadapi.X509Context) error {
		if x == nil {
			return errNoAnswer
		}
		return nil
	})
	if err == nil {
		a.up.Store(true)
		liveMu.Lock()
		liveAgents[a] = struct{}{}
		liveMu.Unlock()
		logger.Info("connected to the Workload API", zap.Duration("wait", wait))
		return a, nil
	}
	a.close() // the watch is over: lastErr is settled
	if err != errNoAnswer {
		return nil, fmt.Errorf("the Workload API at %s %s", addr, describe(err))
	}
	if a.lastErr == nil {
		return nil, fmt.Errorf("the Workload API at %s did not answer within %s", addr, limit)
	}
	return nil, fmt.Errorf("the Workload API at %s gave no identity within %s: it %s", addr, limit, describe(a.lastErr))
}

// describe says what a watch error means, for the load error.
func describe(err error) string {
	switch status.Code(err) {
	case codes.Unavailable:
		return "is unreachable: " + err.Error()
	case codes.PermissionDenied:
		return "issued no identity to this process (does a registration entry match its selectors?): " + err.Error()
	}
	return "failed: " + err.Error()
}

func (a *agent) watch(ctx context.Context) {
	defer func() {
		if rec := recover(); rec != nil {
			a.logger.Error("Workload API watch panicked; no more updates", zap.Any("panic", rec))
		}
	}()
	err := a.client.WatchX509Context(ctx, a)
	if err != nil && ctx.Err() == nil {
		a.logger.Error("Workload API watch stopped; no more updates", zap.Error(err))
	}
}

// OnX509ContextUpdate takes a new answer from the agent (a rotation, a
// bundle change, or the first answer after a reconnection).
func (a *agent) OnX509ContextUpdate(x *workloadapi.X509Context) {
	a.current.Store(x)
	a.up.Store(true)
	a.mu.Lock()
	if !a.lostAt.IsZero() {
		a.logger.Info("Workload API reachable again",
			zap.Duration("unreachable_for", a.now().Sub(a.lostAt).Round(time.Millisecond)))
		a.lostAt = time.Time{}
	}
	a.lastErr = nil
	close(a.updated)
	a.updated = make(chan struct{})
	followers := slices.Collect(maps.Keys(a.followers))
	a.mu.Unlock()
	a.syncBundleSources(x)
	for _, f := range followers {
		_ = f.reload()
	}
	a.checkStale() // after the reloads: the modules serve the new answer
}

// OnX509ContextWatchError hears every failed watch attempt (go-spiffe
// retries with backoff): the first one after a working stream is logged
// and counted, the retries are not.
func (a *agent) OnX509ContextWatchError(err error) {
	if status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled) {
		return
	}
	if _, isRPC := status.FromError(err); !isRPC {
		// the stream is up; one answer could not be parsed
		a.logger.Warn("Workload API sent an answer that does not parse; keeping the last one", zap.Error(err))
		return
	}
	select {
	case a.errs <- err:
	default:
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lastErr = err
	if !a.up.Load() || a.closed {
		return
	}
	a.up.Store(false)
	a.lostAt = a.now()
	a.disconnects.Add(1)
	fields := []zap.Field{zap.Error(err)}
	if x := a.current.Load(); x != nil && len(x.SVIDs) > 0 {
		fields = append(fields, material.TimeField("svid_not_after", x.SVIDs[0].Certificates[0].NotAfter))
	}
	a.logger.Warn("Workload API unreachable; keeping the last X509-SVIDs and bundles until they expire, reconnecting", fields...)
}

// monitor applies the staleness rules (stale.go) and warns, while the
// agent is unreachable, when an SVID held is past the half of its life at
// which the agent would have rotated it, and when it has expired (once per
// SVID each).
func (a *agent) monitor(ctx context.Context) {
	t := time.NewTicker(monitorEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.checkStale()
		x := a.current.Load()
		if x == nil || a.up.Load() {
			continue
		}
		now := a.now()
		a.mu.Lock()
		for _, s := range x.SVIDs {
			leaf := s.Certificates[0]
			serial := material.SerialString(leaf)
			fields := []zap.Field{zap.String("spiffe_id", s.ID.String()), zap.String("serial", serial),
				material.TimeField("not_after", leaf.NotAfter), zap.Duration("unreachable_for", now.Sub(a.lostAt).Round(time.Second))}
			switch {
			case now.After(leaf.NotAfter):
				if !a.warned["expired "+serial] {
					a.warned["expired "+serial] = true
					a.logger.Error("X509-SVID expired and the Workload API is unreachable: peers refuse it", fields...)
				}
			case now.After(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)):
				if !a.warned["near "+serial] {
					a.warned["near "+serial] = true
					a.logger.Warn("X509-SVID nears expiry and the Workload API is unreachable to rotate it",
						append(fields, zap.Duration("remaining", leaf.NotAfter.Sub(now).Round(time.Second)))...)
				}
			}
		}
		a.mu.Unlock()
	}
}

// waitFor waits until check accepts the current answer, until deadline,
// or until an error arrives on fail (nil: none does); it returns check's
// last error, or fail's.
func (a *agent) waitFor(deadline time.Time, fail <-chan error, check func(*workloadapi.X509Context) error) error {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		a.mu.Lock()
		upd := a.updated
		a.mu.Unlock()
		err := check(a.current.Load())
		if err == nil || !time.Now().Before(deadline) {
			return err
		}
		select {
		case <-upd:
		case err := <-fail:
			return err
		case <-timer.C:
		}
	}
}

// Destruct closes the connection; the usage pool calls it when the last
// module using it is cleaned up.
func (a *agent) Destruct() error {
	a.close()
	return nil
}

func (a *agent) close() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.closed = true
	a.mu.Unlock()
	a.cancel()
	a.wg.Wait()
	_ = a.client.Close()
	liveMu.Lock()
	delete(liveAgents, a)
	liveMu.Unlock()
	for td := range a.bundles {
		material.Release(a.bundleKey(td))
	}
	a.logger.Debug("Workload API connection closed")
}
