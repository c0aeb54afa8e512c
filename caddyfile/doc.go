// Package caddyfile holds the golden Caddyfile-to-JSON tests of every
// directive and global option of the suite. Each is registered and parsed
// beside its module (modules/peer/directives.go,
// modules/passthrough/caddyfile_site.go, ...), as Caddy's own modules do.
package caddyfile
