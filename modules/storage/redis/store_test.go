package redis

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"
)

// op is one storage operation of the conformance table.
type op struct {
	do        string // store, load, delete, exists, list, listr, stat
	key       string
	value     string
	noKeyInfo bool // compare a stat's IsTerminal only (key given uncleaned)
}

// outcome renders the result of an operation so that the two storages'
// results compare as strings: errors by kind, directory sizes and times
// left out (a file system has them, implied directories do not).
func outcome(ctx context.Context, s certmagic.Storage, o op) string {
	kind := func(err error) string {
		switch {
		case err == nil:
			return "ok"
		case errors.Is(err, fs.ErrNotExist):
			return "ErrNotExist"
		default:
			return "error"
		}
	}
	switch o.do {
	case "store":
		return kind(s.Store(ctx, o.key, []byte(o.value)))
	case "load":
		v, err := s.Load(ctx, o.key)
		if err != nil {
			return kind(err)
		}
		return "value " + string(v)
	case "delete":
		return kind(s.Delete(ctx, o.key))
	case "exists":
		return fmt.Sprint(s.Exists(ctx, o.key))
	case "list", "listr":
		keys, err := s.List(ctx, o.key, o.do == "listr")
		if err != nil {
			return kind(err)
		}
		return fmt.Sprintf("%q", keys)
	case "stat":
		info, err := s.Stat(ctx, o.key)
		if err != nil {
			return kind(err)
		}
		if o.noKeyInfo {
			return fmt.Sprintf("terminal=%v", info.IsTerminal)
		}
		if !info.IsTerminal {
			return fmt.Sprintf("dir key=%s", info.Key)
		}
		return fmt.Sprintf("file key=%s size=%d modified=%v", info.Key, info.Size, !info.Modified.IsZero())
	}
	panic("unknown op " + o.do)
}

// conformance is run against certmagic's FileStorage and the Redis
// storage; every outcome must be the same.
var conformance = []op{
	{do: "load", key: "a/b"},
	{do: "stat", key: "a"},
	{do: "exists", key: "a"},
	{do: "list", key: "a"},
	{do: "listr", key: "a"},
	{do: "delete", key: "a"},
	{do: "store", key: "a/b/c", value: "1"},
	{do: "store", key: "a/b/d", value: "22"},
	{do: "store", key: "a/e", value: "333"},
	{do: "store", key: "a/b-x/y", value: "4"},
	{do: "store", key: "a/b0", value: "5"},
	{do: "store", key: "a/b/sub/deep/f", value: "6"},
	{do: "store", key: "z", value: "7"},
	{do: "store", key: "x/with space/é.pem", value: "8"},
	{do: "store", key: "x/dots.in.name", value: ""},
	{do: "load", key: "a/b/c"},
	{do: "load", key: "x/with space/é.pem"},
	{do: "load", key: "x/dots.in.name"},
	{do: "load", key: "a/b"},
	{do: "load", key: "a/bb"},
	{do: "stat", key: "a/b"},
	{do: "stat", key: "a/b/d"},
	{do: "stat", key: "a/b/sub/deep"},
	{do: "stat", key: "a/bb"},
	{do: "exists", key: "a"},
	{do: "exists", key: "a/b"},
	{do: "exists", key: "a/b/c"},
	{do: "exists", key: "a/bb"},
	{do: "exists", key: "a/b/"},
	{do: "list", key: "a"},
	{do: "listr", key: "a"},
	{do: "list", key: ""},
	{do: "listr", key: ""},
	{do: "list", key: "a/b"},
	{do: "list", key: "a/b/c"},
	{do: "listr", key: "a/b/c"},
	{do: "list", key: "nope"},
	{do: "list", key: "a/bb"},
	{do: "list", key: "x"},
	// keys are cleaned as a path join does
	{do: "load", key: "/z"},
	{do: "load", key: "a//b/c"},
	{do: "load", key: "a/./b/../b/d"},
	{do: "list", key: "a/"},
	{do: "stat", key: "a/b/", noKeyInfo: true},
	// a key is a value or a directory, never both
	{do: "store", key: "a/b", value: "dir"},
	{do: "store", key: "a/b/c/d", value: "under a value"},
	{do: "load", key: "a/b/c"},
	// overwrite
	{do: "store", key: "a/b/c", value: "overwritten"},
	{do: "load", key: "a/b/c"},
	{do: "stat", key: "a/b/c"},
	// delete a value, a directory, a missing key
	{do: "delete", key: "a/e"},
	{do: "load", key: "a/e"},
	{do: "list", key: "a"},
	{do: "delete", key: "a/b"},
	{do: "load", key: "a/b/c"},
	{do: "load", key: "a/b/sub/deep/f"},
	{do: "exists", key: "a/b"},
	{do: "stat", key: "a/b"},
	{do: "list", key: "a/b"},
	{do: "list", key: "a"},
	{do: "listr", key: ""},
	{do: "delete", key: "a/b"},
	{do: "delete", key: "never/there"},
	// a deleted directory's name is free for a value, and back
	{do: "store", key: "a/b", value: "now a value"},
	{do: "load", key: "a/b"},
	{do: "stat", key: "a/b"},
	{do: "delete", key: "a/b"},
	{do: "store", key: "a/b/c", value: "a dir again"},
	{do: "listr", key: "a"},
	{do: "delete", key: "a"},
	{do: "delete", key: "x"},
	{do: "delete", key: "z"},
	{do: "list", key: ""},
	{do: "exists", key: "a"},
}

