package daemon_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
	krbconfig "github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/gssapi"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	gkspnego "github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon/daemontest"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
)

// The Kerberos endpoints trust what the domain controller authenticated, not a name: a service
// ticket for alice@OTHER.TEST, made with the appliance's own service key as a KDC would for a
// foreign principal, is refused with a SOAP fault and an audit event, and so is a ticket in our
// realm that carries no PAC. (Tickets from the Samba KDC, with their PAC, enroll: see
// aeagent/wsclient's Kerberos tests.)
func TestKerberosTrustsOnlyThePAC(t *testing.T) {
	needSoftHSM(t)
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	service := dc.HTTPService(t, "svc-http", "HTTP/localhost")
	srv := daemontest.Start(t, dc, s, daemontest.Options{CAName: "Kerberos Test CA", Keytab: service})
	kt, err := keytab.Load(service)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.Roots}}}
	for _, tc := range []struct {
		name, client, realm, want string
	}{
		{"a foreign realm's alice", "alice", "OTHER.TEST", "Kerberos realm OTHER.TEST is not trusted by this CA"},
		{"a foreign realm's Administrator", "Administrator", "OTHER.TEST", "Kerberos realm OTHER.TEST is not trusted by this CA"},
		{"our realm without a PAC", "alice", ldaptest.Realm, "carries no PAC"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, url := range []string{srv.CEP("Kerberos"), srv.CES("Kerberos")} {
				req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("<not-read/>"))
				req.Header.Set("Content-Type", "application/soap+xml; charset=utf-8")
				req.Header.Set("Authorization", forgedNegotiate(t, kt, tc.client, tc.realm))
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized || !bytes.Contains(body, []byte("Fault")) || !bytes.Contains(body, []byte(tc.want)) {
					t.Errorf("POST %s as %s@%s = %d %s, want 401 and a SOAP fault saying %q", url, tc.client, tc.realm, resp.StatusCode, body, tc.want)
				}
			}
			evs, err := srv.Runtime.Store.ListEvents(context.Background(), store.EventFilter{ID: int(events.EnrollAuthRefused), Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, e := range evs {
				if e.Fields["user"] == tc.client+"@"+tc.realm && strings.Contains(e.Fields["reason"].(string), tc.want) {
					n++
				}
			}
			if n != 2 {
				t.Errorf("%d audit events 3004 for %s@%s, want 2 (one per endpoint)", n, tc.client, tc.realm)
			}
		})
	}
	list, err := srv.Runtime.Store.ListRequests(context.Background(), store.RequestFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range list {
		if r.Requester != "enrollsvc" { // the service's own TLS and RA certificates
			t.Errorf("request after refused tickets: %+v", r)
		}
	}
}

// forgedNegotiate is a Negotiate header with a service ticket for HTTP/localhost made with the
// service's key from kt, as a KDC would make one, for cname@crealm and without a PAC.
func forgedNegotiate(t *testing.T, kt *keytab.Keytab, cname, crealm string) string {
	t.Helper()
	kvno := 0
	for _, e := range kt.Entries {
		if e.Principal.String() == "HTTP/localhost@"+ldaptest.Realm && e.Key.KeyType == etypeID.AES256_CTS_HMAC_SHA1_96 {
			kvno = int(e.KVNO)
		}
	}
	if kvno == 0 {
		t.Fatal("the service keytab holds no AES-256 key of HTTP/localhost")
	}
	now := time.Now().UTC()
	tkt, key, err := messages.NewTicket(types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, cname), crealm,
		types.NewPrincipalName(nametype.KRB_NT_SRV_INST, "HTTP/localhost"), ldaptest.Realm, types.NewKrbFlags(), kt,
		etypeID.AES256_CTS_HMAC_SHA1_96, kvno, now, now, now.Add(time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cl := client.NewWithPassword(cname, crealm, "unused", krbconfig.New())
	mt, err := gkspnego.NewKRB5TokenAPREQ(cl, tkt, key, []int{gssapi.ContextFlagInteg, gssapi.ContextFlagConf}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mtb, err := mt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	init, err := gkspnego.NewNegTokenInitKRB5(cl, tkt, key)
	if err != nil {
		t.Fatal(err)
	}
	init.MechTokenBytes = mtb
	b, err := (&gkspnego.SPNEGOToken{Init: true, NegTokenInit: init}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return "Negotiate " + base64.StdEncoding.EncodeToString(b)
}
