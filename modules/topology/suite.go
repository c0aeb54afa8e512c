package topology

// The suite's own HTTP handlers, layer-4 handlers and listener wrappers
// that bear on TLS legs (the peer forwarding handler, the passthrough
// listener wrapper and handlers). Each returns false for a module it does
// not know, which is then listed as not analysed.

func (a *analyzer) suiteHandler(sc *serverCtx, route *Route, name string, h map[string]any, path string) bool {
	return false
}

func (a *analyzer) suiteL4Handler(route *Route, st *l4State, name string, h map[string]any, path string, when []string) bool {
	return false
}

func (a *analyzer) suiteListenerWrapper(server, kind string, w map[string]any, path string, listen []string, notes *[]string) bool {
	return false
}