func TestConformanceWithFileStorage(t *testing.T) {
	ctx := context.Background()
	fsStore := &certmagic.FileStorage{Path: t.TempDir()}
	rs := newTestStore(t, startRedis(t), storeOpts{})
	for i, o := range conformance {
		want := outcome(ctx, fsStore, o)
		got := outcome(ctx, rs, o)
		t.Logf("step %d %s %q: %s", i, o.do, o.key, got)
		if got != want {
			t.Errorf("step %d %s %q: redis gave %s, file storage %s", i, o.do, o.key, got, want)
		}
	}
}

// TestConformanceEncrypted runs the same table with encryption on: the
// semantics do not change.
func TestConformanceEncrypted(t *testing.T) {
	ctx := context.Background()
	fsStore := &certmagic.FileStorage{Path: t.TempDir()}
	rs := newTestStore(t, startRedis(t), storeOpts{sealer: testSealer(t, "k1")})
	for i, o := range conformance {
		if want, got := outcome(ctx, fsStore, o), outcome(ctx, rs, o); got != want {
			t.Errorf("step %d %s %q: redis gave %s, file storage %s", i, o.do, o.key, got, want)
		}
	}
}

func TestMissingKeysAreErrNotExist(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, startRedis(t), storeOpts{})
	if _, err := s.Load(ctx, "certificates/x/x.crt"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load: %v, want fs.ErrNotExist", err)
	}
	if _, err := s.Stat(ctx, "certificates/x"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat: %v, want fs.ErrNotExist", err)
	}
	if _, err := s.List(ctx, "certificates", false); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("List: %v, want fs.ErrNotExist", err)
	}
	if err := s.Delete(ctx, "certificates"); err != nil {
		t.Errorf("Delete of a missing key: %v", err)
	}
	// the root is a directory that always exists
	if info, err := s.Stat(ctx, ""); err != nil || info.IsTerminal {
		t.Errorf("Stat(root) = %+v, %v", info, err)
	}
}

func TestStatModified(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, startRedis(t), storeOpts{})
	before := time.Now().Add(-time.Second)
	if err := s.Store(ctx, "k", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if !info.IsTerminal || info.Size != 5 || info.Key != "k" {
		t.Errorf("Stat = %+v", info)
	}
	if info.Modified.Before(before) || info.Modified.After(time.Now().Add(time.Second)) {
		t.Errorf("Modified %v is not the time of the Store (Redis server clock, same machine)", info.Modified)
	}
}

