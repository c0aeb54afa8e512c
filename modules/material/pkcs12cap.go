package material

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
)

// MaxPKCS12Iterations is the most key-derivation iterations the reader
// runs for one step of a PKCS#12 store (its MAC, an encrypted content, a
// shrouded key); a store that asks for more is refused before any
// derivation. go-pkcs12 sets no limit, and a hostile count (up to 2^31)
// keeps a reload busy for minutes. keytool writes 10,000, OpenSSL 3 2,048,
// OWASP's hardened PBKDF2-SHA256 600,000; Java refuses above 5,000,000.
const MaxPKCS12Iterations = 1_000_000

// Object identifiers of the PKCS#12 structures whose parameters hold an
// iteration count (RFC 7292, RFC 8018).
var (
	oidP12Data          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidP12EncryptedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 6}
	oidP12ShroudedKey   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 2}
	oidP12PBES2         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidP12PBKDF2        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidP12PBMAC1        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 14}
	oidP12LegacyPBE     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1} // pbeWithSHAAnd...
)

// The structures as go-pkcs12 v0.6.0 reads them, reduced to what leads to
// an iteration count (encoding/asn1 allows elements after a struct's last
// field): what fails to parse here fails there too.
type (
	p12PFX struct {
		Version  int
		AuthSafe p12ContentInfo
		MacData  p12MacData `asn1:"optional"`
	}
	p12ContentInfo struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue `asn1:"tag:0,explicit,optional"`
	}
	p12MacData struct {
		Mac struct {
			Algorithm pkix.AlgorithmIdentifier
			Digest    []byte
		}
		MacSalt    []byte
		Iterations int `asn1:"optional,default:1"`
	}
	p12EncryptedData struct {
		Version              int
		EncryptedContentInfo struct {
			ContentType asn1.ObjectIdentifier
			Algorithm   pkix.AlgorithmIdentifier
		}
	}
	p12SafeBag struct {
		ID    asn1.ObjectIdentifier
		Value asn1.RawValue `asn1:"tag:0,explicit"`
	}
	p12ShroudedKey struct {
		Algorithm pkix.AlgorithmIdentifier
	}
	p12PBES2Params struct {
		KDF    pkix.AlgorithmIdentifier
		Scheme pkix.AlgorithmIdentifier
	}
	p12PBKDF2Params struct {
		Salt       asn1.RawValue
		Iterations int
	}
	p12PBEParams struct {
		Salt       []byte
		Iterations int
	}
)

// checkPKCS12Iterations refuses a PKCS#12 store that asks for more than
// MaxPKCS12Iterations, read from its ASN.1 before anything is derived: the
// MAC's count, each encrypted content's and each shrouded key's outside
// one. What an encrypted content holds is read only after the MAC was
// checked, so whoever wrote it knows the password.
func checkPKCS12Iterations(data []byte) error {
	var pfx p12PFX
	if err := unmarshalAll(data, &pfx); err != nil {
		// go-pkcs12 reads the same structure first, and says so itself
		return nil
	}
	if len(pfx.MacData.Mac.Algorithm.Algorithm) > 0 {
		alg := pfx.MacData.Mac.Algorithm
		if alg.Algorithm.Equal(oidP12PBMAC1) {
			var params p12PBES2Params // PBMAC1: a KDF, then a MAC algorithm
			if err := unmarshalAll(alg.Parameters.FullBytes, &params); err != nil {
				return fmt.Errorf("MAC parameters: %w", err)
			}
			if err := checkKDF("MAC", params.KDF); err != nil {
				return err
			}
		} else if err := checkCount("MAC", pfx.MacData.Iterations); err != nil {
			return err
		}
	}
	if !pfx.AuthSafe.ContentType.Equal(oidP12Data) {
		return nil // refused by go-pkcs12 before any derivation
	}
	var content asn1.RawValue
	if err := unmarshalAll(pfx.AuthSafe.Content.Bytes, &content); err != nil {
		return err
	}
	var safe []p12ContentInfo
	if err := unmarshalAll(content.Bytes, &safe); err != nil {
		return err
	}
	for i, ci := range safe {
		switch {
		case ci.ContentType.Equal(oidP12EncryptedData):
			var ed p12EncryptedData
			if err := unmarshalAll(ci.Content.Bytes, &ed); err != nil {
				return err
			}
			if err := checkPBE(fmt.Sprintf("encrypted content %d", i+1), ed.EncryptedContentInfo.Algorithm); err != nil {
				return err
			}
		case ci.ContentType.Equal(oidP12Data):
			var plain []byte
			if err := unmarshalAll(ci.Content.Bytes, &plain); err != nil {
				return err
			}
			var bags []p12SafeBag
			if err := unmarshalAll(plain, &bags); err != nil {
				return err
			}
			for _, bag := range bags {
				if !bag.ID.Equal(oidP12ShroudedKey) {
					continue
				}
				var key p12ShroudedKey
				if err := unmarshalAll(bag.Value.Bytes, &key); err != nil {
					return err
				}
				if err := checkPBE("shrouded key", key.Algorithm); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// checkPBE checks an encryption's iteration count: PBES2 (PBKDF2) or one
// of the legacy PKCS#12 PBE schemes. Other algorithms are refused by
// go-pkcs12 before any derivation.
func checkPBE(what string, alg pkix.AlgorithmIdentifier) error {
	switch {
	case alg.Algorithm.Equal(oidP12PBES2):
		var params p12PBES2Params
		if err := unmarshalAll(alg.Parameters.FullBytes, &params); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return checkKDF(what, params.KDF)
	case len(alg.Algorithm) == len(oidP12LegacyPBE)+1 && alg.Algorithm[:len(oidP12LegacyPBE)].Equal(oidP12LegacyPBE):
		var params p12PBEParams
		if err := unmarshalAll(alg.Parameters.FullBytes, &params); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return checkCount(what, params.Iterations)
	}
	return nil
}

func checkKDF(what string, kdf pkix.AlgorithmIdentifier) error {
	if !kdf.Algorithm.Equal(oidP12PBKDF2) {
		return nil // refused by go-pkcs12 before any derivation
	}
	var params p12PBKDF2Params
	if err := unmarshalAll(kdf.Parameters.FullBytes, &params); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return checkCount(what, params.Iterations)
}

func checkCount(what string, n int) error {
	if n > MaxPKCS12Iterations {
		return fmt.Errorf("%s: iteration count %d exceeds the cap of %d (re-export the store with fewer, e.g. `openssl pkcs12 -export -iter 10000`, keytool's default)", what, n, MaxPKCS12Iterations)
	}
	return nil
}

// unmarshalAll is asn1.Unmarshal refusing trailing data, as go-pkcs12's
// own reader does.
func unmarshalAll(in []byte, out any) error {
	rest, err := asn1.Unmarshal(in, out)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return errors.New("trailing data")
	}
	return nil
}
