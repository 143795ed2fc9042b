package ldap_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/enrollment-appliance/aeappliance/ldap"
)

func TestVerifyPassword(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if err := e.c.VerifyPassword(ctx, e.s.Alice.UPN, e.s.Alice.Password); err != nil {
		t.Errorf("VerifyPassword(alice, right password) = %v", err)
	}
	if err := e.c.VerifyPassword(ctx, e.s.Alice.DN, e.s.Alice.Password); err != nil {
		t.Errorf("VerifyPassword(alice's DN, right password) = %v", err)
	}
	for _, tc := range []struct{ name, user, password string }{
		{"wrong password", e.s.Alice.UPN, "wrong-Passw0rd!"},
		{"empty password (an unauthenticated bind would succeed)", e.s.Alice.UPN, ""},
		{"unknown user", "nobody@corp.example.test", "Passw0rd!"},
		{"empty user", "", "x"},
	} {
		err := e.c.VerifyPassword(ctx, tc.user, tc.password)
		if !errors.Is(err, ldap.ErrBind) {
			t.Errorf("VerifyPassword(%s) = %v, want ErrBind", tc.name, err)
		}
		if err != nil && tc.password != "" && strings.Contains(err.Error(), tc.password) {
			t.Errorf("VerifyPassword(%s) error contains the password", tc.name)
		}
	}
	// The service account's connection is untouched.
	if _, err := e.c.Account(ctx, "alice"); err != nil {
		t.Errorf("Account after VerifyPassword = %v", err)
	}
}
