package topology

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "trustline",
		Usage: "topology [--config <path> [--adapter <name>]] [--address <admin>] [--format table|json|html|svg] [--fail-on warning|error]",
		Short: "Commands of the trustline suite",
		Long: `
Commands of the trustline suite.

  caddy trustline topology --config Caddyfile
  caddy trustline explain --config Caddyfile --server-name api.example.com --cert client.pem

reports where TLS ends in a config: per listener, host and route, the
inbound leg (plain HTTP, TLS terminated with which certificate, mTLS
verified against which pool, passed through) and the outbound legs (plain
HTTP, TLS verified against which pool, mTLS with which client identity,
skip-verify), every certificate in play with its expiry, and findings with
the config path and the fix; the second says, step by step, what the
server does with one client certificate, with the server's own code.`,
		CobraFunc: func(cmd *cobra.Command) {
			topo := &cobra.Command{
				Use:   "topology [--config <path> [--adapter <name>]] [--address <admin>] [--format table|json|html|svg] [--fail-on warning|error]",
				Short: "Report where TLS ends, the certificates in play, and findings",
				Long: `
Reports where TLS ends in a config: per listener, host and route, the
inbound leg and the outbound legs, every certificate in play (server
certificates, client identities, trust anchors) with subject and expiry,
and findings (plaintext legs after termination, insecure_skip_verify,
client_auth that does not verify, identity headers forwarded without
stripping, certificates expiring within 14 days (those Caddy manages: not
renewed in time), expired CAs in trust pools, passthrough without a
default route), each with its config path and how to fix it.

With --config, it adapts and analyses that config (certificate files are
read from this machine). Without it, it asks the running instance (its
admin API at --address, or the address of the config) for its report:
GET /trustline/topology.

--format html writes a self-contained page with the topology drawn (no
script, nothing fetched), --format svg the bare picture:

  caddy trustline topology --config Caddyfile --format html > topology.html

--fail-on warning|error exits with status 2 when a finding at or above
that severity exists, for CI. Status 1 means the report could not be
made.`,
				RunE: caddycmd.WrapCommandFuncForCobra(cmdTopology),
			}
			topo.Flags().StringP("config", "c", "", "Configuration file to analyse")
			topo.Flags().StringP("adapter", "a", "", "Name of config adapter to apply")
			topo.Flags().String("address", "", "Admin API address of a running instance (without --config)")
			topo.Flags().StringP("format", "f", "table", "Output format: table, json, html (a page with the picture) or svg")
			topo.Flags().String("fail-on", "", "Exit with status 2 when a finding at or above this severity exists: warning or error")
			cmd.AddCommand(topo)
			for _, add := range subcommands { // caddy trustline explain, ...
				add(cmd)
			}
		},
	})
}

// cmdTopology runs `caddy trustline topology`.
func cmdTopology(fl caddycmd.Flags) (int, error) {
	format := fl.String("format")
	if err := checkReportFormat(format); err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("--%w", err)
	}
	var failOn Severity
	if s := fl.String("fail-on"); s != "" {
		sev, ok := ParseSeverity(s)
		if !ok || sev == SeverityInfo {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("--fail-on %q: want warning or error", s)
		}
		failOn = sev
	}
	configFile, adapter, address := fl.String("config"), fl.String("adapter"), fl.String("address")

	var rep *Report
	var err error
	if configFile != "" {
		if address != "" {
			return caddy.ExitCodeFailedStartup, errors.New("--config and --address exclude each other: analyse a file, or ask a running instance")
		}
		var cfg []byte
		var file, adapterUsed string
		cfg, file, adapterUsed, err = caddycmd.LoadConfig(configFile, adapter)
		if err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
		rep, err = Analyze(cfg, Options{})
		if err == nil && adapterUsed == "caddyfile" && file != "-" {
			// findings point to the Caddyfile's lines (the JSON does not
			// carry them, so the file is read again here)
			if body, rerr := os.ReadFile(file); rerr == nil {
				err = rep.LocateCaddyfile(cfg, file, body)
			}
		}
	} else {
		if adapter != "" {
			return caddy.ExitCodeFailedStartup, errors.New("--adapter needs --config")
		}
		rep, err = fetchReport(address)
	}
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}

	switch {
	case format == "html" && configFile != "":
		err = rep.WriteHTML(os.Stdout, HTMLOptions{SVGOptions: SVGOptions{Now: rep.Generated}, Explain: "--config " + configFile})
	case format == "html" || format == "svg":
		err = writePicture(os.Stdout, rep, format, 0)
	default:
		err = WriteTableOrJSON(os.Stdout, rep, format)
	}
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if failOn != "" {
		if n := rep.Count(failOn); n > 0 {
			return 2, fmt.Errorf("%d finding(s) at or above %s", n, failOn)
		}
	}
	return caddy.ExitCodeSuccess, nil
}

// fetchReport asks a running instance for its report.
func fetchReport(address string) (*Report, error) {
	addr, body, err := AskAdmin(address, http.MethodGet, routePattern+"?format=json", nil, nil, 64<<20, " for its topology", "the topology from")
	if err != nil {
		return nil, err
	}
	var rep Report
	if err := json.Unmarshal(body, &rep); err != nil {
		return nil, fmt.Errorf("the answer of %s is not a topology report: %w", addr, err)
	}
	return &rep, nil
}

// writePicture writes the report drawn, as a page or as bare SVG; days
// left are counted from the report's time.
func writePicture(w io.Writer, rep *Report, format string, refresh int) error {
	opts := SVGOptions{Now: rep.Generated}
	if format == "svg" {
		return rep.WriteSVG(w, opts)
	}
	return rep.WriteHTML(w, HTMLOptions{SVGOptions: opts, Refresh: refresh})
}