// TestDeleteLargeDirectory deletes more keys than one script batch.
func TestDeleteLargeDirectory(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t)
	s := newTestStore(t, addr, storeOpts{})
	n := deleteBatch*2 + 7
	for i := 0; i < n; i++ {
		if err := s.Store(ctx, fmt.Sprintf("big/%d/v", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Store(ctx, "bigger", []byte("stays")); err != nil {
		t.Fatal(err)
	}
	keys, err := s.List(ctx, "big", false)
	if err != nil || len(keys) != n {
		t.Fatalf("List(big) gave %d keys, %v; want %d", len(keys), err, n)
	}
	all, err := s.List(ctx, "big", true)
	if err != nil || len(all) != 2*n {
		t.Fatalf("List(big, recursive) gave %d keys, %v; want %d", len(all), err, 2*n)
	}
	if err := s.Delete(ctx, "big"); err != nil {
		t.Fatal(err)
	}
	if s.Exists(ctx, "big") {
		t.Error("big still exists")
	}
	if v, err := s.Load(ctx, "bigger"); err != nil || string(v) != "stays" {
		t.Errorf("a sibling sharing the name's prefix was touched: %q, %v", v, err)
	}
	// nothing left behind in Redis but the index and the one value
	raw := rawClient(t, addr)
	keysLeft, err := raw.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keysLeft)
	if want := []string{"{caddy}:i", "{caddy}:v:bigger"}; !slices.Equal(keysLeft, want) {
		t.Errorf("keys left in Redis: %q, want %q", keysLeft, want)
	}
}

// TestKeyPrefixesAreSeparate: two clusters on one Redis do not see each
// other's keys.
func TestKeyPrefixesAreSeparate(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t)
	a := newTestStore(t, addr, storeOpts{prefix: "prod"})
	b := newTestStore(t, addr, storeOpts{prefix: "staging"})
	if err := a.Store(ctx, "certificates/x", []byte("prod")); err != nil {
		t.Fatal(err)
	}
	if b.Exists(ctx, "certificates/x") {
		t.Error("staging sees prod's key")
	}
	if err := b.Delete(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if v, err := a.Load(ctx, "certificates/x"); err != nil || string(v) != "prod" {
		t.Errorf("deleting staging's root touched prod: %q, %v", v, err)
	}
	raw := rawClient(t, addr)
	if n, _ := raw.Exists(ctx, "{prod}:v:certificates/x").Result(); n != 1 {
		t.Error("value not under {prod}:v:")
	}
}

func TestWalkOrder(t *testing.T) {
	in := []string{"a/b0", "a/b-x", "a/b/c", "a", "a/b", "a/b-x/y", "a/b/c/d", "ab"}
	slices.SortFunc(in, walkOrder)
	want := []string{"a", "a/b", "a/b/c", "a/b/c/d", "a/b-x", "a/b-x/y", "a/b0", "ab"}
	if !slices.Equal(in, want) {
		t.Errorf("walk order %q, want %q", in, want)
	}
}

func TestCleanKey(t *testing.T) {
	for in, want := range map[string]string{
		"":          "",
		"/":         "",
		"a/b":       "a/b",
		"/a/b/":     "a/b",
		"a//b":      "a/b",
		"a/./b":     "a/b",
		"../../etc": "etc",
		"a/../../b": "b",
	} {
		if got := cleanKey(in); got != want {
			t.Errorf("cleanKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStoreEmptyKey(t *testing.T) {
	s := newTestStore(t, startRedis(t), storeOpts{})
	if err := s.Store(context.Background(), "/", []byte("x")); err == nil || !strings.Contains(err.Error(), "empty key") {
		t.Errorf("Store(/) = %v", err)
	}
}

// TestRedisDownAndBack: with Redis stopped, operations fail with errors
// (no panic, no hang past the timeouts); once it is back on the same port
// they work again without a new client.
func TestRedisDownAndBack(t *testing.T) {
	ctx := context.Background()
	addr, proc := benchStartRedis(t)
	s := newTestStore(t, addr, storeOpts{lockTTL: 2 * time.Second})
	if err := s.Store(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	proc.Stop()
	if _, err := s.Load(ctx, "k"); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load with Redis down: %v, want a connection error", err)
	}
	if err := s.Store(ctx, "k2", []byte("v")); err == nil {
		t.Fatal("Store with Redis down succeeded")
	}
	if s.Exists(ctx, "k") {
		t.Error("Exists with Redis down said true")
	}
	if err := s.Lock(ctx, "l"); err == nil {
		t.Fatal("Lock with Redis down succeeded")
	}
	if !s.down.Load() {
		t.Error("the storage did not notice that Redis is down")
	}
	restartRedisOn(t, addr)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.Store(ctx, "k2", []byte("back"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after Redis came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v, err := s.Load(ctx, "k2"); err != nil || string(v) != "back" {
		t.Errorf("Load after recovery: %q, %v", v, err)
	}
	if s.down.Load() {
		t.Error("the storage still thinks Redis is down")
	}
}

// closedTwice is a client whose Close reports a connection already closed,
// as go-redis v9.17.3 did after a Sentinel failover.
type closedTwice struct{ goredis.UniversalClient }

func (c closedTwice) Close() error {
	c.UniversalClient.Close()
	return &net.OpError{Op: "close", Net: "tcp", Err: net.ErrClosed}
}

// TestCloseAlreadyClosed: a connection the client finds already closed
// when it closes is a clean close, not an error for Caddy to log at each
// config unload.
func TestCloseAlreadyClosed(t *testing.T) {
	addr := startRedis(t)
	c := goredis.NewClient(&goredis.Options{Addr: addr, DisableIdentity: true})
	s := newStore(closedTwice{c}, DefaultKeyPrefix, nil, DefaultLockTTL, zaptest.NewLogger(t), addr)
	if err := s.close(); err != nil {
		t.Fatalf("close: %v", err)
	}
}
