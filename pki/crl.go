package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// DefaultCRLValidity is the NextUpdate distance Revoke uses when given zero.
// meshd does not refuse a CRL past its NextUpdate (an offline CA cannot be
// expected to re-sign on a schedule; an old list is better than none), so the
// field is informational.
const DefaultCRLValidity = 365 * 24 * time.Hour

// maxRevocationComment bounds the free-text reason stored per entry.
const maxRevocationComment = 256

// CRL is a certificate revocation list signed by the mesh CA.
type CRL struct {
	List *x509.RevocationList
	Raw  []byte // DER
}

// RevokedEntry is one revoked certificate as recorded in a CRL.
type RevokedEntry struct {
	Serial     *big.Int
	Time       time.Time
	ReasonCode int    // RFC 5280 CRLReason, 0 = unspecified
	Comment    string // operator's free text ("" if none)
}

// ParseCRLDER parses a DER CRL. It does not check who signed it; UpdateCRL and
// Revoke do.
func ParseCRLDER(der []byte) (*CRL, error) {
	list, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CRL: %w", err)
	}
	return &CRL{List: list, Raw: bytes.Clone(der)}, nil
}

// ParseCRLPEM parses the first "X509 CRL" block of data.
func ParseCRLPEM(data []byte) (*CRL, error) {
	der, ok := firstPEM(data, pemCRL)
	if !ok {
		return nil, errors.New("pki: parse CRL: no X509 CRL block in PEM data")
	}
	return ParseCRLDER(der)
}

// PEM encodes the CRL as an "X509 CRL" block.
func (c *CRL) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCRL, Bytes: c.Raw})
}

// Number returns a copy of the CRL number, 0 when the list has none.
func (c *CRL) Number() *big.Int {
	if c == nil || c.List == nil || c.List.Number == nil {
		return new(big.Int)
	}
	return new(big.Int).Set(c.List.Number)
}

// Entries lists the revoked certificates in the order the CRL holds them.
func (c *CRL) Entries() []RevokedEntry {
	if c == nil || c.List == nil {
		return nil
	}
	out := make([]RevokedEntry, 0, len(c.List.RevokedCertificateEntries))
	for _, e := range c.List.RevokedCertificateEntries {
		out = append(out, RevokedEntry{
			Serial:     e.SerialNumber,
			Time:       e.RevocationTime,
			ReasonCode: e.ReasonCode,
			Comment:    revocationComment(e.Extensions),
		})
	}
	return out
}

func revocationComment(exts []pkix.Extension) string {
	for _, ext := range exts {
		if !ext.Id.Equal(OIDRevocationComment) {
			continue
		}
		var s string
		if rest, err := asn1.UnmarshalWithParams(ext.Value, &s, "utf8"); err == nil && len(rest) == 0 {
			return s
		}
	}
	return ""
}

// Revoke returns a new CRL signed by the CA holding prev's entries plus certs
// (certificates already listed are not added twice), numbered prev.Number+1
// (1 when prev is nil), valid for validity (zero: DefaultCRLValidity). reason
// is free text kept in every new entry; if it names an RFC 5280 reason
// ("keyCompromise", "superseded", "cessation-of-operation" ...) the entry also
// carries that reason code. prev must be signed by this CA (ErrCRLSignature);
// every cert must have been issued by it (ErrUnknownCA).
func (ca *CA) Revoke(prev *CRL, certs []*x509.Certificate, reason string, validity time.Duration) (*CRL, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("pki: revoke: no CA")
	}
	serials := make([]*big.Int, 0, len(certs))
	for _, c := range certs {
		if c == nil {
			continue
		}
		if err := c.CheckSignatureFrom(ca.Cert); err != nil {
			return nil, fmt.Errorf("%w: %q (serial %x) was not issued by the CA %q", ErrUnknownCA, c.Subject.CommonName, c.SerialNumber, ca.Cert.Subject.CommonName)
		}
		serials = append(serials, c.SerialNumber)
	}
	return ca.RevokeSerials(prev, serials, reason, validity)
}

