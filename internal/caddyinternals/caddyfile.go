package caddyinternals

import (
	"encoding/json"
	"fmt"
	"reflect"
	"unsafe"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// SiteBlock returns the site block a directive is in, as httpcaddyfile
// parsed it (read-only: the slices are httpcaddyfile's own).
//
// It reads Helper's unexported parentBlock: httpcaddyfile gives a
// directive no other way to learn its site's addresses or its `bind`,
// which the passthrough directive needs to know which listener it is on.
// TestCaddyfileReaches pins it.
func SiteBlock(h httpcaddyfile.Helper) (caddyfile.ServerBlock, error) {
	f := reflect.ValueOf(&h).Elem().FieldByName("parentBlock")
	if !f.IsValid() || f.Type() != reflect.TypeFor[caddyfile.ServerBlock]() {
		return caddyfile.ServerBlock{}, fmt.Errorf("httpcaddyfile.Helper has no parentBlock of type caddyfile.ServerBlock (written against Caddy %s): the passthrough directive needs updating", CaddyVersion)
	}
	return *(*caddyfile.ServerBlock)(unsafe.Pointer(f.UnsafeAddr())), nil
}

// EditServersOptions calls edit with the listener address (empty: the
// option applies to every server), protocols and listener wrappers of
// each `servers` global option of the Caddyfile being adapted, and gives
// the option the wrappers edit returns; httpcaddyfile sets them on the
// matching server after the site blocks were read.
//
// The option's value is a slice of httpcaddyfile's unexported
// serverOptions, read and written by field name (ListenerAddress,
// Protocols, ListenerWrappersRaw): a directive that adds listener wrappers
// to its site's server must put them there when such an option applies,
// or httpcaddyfile replaces them. TestCaddyfileReaches pins it.
func EditServersOptions(h httpcaddyfile.Helper, edit func(address string, protocols []string, wrappers []json.RawMessage) ([]json.RawMessage, error)) error {
	opt := h.Option("servers")
	if opt == nil {
		return nil
	}
	list := reflect.ValueOf(opt)
	broken := fmt.Errorf("the `servers` option of this Caddy version (%T) is not the one of Caddy %s: the passthrough directive needs updating", opt, CaddyVersion)
	if list.Kind() != reflect.Slice || list.Type().Elem().Kind() != reflect.Struct {
		return broken
	}
	for i := range list.Len() {
		e := list.Index(i)
		la, protos, wrappers := e.FieldByName("ListenerAddress"), e.FieldByName("Protocols"), e.FieldByName("ListenerWrappersRaw")
		if !la.IsValid() || la.Kind() != reflect.String || !protos.IsValid() || protos.Type() != reflect.TypeFor[[]string]() ||
			!wrappers.IsValid() || wrappers.Type() != reflect.TypeFor[[]json.RawMessage]() || !wrappers.CanSet() {
			return broken
		}
		w, err := edit(la.String(), protos.Interface().([]string), wrappers.Interface().([]json.RawMessage))
		if err != nil {
			return err
		}
		wrappers.Set(reflect.ValueOf(w))
	}
	return nil
}
