package material

// Kind is the kind of material the source holds ("truststore", "bundle",
// "crl", ...), as in its metrics and logs.
func (r *Reloadable[T]) Kind() string { return r.spec.Kind }
