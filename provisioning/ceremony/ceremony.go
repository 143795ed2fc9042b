package ceremony

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
	"github.com/enrollment-appliance/aeappliance/hsm"
	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
	"github.com/enrollment-appliance/aeappliance/ldap"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"github.com/enrollment-appliance/aeappliance/provisioning"
)

// The ceremony's types are package provisioning's, which the appliance shares without
// the PKCS#11 code.
type (
	Report     = provisioning.Report
	State      = provisioning.State
	TokenState = provisioning.TokenState
	KeyState   = provisioning.KeyState
	CAState    = provisioning.CAState
	Directory  = provisioning.Directory
	Step       = provisioning.Step
)

// Names the ceremony shares with package provisioning.
const (
	StateFile   = provisioning.StateFile
	CSRFile     = provisioning.CSRFile
	CAChainFile = provisioning.CAChainFile

	StepToken     = provisioning.StepToken
	StepKey       = provisioning.StepKey
	StepCA        = provisioning.StepCA
	StepDirectory = provisioning.StepDirectory
	StepFinish    = provisioning.StepFinish

	caKeyLabel = "ca-key"
)

// Ceremony provisions the service's data directory step by step: the HSM token, the CA
// key generated inside it, a self-signed root or a subordinate CA (request out, chain
// in), the directory settings, and finally the configuration that lets the service
// start. Each step may be repeated: it reports what it found and changes nothing when
// the work is done, and a step that fails changes nothing. State survives reboots in
// Dir/ceremony.json; config.json is written last, so the service starts only once the
// ceremony is complete.
type Ceremony struct {
	Dir string // the service's data directory
	// Module is the PKCS#11 module. Empty: SoftHSM2, with its token files in the data
	// directory (Dir/hsm/tokens).
	Module string
	Logger *slog.Logger
	Now    func() time.Time // default time.Now
}

func (c *Ceremony) log() *slog.Logger {
	if c.Logger == nil {
		return slog.Default()
	}
	return c.Logger
}

func (c *Ceremony) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

// Provisioned reports whether the ceremony is complete (config.json exists).
func (c *Ceremony) Provisioned() bool { return fileExists(filepath.Join(c.Dir, config.File)) }

// State reads ceremony.json (empty before the first step).
func (c *Ceremony) State() (State, error) { return provisioning.LoadState(c.Dir) }

