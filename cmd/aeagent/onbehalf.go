package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/enrollment-appliance/aeappliance/aeagent/agent"
	"github.com/enrollment-appliance/aeappliance/aeagent/wsclient"
	"github.com/enrollment-appliance/aeappliance/hsm"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// pinEnv holds the PIN of a PKCS#11 agent key whose URI names no pin-source.
const pinEnv = "AEAGENT_PKCS11_PIN"

// enrollOnBehalf runs `aeagent enroll-on-behalf`: reads the agent's certificate and key and the
// target's request, sends it, and writes the issued certificate.
func (o *options) enrollOnBehalf(ctx context.Context, a *agent.Agent, stdout io.Writer) error {
	for _, f := range []struct{ name, v string }{{"--template", o.template}, {"--target", o.target}, {"--agent-cert", o.agentCert},
		{"--agent-key", o.agentKey}, {"--csr", o.csr}, {"--out", o.out}} {
		if f.v == "" {
			return fmt.Errorf("%w: enroll-on-behalf needs %s", errUsage, f.name)
		}
	}
	if _, err := os.Stat(o.out); err == nil {
		return fmt.Errorf("--out %s exists: not overwritten", o.out)
	}
	cert, err := readCertificate(o.agentCert)
	if err != nil {
		return fmt.Errorf("--agent-cert: %w", err)
	}
	csr, err := readDERorPEM(o.csr, "CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST")
	if err != nil {
		return fmt.Errorf("--csr: %w", err)
	}
	key, closeKey, err := agentKey(ctx, o.agentKey)
	if err != nil {
		return fmt.Errorf("--agent-key: %w", err)
	}
	defer closeKey()
	res, err := a.EnrollOnBehalf(ctx, agent.OnBehalfRequest{Template: o.template, Target: o.target, CSR: csr, AgentCert: cert, AgentKey: key})
	if err != nil {
		return err
	}
	switch res.Status {
	case wsclient.StatusDenied:
		return fmt.Errorf("the CA denied the request for %s (0x%08X): %s", o.target, uint32(res.ErrorCode), res.Reason)
	case wsclient.StatusPending:
		return printOut(stdout, o.json, res, func(w io.Writer) {
			fmt.Fprintf(w, "request %d for %s waits for a certificate manager's approval\n", res.RequestID, o.target)
		})
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: res.Certificate.Raw})
	f, err := os.OpenFile(o.out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(out); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return printOut(stdout, o.json, res, func(w io.Writer) {
		fmt.Fprintf(w, "issued certificate %s for %s (request %d), valid until %s, written to %s\n",
			certutil.SerialString(res.Certificate.SerialNumber), res.Certificate.Subject, res.RequestID,
			res.Certificate.NotAfter.UTC().Format("2006-01-02"), o.out)
	})
}

func readCertificate(path string) (*x509.Certificate, error) {
	der, err := readDERorPEM(path, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// readDERorPEM reads one PEM block of the given types, or DER.
func readDERorPEM(path string, types ...string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if blk, _ := pem.Decode(b); blk != nil {
		for _, t := range types {
			if blk.Type == t {
				return blk.Bytes, nil
			}
		}
		return nil, fmt.Errorf("%s holds a PEM %s, want %s", path, blk.Type, strings.Join(types, " or "))
	}
	return b, nil
}

// agentKey opens the agent's key: a PEM private key file, or a key in a PKCS#11 token by RFC 7512
// URI (module-path required; the PIN from pin-source or $AEAGENT_PKCS11_PIN).
func agentKey(ctx context.Context, spec string) (crypto.Signer, func(), error) {
	nothing := func() {}
	if !strings.HasPrefix(spec, "pkcs11:") {
		der, err := readDERorPEM(spec, "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")
		if err != nil {
			return nil, nothing, err
		}
		var k any
		if k, err = x509.ParsePKCS8PrivateKey(der); err != nil {
			if k, err = x509.ParsePKCS1PrivateKey(der); err != nil {
				k, err = x509.ParseECPrivateKey(der)
			}
		}
		if err != nil {
			return nil, nothing, fmt.Errorf("%s: not a PKCS#8, PKCS#1 or EC private key", spec)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, nothing, fmt.Errorf("%s: the key cannot sign", spec)
		}
		return s, nothing, nil
	}
	u, err := hsm.ParseURI(spec)
	if err != nil {
		return nil, nothing, err
	}
	if u.ModulePath == "" {
		return nil, nothing, errors.New("the pkcs11: URI names no module-path")
	}
	pin, err := hsm.ReadPIN(strings.TrimPrefix(u.PINSource, "file:"), pinEnv)
	if err != nil {
		return nil, nothing, err
	}
	ks, err := hsm.Open(ctx, hsm.Config{ModulePath: u.ModulePath, TokenLabel: u.Token, TokenSerial: u.Serial, PIN: pin, HealthInterval: -1})
	if err != nil {
		return nil, nothing, err
	}
	if u.Type == "" {
		u.Type = "private"
	}
	k, err := ks.FindKey(ctx, u)
	if err != nil {
		ks.Close()
		return nil, nothing, err
	}
	return k, func() { ks.Close() }, nil
}
