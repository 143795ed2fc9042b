package cmc

import (
	"crypto/x509"
	"testing"
)

// FuzzParseRequest feeds client tokens to ParseRequest: the captured cepces request, the captured reply (not a
// request, but a SignedData a client could send back) and requests of every kind built here. It must never
// panic, and what it accepts must be complete.
func FuzzParseRequest(f *testing.F) {
	f.Add(capturedToken(f, "002_MockCA_CES_UsernamePassword_service_svc_CES.xml"))
	f.Add(capturedToken(f, "004_MockCA_CES_UsernamePassword_service_svc_CES.response.xml"))
	ca := newTestCA(f)
	key, oldKey := newECKey(f), newECKey(f)
	old := ca.issue(f, oldKey.Public(), "host", 3)
	csr := makeCSR(f, key, "host", nameValueAttr(f, "CertificateTemplate", "User"))
	f.Add(csr)
	f.Add(signedDataT(f, oidPKIData, pkiDataT(f, 1, csr,
		control(f, 2, oidCMCRegInfo, mustMarshal(f, []byte("CertificateTemplate=User&a=b")))),
		nil, testSigner{key: key, ski: skiOf(f, key.Public())}))
	renewal := makeCSR(f, key, "host", renewalAttr(old))
	f.Add(signedDataT(f, oidData, renewal, []*x509.Certificate{old, ca.cert}, testSigner{key: oldKey, cert: old}))
	f.Add(signedDataT(f, oidPKIData, pkiDataT(f, 1, renewal), []*x509.Certificate{old},
		testSigner{key: oldKey, cert: old}, testSigner{key: key, ski: skiOf(f, key.Public())}))
	xkey, rkey := rsaKeyNamed(f, "exchange"), rsaKeyNamed(f, "client")
	if env, err := EncryptKey(rkey, exchangeCert(f, xkey)); err == nil {
		if der, err := SignArchival(rsaCSR(f, rkey), rkey, env); err == nil {
			f.Add(der)
		}
	}
	agent := ca.issue(f, oldKey.Public(), "agent", 4)
	if der, err := SignOnBehalf(csr, `CORP\alice`, nil, agent, oldKey); err == nil {
		f.Add(der)
	}
	if der, err := FailureResponse(1, FailBadRequest, "x"); err == nil {
		f.Add(der)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		r, err := ParseRequest(der)
		if err != nil {
			if FailInfoOf(err) < 0 || err.Error() == "" {
				t.Fatalf("error without text or failInfo: %v", err)
			}
			return
		}
		if r.CertificateRequest == nil || len(r.CSR) == 0 || r.NameValues == nil {
			t.Fatalf("accepted request is incomplete: %+v", r)
		}
		switch r.Kind {
		case OnBehalf:
			if r.RequesterName == "" || len(r.Agents) == 0 || r.OldCert != nil {
				t.Fatalf("on-behalf request without requester or agent, or with an old certificate")
			}
		case PKCS10, CMC:
			if r.ArchivedKey != nil && (r.Kind != CMC || !r.SignerIsRequestKey || r.EncryptedKeyHash == nil) {
				t.Fatalf("archived key accepted in a %v request (signed by the request key: %v)", r.Kind, r.SignerIsRequestKey)
			}
			if r.OldCert != nil {
				t.Fatalf("%v request with an old certificate", r.Kind)
			}
		case Renewal:
			if r.OldCert == nil || r.ArchivedKey != nil {
				t.Fatalf("renewal without an old certificate, or with an archived key")
			}
		default:
			t.Fatalf("kind %v", r.Kind)
		}
	})
}
