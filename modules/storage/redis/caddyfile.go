package redis

import (
	"slices"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/trustline/trustline/modules/tlsclient"
)

// UnmarshalCaddyfile sets up the storage from the `storage redis` global
// option.
//
// Syntax:
//
//	storage redis [<host:port>...] {
//		address        <host:port>...
//		username       <name>
//		password       <password|{env.VAR}|{file./path}>
//		db             <number>
//		key_prefix     <prefix>
//		dial_timeout   <duration>
//		read_timeout   <duration>
//		write_timeout  <duration>
//		lock_ttl       <duration>
//		sentinel {
//			master_name <name>
//			addresses   <host:port>...
//			username    <name>
//			password    <password|{env.VAR}|{file./path}>
//		}
//		tls {
//			ca_file     <pem>
//			trust_pool  <module> ...
//			client_identity <pem|pkcs12|jks> ...
//			cert_file   <pem>
//			key_file    <pem>
//			server_name <name>
//		}
//		insecure_plaintext
//		encryption {
//			key_file      <path>
//			key_env       <VAR>
//			key_id        <id>
//			old_key_file  <path> [<id>]
//			old_key_env   <VAR> [<id>]
//			allow_plaintext_reads
//		}
//	}
func (r *Redis) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	const where = "storage redis"
	d.Next() // module name
	r.Addresses = append(r.Addresses, d.RemainingArgs()...)
	opts := map[string]any{
		"address": &r.Addresses, "username": &r.Username, "password": &r.Password, "key_prefix": &r.KeyPrefix,
		"dial_timeout": &r.DialTimeout, "read_timeout": &r.ReadTimeout, "write_timeout": &r.WriteTimeout,
		"lock_ttl": &r.LockTTL, "insecure_plaintext": &r.InsecurePlaintext,
	}
	return parseBlock(d, where, opts, func(opt string) (bool, error) {
		if opt == "db" {
			var s string
			if err := oneArg(d, where, opt, &s); err != nil {
				return true, err
			}
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return true, d.Errf("%s: db '%s': want a database number, 0 or more", where, s)
			}
			r.DB = n
			return true, nil
		}
		var parse func(*caddyfile.Dispenser) error
		switch opt {
		case "sentinel":
			r.Sentinel = new(Sentinel)
			parse = r.Sentinel.unmarshal
		case "tls":
			r.TLS = new(TLS)
			parse = r.TLS.unmarshal
		case "encryption":
			r.Encryption = new(Encryption)
			parse = r.Encryption.unmarshal
		default:
			return false, nil
		}
		if d.NextArg() {
			return true, d.Errf("%s: %s takes a block, not the argument '%s'", where, opt, d.Val())
		}
		return true, parse(d)
	})
}

func (s *Sentinel) unmarshal(d *caddyfile.Dispenser) error {
	return parseBlock(d, "storage redis: sentinel", map[string]any{"master_name": &s.MasterName,
		"addresses": &s.Addresses, "username": &s.Username, "password": &s.Password}, nil)
}

// parseBlock reads the options of the block at d's cursor, refusing
// unknown ones and, but for the repeatable ones, duplicates. An option
// whose target is in opts is parsed by its type: *string one value,
// *[]string at least one host:port, *caddy.Duration a positive duration,
// *bool a flag without argument; other parses the rest and reports
// whether it knew the option.
func parseBlock(d *caddyfile.Dispenser, where string, opts map[string]any, other func(opt string) (bool, error), repeatable ...string) error {
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] && !slices.Contains(repeatable, opt) {
			return d.Errf("%s: duplicate option '%s'", where, opt)
		}
		seen[opt] = true
		switch dst := opts[opt].(type) {
		case *string:
			if err := oneArg(d, where, opt, dst); err != nil {
				return err
			}
		case *[]string:
			if len(*dst) > 0 { // the shorthand gave it already
				return d.Errf("%s: duplicate option '%s'", where, opt)
			}
			if *dst = d.RemainingArgs(); len(*dst) == 0 {
				return d.Errf("%s: %s needs at least one host:port", where, opt)
			}
		case *caddy.Duration:
			var s string
			if err := oneArg(d, where, opt, &s); err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil || dur <= 0 {
				return d.Errf("%s: %s '%s': want a positive duration such as 5s", where, opt, s)
			}
			*dst = caddy.Duration(dur)
		case *bool:
			if d.NextArg() {
				return d.Errf("%s: %s takes no argument, got '%s'", where, opt, d.Val())
			}
			*dst = true
		default:
			known := false
			if other != nil {
				var err error
				if known, err = other(opt); err != nil {
					return err
				}
			}
			if !known {
				return d.Errf("%s: unknown option '%s'", where, opt)
			}
		}
	}
	return nil
}

// oneArg reads exactly one argument of an option.
func oneArg(d *caddyfile.Dispenser, where, opt string, dst *string) error {
	if !d.NextArg() {
		return d.Errf("%s: %s needs a value", where, opt)
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.Errf("%s: %s takes one value, got an extra '%s'", where, opt, d.Val())
	}
	return nil
}

func (t *TLS) unmarshal(d *caddyfile.Dispenser) error {
	const where = "storage redis: tls"
	var client tlsclient.Options
	opts := map[string]any{"ca_file": &t.CAFile, "cert_file": &t.CertFile, "key_file": &t.KeyFile}
	// the upstream TLS settings, parsed as every directive does (it
	// refuses their duplicates)
	shared := []string{"client_identity", "trust_pool", "server_name"}
	err := parseBlock(d, where, opts, func(opt string) (bool, error) {
		if !slices.Contains(shared, opt) {
			return false, nil
		}
		return true, client.ParseOption(d, where, opt, opt)
	}, shared...)
	if err != nil {
		return err
	}
	t.ClientIdentityRaw, t.TrustPoolRaw, t.ServerName = client.ClientIdentityRaw, client.TrustPool, client.ServerName
	if t.CAFile != "" && t.TrustPoolRaw != nil {
		return d.Errf("%s: ca_file and trust_pool are exclusive", where)
	}
	if t.ClientIdentityRaw != nil && (t.CertFile != "" || t.KeyFile != "") {
		return d.Errf("%s: client_identity and cert_file/key_file are exclusive", where)
	}
	return nil
}

func (e *Encryption) unmarshal(d *caddyfile.Dispenser) error {
	const where = "storage redis: encryption"
	e.Key = new(KeySource)
	opts := map[string]any{"key_file": &e.Key.File, "key_env": &e.Key.Env, "key_id": &e.Key.ID,
		"allow_plaintext_reads": &e.AllowPlaintextReads}
	err := parseBlock(d, where, opts, func(opt string) (bool, error) {
		if opt != "old_key_file" && opt != "old_key_env" {
			return false, nil
		}
		args := d.RemainingArgs()
		if len(args) < 1 || len(args) > 2 {
			return true, d.Errf("%s: %s wants <%s> [<id>]", where, opt, map[bool]string{true: "path", false: "VAR"}[opt == "old_key_file"])
		}
		ks := &KeySource{File: args[0]}
		if opt == "old_key_env" {
			ks = &KeySource{Env: args[0]}
		}
		if len(args) == 2 {
			ks.ID = args[1]
		}
		e.OldKeys = append(e.OldKeys, ks)
		return true, nil
	}, "old_key_file", "old_key_env")
	switch {
	case err != nil:
		return err
	case e.Key.File == "" && e.Key.Env == "":
		return d.Errf("%s: key_file or key_env is required", where)
	case e.Key.File != "" && e.Key.Env != "":
		return d.Errf("%s: key_file and key_env are exclusive", where)
	}
	return nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*Redis)(nil)
