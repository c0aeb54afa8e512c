package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/trustline/trustline/integration/bench"
	storageredis "github.com/trustline/trustline/modules/storage/redis"
)

func redisStorageCaddyfile(redisAddr, keyFile, site string) string {
	return fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
	local_certs
	storage redis {
		address %s
		password {env.TL_REDIS_PASSWORD}
		key_prefix it
		lock_ttl 5s
		encryption {
			key_file %s
			key_id it-1
		}
	}
}

https://localhost:%s {
	respond "served from shared storage"
}
`, redisAddr, keyFile, bench.Port(site))
}

// TestRedisStorage runs two Caddy nodes on one Redis (password, encrypted
// values) with Caddy's internal CA: the first node creates the CA and its
// site certificate in Redis, the second issues from the same CA, and a
// client that trusts only the root read back from Redis reaches both.
func TestRedisStorage(t *testing.T) {
	const password = "it-Redis-pass"
	redisAddr, _ := bench.StartRedis(t, "--requirepass", password)
	dir := t.TempDir()
	raw := make([]byte, 32)
	rand.Read(raw)
	keyFile := filepath.Join(dir, "storage.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(raw)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := "TL_REDIS_PASSWORD=" + password

	site1 := bench.FreeAddr(t)
	node1 := bench.Start(t, redisStorageCaddyfile(redisAddr, keyFile, site1), env)

	rc := goredis.NewClient(&goredis.Options{Addr: redisAddr, Password: password, DisableIdentity: true})
	t.Cleanup(func() { rc.Close() })
	ctx := context.Background()
	waitKey := func(key string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if n, _ := rc.Exists(ctx, "{it}:v:"+key).Result(); n == 1 {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		keys, _ := rc.ZRange(ctx, "{it}:i", 0, -1).Result()
		t.Fatalf("%s did not appear in Redis; stored keys: %q", key, keys)
	}
	waitKey("pki/authorities/local/root.crt")
	waitKey("pki/authorities/local/intermediate.key")
	waitKey("certificates/local/localhost/localhost.crt")
	waitKey("certificates/local/localhost/localhost.key")

	// at rest every value is sealed: no PEM, no private key in clear
	for _, k := range []string{"pki/authorities/local/root.key", "certificates/local/localhost/localhost.key"} {
		v, err := rc.HGet(ctx, "{it}:v:"+k, "v").Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(v, []byte("\x00TLE")) || bytes.Contains(v, []byte("PRIVATE KEY")) {
			t.Errorf("%s is not sealed in Redis", k)
		}
	}

	// read the root back through the storage module, as another node would
	st := &storageredis.Redis{
		Addresses:  []string{redisAddr},
		Password:   password,
		KeyPrefix:  "it",
		Encryption: &storageredis.Encryption{Key: &storageredis.KeySource{File: keyFile, ID: "it-1"}},
	}
	cctx, cancel := caddy.NewContext(caddy.Context{Context: ctx})
	defer cancel()
	if err := st.Provision(cctx); err != nil {
		t.Fatal(err)
	}
	defer st.Cleanup()
	cms, _ := st.CertMagicStorage()
	rootPEM, err := cms.Load(ctx, "pki/authorities/local/root.crt")
	if err != nil || !bytes.Contains(rootPEM, []byte("BEGIN CERTIFICATE")) {
		t.Fatalf("root from Redis: %v", err)
	}
	rootFile := filepath.Join(dir, "root.pem")
	os.WriteFile(rootFile, rootPEM, 0o644)
	sites, err := cms.List(ctx, "certificates/local", false)
	if err != nil || len(sites) != 1 || sites[0] != "certificates/local/localhost" {
		t.Errorf("List(certificates/local) = %q, %v", sites, err)
	}

	get := func(site string) {
		t.Helper()
		url := "https://localhost:" + bench.Port(site) + "/"
		var body, stderr string
		var code int
		for i := 0; i < 50; i++ {
			body, stderr, code = bench.Curl(t, "--cacert", rootFile, url)
			if code == 0 {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if code != 0 || body != "served from shared storage" {
			t.Fatalf("GET %s: exit %d, %q, %s", url, code, body, stderr)
		}
	}
	get(site1)

	// a second node on the same storage uses the same CA
	site2 := bench.FreeAddr(t)
	node2 := bench.Start(t, redisStorageCaddyfile(redisAddr, keyFile, site2), env)
	get(site2)
	root2, _ := cms.Load(ctx, "pki/authorities/local/root.crt")
	if !bytes.Equal(root2, rootPEM) {
		t.Error("the second node replaced the shared root")
	}

	// a reload with a wrong password is refused with a clear error, and
	// the running config keeps serving
	bad := strings.Replace(redisStorageCaddyfile(redisAddr, keyFile, site2), "{env.TL_REDIS_PASSWORD}", "wrong-password", 1)
	err = node2.Load(t, bad)
	t.Log("reload with a wrong password:", err)
	if err == nil || !strings.Contains(err.Error(), "WRONGPASS") || !strings.Contains(err.Error(), "storage redis: address "+redisAddr) {
		t.Errorf("reload with a wrong password: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), password) {
		t.Error("the error shows the password")
	}
	get(site2)
	_ = node1
}