func (c *Ceremony) save(st State) error {
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := config.WriteFileAtomic(filepath.Join(c.Dir, StateFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("saving the ceremony state: %w", err)
	}
	return nil
}

// prepare creates the data directory and, for SoftHSM, its token directory and
// configuration, and points this process's SoftHSM at it.
func (c *Ceremony) prepare() (module string, soft bool, err error) {
	for _, d := range []string{c.Dir, filepath.Join(c.Dir, config.HSMDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", false, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	st, err := c.State()
	if err != nil {
		return "", false, err
	}
	if t := st.Token; t != nil && !t.SoftHSM {
		return t.Module, false, nil
	}
	if c.Module != "" && st.Token == nil {
		return c.Module, false, nil
	}
	module, err = softhsm.ModulePath()
	if err != nil {
		return "", false, fmt.Errorf("finding SoftHSM: %w", err)
	}
	conf, tokens := filepath.Join(c.Dir, config.SoftHSMConf), filepath.Join(c.Dir, config.SoftHSMTokens)
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return "", false, err
	}
	if err := softhsm.WriteConfig(conf, tokens); err != nil {
		return "", false, err
	}
	// SoftHSM takes its configuration only from the environment of the process.
	if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
		return "", false, err
	}
	return module, true, nil
}

// ValidatePIN says why pin is not acceptable for a token (who: "user" or "SO").
func ValidatePIN(who, pin string) error {
	switch {
	case len(pin) < 6:
		return fmt.Errorf("the %s PIN is too short: at least 6 characters", who)
	case len(pin) > 64:
		return fmt.Errorf("the %s PIN is too long: at most 64 characters", who)
	case strings.TrimSpace(pin) != pin || strings.ContainsAny(pin, "\r\n\x00"):
		return fmt.Errorf("the %s PIN must not begin or end with spaces or hold control characters", who)
	}
	return nil
}

// Token initialises the HSM token with the SO and user PINs and keeps the user PIN
// in the data directory (mode 0600) so that the service can log in unattended; the SO
// PIN is not kept. Once the token exists, it only checks that userPIN opens it.
func (c *Ceremony) Token(ctx context.Context, soPIN, userPIN string) (Report, error) {
	r := Report{Step: StepToken}
	st, err := c.State()
	if err != nil {
		return r, err
	}
	if err := ValidatePIN("user", userPIN); err != nil {
		return r, fmt.Errorf("%w: nothing changed", err)
	}
	module, soft, err := c.prepare()
	if err != nil {
		return r, err
	}
	if t := st.Token; t != nil {
		ks, err := hsm.Open(ctx, hsm.Config{ModulePath: t.Module, TokenLabel: t.Label, TokenSerial: t.Serial,
			PIN: userPIN, HealthInterval: -1, Logger: c.log()})
		if errors.Is(err, hsm.ErrPINIncorrect) {
			return r, fmt.Errorf("token %q is initialised and this user PIN does not open it: nothing changed", t.Label)
		}
		if err != nil {
			return r, fmt.Errorf("opening token %q: %w", t.Label, err)
		}
		ks.Close()
		r.Say("Token %q (serial %s) is already initialised and the user PIN opens it: nothing changed.", t.Label, t.Serial)
		return r, nil
	}
	if err := ValidatePIN("SO", soPIN); err != nil {
		return r, fmt.Errorf("%w: nothing changed", err)
	}
	if soPIN == userPIN {
		return r, errors.New("the SO PIN and the user PIN must differ: nothing changed")
	}
	label := "aeappliance-" + randomHex(4)
	serial, err := hsm.InitToken(ctx, module, label, soPIN, userPIN)
	if err != nil {
		return r, fmt.Errorf("initialising the token: %w", err)
	}
	undo := func() {
		if soft { // a SoftHSM token is a directory of files: remove the half-made one
			c.removeSoftToken(serial)
		}
	}
	if err := config.WriteFileAtomic(filepath.Join(c.Dir, config.PINFile), []byte(userPIN+"\n"), 0o600); err != nil {
		undo()
		return r, fmt.Errorf("keeping the user PIN: %w", err)
	}
	st.Token = &TokenState{Module: module, SoftHSM: soft, Label: label, Serial: serial, At: c.now().UTC()}
	if err := c.save(st); err != nil {
		undo()
		os.Remove(filepath.Join(c.Dir, config.PINFile))
		return r, err
	}
	r.Changed = true
	where := "module " + module
	if soft {
		where = "SoftHSM on the data disk"
	}
	r.Say("Initialised token %q (serial %s, %s) with the SO and user PINs.", label, serial, where)
	r.Say("The user PIN is kept on the data disk for the service; the SO PIN is not kept.")
	return r, nil
}

// removeSoftToken removes the SoftHSM token directory whose token.object names serial.
func (c *Ceremony) removeSoftToken(serial string) {
	dirs, _ := os.ReadDir(filepath.Join(c.Dir, config.SoftHSMTokens))
	for _, d := range dirs {
		p := filepath.Join(c.Dir, config.SoftHSMTokens, d.Name())
		if b, err := os.ReadFile(filepath.Join(p, "token.object")); err == nil && bytes.Contains(b, []byte(serial)) {
			os.RemoveAll(p)
		}
	}
}

// openToken opens the ceremony's token with the kept user PIN.
func (c *Ceremony) openToken(ctx context.Context, st State) (*hsm.KeyStore, error) {
	if st.Token == nil {
		return nil, errors.New("the HSM token is not initialised yet (step token first)")
	}
	if _, _, err := c.prepare(); err != nil {
		return nil, err
	}
	pin, err := hsm.ReadPIN(filepath.Join(c.Dir, config.PINFile), "")
	if err != nil {
		return nil, fmt.Errorf("reading the user PIN: %w", err)
	}
	ks, err := hsm.Open(ctx, hsm.Config{ModulePath: st.Token.Module, TokenLabel: st.Token.Label,
		TokenSerial: st.Token.Serial, PIN: pin, HealthInterval: -1, Logger: c.log()})
	if err != nil {
		return nil, fmt.Errorf("opening token %q: %w", st.Token.Label, err)
	}
	return ks, nil
}

// Key generates the CA key in the token and checks that the token keeps it
// sensitive and never extractable. A key already there (this ceremony's, or one an
// interrupted run made) is kept, if it is of the type asked for.
func (c *Ceremony) Key(ctx context.Context, keyType string) (Report, error) {
	r := Report{Step: StepKey}
	if keyType == "" {
		keyType = string(hsm.ECDSAP256)
	}
	kt, err := hsm.ParseKeyType(keyType)
	if err != nil {
		return r, fmt.Errorf("%w: nothing changed", err)
	}
	st, err := c.State()
	if err != nil {
		return r, err
	}
	ks, err := c.openToken(ctx, st)
	if err != nil {
		return r, err
	}
	defer ks.Close()
	var key *hsm.Key
	label := hsm.URI{Object: caKeyLabel, ID: []byte{1}}
	if st.Key != nil {
		uri, err := hsm.ParseURI(st.Key.URI)
		if err != nil {
			return r, fmt.Errorf("the ceremony state's key URI: %w", err)
		}
		if key, err = ks.FindKey(ctx, uri); err != nil {
			return r, fmt.Errorf("the CA key %s is no longer in the token: %w", st.Key.URI, err)
		}
	} else if found, err := ks.FindKey(ctx, label); err == nil {
		key = found // generated by a run that stopped before saving its state
		r.Say("Found the CA key an interrupted run generated.")
	}
	if key != nil && key.Type() != kt {
		return r, fmt.Errorf("the token already holds the CA key, of type %s; a CA key is never replaced "+
			"(start over on a blank data disk for another type): nothing changed", key.Type())
	}
	if key == nil {
		t := time.Now()
		if key, err = ks.GenerateKey(ctx, kt, caKeyLabel, []byte{1}); err != nil {
			return r, fmt.Errorf("generating the CA key in the token: %w", err)
		}
		r.Changed = true
		r.Say("Generated a %s CA key in the token in %s.", kt, time.Since(t).Round(10*time.Millisecond))
	} else if len(r.Lines) == 0 {
		r.Say("The CA key is already in the token: nothing changed.")
	}
	uri := key.URI()
	uri.Type = "private"
	attrs, err := ks.KeyAttributes(ctx, uri)
	if err != nil {
		return r, fmt.Errorf("reading the CA key's attributes: %w", err)
	}
	if !attrs.Sensitive || attrs.Extractable || !attrs.NeverExtractable {
		return r, fmt.Errorf("the token reports the CA key as sensitive=%v extractable=%v never-extractable=%v; "+
			"refusing to use it", attrs.Sensitive, attrs.Extractable, attrs.NeverExtractable)
	}
	r.Say("Key %s: sensitive, never extractable.", uri)
	if st.Key == nil {
		st.Key = &KeyState{URI: uri.String(), Type: string(kt), At: c.now().UTC()}
		if err := c.save(st); err != nil {
			return r, err
		}
	}
	return r, nil
}

// caKey opens the token and finds the CA key.
func (c *Ceremony) caKey(ctx context.Context, st State) (*hsm.KeyStore, *hsm.Key, error) {
	if st.Key == nil {
		return nil, nil, errors.New("there is no CA key yet (step key first)")
	}
	ks, err := c.openToken(ctx, st)
	if err != nil {
		return nil, nil, err
	}
	uri, err := hsm.ParseURI(st.Key.URI)
	if err == nil {
		var key *hsm.Key
		if key, err = ks.FindKey(ctx, uri); err == nil {
			return ks, key, nil
		}
	}
	ks.Close()
	return nil, nil, fmt.Errorf("finding the CA key %s: %w", st.Key.URI, err)
}

// SelfSigned makes the self-signed root CA certificate for the CA key.
func (c *Ceremony) SelfSigned(ctx context.Context, name string, validity time.Duration) (Report, error) {
	r := Report{Step: StepCA}
	name = strings.TrimSpace(name)
	if name == "" {
		return r, errors.New("the CA needs a name: nothing changed")
	}
	if validity == 0 {
		validity = 10 * 365 * 24 * time.Hour
	}
	if validity < 24*time.Hour {
		return r, errors.New("the CA validity must be at least one day: nothing changed")
	}
	st, err := c.State()
	if err != nil {
		return r, err
	}
	if ca := st.CA; ca != nil {
		switch {
		case ca.Certified && ca.Mode == "selfsigned" && ca.Name == name:
			r.Say("The self-signed root CA %s exists already: nothing changed.", ca.Subject)
			return r, nil
		case ca.Certified:
			return r, fmt.Errorf("the CA certificate %s exists already; it is not replaced: nothing changed", ca.Subject)
		default:
			return r, fmt.Errorf("a request for the subordinate CA %q is waiting for its certificate chain "+
				"(import it); a self-signed root is not made for the same key: nothing changed", ca.Name)
		}
	}
	ks, key, err := c.caKey(ctx, st)
	if err != nil {
		return r, err
	}
	defer ks.Close()
	cert, err := issue.SelfSigned(ctx, key, issue.RootOrder{Subject: pkix.Name{CommonName: name}, Validity: validity}, c.now())
	if err != nil {
		return r, fmt.Errorf("making the CA certificate: %w", err)
	}
	if err := config.WriteFileAtomic(filepath.Join(c.Dir, config.CACertFile), pemCert(cert), 0o644); err != nil {
		return r, err
	}
	st.CA = caState("selfsigned", name, cert)
	if err := c.save(st); err != nil {
		os.Remove(filepath.Join(c.Dir, config.CACertFile))
		return r, err
	}
	r.Changed = true
	r.Say("Made the self-signed root CA %s, valid until %s.", cert.Subject, cert.NotAfter.Format(time.DateOnly))
	r.Say("SHA-256 fingerprint: %s", st.CA.SHA256)
	return r, nil
}

func caState(mode, name string, cert *x509.Certificate) *CAState {
	return &CAState{Mode: mode, Name: name, Certified: true, Subject: cert.Subject.String(),
		Issuer: cert.Issuer.String(), NotAfter: cert.NotAfter.UTC(), SHA256: Fingerprint(cert)}
}

// Fingerprint is the upper-case hex SHA-256 of a certificate.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// CSR makes (or returns again) the PKCS#10 request of a subordinate CA named name,
// signed by the CA key in the token, for the parent CA to sign.
func (c *Ceremony) CSR(ctx context.Context, name string) ([]byte, Report, error) {
	r := Report{Step: StepCA}
	name = strings.TrimSpace(name)
	if name == "" {
		return nil, r, errors.New("the CA needs a name: nothing changed")
	}
	st, err := c.State()
	if err != nil {
		return nil, r, err
	}
	csrPath := filepath.Join(c.Dir, CSRFile)
	if ca := st.CA; ca != nil {
		if ca.Certified {
			return nil, r, fmt.Errorf("the CA certificate %s exists already: nothing changed", ca.Subject)
		}
		if b, err := os.ReadFile(csrPath); err == nil && ca.Name == name {
			r.Say("The request for the subordinate CA %q was made already (the same one again):", name)
			return b, r, nil
		}
	}
	ks, key, err := c.caKey(ctx, st)
	if err != nil {
		return nil, r, err
	}
	defer ks.Close()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return nil, r, fmt.Errorf("making the request with the CA key: %w", err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	if err := config.WriteFileAtomic(csrPath, b, 0o644); err != nil {
		return nil, r, err
	}
	replaced := st.CA != nil
	st.CA = &CAState{Mode: "subordinate", Name: name}
	if err := c.save(st); err != nil {
		return nil, r, err
	}
	r.Changed = true
	if replaced {
		r.Say("Replaced the earlier request with one for the subordinate CA %q.", name)
	}
	r.Say("Made the request for the subordinate CA %q (PKCS#10, signed by the CA key in the token).", name)
	r.Say("Have the parent CA sign it as a CA certificate, then import the chain (CA certificate, any")
	r.Say("intermediates and the root).")
	return b, r, nil
}

// Import imports the signed subordinate CA certificate and the chain above it, in
// PEM. It checks that one certificate is for the CA key, that it is a valid CA
// certificate now (CA:TRUE, keyCertSign and cRLSign), and that it chains to a
// self-signed root in the bundle; otherwise it changes nothing.
func (c *Ceremony) Import(ctx context.Context, bundle []byte) (Report, error) {
	r := Report{Step: StepCA}
	st, err := c.State()
	if err != nil {
		return r, err
	}
	certs, err := parsePEMCerts(bundle)
	if err != nil {
		return r, fmt.Errorf("%w: nothing changed", err)
	}
	if st.CA == nil {
		return r, errors.New("there is no request waiting for a certificate (make the subordinate CA request first): nothing changed")
	}
	ks, key, err := c.caKey(ctx, st)
	if err != nil {
		return r, err
	}
	defer ks.Close()
	var leaf *x509.Certificate
	var others []*x509.Certificate
	for _, cert := range certs {
		if leaf == nil && certutil.PublicKeysEqual(cert.PublicKey, key.Public()) {
			leaf = cert
			continue
		}
		others = append(others, cert)
	}
	if leaf == nil {
		return r, fmt.Errorf("none of the %d certificates is for this appliance's CA key: the certificate does "+
			"not match the request: nothing changed", len(certs))
	}
	if st.CA.Certified {
		if st.CA.SHA256 == Fingerprint(leaf) {
			r.Say("The CA certificate %s is imported already: nothing changed.", leaf.Subject)
			return r, nil
		}
		return r, fmt.Errorf("the CA certificate %s exists already; it is not replaced: nothing changed", st.CA.Subject)
	}
	now := c.now()
	switch {
	case !leaf.BasicConstraintsValid || !leaf.IsCA:
		return r, fmt.Errorf("%s is not a CA certificate (basicConstraints CA:TRUE missing): nothing changed", leaf.Subject)
	case leaf.KeyUsage&x509.KeyUsageCertSign == 0 || leaf.KeyUsage&x509.KeyUsageCRLSign == 0:
		return r, fmt.Errorf("%s lacks the keyCertSign and cRLSign key usages a CA needs: nothing changed", leaf.Subject)
	case now.Before(leaf.NotBefore) || now.After(leaf.NotAfter):
		return r, fmt.Errorf("%s is not valid now (%s to %s): nothing changed", leaf.Subject,
			leaf.NotBefore.Format(time.RFC3339), leaf.NotAfter.Format(time.RFC3339))
	case leaf.MaxPathLenZero || leaf.MaxPathLen > 0:
		// Fine: a limited path length still lets this CA issue end-entity certificates.
	}
	if bytes.Equal(leaf.RawSubject, leaf.RawIssuer) && leaf.CheckSignatureFrom(leaf) == nil {
		return r, fmt.Errorf("%s is self-signed: a subordinate CA certificate must be signed by the parent CA: nothing changed", leaf.Subject)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	nroots := 0
	for _, o := range others {
		if bytes.Equal(o.RawSubject, o.RawIssuer) && o.CheckSignatureFrom(o) == nil {
			roots.AddCert(o)
			nroots++
		} else {
			inter.AddCert(o)
		}
	}
	if nroots == 0 {
		return r, errors.New("the bundle has no self-signed root certificate: include the whole chain up to the root: nothing changed")
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return r, fmt.Errorf("the chain does not verify: %v: nothing changed", err)
	}
	chain := chains[0][1:]
	var chainPEM []byte
	for _, cc := range chain {
		chainPEM = append(chainPEM, pemCert(cc)...)
	}
	if err := config.WriteFileAtomic(filepath.Join(c.Dir, CAChainFile), chainPEM, 0o644); err != nil {
		return r, err
	}
	if err := config.WriteFileAtomic(filepath.Join(c.Dir, config.CACertFile), pemCert(leaf), 0o644); err != nil {
		os.Remove(filepath.Join(c.Dir, CAChainFile))
		return r, err
	}
	name := st.CA.Name
	st.CA = caState("subordinate", name, leaf)
	if err := c.save(st); err != nil {
		os.Remove(filepath.Join(c.Dir, CAChainFile))
		os.Remove(filepath.Join(c.Dir, config.CACertFile))
		return r, err
	}
	os.Remove(filepath.Join(c.Dir, CSRFile))
	r.Changed = true
	r.Say("Imported the subordinate CA certificate %s, valid until %s,", leaf.Subject, leaf.NotAfter.Format(time.DateOnly))
	r.Say("issued by %s; the chain verifies up to the root %s.", leaf.Issuer, chain[len(chain)-1].Subject)
	r.Say("SHA-256 fingerprint: %s", st.CA.SHA256)
	return r, nil
}

// parsePEMCerts reads every CERTIFICATE block of b; anything else in PEM is an error.
func parsePEMCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("the bundle holds a %q block; only CERTIFICATE blocks belong in it", blk.Type)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of the bundle: %w", len(certs)+1, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate in the input")
	}
	if len(certs) > 10 {
		return nil, errors.New("more than 10 certificates: not a CA chain")
	}
	return certs, nil
}

