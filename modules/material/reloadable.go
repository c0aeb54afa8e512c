package material

import (
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Loaded is one version of some material, as a Loader returns it.
type Loaded[T any] struct {
	// Value is the material itself (a pool, a certificate...).
	Value T
	// Certificates are the certificates it holds, for metrics and reports.
	Certificates []*x509.Certificate
	// Digest identifies the input; an unchanged digest is not a reload.
	Digest [32]byte
	// Files are the files it was read from (for directories and globs, the
	// set can change from one version to the next).
	Files []string
	// NotAfter, when set, is when material that is not a certificate stops
	// being usable (a CRL's nextUpdate), for the not-after gauge.
	NotAfter time.Time
	// Refresh, when set, asks for a full reload after this long (a remote
	// source's refresh hint), besides watching files.
	Refresh time.Duration
}

// Loader reads the current version of the material. It is called once in
// Provision (an error fails the config load) and again on every change.
type Loader[T any] func() (*Loaded[T], error)

// Spec describes a reloadable source.
type Spec[T any] struct {
	// Kind is the kind of material, e.g. "truststore" or "keystore".
	Kind string
	// Name identifies the source in logs and metrics, e.g. the file path.
	Name string
	// Key identifies the source in the usage pool: modules with the same
	// Key share one Reloadable (and one watcher). It must cover every
	// setting that changes what Load returns, secrets only hashed
	// (HashSecret).
	Key string
	// Load reads the material.
	Load Loader[T]
	// Watch lists files and directories to watch; a change in a watched
	// file's directory triggers a reload (atomic renames and Kubernetes
	// `..data` symlink swaps included).
	Watch []string
	// Poll is how often to check again without a file event: for files, a
	// cheap stat-and-compare; with no Watch paths, a full Load (remote or
	// storage-backed sources). Default 1s for files, 10s otherwise.
	Poll time.Duration
}

// Reloadable holds the current version of some material behind an atomic
// pointer: reads are lock-free; a reload that fails keeps the last good
// version and logs why. Once stopped (Destruct: the last config using it
// was cleaned up) it reloads no more and keeps answering with its last
// good version, which a cleaned-up config's handshake may still read.
type Reloadable[T any] struct {
	spec    Spec[T]
	logger  *zap.Logger
	current atomic.Pointer[Loaded[T]]
	stats   sourceStats
	polls   atomic.Uint64 // periodic checks run, for tests

	mu sync.Mutex // serializes reloads and guards the fields below
	// statSig is the files' stat signature when they were last read
	statSig string
	// lastFailure (stat signature and error) makes a refused version
	// logged and counted once
	lastFailure string
	// config is the config load a source with no files was last read for
	config    *prometheus.Registry
	listeners map[*func()]struct{}

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// newReloadable loads the material once; an error means no Reloadable.
func newReloadable[T any](spec Spec[T], logger *zap.Logger) (*Reloadable[T], error) {
	if spec.Poll <= 0 {
		spec.Poll = time.Second
		if len(spec.Watch) == 0 {
			spec.Poll = 10 * time.Second
		}
	}
	r := &Reloadable[T]{
		spec:      spec,
		logger:    logger.With(zap.String("kind", spec.Kind), zap.String("source", spec.Name)),
		listeners: map[*func()]struct{}{},
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	r.stats.kind, r.stats.name = spec.Kind, spec.Name
	loaded, err := spec.Load()
	if err != nil {
		r.stats.failed.Add(1)
		return nil, err
	}
	r.statSig = statSignature(r.watchPaths(loaded))
	r.set(loaded)
	r.stats.ok.Add(1)
	return r, nil
}

// Current is the current material; lock-free. It is never the zero value
// of a failed load, even after the source is stopped.
func (r *Reloadable[T]) Current() T { return r.current.Load().Value }

// CurrentLoaded is the current version with its certificates.
func (r *Reloadable[T]) CurrentLoaded() *Loaded[T] { return r.current.Load() }

// Name is the source's name, for logs.
func (r *Reloadable[T]) Name() string { return r.spec.Name }

// Kind is the kind of material the source holds ("truststore", "bundle",
// "crl", ...), as in its metrics and logs.
func (r *Reloadable[T]) Kind() string { return r.spec.Kind }

// OnChange registers f to run after each successful reload that changed
// the material; the returned func unregisters it.
func (r *Reloadable[T]) OnChange(f func()) (cancel func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.listeners[&f] = struct{}{}
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.listeners, &f)
	}
}

func (r *Reloadable[T]) set(l *Loaded[T]) {
	r.current.Store(l)
	r.stats.setCertificates(l.Certificates, l.NotAfter)
}

// Reload reads the material again. A failure keeps the last good version;
// an unchanged input is not counted as a reload. Once stopped, it does
// nothing (a late storage notification, say).
func (r *Reloadable[T]) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reload()
}

