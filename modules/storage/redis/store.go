package redis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Key layout (README.md, "Key layout"), for a key prefix P: {P}:i is the
// index (a sorted set, all scores 0, so that List and the directory checks
// are ZRANGEBYLEX range queries, never a SCAN), {P}:v:<key> a value's hash
// (v value, m Redis-clock µs, s size), {P}:l:<name> a lock, {P}:changes
// the pub/sub channel. The shared hash tag {P} keeps every script on one
// Redis Cluster slot. Directories are implied by key prefixes; a key is a
// value or a directory, never both.

// luaIsDir is a Lua function shared by the scripts: does any stored key start with k.."/"?
const luaIsDir = `
local function isdir(idx, k)
  if k == '' then return redis.call('ZCARD', idx) > 0 end
  return #redis.call('ZRANGEBYLEX', idx, '[' .. k .. '/', '(' .. k .. '0', 'LIMIT', 0, 1) > 0
end
`

// storeScript: KEYS[1]=index, KEYS[2]=value key, KEYS[3..]=value keys of
// the ancestors; ARGV[1]=key, ARGV[2]=stored bytes, ARGV[3]=size,
// ARGV[4]=changes channel. Returns 0 when stored (and published the key
// on the channel), -1 when key is a directory, i>0 when the i-th ancestor
// (1-based) is a value.
var storeScript = goredis.NewScript(luaIsDir + `
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return i - 2 end
end
if isdir(KEYS[1], ARGV[1]) then return -1 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[2], 'v', ARGV[2], 'm', t[1] .. string.format('%06d', tonumber(t[2])), 's', ARGV[3])
redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 0
`)

// loadScript: KEYS[1]=index, KEYS[2]=value key; ARGV[1]=key.
// Returns the stored bytes, 1 for a directory, 0 when missing.
var loadScript = goredis.NewScript(luaIsDir + `
local v = redis.call('HGET', KEYS[2], 'v')
if v then return v end
if isdir(KEYS[1], ARGV[1]) then return 1 end
return 0
`)

// statScript: KEYS[1]=index, KEYS[2]=value key; ARGV[1]=key.
// Returns {m, s} for a value, 1 for a directory, 0 when missing.
var statScript = goredis.NewScript(luaIsDir + `
local r = redis.call('HMGET', KEYS[2], 'm', 's')
if r[1] then return r end
if isdir(KEYS[1], ARGV[1]) then return 1 end
return 0
`)

// deleteScript: KEYS[1]=index, KEYS[2]=value key; ARGV[1]=key,
// ARGV[2]=value-key prefix, ARGV[3]=batch size, ARGV[4]=changes channel.
// Deletes key and up to a batch of the keys under it, and publishes key on
// the channel; returns how many of those it deleted (the caller repeats
// while a full batch went).
var deleteScript = goredis.NewScript(`
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
local min, max = '-', '+'
if ARGV[1] ~= '' then min, max = '[' .. ARGV[1] .. '/', '(' .. ARGV[1] .. '0' end
local ks = redis.call('ZRANGEBYLEX', KEYS[1], min, max, 'LIMIT', 0, tonumber(ARGV[3]))
for _, k in ipairs(ks) do redis.call('DEL', ARGV[2] .. k) end
if #ks > 0 then redis.call('ZREM', KEYS[1], unpack(ks)) end
redis.call('PUBLISH', ARGV[4], ARGV[1])
return #ks
`)

// listScript: KEYS[1]=index; ARGV[1]=prefix (” for the root).
// Returns the immediate children of prefix, walking the index by skipping
// over each child directory's subtree: O(children × log N).
var listScript = goredis.NewScript(`
local p = ARGV[1]
local min, max, plen = '-', '+', 0
if p ~= '' then min, max, plen = '(' .. p .. '/', '(' .. p .. '0', #p + 1 end
local out = {}
while true do
  local r = redis.call('ZRANGEBYLEX', KEYS[1], min, max, 'LIMIT', 0, 1)
  if #r == 0 then break end
  local k = r[1]
  local slash = string.find(k, '/', plen + 1, true)
  if slash then
    local child = string.sub(k, 1, slash - 1)
    out[#out + 1] = child
    min = '[' .. child .. '0'
  else
    out[#out + 1] = k
    min = '(' .. k
  end
end
return out
`)

const (
	deleteBatch = 512
	listPage    = 1000
)

// store is the certmagic.Storage on Redis.
type store struct {
	client     goredis.UniversalClient
	prefix     string
	indexKey   string
	valuePfx   string
	lockPfx    string
	changes    string  // pub/sub channel of stored and deleted keys
	sealer     *sealer // nil: values stored as given
	gens       *generations
	lockTTL    time.Duration
	logger     *zap.Logger
	addrs      string // for logs
	down       atomic.Bool
	closing    chan struct{}
	closeOnce  sync.Once
	locksMu    sync.Mutex
	held       map[string]*heldLock
	renewalsWG sync.WaitGroup
	watch      watchers
}

