// Package redis provides caddy.storage.redis, certmagic storage on Redis.
package redis
