package redis

import (
	"context"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material/castore"
)

// Change notifications (README.md): every Store and Delete publishes its
// key on {P}:changes from its Lua script. Pub/sub is at-most-once, so each
// time the subscription is confirmed every watcher is called with its own
// prefix, and watchers poll as well.

type watchers struct {
	mu      sync.Mutex
	m       map[*watcher]bool
	running bool
	wg      sync.WaitGroup
}

type watcher struct {
	prefix string
	f      func(string)
}

// WatchKeys implements castore.KeyWatcher: it calls f with each key
// stored or deleted under prefix (a key equal to prefix, or starting with
// prefix+"/"; "" for every key) by any node sharing this storage, this
// one included, and with prefix itself when the subscription is confirmed
// (the first time and after a lost subscription came back). f runs on the
// subscription's goroutine and must not block. cancel stops the calls.
func (s *store) WatchKeys(prefix string, f func(key string)) (cancel func()) {
	w := &watcher{prefix: cleanKey(prefix), f: f}
	ws := &s.watch
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.m == nil {
		ws.m = map[*watcher]bool{}
	}
	ws.m[w] = true
	if !ws.running {
		select {
		case <-s.closing:
		default:
			ws.running = true
			ws.wg.Go(s.subscribe)
		}
	}
	return func() {
		ws.mu.Lock()
		defer ws.mu.Unlock()
		delete(ws.m, w)
	}
}

func under(key, prefix string) bool {
	return prefix == "" || key == prefix || strings.HasPrefix(key, prefix+"/")
}

// dispatch calls the watchers of key; resync calls every watcher with its
// own prefix.
func (s *store) dispatch(key string, resync bool) {
	s.watch.mu.Lock()
	ws := slices.Collect(maps.Keys(s.watch.m))
	s.watch.mu.Unlock()
	for _, w := range ws {
		switch {
		case resync:
			w.f(w.prefix)
		case under(key, w.prefix):
			w.f(key)
		}
	}
}

// subscribe runs the subscription until the storage closes; go-redis
// reconnects and subscribes again after a connection failure.
func (s *store) subscribe() {
	defer func() {
		if r := recover(); r != nil {
			s.logger.Error("panic in the change subscription; changes are seen by polling only",
				zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ps := s.client.Subscribe(ctx, s.changes)
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-s.closing:
		case <-stopped:
		}
		cancel()
		_ = ps.Close() // unblocks Receive, which a context does not
	}()
	subscribed := false
	failures := 0
	for {
		msg, err := ps.Receive(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			if failures == 1 {
				s.logger.Warn("change subscription lost; retrying (changes are seen by polling meanwhile)",
					zap.String("address", s.addrs), zap.Error(err))
			}
			t := time.NewTimer(min(time.Duration(failures)*100*time.Millisecond, 2*time.Second))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			if subscribed {
				s.logger.Info("change subscription restored", zap.String("address", s.addrs))
			}
			// changes made before this confirmation were not heard
			s.dispatch("", true)
			subscribed, failures = true, 0
		case *goredis.Message:
			s.dispatch(m.Payload, false)
		}
	}
}

var _ castore.KeyWatcher = (*store)(nil)
