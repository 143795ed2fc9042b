package daemon

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/api"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/metrics"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/webenroll"
	"github.com/enrollment-appliance/aeappliance/ldap/secdesc"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// Authenticate checks a user's password against the directory and returns who the DC
// authenticated (the username/password endpoints).
func (l *lazyDirectory) Authenticate(ctx context.Context, user, password string) (secdesc.SID, error) {
	c, err := l.client(ctx)
	if err != nil {
		return secdesc.SID{}, err
	}
	return c.Authenticate(ctx, user, password)
}

// policyID is this appliance's XCEP policy identifier: stable for its CA, in GUID form.
func policyID(caDER []byte) string {
	h := sha256.Sum256(caDER)
	h[6] = h[6]&0x0f | 0x50 // a name-based GUID
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("{%x-%x-%x-%x-%x}", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// startEnroll starts the enrollment web services when they are configured, returning the
// address they listen on and a channel that carries their end; "" and nil when they are not.
func (rt *Runtime) startEnroll(ctx context.Context, override string) (string, <-chan error, error) {
	e := rt.Config.Enroll
	if e == nil || rt.directory == nil {
		return "", nil, nil
	}
	listen := e.Listen
	if override != "" {
		listen = override
	}
	kp, err := rt.ensureTLSCert(ctx, config.Path(rt.Dir, e.CertFile), config.Path(rt.Dir, e.KeyFile), e.Hostnames,
		enrollsvc.Meta{Requester: "enrollsvc", Account: "enrollsvc-enroll", Template: "enroll-tls"}, "enrollment web services")
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return "", nil, fmt.Errorf("listening for the enrollment web services: %w", err)
	}
	addr := ln.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	var bases []string
	for _, h := range e.Hostnames {
		if port == "443" {
			bases = append(bases, "https://"+h)
		} else {
			bases = append(bases, "https://"+net.JoinHostPort(h, port))
		}
	}
	rt.enrollBases = bases
	realms := func(ctx context.Context) ([]string, error) {
		own, err := rt.directory.Realm(ctx)
		if err != nil {
			return nil, err
		}
		return append([]string{own}, e.TrustedRealms...), nil
	}
	lim, err := rt.limitsOf()
	if err != nil {
		ln.Close()
		return "", nil, err
	}
	// The CA exchange key and certificate exist from the start (so that a token bundle exported
	// afterwards carries the key), renewed on use.
	if _, err := rt.exchange(ctx); err != nil {
		ln.Close()
		return "", nil, err
	}
	rt.Service.WithExchange(rt)
	ws, err := webenroll.New(webenroll.Config{Core: rt.Service, Passwords: rt.passwordGuard(lim), Kerberos: rt.kerberos, KerberosRealms: realms,
		Exchange: rt.exchange,
		Recorder: rt.Recorder, CACert: rt.CACert, CAName: rt.Config.CAName, BaseURLs: bases, Peers: rt.peerEnrollURLs, CMCSigner: rt.Key, Logger: rt.Log,
		PolicyID: policyID(rt.CACert.Raw), Proxies: lim.proxies, PerSource: lim.enrollSource, PerAccount: lim.enrollAccount})
	if err != nil {
		ln.Close()
		return "", nil, err
	}
	// MS-XCEP policy requests end in /CEP, MS-WSTEP enrollment in /CES.
	xcep, wstep := rt.metrics.Instrument(metrics.ProtocolXCEP, ws), rt.metrics.Instrument(metrics.ProtocolWSTEP, ws)
	var handler http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/CEP") {
			xcep.ServeHTTP(w, r)
			return
		}
		wstep.ServeHTTP(w, r)
	})
	services := handler
	if rt.revocation != nil && rt.revocation.scep != nil { // SCEP over HTTPS too
		mux := http.NewServeMux()
		mux.Handle("/scep/", rt.limitedHTTP(lim, rt.revocation.scep, http.NotFoundHandler()))
		mux.Handle("/", services)
		handler = mux
	}
	if err := config.WriteFileAtomic(config.Path(rt.Dir, config.EnrollAddr), []byte(addr+"\n"), 0o644); err != nil {
		ln.Close()
		return "", nil, err
	}
	done := make(chan error, 1)
	go func() {
		// Client certificates are asked for and, when given, must chain to this CA; the
		// certificate endpoints then check them against the store (revocation, expiry).
		pool := x509.NewCertPool()
		pool.AddCert(rt.CACert)
		done <- api.ServeTLS(ctx, handler, ln, &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12,
			ClientAuth: tls.RequestClientCert, ClientCAs: pool, VerifyPeerCertificate: certutil.ClientCertVerifier(pool)},
			rt.Log, api.MaxNegotiateHeaderBytes)
	}()
	return addr, done, nil
}
