package passthrough

import (
	"encoding/json"
	"slices"
	"sync"
)

// inForce holds the provisioned terminate_tls handlers of the configs in
// this process, by their configuration (newest last), so that `caddy
// trustline explain` asks the handler connections meet rather than a copy
// provisioned again: a copy would read Caddy's own trust_pool files now,
// and a file changed since the config was loaded is not what the running
// handler verifies with.
var inForce = struct {
	sync.Mutex
	byConfig map[string][]*TerminateTLS
}{byConfig: map[string][]*TerminateTLS{}}

// configKey is the canonical form of a terminate_tls handler's
// configuration (object keys sorted, no space): the same for the handler
// as provisioned and for its JSON read back from the running config,
// whose key order may differ.
func configKey(t *TerminateTLS) string {
	b, err := json.Marshal(t)
	if err != nil {
		return ""
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return ""
	}
	b, _ = json.Marshal(v)
	return string(b)
}

func (t *TerminateTLS) register() {
	if t.key == "" {
		return
	}
	inForce.Lock()
	inForce.byConfig[t.key] = append(inForce.byConfig[t.key], t)
	inForce.Unlock()
}

// Cleanup forgets the handler (its connection policies' modules are
// cleaned up by their context).
func (t *TerminateTLS) Cleanup() error {
	inForce.Lock()
	defer inForce.Unlock()
	list := slices.DeleteFunc(inForce.byConfig[t.key], func(h *TerminateTLS) bool { return h == t })
	if len(list) == 0 {
		delete(inForce.byConfig, t.key)
	} else {
		inForce.byConfig[t.key] = list
	}
	return nil
}

// InForce returns the terminate_tls handler provisioned in this process
// (the newest config's, during an admin reload) from raw, the handler's
// JSON in a config; nil when none is.
func InForce(raw json.RawMessage) *TerminateTLS {
	var t TerminateTLS
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil
	}
	key := configKey(&t)
	inForce.Lock()
	defer inForce.Unlock()
	list := inForce.byConfig[key]
	if key == "" || len(list) == 0 {
		return nil
	}
	return list[len(list)-1]
}