// reload is Reload with r.mu held.
func (r *Reloadable[T]) reload() error {
	select {
	case <-r.stop:
		return nil
	default:
	}
	// the files' state before reading them: a change made while they are
	// read is seen by the next check
	cur := r.current.Load()
	sig := statSignature(r.watchPaths(cur))
	r.statSig = sig
	loaded, err := r.spec.Load()
	if err != nil {
		// said and counted once; tried again only when the files (or a
		// remote source's error) change
		if failure := sig + "\x00" + err.Error(); failure != r.lastFailure {
			r.lastFailure = failure
			r.stats.failed.Add(1)
			r.logger.Error("reload failed; keeping the last good version", zap.Error(err))
		}
		return err
	}
	r.lastFailure = ""
	if !slices.Equal(loaded.Files, cur.Files) {
		r.statSig = statSignature(r.watchPaths(loaded))
	}
	if loaded.Digest == cur.Digest {
		return nil
	}
	r.set(loaded)
	r.stats.ok.Add(1)
	r.logger.Info("reloaded", zap.Int("certificates", len(loaded.Certificates)), zap.Strings("files", loaded.Files))
	for f := range r.listeners {
		(*f)()
	}
	return nil
}

// Destruct stops the watcher; the usage pool calls it when the last config
// using the source is cleaned up.
func (r *Reloadable[T]) Destruct() error {
	r.stopOnce.Do(func() { close(r.stop) })
	<-r.done
	unregisterStats(&r.stats)
	return nil
}

func (r *Reloadable[T]) watchPaths(l *Loaded[T]) []string {
	return append(slices.Clone(r.spec.Watch), l.Files...)
}

func (r *Reloadable[T]) loop() {
	defer close(r.done)
	defer func() {
		if rec := recover(); rec != nil {
			r.logger.Error("watcher panicked; reloads stopped", zap.Any("panic", rec))
		}
	}()
	var events <-chan fsnotify.Event
	var errs <-chan error
	if len(r.spec.Watch) > 0 {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			r.logger.Warn("no file watcher; relying on periodic checks", zap.Error(err))
		} else {
			defer w.Close()
			for _, dir := range watchDirs(r.spec.Watch) {
				if err := w.Add(dir); err != nil {
					r.logger.Warn("cannot watch directory; relying on periodic checks", zap.String("dir", dir), zap.Error(err))
				}
			}
			events, errs = w.Events, w.Errors
		}
	}
	ticker := time.NewTicker(r.spec.Poll)
	defer ticker.Stop()
	// a remote source's own refresh hint
	var refresh <-chan time.Time
	armRefresh := func() {
		if d := r.current.Load().Refresh; d > 0 {
			refresh = time.After(d)
		}
	}
	armRefresh()
	// a burst of events (write, chmod, rename) becomes one reload
	var debounce <-chan time.Time
	for {
		select {
		case <-r.stop:
			return
		case _, ok := <-events:
			if !ok {
				events = nil
			} else if debounce == nil {
				debounce = time.After(100 * time.Millisecond)
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
			} else {
				r.logger.Warn("file watcher error", zap.Error(err))
			}
		case <-debounce:
			debounce = nil
			_ = r.Reload()
		case <-refresh:
			_ = r.Reload()
			armRefresh()
		case <-ticker.C:
			if len(r.spec.Watch) == 0 || r.changedOnDisk() {
				_ = r.Reload()
			}
			r.polls.Add(1)
		}
	}
}

