package enrollsvc

import (
	"context"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
)

// IssueOrder lets the core's tests put any order to the issuance gate (for example one the
// linter must refuse), which no exported path of the service allows.
func (s *Service) IssueOrder(ctx context.Context, o issue.Order, m Meta) (*Issued, error) {
	return s.issueOrder(ctx, o, m)
}
