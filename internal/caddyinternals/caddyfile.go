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

// ServersOption is one `servers` global option as httpcaddyfile holds it
// while it reads the site blocks.
type ServersOption struct {
	ListenerAddress  string // empty: the option applies to every server
	Protocols        []string
	ListenerWrappers []json.RawMessage

	wrappers reflect.Value
}

// SetListenerWrappers replaces the option's listener wrappers; httpcaddyfile
// sets them on the matching server after the site blocks were read.
func (o *ServersOption) SetListenerWrappers(w []json.RawMessage) {
	o.wrappers.Set(reflect.ValueOf(w))
	o.ListenerWrappers = w
}

// ServersOptions returns the `servers` global options of the Caddyfile
// being adapted.
//
// The option's value is a slice of httpcaddyfile's unexported
// serverOptions, read (ListenerAddress, Protocols, ListenerWrappersRaw)
// and written (ListenerWrappersRaw) by field name: a directive that adds
// listener wrappers to its site's server must put them there when such an
// option applies, or httpcaddyfile replaces them with the option's.
// TestCaddyfileReaches pins it.
func ServersOptions(h httpcaddyfile.Helper) ([]*ServersOption, error) {
	opt := h.Option("servers")
	if opt == nil {
		return nil, nil
	}
	list := reflect.ValueOf(opt)
	broken := fmt.Errorf("the `servers` option of this Caddy version (%T) is not the one of Caddy %s: the passthrough directive needs updating", opt, CaddyVersion)
	if list.Kind() != reflect.Slice || list.Type().Elem().Kind() != reflect.Struct {
		return nil, broken
	}
	var out []*ServersOption
	for i := range list.Len() {
		e := list.Index(i)
		la, protos, wrappers := e.FieldByName("ListenerAddress"), e.FieldByName("Protocols"), e.FieldByName("ListenerWrappersRaw")
		if !la.IsValid() || la.Kind() != reflect.String || !protos.IsValid() || protos.Type() != reflect.TypeFor[[]string]() ||
			!wrappers.IsValid() || wrappers.Type() != reflect.TypeFor[[]json.RawMessage]() || !wrappers.CanSet() {
			return nil, broken
		}
		out = append(out, &ServersOption{
			ListenerAddress:  la.String(),
			Protocols:        protos.Interface().([]string),
			ListenerWrappers: wrappers.Interface().([]json.RawMessage),
			wrappers:         wrappers,
		})
	}
	return out, nil
}
