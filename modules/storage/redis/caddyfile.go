package redis

import (
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
	d.Next() // module name
	r.Addresses = append(r.Addresses, d.RemainingArgs()...)
	seen := map[string]bool{}
	if len(r.Addresses) > 0 {
		seen["address"] = true
	}
	for d.NextBlock(0) {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("storage redis: duplicate option '%s'", opt)
		}
		seen[opt] = true
		switch opt {
		case "address":
			r.Addresses = d.RemainingArgs()
			if len(r.Addresses) == 0 {
				return d.Err("storage redis: address needs at least one host:port")
			}
		case "username":
			if err := oneArg(d, "storage redis", opt, &r.Username); err != nil {
				return err
			}
		case "password":
			if err := oneArg(d, "storage redis", opt, &r.Password); err != nil {
				return err
			}
		case "key_prefix":
			if err := oneArg(d, "storage redis", opt, &r.KeyPrefix); err != nil {
				return err
			}
		case "db":
			var s string
			if err := oneArg(d, "storage redis", opt, &s); err != nil {
				return err
			}
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return d.Errf("storage redis: db '%s': want a database number, 0 or more", s)
			}
			r.DB = n
		case "dial_timeout", "read_timeout", "write_timeout", "lock_ttl":
			var s string
			if err := oneArg(d, "storage redis", opt, &s); err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil || dur <= 0 {
				return d.Errf("storage redis: %s '%s': want a positive duration such as 5s", opt, s)
			}
			v := caddy.Duration(dur)
			switch opt {
			case "dial_timeout":
				r.DialTimeout = v
			case "read_timeout":
				r.ReadTimeout = v
			case "write_timeout":
				r.WriteTimeout = v
			case "lock_ttl":
				r.LockTTL = v
			}
		case "insecure_plaintext":
			if d.NextArg() {
				return d.Errf("storage redis: insecure_plaintext takes no argument, got '%s'", d.Val())
			}
			r.InsecurePlaintext = true
		case "sentinel":
			if d.NextArg() {
				return d.Errf("storage redis: sentinel takes a block, not the argument '%s'", d.Val())
			}
			r.Sentinel = new(Sentinel)
			if err := r.Sentinel.unmarshal(d); err != nil {
				return err
			}
		case "tls":
			if d.NextArg() {
				return d.Errf("storage redis: tls takes a block, not the argument '%s'", d.Val())
			}
			r.TLS = new(TLS)
			if err := r.TLS.unmarshal(d); err != nil {
				return err
			}
		case "encryption":
			if d.NextArg() {
				return d.Errf("storage redis: encryption takes a block, not the argument '%s'", d.Val())
			}
			r.Encryption = new(Encryption)
			if err := r.Encryption.unmarshal(d); err != nil {
				return err
			}
		default:
			return d.Errf("storage redis: unknown option '%s'", opt)
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

func (s *Sentinel) unmarshal(d *caddyfile.Dispenser) error {
	const where = "storage redis: sentinel"
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("%s: duplicate option '%s'", where, opt)
		}
		seen[opt] = true
		switch opt {
		case "master_name":
			if err := oneArg(d, where, opt, &s.MasterName); err != nil {
				return err
			}
		case "addresses":
			s.Addresses = d.RemainingArgs()
			if len(s.Addresses) == 0 {
				return d.Errf("%s: addresses needs at least one host:port", where)
			}
		case "username":
			if err := oneArg(d, where, opt, &s.Username); err != nil {
				return err
			}
		case "password":
			if err := oneArg(d, where, opt, &s.Password); err != nil {
				return err
			}
		default:
			return d.Errf("%s: unknown option '%s'", where, opt)
		}
	}
	return nil
}

func (t *TLS) unmarshal(d *caddyfile.Dispenser) error {
	const where = "storage redis: tls"
	seen := map[string]bool{}
	var opts tlsclient.Options
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "client_identity", "trust_pool", "server_name":
			// the upstream TLS settings, parsed as every directive does
			if err := opts.ParseOption(d, where, opt, opt); err != nil {
				return err
			}
			continue
		}
		if seen[opt] {
			return d.Errf("%s: duplicate option '%s'", where, opt)
		}
		seen[opt] = true
		switch opt {
		case "ca_file":
			if err := oneArg(d, where, opt, &t.CAFile); err != nil {
				return err
			}
		case "cert_file":
			if err := oneArg(d, where, opt, &t.CertFile); err != nil {
				return err
			}
		case "key_file":
			if err := oneArg(d, where, opt, &t.KeyFile); err != nil {
				return err
			}
		default:
			return d.Errf("%s: unknown option '%s'", where, opt)
		}
	}
	t.ClientIdentityRaw, t.TrustPoolRaw, t.ServerName = opts.ClientIdentityRaw, opts.TrustPool, opts.ServerName
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
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] && opt != "old_key_file" && opt != "old_key_env" {
			return d.Errf("%s: duplicate option '%s'", where, opt)
		}
		seen[opt] = true
		switch opt {
		case "key_file", "key_env", "key_id":
			var v string
			if err := oneArg(d, where, opt, &v); err != nil {
				return err
			}
			if e.Key == nil {
				e.Key = new(KeySource)
			}
			switch opt {
			case "key_file":
				e.Key.File = v
			case "key_env":
				e.Key.Env = v
			case "key_id":
				e.Key.ID = v
			}
		case "old_key_file", "old_key_env":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.Errf("%s: %s wants <%s> [<id>]", where, opt, map[bool]string{true: "path", false: "VAR"}[opt == "old_key_file"])
			}
			ks := &KeySource{}
			if opt == "old_key_file" {
				ks.File = args[0]
			} else {
				ks.Env = args[0]
			}
			if len(args) == 2 {
				ks.ID = args[1]
			}
			e.OldKeys = append(e.OldKeys, ks)
		case "allow_plaintext_reads":
			if d.NextArg() {
				return d.Errf("%s: allow_plaintext_reads takes no argument, got '%s'", where, d.Val())
			}
			e.AllowPlaintextReads = true
		default:
			return d.Errf("%s: unknown option '%s'", where, opt)
		}
	}
	switch {
	case e.Key == nil || (e.Key.File == "" && e.Key.Env == ""):
		return d.Errf("%s: key_file or key_env is required", where)
	case e.Key.File != "" && e.Key.Env != "":
		return d.Errf("%s: key_file and key_env are exclusive", where)
	}
	return nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*Redis)(nil)
