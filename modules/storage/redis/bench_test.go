package redis

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/caddyserver/certmagic"
)

// BenchmarkStorage measures Store, Load, Stat, List and Lock+Unlock on
// certmagic's FileStorage and on Redis (plain and encrypted) on this
// machine, side by side, so the ratio is visible:
//
//	go test -run X -bench Storage -benchmem ./modules/storage/redis/
func BenchmarkStorage(b *testing.B) {
	ctx := context.Background()
	value := make([]byte, 2048) // a certificate chain's size
	rand.Read(value)
	addr := startRedis(b)
	backends := []struct {
		name string
		s    certmagic.Storage
	}{
		{"file", &certmagic.FileStorage{Path: b.TempDir()}},
		{"redis", newTestStore(b, addr, storeOpts{prefix: "plain"})},
		{"redis-encrypted", newTestStore(b, addr, storeOpts{prefix: "sealed", sealer: testSealer(b, "bench")})},
	}
	for _, be := range backends {
		for i := 0; i < 50; i++ {
			if err := be.s.Store(ctx, fmt.Sprintf("certificates/acme/site%d/site%d.crt", i, i), value); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, be := range backends {
		b.Run("Store/"+be.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := be.s.Store(ctx, "certificates/acme/bench/bench.crt", value); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	for _, be := range backends {
		b.Run("Load/"+be.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := be.s.Load(ctx, "certificates/acme/site7/site7.crt"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	for _, be := range backends {
		b.Run("LoadMissing/"+be.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := be.s.Load(ctx, "certificates/acme/none/none.crt"); err == nil {
					b.Fatal("loaded a missing key")
				}
			}
		})
	}
	for _, be := range backends {
		b.Run("Stat/"+be.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := be.s.Stat(ctx, "certificates/acme/site7/site7.crt"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	for _, be := range backends {
		b.Run("List50/"+be.name, func(b *testing.B) {
			for b.Loop() {
				if keys, err := be.s.List(ctx, "certificates/acme", false); err != nil || len(keys) < 50 {
					b.Fatal(len(keys), err)
				}
			}
		})
	}
	for _, be := range backends[:2] {
		b.Run("LockUnlock/"+be.name, func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				name := fmt.Sprintf("bench_lock_%d", i%64)
				if err := be.s.Lock(ctx, name); err != nil {
					b.Fatal(err)
				}
				if err := be.s.Unlock(ctx, name); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
