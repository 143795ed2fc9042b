//go:build !cgo

package hsm

import (
	"context"
	"errors"
	"testing"
)

func TestNoCgo(t *testing.T) {
	if _, err := Open(context.Background(), Config{}); !errors.Is(err, ErrNoCgo) {
		t.Errorf("Open() error = %v, want ErrNoCgo", err)
	}
	if _, err := InitToken(context.Background(), "/x.so", "l", "1234", "5678"); !errors.Is(err, ErrNoCgo) {
		t.Errorf("InitToken() error = %v, want ErrNoCgo", err)
	}
}