// Directory saves the Active Directory settings after checking them: a bind as the
// service account and the enrollment service object must be found. Settings that fail
// the check are not saved.
func (c *Ceremony) Directory(ctx context.Context, d Directory) (Report, error) {
	r := Report{Step: StepDirectory}
	if c.Provisioned() {
		return r, errors.New("the appliance is provisioned; its directory settings are the service's now: nothing changed")
	}
	st, err := c.State()
	if err != nil {
		return r, err
	}
	switch {
	case d.URL == "" || d.BindUser == "" || d.CACN == "":
		return r, errors.New("the directory needs a URL, the service account and the enrollment service's cn: nothing changed")
	case strings.TrimSpace(d.Password) == "":
		return r, errors.New("the service account's password is empty: nothing changed")
	}
	cd := &config.Directory{URL: d.URL, BindUser: d.BindUser, PasswordFile: config.LDAPPassword, CACN: d.CACN,
		ServerName: d.ServerName}
	if err := cd.Validate(); err != nil {
		return r, fmt.Errorf("%w: nothing changed", err)
	}
	if d.CAPEM != nil {
		if _, err := parsePEMCerts(d.CAPEM); err != nil {
			return r, fmt.Errorf("the directory's CA: %w: nothing changed", err)
		}
		cd.CAFile = config.LDAPCAFile
	}
	// Check in a scratch directory, then move the files into place.
	tmp, err := os.MkdirTemp(c.Dir, ".directory-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(tmp)
	if err := os.MkdirAll(filepath.Join(tmp, config.LDAPDir), 0o700); err != nil {
		return r, err
	}
	files := map[string][]byte{config.LDAPPassword: []byte(d.Password + "\n")}
	if d.CAPEM != nil {
		files[config.LDAPCAFile] = d.CAPEM
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o600); err != nil {
			return r, err
		}
	}
	lcfg, err := daemon.LDAPConfig(tmp, cd, c.log())
	if err != nil {
		return r, err
	}
	cl, err := ldap.Dial(ctx, lcfg)
	if err != nil {
		return r, fmt.Errorf("checking the directory settings: %w: nothing changed", err)
	}
	defer cl.Close()
	es, err := cl.EnrollmentService(ctx, d.CACN)
	if err != nil {
		return r, fmt.Errorf("checking the directory settings: enrollment service %q: %w: nothing changed", d.CACN, err)
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, config.LDAPDir), 0o700); err != nil {
		return r, err
	}
	for name, b := range files {
		if err := config.WriteFileAtomic(filepath.Join(c.Dir, name), b, 0o600); err != nil {
			return r, err
		}
	}
	if d.CAPEM == nil {
		os.Remove(filepath.Join(c.Dir, config.LDAPCAFile))
	}
	r.Changed = st.Directory == nil || *st.Directory != *cd
	st.Directory = cd
	if err := c.save(st); err != nil {
		return r, err
	}
	r.Say("Checked and saved the directory settings: %s as %s; the enrollment service %q offers %d templates.",
		d.URL, d.BindUser, d.CACN, len(es.CertificateTemplates))
	return r, nil
}

