package cmc

import (
	"crypto/x509"
	"testing"

	"github.com/enrollment-appliance/aeappliance/proto/cms"
)

// TestOnBehalfRequest: a request an enrollment agent signs for another account (CMC as
// SignOnBehalf builds it, or a PKCS#7 around the PKCS#10 with RequesterName as a signed
// attribute) reads back as OnBehalf with the requester and the agent's certificate; a requester
// named twice differently, one with no agent signature, and one in a renewal are refused.
func TestOnBehalfRequest(t *testing.T) {
	ca := newTestCA(t)
	agentKey, targetKey := newECKey(t), newECKey(t)
	agent := ca.issue(t, agentKey.Public(), "agent", 11)
	csr := makeCSR(t, targetKey, "whatever the station wrote")

	der, err := SignOnBehalf(csr, `CORP\alice`, map[string]string{"CertificateTemplate": "SmartcardLogon"}, agent, agentKey)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != OnBehalf || r.RequesterName != `CORP\alice` || len(r.Agents) != 1 || !r.Agents[0].Equal(agent) || r.SignerIsRequestKey || r.OldCert != nil {
		t.Fatalf("ParseRequest = kind %v requester %q agents %d", r.Kind, r.RequesterName, len(r.Agents))
	}
	if v, _ := r.NameValue("certificatetemplate"); v != "SmartcardLogon" {
		t.Errorf("CertificateTemplate = %q", v)
	}

	// PKCS#7: the PKCS#10 as id-data, RequesterName signed by the agent.
	pair, _ := NameValuePair("requestername", `CORP\alice`)
	p7, err := cms.NewSignedData(cms.SignOptions{Content: csr, Certificates: []*x509.Certificate{agent}, Signer: agentKey, SignerCert: agent,
		Attributes: []cms.Attribute{{Type: oidNameValuePair, Values: [][]byte{pair}}}})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := ParseRequest(p7); err != nil || r.Kind != OnBehalf || r.RequesterName != `CORP\alice` || len(r.Agents) != 1 {
		t.Errorf("PKCS#7 on behalf: %v %+v", err, r)
	}
	// Without RequesterName the same PKCS#7 is a renewal by the signer's certificate.
	p7, _ = cms.NewSignedData(cms.SignOptions{Content: csr, Certificates: []*x509.Certificate{agent}, Signer: agentKey, SignerCert: agent})
	if r, err := ParseRequest(p7); err != nil || r.Kind != Renewal {
		t.Errorf("PKCS#7 without a requester: %v %+v", err, r)
	}

	// The requester named twice differently: in the PKCS#10 and in the agent's control.
	twice := makeCSR(t, targetKey, "x", nameValueAttr(t, "RequesterName", `CORP\bob`))
	if der, err := SignOnBehalf(twice, `CORP\alice`, nil, agent, agentKey); err != nil {
		t.Fatal(err)
	} else if _, err := ParseRequest(der); err == nil {
		t.Error("a requester named twice differently was accepted")
	}
	// A requester, and only the target's own signature.
	self := signedDataT(t, oidPKIData, pkiDataT(t, 1, makeCSR(t, targetKey, "x", nameValueAttr(t, "RequesterName", `CORP\alice`))), nil,
		testSigner{key: targetKey, ski: skiOf(t, targetKey.Public())})
	if _, err := ParseRequest(self); err == nil || FailInfoOf(err) != FailBadMessageCheck {
		t.Errorf("a requester without an agent's signature: %v", err)
	}
	// A renewal that names a requester.
	old := ca.issue(t, targetKey.Public(), "alice", 12)
	renewal := makeCSR(t, targetKey, "x", renewalAttr(old), nameValueAttr(t, "RequesterName", `CORP\alice`))
	if _, err := ParseRequest(signedDataT(t, oidData, renewal, []*x509.Certificate{old}, testSigner{key: targetKey, cert: old})); err == nil {
		t.Error("a renewal naming a requester was accepted")
	}
	if _, err := SignOnBehalf(csr, " ", nil, agent, agentKey); err == nil {
		t.Error("SignOnBehalf without a requester")
	}

	// Dual control: two agents sign the same request (msPKI-RA-Signature 2); both are Agents.
	otherKey := newECKey(t)
	other := ca.issue(t, otherKey.Public(), "officer", 13)
	dual := signedDataT(t, oidPKIData, pkiDataT(t, 1, csr, control(t, 2, oidCMCRegInfo, mustMarshal(t, []byte(`RequesterName=CORP%5Calice`)))),
		[]*x509.Certificate{agent, other}, testSigner{key: agentKey, cert: agent}, testSigner{key: otherKey, cert: other})
	if r, err := ParseRequest(dual); err != nil || r.Kind != OnBehalf || r.RequesterName != `CORP\alice` || len(r.Agents) != 2 {
		t.Errorf("two agents' signatures: %v %+v", err, r)
	}
}
