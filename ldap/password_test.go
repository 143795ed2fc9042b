package ldap_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/ldap"
)

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	for _, user := range []string{e.s.Alice.UPN, "CORP\\alice", "corp\\alice"} {
		if sid, err := e.c.Authenticate(ctx, user, e.s.Alice.Password); err != nil || !sid.Equal(e.s.Alice.SID) {
			t.Errorf("Authenticate(%s, right password) = %s, %v; want alice's SID %s", user, sid, err, e.s.Alice.SID)
		}
	}
	for _, tc := range []struct{ name, user, password string }{
		{"wrong password", e.s.Alice.UPN, "wrong-Passw0rd!"},
		{"empty password (an unauthenticated bind would succeed)", e.s.Alice.UPN, ""},
		{"unknown user", "nobody@corp.example.test", "Passw0rd!"},
		{"empty user", "", "x"},
		{"a bare name", "alice", e.s.Alice.Password},
		{"a DN", e.s.Alice.DN, e.s.Alice.Password},
	} {
		_, err := e.c.Authenticate(ctx, tc.user, tc.password)
		if !errors.Is(err, ldap.ErrBind) {
			t.Errorf("Authenticate(%s) = %v, want ErrBind", tc.name, err)
		}
		if err != nil && tc.password != "" && strings.Contains(err.Error(), tc.password) {
			t.Errorf("Authenticate(%s) error contains the password", tc.name)
		}
	}
	// The service account's connection is untouched.
	if _, err := e.c.Account(ctx, "alice"); err != nil {
		t.Errorf("Account after Authenticate = %v", err)
	}
}
