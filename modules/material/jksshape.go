package material

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// checkJKSShape walks a JKS store's layout before keystore-go reads it:
// keystore-go allocates every length the file states (up to 4 GiB per
// field) before reading it. Here every length must fit in the bytes left,
// and the walk takes time in proportion to the file.
func checkJKSShape(data []byte) error {
	s := cryptobyte.String(data)
	var magic, version, entries uint32
	if !s.ReadUint32(&magic) || !s.ReadUint32(&version) || !s.ReadUint32(&entries) {
		return errors.New("header cut short: the store is truncated or corrupt")
	}
	if version != 1 && version != 2 {
		return fmt.Errorf("unknown JKS version %d", version)
	}
	cert := func() bool {
		var certType cryptobyte.String
		var n uint32
		return (version == 1 || s.ReadUint16LengthPrefixed(&certType)) &&
			s.ReadUint32(&n) && s.Skip(int(n))
	}
	for i := uint32(0); i < entries; i++ {
		var tag, n, certs uint32
		var alias cryptobyte.String
		var created uint64
		if !s.ReadUint32(&tag) || !s.ReadUint16LengthPrefixed(&alias) || !s.ReadUint64(&created) {
			return fmt.Errorf("entry %d cut short: the store is truncated or corrupt", i+1)
		}
		switch tag {
		case 1: // private key: the encrypted key, then its chain
			if !s.ReadUint32(&n) || !s.Skip(int(n)) || !s.ReadUint32(&certs) {
				return fmt.Errorf("entry %d: private key cut short: the store is truncated or corrupt", i+1)
			}
			for j := uint32(0); j < certs; j++ {
				if !cert() {
					return fmt.Errorf("entry %d: certificate %d of %d cut short: the store is truncated or corrupt", i+1, j+1, certs)
				}
			}
		case 2: // trusted certificate
			if !cert() {
				return fmt.Errorf("entry %d: certificate cut short: the store is truncated or corrupt", i+1)
			}
		default:
			return fmt.Errorf("entry %d: unknown entry type %d", i+1, tag)
		}
	}
	if len(s) < 20 {
		return errors.New("integrity digest cut short: the store is truncated or corrupt")
	}
	return nil
}
