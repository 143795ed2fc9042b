package agent

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"

	"github.com/enrollment-appliance/aeappliance/aeagent/wsclient"
)

// TestUnreachableDecidesFailover states which answers send a request on to the next enrollment
// service the policy lists (MS-XCEP 3.1.4.1.3.1 priorities): only a failed exchange or an
// unavailable service; a SOAP answer is final, and nothing is tried once the context is done.
func TestUnreachableDecidesFailover(t *testing.T) {
	refused := &url.Error{Op: "Post", URL: "https://ces1/", Err: errors.New("connection refused")}
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"no error", nil, false},
		{"connection refused", fmt.Errorf("wsclient: https://ces1/: %w", refused), true},
		{"503", &wsclient.Error{StatusCode: 503}, true},
		{"502 without a fault", &wsclient.Error{StatusCode: 502}, true},
		{"500 SOAP fault", &wsclient.Error{StatusCode: 500, Code: "s:Receiver", Reason: "denied"}, false},
		{"401", &wsclient.Error{StatusCode: 401}, false},
		{"unreadable reply", errors.New("wsclient: the reply is not a RequestSecurityTokenResponse"), false},
	}
	for _, c := range cases {
		if got := unreachable(context.Background(), c.err); got != c.want {
			t.Errorf("%s: unreachable = %v, want %v", c.name, got, c.want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if unreachable(ctx, fmt.Errorf("wsclient: %w", refused)) {
		t.Error("a cancelled context still fails over to the next URI")
	}
}
