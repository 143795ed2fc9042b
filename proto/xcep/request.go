// Package xcep reads and writes the messages of MS-XCEP, the X.509 Certificate Enrollment
// Policy protocol: a client's GetPolicies request and the GetPoliciesResponse that lists the
// certificate enrollment policies (templates) it may use, the CAs that issue them with their
// enrollment URIs, and the OIDs both refer to.
//
// ParseRequest reads the body of an envelope from soap.Parse; Response.Marshal writes the
// response element for soap.Reply. Windows reads the response by element position, so Marshal
// writes every element in the exact order of the MS-XCEP schema (section 6.2) and writes the
// nillable elements that have no value as xsi:nil="true", as AD CS does. Which templates a caller
// sees, and everything else that needs the directory, is decided by the caller.
package xcep

import (
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/proto/soap"
)

// Namespace and SOAP actions (MS-XCEP 3.1.4.1: the IPolicy GetPolicies operation).
const (
	Namespace                 = "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy"
	GetPoliciesAction         = "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPolicies"
	GetPoliciesResponseAction = "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPoliciesResponse"
)

// ErrRequest is wrapped by every error of ParseRequest: the client sent a request this
// service cannot answer (a SOAP Sender fault).
var ErrRequest = errors.New("xcep: bad GetPolicies request")

// Request is a GetPolicies request. Nil pointers and empty values mean the client sent the
// element as nil or left it out.
type Request struct {
	LastUpdate        *time.Time // when the client last fetched the policy
	PreferredLanguage string     // an xs:language tag such as "en-US"
	PolicyOIDs        []string   // requestFilter: only these policies (empty: no filter)
	ClientVersion     *int       // requestFilter: the client's schema version
	ServerVersion     *int       // requestFilter: the server version the client asks for
}

// Limits on what a request may ask for.
const maxPolicyOIDs = 1000

// nillable is an element that may carry xsi:nil="true".
type nillable struct {
	Nil   string `xml:"http://www.w3.org/2001/XMLSchema-instance nil,attr"`
	Value string `xml:",chardata"`
}

func (n *nillable) isNil() bool {
	return n == nil || isTrue(n.Nil)
}

// isTrue reads an xs:boolean attribute such as xsi:nil.
func isTrue(s string) bool {
	s = strings.TrimSpace(s)
	return s == "true" || s == "1"
}

type getPolicies struct {
	XMLName xml.Name `xml:"GetPolicies"`
	Client  []struct {
		Nil               string    `xml:"http://www.w3.org/2001/XMLSchema-instance nil,attr"`
		LastUpdate        *nillable `xml:"lastUpdate"`
		PreferredLanguage *nillable `xml:"preferredLanguage"`
	} `xml:"client"`
	RequestFilter []struct {
		Nil        string `xml:"http://www.w3.org/2001/XMLSchema-instance nil,attr"`
		PolicyOIDs *struct {
			Nil string   `xml:"http://www.w3.org/2001/XMLSchema-instance nil,attr"`
			OID []string `xml:"oid"`
		} `xml:"policyOIDs"`
		ClientVersion *nillable `xml:"clientVersion"`
		ServerVersion *nillable `xml:"serverVersion"`
	} `xml:"requestFilter"`
}

// ParseRequest reads a GetPolicies request from env, which must carry GetPoliciesAction and a
// GetPolicies body element in the MS-XCEP namespace.
func ParseRequest(env *soap.Envelope) (Request, error) {
	if env == nil {
		return Request{}, fmt.Errorf("%w: no envelope", ErrRequest)
	}
	if env.Action != GetPoliciesAction {
		return Request{}, fmt.Errorf("%w: SOAP action %q, want %q", ErrRequest, env.Action, GetPoliciesAction)
	}
	if env.BodyName != (xml.Name{Space: Namespace, Local: "GetPolicies"}) {
		return Request{}, fmt.Errorf("%w: body element <%s> in namespace %q, want <GetPolicies> in %s", ErrRequest, env.BodyName.Local, env.BodyName.Space, Namespace)
	}
	if len(env.Body) > soap.MaxBody {
		return Request{}, fmt.Errorf("%w: body too large", ErrRequest)
	}
	var gp getPolicies
	if err := xml.Unmarshal(env.Body, &gp); err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrRequest, err)
	}
	// MS-XCEP 3.1.4.1.2.1: a missing, nil or empty client element gets a SOAP fault.
	if len(gp.Client) != 1 || isTrue(gp.Client[0].Nil) {
		return Request{}, fmt.Errorf("%w: want exactly one non-nil <client> element, got %d", ErrRequest, len(gp.Client))
	}
	if len(gp.RequestFilter) > 1 {
		return Request{}, fmt.Errorf("%w: more than one <requestFilter>", ErrRequest)
	}
	var r Request
	c := gp.Client[0]
	if !c.LastUpdate.isNil() {
		t, err := parseDateTime(c.LastUpdate.Value)
		if err != nil {
			return Request{}, fmt.Errorf("%w: lastUpdate: %v", ErrRequest, err)
		}
		r.LastUpdate = &t
	}
	if !c.PreferredLanguage.isNil() {
		r.PreferredLanguage = strings.TrimSpace(c.PreferredLanguage.Value)
	}
	if len(gp.RequestFilter) == 1 && !isTrue(gp.RequestFilter[0].Nil) {
		f := gp.RequestFilter[0]
		if f.PolicyOIDs != nil && !isTrue(f.PolicyOIDs.Nil) {
			if len(f.PolicyOIDs.OID) > maxPolicyOIDs {
				return Request{}, fmt.Errorf("%w: more than %d policyOIDs", ErrRequest, maxPolicyOIDs)
			}
			for _, oid := range f.PolicyOIDs.OID {
				if oid = strings.TrimSpace(oid); oid != "" {
					r.PolicyOIDs = append(r.PolicyOIDs, oid)
				}
			}
		}
		var err error
		if r.ClientVersion, err = parseInt(f.ClientVersion); err != nil {
			return Request{}, fmt.Errorf("%w: clientVersion: %v", ErrRequest, err)
		}
		if r.ServerVersion, err = parseInt(f.ServerVersion); err != nil {
			return Request{}, fmt.Errorf("%w: serverVersion: %v", ErrRequest, err)
		}
	}
	return r, nil
}

// parseDateTime reads an xs:dateTime; one without a time zone is taken as UTC.
func parseDateTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	t, err := time.Parse("2006-01-02T15:04:05.999999999", s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an xs:dateTime", s)
	}
	return t, nil
}

func parseInt(n *nillable) (*int, error) {
	if n.isNil() {
		return nil, nil
	}
	v, err := strconv.ParseInt(strings.TrimSpace(n.Value), 10, 32)
	if err != nil {
		return nil, fmt.Errorf("%q is not an xs:int", n.Value)
	}
	i := int(v)
	return &i, nil
}
