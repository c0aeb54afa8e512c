package topology

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// subcommands add the subcommands of `caddy trustline` that live in other
// packages (`caddy trustline explain`). Caddy's command factory builds the
// command lazily, after every package's init has run.
var subcommands []func(trustline *cobra.Command)

// RegisterSubcommand adds a subcommand to `caddy trustline`: add is called
// with the trustline command when Caddy builds its commands. Call it from
// an init function.
func RegisterSubcommand(add func(trustline *cobra.Command)) {
	subcommands = append(subcommands, add)
}

// AskAdmin sends one request to the admin API of a running instance
// (address as --address takes it; "" for the default one) and returns that
// instance's address and the answer, read up to limit bytes. The errors
// say "asking the running instance at <addr><purpose>" and "reading
// <answer> <addr>".
func AskAdmin(address, method, path string, hdr http.Header, body io.Reader, limit int64, purpose, answer string) (string, []byte, error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(address, nil, "", "")
	if err != nil {
		return "", nil, err
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, path, hdr, body)
	if err != nil {
		return addr, nil, fmt.Errorf("asking the running instance at %s%s: %w", addr, purpose, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return addr, nil, fmt.Errorf("reading %s %s: %w", answer, addr, err)
	}
	return addr, data, nil
}

// WriteTableOrJSON writes a command's report as indented JSON (format
// "json") or as its table (any other format).
func WriteTableOrJSON(w io.Writer, rep interface{ WriteTable(io.Writer) error }, format string) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteTable(w)
}
