package cluster

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// call runs an admin handler and returns the status and the body or the
// error's message.
func call(h caddy.AdminHandlerFunc, method, target string) (int, string) {
	rec := httptest.NewRecorder()
	err := h(rec, httptest.NewRequest(method, target, nil))
	if err != nil {
		var api caddy.APIError
		if errors.As(err, &api) {
			return api.HTTPStatus, api.Err.Error()
		}
		return 500, err.Error()
	}
	return rec.Code, rec.Body.String()
}

// TestAdmin: the status and the forced renewal on the admin API, and
// their errors.
func TestAdmin(t *testing.T) {
	active.Store(nil)
	if code, msg := call(serveStatus, "GET", "/trustline/cluster"); code != 404 || !strings.Contains(msg, "trustline_cluster is not configured") {
		t.Errorf("no app: %d %s", code, msg)
	}
	n := startNode(t, "a", nodeOpts{fileDir: t.TempDir(), cluster: `{"check_interval": 3600000000000}`})
	if active.Load() != n.app {
		t.Fatal("Start did not make the app the active one")
	}
	for _, tc := range []struct {
		method, target string
		code           int
		want           string
	}{
		{"GET", "/trustline/cluster/renew?ca=local", 405, "use POST"},
		{"POST", "/trustline/cluster", 405, "use GET"},
		{"POST", "/trustline/cluster/renew?ca=fleet", 404, `ca "fleet" is not coordinated by trustline_cluster (coordinated: [local])`},
		{"POST", "/trustline/cluster/renew?ca=local&wait=soon", 400, `wait="soon": want a duration from 0 to 1h0m0s`},
		{"POST", "/trustline/cluster/renew?ca=local&hold=11m", 400, `hold="11m": want a duration from 0 to 10m0s`},
	} {
		h := serveRenew
		if !strings.Contains(tc.target, "/renew") {
			h = serveStatus
		}
		if code, msg := call(h, tc.method, tc.target); code != tc.code || !strings.Contains(msg, tc.want) {
			t.Errorf("%s %s: %d %s, want %d %q", tc.method, tc.target, code, msg, tc.code, tc.want)
		}
	}
	before := n.stored(t)
	code, body := call(serveRenew, "POST", "/trustline/cluster/renew") // one CA: ?ca may be left out
	var r renewal
	if code != 200 || json.Unmarshal([]byte(body), &r) != nil || !r.Renewed || r.PreviousSerial != before || r.Serial != n.stored(t) {
		t.Fatalf("renew: %d %s", code, body)
	}
	code, body = call(serveStatus, "GET", "/trustline/cluster")
	var st status
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || len(st.CAs) != 1 {
		t.Fatalf("status: %d %s", code, body)
	}
	if cs := st.CAs[0]; cs.Intermediate == nil || cs.Intermediate.Serial != r.Serial || !cs.CaddyInStep || cs.CaddySerial != r.Serial ||
		cs.Root == nil || cs.Intermediate.RenewAt.IsZero() || cs.Error != "" {
		t.Errorf("status after the renewal: %s", body)
	}
	n.stop()
	if active.Load() != nil {
		t.Error("Stop left the app active")
	}
}