// FinishOptions are the service's listeners and names.
type FinishOptions struct {
	APIListen    string   // default config.DefaultAPIListen
	HTTPURL      string   // the plain-HTTP listener's URL (CRLs, OCSP, AIA, SCEP); "": none
	HTTPListen   string   // its address
	EnrollListen string   // with a directory: the enrollment web services' address
	Hostnames    []string // with a directory: their names
	Keytab       []byte   // with a directory: the HTTP/<hostname> service keytab
	CRLURLs      []string // override the URLs derived from HTTPURL
	OCSPURLs     []string
	CAIssuerURLs []string
	// Postgres is the shared store's section (its files already in the data directory); nil:
	// the SQLite file. Instance is this instance's name among those sharing it.
	Postgres *config.Postgres
	Instance string
}

// Finish writes the service's configuration once the CA certificate exists: the admin
// token, the store with the ceremony's events, the API's TLS certificate, and
// config.json last. Once it has succeeded the appliance is provisioned.
func (c *Ceremony) Finish(ctx context.Context, o FinishOptions) (Report, error) {
	r := Report{Step: StepFinish}
	if c.Provisioned() {
		r.Say("The appliance is provisioned already: nothing changed.")
		return r, nil
	}
	st, err := c.State()
	if err != nil {
		return r, err
	}
	switch {
	case st.Token == nil || st.Key == nil:
		return r, errors.New("the HSM token and the CA key come first: nothing changed")
	case st.CA == nil || !st.CA.Certified:
		return r, errors.New("there is no CA certificate yet (self-signed, or a subordinate CA's imported chain): nothing changed")
	}
	io := InitOptions{Dir: c.Dir, CAName: st.CA.Name, KeyType: st.Key.Type, APIListen: o.APIListen,
		HTTPURL: o.HTTPURL, HTTPListen: o.HTTPListen, EnrollListen: o.EnrollListen, Hostnames: o.Hostnames,
		CRLURLs: o.CRLURLs, OCSPURLs: o.OCSPURLs, CAIssuerURLs: o.CAIssuerURLs, Logger: c.log()}
	if st.Directory != nil {
		io.Directory = &DirectoryOptions{URL: "x"} // validated when saved
	}
	if err := io.validateListeners(); err != nil {
		return r, fmt.Errorf("%w: nothing changed", err)
	}
	if _, _, err := c.prepare(); err != nil {
		return r, err
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, config.APIDir), 0o700); err != nil {
		return r, err
	}
	tokenBytes := make([]byte, 32)
	if _, err := rand.Read(tokenBytes); err != nil {
		return r, err
	}
	token := base64.RawURLEncoding.EncodeToString(tokenBytes)
	sum := sha256.Sum256([]byte(token))
	t := st.Token
	cfg := &config.Config{Version: config.Version, CAName: st.CA.Name, Store: config.StoreFile, CACert: config.CACertFile,
		HSM: config.HSM{Module: t.Module, TokenLabel: t.Label, TokenSerial: t.Serial,
			PINFile: config.PINFile, KeyURI: st.Key.URI, KeyType: st.Key.Type},
		API: config.API{Listen: io.APIListen, CertFile: config.APICertFile, KeyFile: config.APIKeyFile,
			TokenFile: config.APITokenFile, TokenHash: hex.EncodeToString(sum[:])},
		CRLURLs: io.CRLURLs, OCSPURLs: io.OCSPURLs, CAIssuerURLs: io.CAIssuerURLs, Directory: st.Directory,
		Instance: o.Instance}
	if o.Postgres == nil && st.Store != nil {
		o.Postgres = st.Store // the store step's settings, files in place
	}
	if o.Postgres != nil {
		cfg.Store, cfg.Postgres = "", o.Postgres
	}
	if t.SoftHSM {
		cfg.HSM.SoftHSMConf = config.SoftHSMConf
	}
	if fileExists(filepath.Join(c.Dir, CAChainFile)) {
		cfg.CAChain = CAChainFile
	}
	if io.HTTPURL != "" {
		cfg.HTTP = &config.HTTP{Listen: io.HTTPListen, BaseURL: io.HTTPURL}
	}
	if st.Directory != nil {
		cfg.Enroll = &config.Enroll{Listen: io.EnrollListen, Hostnames: io.Hostnames,
			CertFile: config.EnrollCert, KeyFile: config.EnrollKey}
	}
	if err := config.WriteFileAtomic(filepath.Join(c.Dir, config.APITokenFile), []byte(token+"\n"), 0o600); err != nil {
		return r, err
	}
	if err := cfg.Write(c.Dir); err != nil {
		return r, err
	}
	if err := c.finishService(ctx, st, cfg, o); err != nil {
		os.Remove(filepath.Join(c.Dir, config.File)) // not provisioned: the step may be tried again
		return r, fmt.Errorf("%w: nothing changed", err)
	}
	r.Changed = true
	r.Say("Wrote the service configuration: CA %s, API on %s.", st.CA.Subject, cfg.API.Listen)
	if cfg.HTTP != nil {
		r.Say("CRLs, OCSP and the CA certificate are published at %s.", cfg.HTTP.BaseURL)
	}
	if cfg.Directory != nil {
		r.Say("Enrollment web services on %s for %s.", cfg.Enroll.Listen, strings.Join(cfg.Enroll.Hostnames, ", "))
	}
	return r, nil
}