// changedOnDisk reports whether the watched files changed (size, mtime,
// inode, a directory's listing) since they were last read.
func (r *Reloadable[T]) changedOnDisk() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return statSignature(r.watchPaths(r.current.Load())) != r.statSig
}

// watchDirs is the set of directories to watch: a directory itself, or a
// file's parent (so renames over it and symlink swaps are seen).
func watchDirs(paths []string) []string {
	dirs := make([]string, 0, len(paths))
	for _, p := range paths {
		if st, err := os.Stat(p); err != nil || !st.IsDir() {
			p = filepath.Dir(p)
		}
		dirs = append(dirs, p)
	}
	slices.Sort(dirs)
	return slices.Compact(dirs)
}

// statSignature summarizes size, mtime and inode of each path (following
// symlinks), plus the listing of directories, for the periodic check.
func statSignature(paths []string) string {
	h := sha256.New()
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			fmt.Fprintf(h, "%s:missing;", p)
			continue
		}
		fmt.Fprintf(h, "%s:%d:%d:%v;", p, st.Size(), st.ModTime().UnixNano(), inode(st))
		if st.IsDir() {
			entries, _ := os.ReadDir(p)
			for _, e := range entries {
				fmt.Fprintf(h, "%s,", e.Name())
			}
		}
	}
	return string(h.Sum(nil))
}

// HashSecret is a stand-in for a secret in a usage-pool key.
func HashSecret(s string) string {
	sum := sha256.Sum256([]byte("trustline-pool-key:" + s))
	return fmt.Sprintf("%x", sum[:8])
}

var pool = caddy.NewUsagePool()

// Acquire returns the shared Reloadable for spec.Key, loading and starting
// it if no running config holds it yet; pair each successful Acquire with
// a Release in the module's Cleanup. A source already held (another site,
// or an admin reload: the new config is provisioned before the old one is
// cleaned up) is brought up to date (refreshFor) unless ctx is JoinOnly.
func Acquire[T any](ctx caddy.Context, spec Spec[T]) (*Reloadable[T], error) {
	logger := ctx.Logger().Named("trustline.material")
	created := false
	val, loaded, err := pool.LoadOrNew(spec.Key, func() (caddy.Destructor, error) {
		r, err := newReloadable(spec, logger)
		if err != nil {
			return nil, err
		}
		created = true
		r.config = ctx.GetMetricsRegistry()
		registerStats(&r.stats)
		go r.loop()
		return r, nil
	})
	if err != nil {
		return nil, err
	}
	r, ok := val.(*Reloadable[T])
	if !ok {
		pool.Delete(spec.Key)
		return nil, fmt.Errorf("material source %q is already in use with another type", spec.Name)
	}
	if joinOnly, _ := ctx.Value(joinOnlyKey{}).(bool); loaded && !created && !joinOnly {
		r.refreshFor(ctx)
	}
	RegisterMetrics(ctx)
	return r, nil
}

// refreshFor brings a shared source up to date for the config being
// loaded (ctx): files only when they changed since last read (500 sites on
// one bundle read it once); a source with no files once per config load,
// which the config's own metrics registry identifies (Caddy makes one per
// load). A failed read keeps the last good version.
func (r *Reloadable[T]) refreshFor(ctx caddy.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.spec.Watch) > 0 {
		if statSignature(r.watchPaths(r.current.Load())) != r.statSig {
			_ = r.reload()
		}
		return
	}
	if config := ctx.GetMetricsRegistry(); config == nil || config != r.config {
		r.config = config
		_ = r.reload()
	}
}

// Release gives back a Reloadable acquired with the same key; the last
// release stops its watcher.
func Release(key string) {
	_, _ = pool.Delete(key)
}
