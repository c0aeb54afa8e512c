package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mathrand "math/rand/v2"
	"os"
	"runtime/debug"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Locks (README.md, "Locking"): SET NX PX of a token of the owner, renewed
// every lock_ttl/3 by a compare-and-expire, released by a compare-and-delete.

// renewScript: KEYS[1]=lock key; ARGV[1]=token, ARGV[2]=ttl in ms.
var renewScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// unlockScript: KEYS[1]=lock key; ARGV[1]=token.
var unlockScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

const (
	lockPollMin = 20 * time.Millisecond
	lockPollMax = time.Second
)

type heldLock struct {
	token string
	stop  chan struct{}
	done  chan struct{}
}

var hostname = func() string {
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}()

func newLockToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%s", hostname, os.Getpid(), hex.EncodeToString(b[:]))
}

func (s *store) lockKey(name string) string { return s.lockPfx + name }

// Lock blocks until it holds the lock called name, polling with a growing,
// jittered interval (20 ms to 1 s), or until ctx is done. A lock left by a
// node that died is taken once its TTL runs out.
func (s *store) Lock(ctx context.Context, name string) error {
	token := newLockToken()
	for wait := lockPollMin; ; wait = min(wait*2, lockPollMax) {
		if ok, err := s.tryLock(ctx, name, token); ok || err != nil {
			return err
		}
		t := time.NewTimer(wait + time.Duration(mathrand.Int64N(int64(wait)/2+1)))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("storage redis: waiting for lock %q: %w", name, ctx.Err())
		case <-s.closing:
			t.Stop()
			return fmt.Errorf("storage redis: waiting for lock %q: storage stopped", name)
		case <-t.C:
		}
	}
}

// TryLock takes the lock called name if it is free, without waiting.
func (s *store) TryLock(ctx context.Context, name string) (bool, error) {
	return s.tryLock(ctx, name, newLockToken())
}

func (s *store) tryLock(ctx context.Context, name, token string) (bool, error) {
	ok, err := s.client.SetNX(ctx, s.lockKey(name), token, s.lockTTL).Result()
	if err := s.redisErr(ctx, "lock", name, err); err != nil || !ok {
		return false, err
	}
	h := &heldLock{token: token, stop: make(chan struct{}), done: make(chan struct{})}
	s.locksMu.Lock()
	s.held[name] = h
	s.locksMu.Unlock()
	s.renewalsWG.Add(1) // not WaitGroup.Go: its closure costs an allocation per lock
	go s.renew(name, h)
	return true, nil
}

// renew keeps a held lock alive until Unlock, the storage stops, or the
// lock turns out to be lost.
func (s *store) renew(name string, h *heldLock) {
	defer s.renewalsWG.Done()
	defer close(h.done)
	defer func() {
		if r := recover(); r != nil {
			s.logger.Error("panic renewing a lock", zap.String("lock", name), zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	interval := s.lockTTL / 3
	wait := interval
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-s.closing:
			return
		case <-timer.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), interval)
		n, err := renewScript.Run(ctx, s.client, []string{s.lockKey(name)}, h.token, s.lockTTL.Milliseconds()).Int()
		cancel()
		switch {
		case err != nil:
			s.observe(ctx, err)
			s.logger.Warn("could not renew a held lock; retrying (it expires if Redis stays unreachable for lock_ttl)",
				zap.String("lock", name), zap.Duration("lock_ttl", s.lockTTL), zap.Error(err))
			wait = max(interval/4, 50*time.Millisecond) // retry sooner than the next regular renewal
		case n == 0:
			s.logger.Error("lost a held lock: it expired (not renewed within lock_ttl) and may now be held by another node",
				zap.String("lock", name), zap.Duration("lock_ttl", s.lockTTL))
			return
		default:
			wait = interval
		}
		timer.Reset(wait)
	}
}

// Unlock releases the lock called name if this node holds it. It refuses
// (and deletes nothing) when the lock is not, or no longer, this node's.
func (s *store) Unlock(ctx context.Context, name string) error {
	s.locksMu.Lock()
	h := s.held[name]
	delete(s.held, name)
	s.locksMu.Unlock()
	if h == nil {
		return fmt.Errorf("storage redis: unlock %q: this node does not hold the lock", name)
	}
	close(h.stop)
	<-h.done
	n, err := unlockScript.Run(ctx, s.client, []string{s.lockKey(name)}, h.token).Int()
	if err := s.redisErr(ctx, "unlock", name, err); err != nil {
		return fmt.Errorf("%w (the lock expires after lock_ttl %s)", err, s.lockTTL)
	}
	if n == 0 {
		return fmt.Errorf("storage redis: unlock %q: the lock is no longer this node's (it expired after lock_ttl %s "+
			"and may be held by another node); nothing released", name, s.lockTTL)
	}
	return nil
}
