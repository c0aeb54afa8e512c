// Package caddyfile registers the suite's Caddyfile directives and global
// options, and holds the golden Caddyfile-to-JSON tests for all of them.
package caddyfile
