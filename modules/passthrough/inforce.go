package passthrough

import (
	"encoding/json"
	"slices"
	"sync"
)

// inForce holds the provisioned terminate_tls handlers of the configs in
// this process (newest last), so that `caddy trustline explain` asks the
// handler connections meet rather than a copy provisioned again: a copy
// would read Caddy's own trust_pool files now, and a file changed since
// the config was loaded is not what the running handler verifies with.
var inForce struct {
	sync.Mutex
	handlers []*TerminateTLS
}

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
	inForce.Lock()
	inForce.handlers = append(inForce.handlers, t)
	inForce.Unlock()
}

// Cleanup forgets the handler (its connection policies' modules are
// cleaned up by their context).
func (t *TerminateTLS) Cleanup() error {
	inForce.Lock()
	inForce.handlers = slices.DeleteFunc(inForce.handlers, func(h *TerminateTLS) bool { return h == t })
	inForce.Unlock()
	return nil
}

// InForce returns the terminate_tls handler provisioned in this process
// (the newest config's, during an admin reload) from raw, the handler's
// JSON in a config; nil when none is.
func InForce(raw json.RawMessage) *TerminateTLS {
	var t TerminateTLS
	if json.Unmarshal(raw, &t) != nil {
		return nil
	}
	key := configKey(&t)
	inForce.Lock()
	defer inForce.Unlock()
	for _, h := range slices.Backward(inForce.handlers) {
		if key != "" && h.key == key {
			return h
		}
	}
	return nil
}
