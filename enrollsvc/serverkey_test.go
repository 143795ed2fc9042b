package enrollsvc

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"testing"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/policy"
)

// TestServerKeyFor: a key made here is one the template's key rules accept (the issuance gate's
// own check), of the size and curve the template asks for.
func TestServerKeyFor(t *testing.T) {
	for _, tc := range []struct {
		alg       string
		min, want int
		ec        bool
	}{
		{"", 0, 2048, false}, {"RSA", 2048, 2048, false}, {"", 3000, 3072, false}, {"RSA", 4096, 4096, false},
		{"ECDSA_P256", 0, 256, true}, {"ECDH_P384", 0, 384, true}, {"ECDSA", 521, 521, true},
	} {
		tmpl := policy.Template{KeyAlgorithm: tc.alg, MinimalKeySize: tc.min}
		k, err := ServerKeyFor(tmpl)
		if err != nil {
			t.Fatalf("%s/%d: %v", tc.alg, tc.min, err)
		}
		bits := 0
		switch pk := k.(type) {
		case *rsa.PrivateKey:
			bits = pk.N.BitLen()
		case *ecdsa.PrivateKey:
			bits = pk.Curve.Params().BitSize
		}
		if _, isEC := k.(*ecdsa.PrivateKey); isEC != tc.ec || bits != tc.want {
			t.Errorf("%s/%d: a %T of %d bits, want %d (EC %v)", tc.alg, tc.min, k, bits, tc.want, tc.ec)
		}
		if p := issue.KeyProblems(k.Public(), issue.KeyRules{Algorithm: tc.alg, MinBits: tc.min}, nil); len(p) > 0 {
			t.Errorf("%s/%d: the gate would refuse the key: %v", tc.alg, tc.min, p)
		}
	}
	if _, err := ServerKeyFor(policy.Template{MinimalKeySize: 8192}); err == nil {
		t.Error("an 8192-bit minimum was accepted")
	}
	if _, err := ServerKeyFor(policy.Template{KeyAlgorithm: "DSA"}); err == nil {
		t.Error("a DSA template was accepted")
	}
}
