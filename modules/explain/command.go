package explain

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/trustline/trustline/modules/topology"
)

func init() {
	topology.RegisterSubcommand(func(trustline *cobra.Command) {
		cmd := &cobra.Command{
			Use:   "explain (--config <path> [--adapter <name>] | --address <admin>) --server-name <name> [--listen <addr>] [--cert <client.pem>] [--path <path>] [--method <method>] [--upstream <address>] [--format table|json]",
			Short: "Say, step by step, what the server does with one client certificate",
			Long: `
Says what the server does with one client, step by step, with the
server's own code: which listener and route take the name (passed
through, refused, or terminated by which TLS connection policy), each
client_auth verifier in order and its verdict (the chain built up to its
anchor and the source and file that holds it, or exactly why none was:
no certificate, issuer unknown, an intermediate not sent, expired, no
clientAuth usage, an SVID under another trust domain's authority,
revoked by which CRL or OCSP answer), the policy at the route (each
peer_authorize pattern and which matched), what the upstream sees (the
headers forward_peer_identity sets, the outbound transport's client
identity and trust), and the verdict.

With --config, it adapts the config and provisions it in this process as
Caddy would, without starting it (files are read now). With --address
(the admin API of a running instance, as for caddy reload), it asks that
instance: POST /trustline/explain, the chain as PEM (never a key), and
the answer uses the pools, CRLs and identities in force there now.

--cert is the client's certificate file: its certificate first, then the
intermediates it sends. No --cert: a client that sends none.

--upstream <address> dials that backend (an upstream of a reverse_proxy
of the config) now, with the configured client identity and trust, and
reports the handshake.

Exit status: 0 admitted (or passed through), 2 refused, 1 could not
evaluate.`,
			RunE: func(cmd *cobra.Command, args []string) error {
				// the exit status says refused (2): no "Error:" line for it;
				// real errors are logged by Caddy's wrapper
				cmd.SilenceErrors, cmd.SilenceUsage = true, true
				return caddycmd.WrapCommandFuncForCobra(cmdExplain)(cmd, args)
			},
		}
		f := cmd.Flags()
		f.StringP("config", "c", "", "Configuration file to explain against")
		f.StringP("adapter", "a", "", "Name of config adapter to apply")
		f.String("address", "", "Admin API address of a running instance (instead of --config)")
		f.String("server-name", "", "Server name the client asks for (SNI and Host); required")
		f.String("listen", "", "Listener address, when several listeners could take the name (:8443)")
		f.String("cert", "", "The client's certificate chain, PEM (certificate first, then its intermediates)")
		f.String("path", "/", "Request path")
		f.String("method", "GET", "Request method")
		f.StringSlice("alpn", nil, "Protocols the client offers (default h2,http/1.1)")
		f.String("remote-ip", "", "The client's IP address (default 127.0.0.1)")
		f.String("upstream", "", "Dial this upstream of the config now and report the handshake")
		f.StringP("format", "f", "table", "Output format: table or json")
		trustline.AddCommand(cmd)
	})
}

// cmdExplain runs `caddy trustline explain`.
func cmdExplain(fl caddycmd.Flags) (int, error) {
	format := fl.String("format")
	if format != "table" && format != "json" {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("--format %q: want table or json", format)
	}
	req := Request{
		ServerName: fl.String("server-name"), Listen: fl.String("listen"), Path: fl.String("path"),
		Method: fl.String("method"), RemoteIP: fl.String("remote-ip"), Upstream: fl.String("upstream"),
	}
	if alpn, err := fl.GetStringSlice("alpn"); err == nil {
		req.ALPN = alpn
	}
	if file := fl.String("cert"); file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("--cert: %w", err)
		}
		if _, err := ParseChain(data); err != nil {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("--cert %s: %w", file, err)
		}
		req.Chain = string(data)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	parsed, err := ParseRequest(body)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	configFile, adapter, address := fl.String("config"), fl.String("adapter"), fl.String("address")
	var rep *Report
	switch {
	case configFile != "" && address != "":
		return caddy.ExitCodeFailedStartup, errors.New("--config and --address exclude each other: explain against a file, or ask a running instance")
	case configFile != "":
		cfg, file, _, err := caddycmd.LoadConfig(configFile, adapter)
		if err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
		if rep, err = Offline(cfg, parsed, "config "+file); err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
	default:
		if adapter != "" {
			return caddy.ExitCodeFailedStartup, errors.New("--adapter needs --config")
		}
		if rep, err = ask(address, body); err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
	}
	if err := topology.WriteTableOrJSON(os.Stdout, rep, format); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	code := rep.Verdict.ExitCode()
	if code == 1 {
		// Caddy's command wrapper exits with a status above 1 as given,
		// but turns 1 without an error into 0: the error is what makes it
		// exit 1 (and it is logged, on stderr, after the report)
		return code, fmt.Errorf("explain could not evaluate the client (undetermined): %s", rep.Verdict.Summary)
	}
	return code, nil
}

// ask asks a running instance: POST /trustline/explain.
func ask(address string, body []byte) (*Report, error) {
	hdr := http.Header{"Content-Type": {"application/json"}}
	addr, data, err := topology.AskAdmin(address, http.MethodPost, routePattern, hdr, bytes.NewReader(body), 16<<20, "", "the answer of")
	if err != nil {
		return nil, err
	}
	var rep Report
	if err := json.Unmarshal(data, &rep); err != nil || rep.Verdict.Outcome == "" {
		return nil, fmt.Errorf("the answer of %s is not an explanation: %s", addr, bytes.TrimSpace(data))
	}
	return &rep, nil
}