func newStore(client goredis.UniversalClient, prefix string, s *sealer, lockTTL time.Duration, logger *zap.Logger, addrs string) *store {
	tag := "{" + prefix + "}"
	return &store{
		client:   client,
		prefix:   prefix,
		indexKey: tag + ":i",
		valuePfx: tag + ":v:",
		lockPfx:  tag + ":l:",
		changes:  tag + ":changes",
		sealer:   s,
		gens:     newGenerations(),
		lockTTL:  lockTTL,
		logger:   logger,
		addrs:    addrs,
		closing:  make(chan struct{}),
		held:     make(map[string]*heldLock),
	}
}

// close stops lock renewals (held locks expire after their TTL) and the
// client. A connection found already closed is a clean close (go-redis
// v9.17.3 closed those a Sentinel failover dropped twice).
func (s *store) close() error {
	var err error
	s.closeOnce.Do(func() {
		s.watch.mu.Lock() // no subscription starts once closing
		close(s.closing)
		s.watch.mu.Unlock()
		s.renewalsWG.Wait()
		s.watch.wg.Wait()
		if err = s.client.Close(); errors.Is(err, net.ErrClosed) {
			err = nil
		}
	})
	return err
}

// cleanKey normalizes a key as the file storage's path join does ("."
// and ".." resolved, never above the root; no stray slashes).
func cleanKey(key string) string {
	if key == "" {
		return ""
	}
	return strings.Trim(path.Clean("/"+key), "/")
}

func (s *store) valueKey(key string) string { return s.valuePfx + key }

// String names the storage in certmagic's logs.
func (s *store) String() string { return "redis:" + s.addrs + "/" + s.prefix }

// observe logs each change between a reachable and an unreachable Redis
// once (not once per failed call), and returns err.
func (s *store) observe(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, goredis.Nil) {
		if s.down.Load() && s.down.CompareAndSwap(true, false) {
			s.logger.Info("Redis reachable again; storage operations resumed", zap.String("address", s.addrs))
		}
		return err
	}
	var rerr goredis.Error
	if errors.As(err, &rerr) || ctx.Err() != nil {
		return err // an error reply, or the caller gave up: not a connectivity problem
	}
	if s.down.CompareAndSwap(false, true) {
		s.logger.Error("Redis unreachable: storage operations fail until it is back "+
			"(certificates already loaded keep being served; certmagic retries)",
			zap.String("address", s.addrs), zap.Error(err))
	}
	return err
}

// redisErr reports the outcome of a call to Redis to observe, and names
// op and key in its error.
func (s *store) redisErr(ctx context.Context, op, key string, err error) error {
	if s.observe(ctx, err) == nil {
		return nil
	}
	return fmt.Errorf("storage redis: %s %q: %w", op, key, err)
}

func notExist(op, key string) error {
	return &fs.PathError{Op: op, Path: key, Err: fs.ErrNotExist}
}

// Store puts value at key.
func (s *store) Store(ctx context.Context, key string, value []byte) error {
	key = cleanKey(key)
	if key == "" {
		return errors.New("storage redis: store: empty key")
	}
	stored := value
	var gen int64
	if s.sealer != nil {
		var err error
		gen = s.gens.next(key)
		if stored, err = s.sealer.seal(s.valueKey(key), gen, value); err != nil {
			return fmt.Errorf("storage redis: store %q: %w", key, err)
		}
	}
	keys := []string{s.indexKey, s.valueKey(key)}
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			keys = append(keys, s.valueKey(key[:i]))
		}
	}
	res, err := storeScript.Run(ctx, s.client, keys, key, stored, len(value), s.changes).Int()
	if err := s.redisErr(ctx, "store", key, err); err != nil {
		return err
	}
	switch {
	case res == -1:
		return fmt.Errorf("storage redis: store %q: it is a directory (keys exist under it)", key)
	case res > 0:
		return fmt.Errorf("storage redis: store %q: %q is a value, not a directory", key, keys[res+1][len(s.valuePfx):])
	}
	if gen != 0 {
		s.gens.wrote(key, gen)
	}
	return nil
}

// Load retrieves the value at key; fs.ErrNotExist when it does not exist.
func (s *store) Load(ctx context.Context, key string) ([]byte, error) {
	key = cleanKey(key)
	vk := s.valueKey(key)
	res, err := loadScript.Run(ctx, s.client, []string{s.indexKey, vk}, key).Result()
	if err := s.redisErr(ctx, "load", key, err); err != nil {
		return nil, err
	}
	switch v := res.(type) {
	case string:
		plain, gen, err := s.sealer.open(key, vk, []byte(v))
		if err == nil && s.sealer != nil {
			if err = s.gens.read(key, gen); err != nil {
				s.logger.Error("refusing a sealed value older than one this node already read or wrote at the same key "+
					"(an older value written back in Redis?)", zap.String("key", key), zap.Error(err))
			}
		}
		if err != nil {
			return nil, fmt.Errorf("storage redis: %w", err)
		}
		return plain, nil
	case int64:
		if v == 1 || key == "" {
			return nil, fmt.Errorf("storage redis: load %q: is a directory", key)
		}
		return nil, notExist("load", key)
	}
	return nil, fmt.Errorf("storage redis: load %q: unexpected reply %T", key, res)
}