// finishService opens the new configuration as the service would, checks the directory,
// installs the keytab, issues the API's certificate and records the ceremony's events.
func (c *Ceremony) finishService(ctx context.Context, st State, cfg *config.Config, o FinishOptions) error {
	rt, err := daemon.Open(ctx, c.Dir, c.log())
	if err != nil {
		return err
	}
	defer rt.Close()
	if cfg.Directory != nil {
		if _, err := rt.Service.OfferedTemplates(ctx); err != nil {
			return fmt.Errorf("checking the directory settings: %w", err)
		}
	}
	if len(o.Keytab) > 0 {
		if err := rt.InstallKeytab(ctx, o.Keytab); err != nil {
			return fmt.Errorf("the keytab: %w", err)
		}
	}
	if _, err := rt.EnsureAPICert(ctx, daemon.APIHosts(cfg.API.Listen)); err != nil {
		return err
	}
	rec := rt.Recorder
	return errors.Join(
		rec.Record(ctx, events.DataDirInitialised, "", "ca_name", cfg.CAName, "token", st.Token.Label),
		rec.Record(ctx, events.HSMKeyCreated, "", "key", st.Key.URI, "key_type", st.Key.Type, "token", st.Token.Label,
			"sensitive", true, "extractable", false),
		rec.Record(ctx, events.CACertificateMade, "", "subject", st.CA.Subject, "issuer", st.CA.Issuer,
			"mode", st.CA.Mode, "sha256", st.CA.SHA256, "not_after", st.CA.NotAfter.Format(time.RFC3339)))
}

