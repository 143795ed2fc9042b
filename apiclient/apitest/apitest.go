// Package apitest holds what tests of several service instances do through the management API
// (package apiclient): a burst of issuances spread over them.
package apitest

import (
	"context"
	"sync"
	"testing"

	"github.com/enrollment-appliance/aeappliance/apiclient"
)

// IssueSpread issues total certificates for profile from len(csrs) goroutines (goroutine w sends
// csrs[w]), request i to clients[i%len(clients)], and returns serial -> certificate (PEM). A
// failed issuance or a serial issued twice fails the test.
func IssueSpread(t testing.TB, ctx context.Context, clients []*apiclient.Client, csrs []string, profile string, total int) map[string]string {
	t.Helper()
	var mu sync.Mutex
	serials := make(map[string]string, total)
	next := make(chan int, total)
	for i := range total {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for w := range csrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				res, err := clients[i%len(clients)].Issue(ctx, apiclient.IssueRequest{CSR: csrs[w], Profile: profile})
				if err != nil {
					t.Errorf("issue %d: %v", i, err)
					return
				}
				mu.Lock()
				if _, dup := serials[res.Serial]; dup {
					t.Errorf("serial %s issued twice", res.Serial)
				}
				serials[res.Serial] = res.Certificate
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return serials
}
