package cms

import (
	"bytes"
	"encoding/base64"
	"errors"
	"path/filepath"
	"regexp"
	"testing"
)

// seeds are real client and server bytes: what certmonger and scepclient sent (SCEP testdata) and the
// BinarySecurityTokens of the captured MS-WSTEP exchanges (CMC testdata, from the interop captures).
func seeds(f *testing.F) (signed, enveloped [][]byte) {
	files, _ := filepath.Glob(filepath.Join("..", "scep", "testdata", "captured", "*.der"))
	for _, name := range files {
		der := readFile(f, name)
		signed = append(signed, der)
		if sd, err := ParseSignedData(der); err == nil && len(sd.Content) > 0 {
			enveloped = append(enveloped, sd.Content)
		}
	}
	token := regexp.MustCompile(`(?s)BinarySecurityToken[^>]*>([^<]+)</`)
	xmls, _ := filepath.Glob(filepath.Join("..", "cmc", "testdata", "*.xml"))
	for _, name := range xmls {
		for _, m := range token.FindAllSubmatch(readFile(f, name), -1) {
			if der, err := base64.StdEncoding.DecodeString(string(bytes.Join(bytes.Fields(m[1]), nil))); err == nil {
				signed = append(signed, der)
			}
		}
	}
	if len(files) == 0 || len(xmls) == 0 {
		f.Fatal("no captured messages in ../scep/testdata or ../cmc/testdata")
	}
	return signed, enveloped
}

// FuzzParseSignedData: whatever it gets, ParseSignedData must not panic, must refuse with an *Error, and what
// it accepts must be within its limits and safe to verify.
func FuzzParseSignedData(f *testing.F) {
	signed, _ := seeds(f)
	for _, s := range signed {
		f.Add(s)
	}
	key := rsaKey(f)
	f.Fuzz(func(t *testing.T, der []byte) {
		sd, err := ParseSignedData(der)
		if err != nil {
			var e *Error
			if sd != nil || !errors.As(err, &e) {
				t.Fatalf("ParseSignedData = %v, %v; want nil and an *Error", sd, err)
			}
			return
		}
		if len(sd.Certificates) > maxCertificates || len(sd.SignerInfos) > maxSignerInfos || sd.ContentType == nil {
			t.Fatalf("accepted %d certificates, %d signers, content type %v", len(sd.Certificates), len(sd.SignerInfos), sd.ContentType)
		}
		for i := range sd.SignerInfos {
			si := &sd.SignerInfos[i]
			if (si.SID.Issuer == nil) == (len(si.SID.SubjectKeyID) == 0) {
				t.Fatalf("sid %+v is neither issuerAndSerialNumber nor a subject key identifier", si.SID)
			}
			for _, c := range sd.Certificates {
				_ = si.SID.Matches(c)
				_ = si.Verify(c.PublicKey, sd.ContentType, sd.Content)
			}
			if err := si.Verify(key.Public(), sd.ContentType, sd.Content); err == nil {
				t.Fatal("a fuzzed SignerInfo verified with an unrelated key")
			}
		}
	})
}

// FuzzParseEnvelopedData: ParseEnvelopedData and Decrypt with a key the envelope is not for must not panic
// and must refuse with an *Error.
func FuzzParseEnvelopedData(f *testing.F) {
	_, enveloped := seeds(f)
	for _, e := range enveloped {
		f.Add(e)
	}
	key := rsaKey(f)
	cert := selfSigned(f, key, "fuzz")
	if own, err := Encrypt([]byte("content"), cert, AES256CBC); err == nil {
		f.Add(own)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		env, err := ParseEnvelopedData(der)
		var e *Error
		if err != nil {
			if !errors.As(err, &e) {
				t.Fatalf("ParseEnvelopedData error %v is not an *Error", err)
			}
			return
		}
		if len(env.Recipients) > maxRecipientInfos {
			t.Fatalf("%d recipients", len(env.Recipients))
		}
		for _, allowDES := range []bool{false, true} {
			if _, err := env.Decrypt(cert, key, DecryptOptions{AllowDES: allowDES}); err != nil && !errors.As(err, &e) {
				t.Fatalf("Decrypt error %v is not an *Error", err)
			}
		}
	})
}