// Progress lists the service's steps (token to finish) with what each found.
func (c *Ceremony) Progress() ([]Step, error) {
	st, err := c.State()
	if err != nil {
		return nil, err
	}
	steps := []Step{{Name: StepToken, Detail: "not initialised"}, {Name: StepKey, Detail: "not generated"},
		{Name: StepCA, Detail: "no CA certificate"}, {Name: StepDirectory, Detail: "not configured (optional)"},
		{Name: StepStore, Detail: "this appliance's own (SQLite); PostgreSQL for several (optional)"},
		{Name: StepFinish, Detail: "not provisioned"}}
	if t := st.Token; t != nil {
		steps[0] = Step{Name: StepToken, Done: true, Detail: fmt.Sprintf("token %q serial %s", t.Label, t.Serial)}
	}
	if k := st.Key; k != nil {
		steps[1] = Step{Name: StepKey, Done: true, Detail: k.Type + " " + k.URI}
	}
	if ca := st.CA; ca != nil {
		if ca.Certified {
			steps[2] = Step{Name: StepCA, Done: true, Detail: fmt.Sprintf("%s %s, until %s", ca.Mode, ca.Subject, ca.NotAfter.Format(time.DateOnly))}
		} else {
			steps[2].Detail = fmt.Sprintf("request for the subordinate CA %q made; waiting for its chain", ca.Name)
		}
	}
	if d := st.Directory; d != nil {
		steps[3] = Step{Name: StepDirectory, Done: true, Detail: d.URL + " (" + d.CACN + ")"}
	}
	if s := st.Store; s != nil {
		steps[4] = Step{Name: StepStore, Done: true, Detail: "PostgreSQL " + s.URL}
	}
	if c.Provisioned() {
		steps[5] = Step{Name: StepFinish, Done: true, Detail: "provisioned"}
	}
	return steps, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
