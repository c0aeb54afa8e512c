package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material"
)

func init() {
	caddy.RegisterModule(Redis{})
	goredis.SetLogger(clientLogger{})
}

// clientLogger sends go-redis's own messages (dial retries...) to Caddy's
// log at debug level; the storage itself logs what an operator acts on.
type clientLogger struct{}

func (clientLogger) Printf(_ context.Context, format string, v ...any) {
	caddy.Log().Named("storage.redis.client").Debug(fmt.Sprintf(format, v...))
}

// Defaults.
const (
	DefaultAddress      = "127.0.0.1:6379"
	DefaultKeyPrefix    = "caddy"
	DefaultDialTimeout  = 5 * time.Second
	DefaultReadTimeout  = 3 * time.Second
	DefaultWriteTimeout = 3 * time.Second
	DefaultLockTTL      = 20 * time.Second
	minLockTTL          = time.Second
)

// Redis is certmagic storage on Redis (module `caddy.storage.redis`): what
// Caddy keeps in storage, shared by every node that points at the same
// Redis and key prefix, which makes them a cluster. README.md beside this
// file documents the key layout, the locking and the encryption.
type Redis struct {
	// Addresses are host:port of Redis. One: a single server; several: the
	// seed nodes of a Redis Cluster. Default: 127.0.0.1:6379 (none may be
	// set with sentinel).
	Addresses []string `json:"addresses,omitempty"`
	// Username for Redis ACLs. Default: none (the `default` user).
	Username string `json:"username,omitempty"`
	// Password: literal, or a placeholder such as `{env.REDIS_PASSWORD}`
	// or `{file./run/secrets/redis}`. Default: none. Never logged.
	Password string `json:"password,omitempty"`
	// DB is the database number (0-15 on a stock Redis; 0 with a Cluster).
	// Default: 0.
	DB int `json:"db,omitempty"`
	// KeyPrefix starts every Redis key this storage writes (as the hash
	// tag `{prefix}`). Nodes with the same prefix form one cluster.
	// Default: "caddy".
	KeyPrefix string `json:"key_prefix,omitempty"`
	// DialTimeout bounds connecting (TCP and TLS). Default: 5s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`
	// ReadTimeout bounds waiting for a reply. Default: 3s.
	ReadTimeout caddy.Duration `json:"read_timeout,omitempty"`
	// WriteTimeout bounds sending a command. Default: 3s.
	WriteTimeout caddy.Duration `json:"write_timeout,omitempty"`
	// LockTTL is how long a lock outlives its holder: it is renewed every
	// lock_ttl/3 while held, and taken over by another node lock_ttl after
	// its holder died. At least 1s. Default: 20s.
	LockTTL caddy.Duration `json:"lock_ttl,omitempty"`
	// Sentinel, when set, finds the master through Redis Sentinel and
	// follows its failovers (go-redis's failover client).
	Sentinel *Sentinel `json:"sentinel,omitempty"`
	// TLS, when set, speaks TLS to Redis (and to the Sentinels).
	TLS *TLS `json:"tls,omitempty"`
	// InsecurePlaintext allows plain TCP to an address that is not a
	// loopback address. Default: false (plain TCP to loopback only).
	// Exclusive with tls.
	InsecurePlaintext bool `json:"insecure_plaintext,omitempty"`
	// Encryption seals every value before it leaves this node
	// (recommended: this storage holds CA and certificate private keys).
	// Default: none, values stored as given.
	Encryption *Encryption `json:"encryption,omitempty"`

	store   *store
	logger  *zap.Logger
	dialTCP func(ctx context.Context, network, addr string) (net.Conn, error) // tests: replaces the TCP connect
}

// Sentinel configures Redis Sentinel.
type Sentinel struct {
	// MasterName is the name of the monitored master. Required.
	MasterName string `json:"master_name,omitempty"`
	// Addresses are host:port of the Sentinels. Required.
	Addresses []string `json:"addresses,omitempty"`
	// Username for the Sentinels' ACLs. Default: none.
	Username string `json:"username,omitempty"`
	// Password of the Sentinels (placeholders as for password). Default:
	// none. Never logged.
	Password string `json:"password,omitempty"`
}

// Encryption configures the sealing of values with AES-256-GCM.
type Encryption struct {
	// Key is the current key: every value written is sealed with it.
	Key *KeySource `json:"key,omitempty"`
	// OldKeys open values sealed with them, never seal: keep a rotated-out
	// key here until every value has been rewritten.
	OldKeys []*KeySource `json:"old_keys,omitempty"`
	// AllowPlaintextReads returns a stored value that is not sealed as it
	// is, for migrating a storage written without encryption. Default:
	// false, such a value is an error.
	AllowPlaintextReads bool `json:"allow_plaintext_reads,omitempty"`
}

