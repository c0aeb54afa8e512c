// Package caddyfile holds the golden Caddyfile-to-JSON tests of every
// directive and global option, each registered beside its module.
package caddyfile
