package redis

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`redis {
		address 127.0.0.1:6379 127.0.0.1:6380
		username caddy
		password {env.REDIS_PASSWORD}
		db 0
		key_prefix edge
		dial_timeout 2s
		read_timeout 1s
		write_timeout 1s
		lock_ttl 1m
		tls {
			trust_pool file /ca.pem
			cert_file /c.crt
			key_file /c.key
			server_name redis.test
		}
		encryption {
			key_env STORAGE_KEY
			key_id new
			old_key_file /old.key old
			old_key_env OLDER
			allow_plaintext_reads
		}
	}`)
	var r Redis
	if err := r.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Addresses, " "); got != "127.0.0.1:6379 127.0.0.1:6380" {
		t.Errorf("addresses %q", got)
	}
	if r.Username != "caddy" || r.Password != "{env.REDIS_PASSWORD}" || r.KeyPrefix != "edge" {
		t.Errorf("credentials/prefix: %+v", r)
	}
	if time.Duration(r.LockTTL) != time.Minute || time.Duration(r.DialTimeout) != 2*time.Second ||
		time.Duration(r.ReadTimeout) != time.Second || time.Duration(r.WriteTimeout) != time.Second {
		t.Errorf("durations: %+v", r)
	}
	var pool map[string]any
	if err := json.Unmarshal(r.TLS.TrustPoolRaw, &pool); err != nil || pool["provider"] != "file" {
		t.Errorf("trust_pool %s", r.TLS.TrustPoolRaw)
	}
	if r.TLS.CertFile != "/c.crt" || r.TLS.KeyFile != "/c.key" || r.TLS.ServerName != "redis.test" {
		t.Errorf("tls %+v", r.TLS)
	}
	e := r.Encryption
	if e.Key.Env != "STORAGE_KEY" || e.Key.ID != "new" || !e.AllowPlaintextReads || len(e.OldKeys) != 2 ||
		e.OldKeys[0].File != "/old.key" || e.OldKeys[0].ID != "old" || e.OldKeys[1].Env != "OLDER" || e.OldKeys[1].ID != "" {
		t.Errorf("encryption %+v %+v", e.Key, e.OldKeys)
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	cases := map[string]string{
		"redis {\n unknown x\n}":                            "unknown option 'unknown'",
		"redis {\n db 1\n db 1\n}":                          "duplicate option 'db'",
		"redis {\n db x\n}":                                 "db 'x'",
		"redis {\n lock_ttl 0s\n}":                          "lock_ttl '0s'",
		"redis {\n tls x\n}":                                "tls takes a block",
		"redis {\n tls {\n trust_pool\n }\n}":               "storage redis: tls: trust_pool: expected a trust pool source (bundle, ",
		"redis {\n tls {\n trust_pool nope\n }\n}":          "storage redis: tls: trust_pool: unknown trust pool source 'nope' (expected one of: bundle, ",
		"redis {\n encryption {\n old_key_file\n }\n}":      "old_key_file wants <path> [<id>]",
		"redis {\n encryption {\n old_key_env A B C\n }\n}": "old_key_env wants <VAR> [<id>]",
		"redis {\n sentinel {\n addresses\n }\n}":           "addresses needs at least one",
	}
	for in, want := range cases {
		var r Redis
		err := r.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}

// TestJSONFieldNames pins the JSON shape the docs show.
func TestJSONFieldNames(t *testing.T) {
	r := Redis{Addresses: []string{"a:1"}, LockTTL: caddy.Duration(time.Second), Encryption: &Encryption{Key: &KeySource{File: "/k"}}}
	b, _ := json.Marshal(r)
	for _, want := range []string{`"addresses":["a:1"]`, `"lock_ttl":1000000000`, `"encryption":{"key":{"file":"/k"}}`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
}
