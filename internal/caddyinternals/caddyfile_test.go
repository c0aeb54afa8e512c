package caddyinternals

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// caddyfileProbe is what the probe directive read, one line per site.
var caddyfileProbe []string

func init() {
	httpcaddyfile.RegisterDirective("caddyinternals_probe", func(h httpcaddyfile.Helper) ([]httpcaddyfile.ConfigValue, error) {
		sb, err := SiteBlock(h)
		if err != nil {
			return nil, err
		}
		line := strings.Join(sb.GetKeysText(), ",") + ":"
		bind := false
		for _, seg := range sb.Segments {
			if seg.Directive() == "bind" {
				bind = true
				for _, tok := range seg {
					line += " " + tok.Text
				}
			}
		}
		err = EditServersOptions(h, func(address string, protocols []string, wrappers []json.RawMessage) ([]json.RawMessage, error) {
			var w []string
			for _, raw := range wrappers {
				w = append(w, string(raw))
			}
			line += " servers " + address + " " + strings.Join(protocols, ",") + " " + strings.Join(w, ",")
			if bind {
				return wrappers, nil
			}
			return append([]json.RawMessage{json.RawMessage(`{"wrapper":"probe"}`)}, wrappers...), nil
		})
		if err != nil {
			return nil, err
		}
		caddyfileProbe = append(caddyfileProbe, line)
		return nil, nil
	})
}

// TestCaddyfileReaches: the two reaches of the passthrough directive into
// httpcaddyfile's unexported state while a Caddyfile is adapted. SiteBlock
// reads Helper.parentBlock (the keys and the bind of the site block the
// directive is in); EditServersOptions reads the `servers` global option's
// unexported serverOptions and writes its ListenerWrappersRaw, which
// httpcaddyfile then sets on the server.
func TestCaddyfileReaches(t *testing.T) {
	const input = `{
	servers :8443 {
		listener_wrappers {
			tls
		}
		protocols h1 h2
	}
}
a.test:8443, b.test:8443 {
	caddyinternals_probe
}
c.test:9443 {
	bind 127.0.0.1 ::1
	caddyinternals_probe
}`
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapting with the probe directive (httpcaddyfile of Caddy %s changed?): %v", CaddyVersion, err)
	}
	want := []string{
		`a.test:8443,b.test:8443: servers :8443 h1,h2 {"wrapper":"tls"}`,
		`c.test:9443: bind 127.0.0.1 ::1 servers :8443 h1,h2 {"wrapper":"probe"},{"wrapper":"tls"}`,
	}
	if got := strings.Join(caddyfileProbe, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("httpcaddyfile.Helper.parentBlock and the `servers` option's serverOptions (Caddy %s) read\n%s\nwant\n%s", CaddyVersion, got, strings.Join(want, "\n"))
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Listen           []string          `json:"listen"`
					ListenerWrappers []json.RawMessage `json:"listener_wrappers"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	wrappers := ""
	for _, srv := range cfg.Apps.HTTP.Servers {
		if len(srv.Listen) == 1 && srv.Listen[0] == ":8443" {
			got, _ := json.Marshal(srv.ListenerWrappers)
			wrappers = string(got)
		}
	}
	if wrappers != `[{"wrapper":"probe"},{"wrapper":"tls"}]` {
		t.Errorf("the listener wrappers written into the `servers` option's ListenerWrappersRaw did not reach the server (Caddy %s): %s", CaddyVersion, out)
	}
}
