// Package redis provides caddy.storage.redis: certmagic storage on Redis
// (single server, Sentinel or Cluster, through go-redis v9), with owner
// locks renewed while held and released by compare-and-delete, TLS to
// Redis verified against a trust pool source, and AES-256-GCM sealing of
// every value under rotatable keys. README.md beside this file documents
// the Caddyfile and JSON, the key layout, the locking and the encryption.
package redis