// RevokeSerials is Revoke by serial number, for certificates whose file is
// gone (a lost node): nothing checks that the CA issued them, so the caller
// should (the CA directory's index records every serial it issued).
func (ca *CA) RevokeSerials(prev *CRL, serials []*big.Int, reason string, validity time.Duration) (*CRL, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("pki: revoke: no CA")
	}
	if validity < 0 {
		return nil, fmt.Errorf("pki: CRL validity %v: must not be negative", validity)
	}
	if validity == 0 {
		validity = DefaultCRLValidity
	}
	code, comment, err := parseRevocationReason(reason)
	if err != nil {
		return nil, err
	}
	number := big.NewInt(1)
	var entries []x509.RevocationListEntry
	seen := map[string]bool{}
	if prev != nil {
		if err := checkCRLSignature(prev, ca.Cert); err != nil {
			return nil, err
		}
		number.Add(prev.Number(), big.NewInt(1))
		for _, e := range prev.List.RevokedCertificateEntries {
			if e.SerialNumber == nil || seen[e.SerialNumber.String()] {
				continue
			}
			seen[e.SerialNumber.String()] = true
			var extra []pkix.Extension
			for _, ext := range e.Extensions {
				// x509 re-creates the reason code from ReasonCode.
				if !ext.Id.Equal(oidReasonCode) {
					extra = append(extra, ext)
				}
			}
			entries = append(entries, x509.RevocationListEntry{
				SerialNumber:    e.SerialNumber,
				RevocationTime:  e.RevocationTime,
				ReasonCode:      e.ReasonCode,
				ExtraExtensions: extra,
			})
		}
	}
	now := time.Now()
	for _, serial := range serials {
		if serial == nil || serial.Sign() <= 0 {
			return nil, fmt.Errorf("pki: revoke: serial %v: must be positive", serial)
		}
		if seen[serial.String()] {
			continue
		}
		seen[serial.String()] = true
		e := x509.RevocationListEntry{SerialNumber: new(big.Int).Set(serial), RevocationTime: now, ReasonCode: code}
		if comment != "" {
			v, err := asn1.MarshalWithParams(comment, "utf8")
			if err != nil {
				return nil, fmt.Errorf("pki: encode revocation reason: %w", err)
			}
			e.ExtraExtensions = []pkix.Extension{{Id: OIDRevocationComment, Value: v}}
		}
		entries = append(entries, e)
	}
	tmpl := &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                now,
		NextUpdate:                now.Add(validity),
		RevokedCertificateEntries: entries,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CRL: %w", err)
	}
	return ParseCRLDER(der)
}

var oidReasonCode = asn1.ObjectIdentifier{2, 5, 29, 21}

// rfc5280Reasons maps CRLReason names, lowercased without separators, to
// their codes (RFC 5280 section 5.3.1; certificateHold is not offered because
// meshd has no "unhold").
var rfc5280Reasons = map[string]int{
	"unspecified":          0,
	"keycompromise":        1,
	"cacompromise":         2,
	"affiliationchanged":   3,
	"superseded":           4,
	"cessationofoperation": 5,
	"privilegewithdrawn":   9,
}

func parseRevocationReason(text string) (code int, comment string, err error) {
	if len(text) > maxRevocationComment || !utf8.ValidString(text) {
		return 0, "", fmt.Errorf("pki: revocation reason: want at most %d bytes of UTF-8", maxRevocationComment)
	}
	for _, r := range text {
		if unicode.IsControl(r) {
			return 0, "", errors.New("pki: revocation reason: control characters are not allowed")
		}
	}
	key := strings.NewReplacer("-", "", "_", "", " ", "").Replace(strings.ToLower(text))
	return rfc5280Reasons[key], text, nil
}

// checkCRLSignature verifies that crl was issued and signed by ca.
func checkCRLSignature(crl *CRL, ca *x509.Certificate) error {
	if crl == nil || crl.List == nil {
		return fmt.Errorf("%w: no CRL", ErrCRLSignature)
	}
	if ca == nil {
		return fmt.Errorf("%w: no CA", ErrCRLSignature)
	}
	if !bytes.Equal(crl.List.RawIssuer, ca.RawSubject) {
		return fmt.Errorf("%w: issued by %q, not %q", ErrCRLSignature, crl.List.Issuer.String(), ca.Subject.String())
	}
	if err := crl.List.CheckSignatureFrom(ca); err != nil {
		return fmt.Errorf("%w: %v", ErrCRLSignature, err)
	}
	return nil
}