// Delete deletes key and, when it is a directory, every key under it. A
// missing key is not an error.
func (s *store) Delete(ctx context.Context, key string) error {
	key = cleanKey(key)
	for {
		n, err := deleteScript.Run(ctx, s.client, []string{s.indexKey, s.valueKey(key)}, key, s.valuePfx, deleteBatch, s.changes).Int()
		if err != nil || n < deleteBatch {
			return s.redisErr(ctx, "delete", key, err)
		}
	}
}

// Exists tells whether key is a value or a directory (false when Redis
// cannot be asked).
func (s *store) Exists(ctx context.Context, key string) bool {
	_, err := s.Stat(ctx, key)
	return err == nil
}

// Stat describes key; fs.ErrNotExist when it does not exist. Directories
// have IsTerminal false and no size or time; the root always exists.
func (s *store) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	key = cleanKey(key)
	if key == "" {
		return certmagic.KeyInfo{Key: key}, nil
	}
	res, err := statScript.Run(ctx, s.client, []string{s.indexKey, s.valueKey(key)}, key).Result()
	if err := s.redisErr(ctx, "stat", key, err); err != nil {
		return certmagic.KeyInfo{}, err
	}
	switch v := res.(type) {
	case []any:
		m, _ := v[0].(string)
		size, _ := v[1].(string)
		info := certmagic.KeyInfo{Key: key, IsTerminal: true}
		if us, err := strconv.ParseInt(m, 10, 64); err == nil {
			info.Modified = time.UnixMicro(us)
		}
		info.Size, _ = strconv.ParseInt(size, 10, 64)
		return info, nil
	case int64:
		if v == 1 {
			return certmagic.KeyInfo{Key: key}, nil
		}
		return certmagic.KeyInfo{}, notExist("stat", key)
	}
	return certmagic.KeyInfo{}, fmt.Errorf("storage redis: stat %q: unexpected reply %T", key, res)
}

// List returns the immediate children of prefix (values and directories),
// or with recursive everything below it, in the order of a file-system
// walk. A missing prefix is fs.ErrNotExist; a value has no children.
func (s *store) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	prefix = cleanKey(prefix)
	var out []string
	var err error
	if recursive {
		out, err = s.listRecursive(ctx, prefix)
	} else {
		out, err = listScript.Run(ctx, s.client, []string{s.indexKey}, prefix).StringSlice()
	}
	if err := s.redisErr(ctx, "list", prefix, err); err != nil {
		return nil, err
	}
	if len(out) == 0 && prefix != "" {
		n, err := s.client.Exists(ctx, s.valueKey(prefix)).Result()
		if err := s.redisErr(ctx, "list", prefix, err); err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, notExist("list", prefix)
		}
		return nil, nil
	}
	slices.SortFunc(out, walkOrder)
	return out, nil
}

func (s *store) listRecursive(ctx context.Context, prefix string) ([]string, error) {
	minKey, maxKey, plen := "-", "+", 0
	if prefix != "" {
		minKey, maxKey, plen = "("+prefix+"/", "("+prefix+"0", len(prefix)+1
	}
	var out []string
	dirs := map[string]bool{}
	for {
		page, err := s.client.ZRangeByLex(ctx, s.indexKey, &goredis.ZRangeBy{Min: minKey, Max: maxKey, Count: listPage}).Result()
		if err != nil {
			return nil, err
		}
		for _, k := range page {
			for i := plen; i < len(k); i++ {
				if k[i] == '/' && !dirs[k[:i]] {
					dirs[k[:i]] = true
					out = append(out, k[:i])
				}
			}
			out = append(out, k)
		}
		if len(page) < listPage {
			return out, nil
		}
		minKey = "(" + page[len(page)-1]
	}
}

// walkOrder orders keys as filepath.Walk visits them: component by
// component, a directory before what is under it.
func walkOrder(a, b string) int {
	for i := range min(len(a), len(b)) {
		switch {
		case a[i] == b[i]:
		case a[i] == '/':
			return -1
		case b[i] == '/':
			return 1
		default:
			return cmp.Compare(a[i], b[i])
		}
	}
	return len(a) - len(b)
}

// Interface guards.
var (
	_ certmagic.Storage   = (*store)(nil)
	_ certmagic.TryLocker = (*store)(nil)
)