// KeySource is one 256-bit key: 32 raw bytes, 64 hex digits, or base64 of
// 32 bytes (`openssl rand -base64 32`), from a file or a variable.
type KeySource struct {
	// ID tags each value sealed with this key (1-64 of A-Z a-z 0-9 . _ : @
	// + -). Default: derived from the key (a fingerprint that reveals
	// nothing of it).
	ID string `json:"id,omitempty"`
	// File holds the key.
	File string `json:"file,omitempty"`
	// Env names the environment variable that holds the key.
	Env string `json:"env,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Redis) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.storage.redis",
		New: func() caddy.Module { return new(Redis) },
	}
}

func (r *Redis) allAddresses() []string {
	if r.Sentinel != nil {
		return r.Sentinel.Addresses
	}
	if len(r.Addresses) == 0 {
		return []string{DefaultAddress}
	}
	return r.Addresses
}

// Validate rejects settings that cannot work together.
func (r *Redis) Validate() error {
	var errs []error
	addrs := r.Addresses
	if r.Sentinel != nil {
		addrs = slices.Concat(r.Addresses, r.Sentinel.Addresses)
	}
	for _, a := range addrs {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("address %q: want host:port", a))
		}
	}
	if r.Sentinel != nil {
		if len(r.Addresses) > 0 {
			errs = append(errs, errors.New("address and sentinel are exclusive: with sentinel, list the Sentinels in its addresses"))
		}
		if r.Sentinel.MasterName == "" {
			errs = append(errs, errors.New("sentinel: master_name is required"))
		}
		if len(r.Sentinel.Addresses) == 0 {
			errs = append(errs, errors.New("sentinel: addresses of the Sentinels are required"))
		}
	}
	if r.DB < 0 {
		errs = append(errs, fmt.Errorf("db %d: must be 0 or more", r.DB))
	}
	if len(r.Addresses) > 1 && r.DB != 0 {
		errs = append(errs, fmt.Errorf("db %d: a Redis Cluster (several addresses) has only db 0", r.DB))
	}
	if r.LockTTL != 0 && time.Duration(r.LockTTL) < minLockTTL {
		errs = append(errs, fmt.Errorf("lock_ttl %s: must be at least %s", time.Duration(r.LockTTL), minLockTTL))
	}
	for name, d := range map[string]caddy.Duration{"dial_timeout": r.DialTimeout, "read_timeout": r.ReadTimeout, "write_timeout": r.WriteTimeout} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %s: must not be negative", name, time.Duration(d)))
		}
	}
	if strings.ContainsAny(r.KeyPrefix, "{}") {
		errs = append(errs, fmt.Errorf("key_prefix %q: must not contain { or }", r.KeyPrefix))
	}
	if r.TLS != nil && r.InsecurePlaintext {
		errs = append(errs, errors.New("tls and insecure_plaintext are exclusive"))
	}
	if r.TLS == nil && !r.InsecurePlaintext {
		for _, a := range r.allAddresses() {
			if !isLoopback(a) {
				errs = append(errs, fmt.Errorf("address %q is not a loopback address and no tls block is set: "+
					"add tls { ... }, or insecure_plaintext to send the stored keys in clear", a))
			}
		}
	}
	if e := r.Encryption; e != nil && e.Key == nil {
		errs = append(errs, errors.New("encryption: key_file or key_env is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("storage redis: %w", err)
	}
	return nil
}

func orDefault(d caddy.Duration, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

// Provision checks the settings (Caddy calls Provision before Validate,
// and storage must work before the apps start), loads the TLS material and
// the keys, and pings Redis: a failure fails the config load, naming the
// address.
func (r *Redis) Provision(ctx caddy.Context) error {
	r.logger = ctx.Logger()
	if err := r.Validate(); err != nil {
		return err
	}
	if r.KeyPrefix == "" {
		r.KeyPrefix = DefaultKeyPrefix
	}
	var sentinel Sentinel // without sentinel, go-redis ignores its empty settings
	if r.Sentinel != nil {
		sentinel = *r.Sentinel
	}
	password, err := material.ResolveSecret("storage redis: password", r.Password)
	if err != nil {
		return err
	}
	sentinelPassword, err := material.ResolveSecret("storage redis: sentinel password", sentinel.Password)
	if err != nil {
		return err
	}
	if r.TLS != nil {
		if err := r.TLS.provision(ctx); err != nil {
			return fmt.Errorf("storage redis: %w", err)
		}
	}
	var seal *sealer
	if e := r.Encryption; e != nil {
		if seal, err = e.load(); err != nil {
			return fmt.Errorf("storage redis: encryption: %w", err)
		}
	}

	dialTimeout := orDefault(r.DialTimeout, DefaultDialTimeout)
	readTimeout := orDefault(r.ReadTimeout, DefaultReadTimeout)
	writeTimeout := orDefault(r.WriteTimeout, DefaultWriteTimeout)
	d := newDialer(r.TLS, dialTimeout, r.InsecurePlaintext, r.logger)
	if r.dialTCP != nil {
		d.dialTCP = r.dialTCP
	}
	addrs := r.allAddresses()
	// go-redis picks the client: a master name is Sentinel (addrs are the
	// Sentinels), several addresses a Redis Cluster, one a single server
	client := goredis.NewUniversalClient(&goredis.UniversalOptions{
		Addrs:            addrs,
		Username:         r.Username,
		Password:         password,
		DB:               r.DB,
		MasterName:       sentinel.MasterName,
		SentinelUsername: sentinel.Username,
		SentinelPassword: sentinelPassword,
		Dialer:           d.dial,
		DialTimeout:      dialTimeout,
		ReadTimeout:      readTimeout,
		WriteTimeout:     writeTimeout,
		DisableIdentity:  true,
		DialerRetries:    2,
	})
	where, setting := strings.Join(addrs, ","), "address"
	if r.Sentinel != nil {
		where, setting = r.Sentinel.MasterName+"@"+where, "sentinel"
	}
	pctx, cancel := context.WithTimeout(ctx, dialTimeout+readTimeout)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		client.Close()
		return fmt.Errorf("storage redis: %s %s: cannot use Redis: %w%s", setting, where, err, r.hint(err))
	}
	lockTTL := orDefault(r.LockTTL, DefaultLockTTL)
	r.store = newStore(client, r.KeyPrefix, seal, lockTTL, r.logger, where)
	r.logger.Info("storage on Redis", zap.String("address", where), zap.Int("db", r.DB), zap.String("key_prefix", r.KeyPrefix),
		zap.Bool("tls", r.TLS != nil), zap.Bool("encryption", seal != nil), zap.Duration("lock_ttl", lockTTL))
	if seal == nil {
		r.logger.Warn("storage redis: values are stored unencrypted; an encryption block is recommended, this storage holds private keys")
	}
	return nil
}

// hint adds the setting to look at for the common start-up failures.
func (r *Redis) hint(err error) string {
	msg := err.Error()
	has := func(subs ...string) bool {
		return slices.ContainsFunc(subs, func(sub string) bool { return strings.Contains(msg, sub) })
	}
	const sentinelHint = " (check master_name and the Sentinels' addresses)"
	switch {
	case errors.Is(err, errPlaintextRefused):
		return "" // the error says what to configure
	case r.Sentinel != nil && has("sentinels"):
		return sentinelHint
	case has("WRONGPASS", "NOAUTH", "AUTH"):
		return " (check username and password)"
	case has("certificate required"):
		return " (Redis wants a client certificate: set client_identity, or cert_file and key_file, in the tls block)"
	case has("remote error: tls"):
		return " (Redis refused this node's client certificate: check client_identity or cert_file in the tls block)"
	case has("certificate", "tls:"):
		return " (check ca_file, trust_pool or server_name in the tls block)"
	case has("DB index"):
		return " (check db)"
	case has("connection refused", "no such host", "timeout"):
		return " (is Redis running there? check address)"
	case r.Sentinel != nil:
		return sentinelHint
	case r.TLS != nil && has("reset by peer", "broken pipe", "EOF"):
		// TLS 1.3: a server that refuses the client certificate (or its
		// absence) may just close the connection after the handshake
		if r.TLS.CertFile == "" && r.TLS.ClientIdentityRaw == nil {
			return " (Redis may require a client certificate: set client_identity, or cert_file and key_file, in the tls block)"
		}
		return " (Redis may have refused this node's client certificate: check client_identity or cert_file in the tls block)"
	}
	return ""
}

// load reads the keys.
func (e *Encryption) load() (*sealer, error) {
	var keys []*sealKey
	for i, ks := range append([]*KeySource{e.Key}, e.OldKeys...) {
		setting := "old_key"
		if i == 0 {
			setting = "key"
		} else if ks == nil {
			continue
		}
		k, err := loadSealKey(ks, setting)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return newSealer(keys, e.AllowPlaintextReads)
}

// CertMagicStorage returns the storage.
func (r *Redis) CertMagicStorage() (certmagic.Storage, error) {
	if r.store == nil {
		return nil, errors.New("storage redis: not provisioned")
	}
	return r.store, nil
}

// Cleanup stops lock renewals (a held lock expires after lock_ttl) and
// closes the connections.
func (r *Redis) Cleanup() error {
	if r.store != nil {
		return r.store.close()
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner      = (*Redis)(nil)
	_ caddy.Validator        = (*Redis)(nil)
	_ caddy.CleanerUpper     = (*Redis)(nil)
	_ caddy.StorageConverter = (*Redis)(nil)
)
