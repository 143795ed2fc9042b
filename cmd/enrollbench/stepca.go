package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
)

// step-ca, the peer of `enrollbench scep-peer`: smallstep's open-source CA, built from its module
// by the Go toolchain (never fetched as a binary), with PKCS#11 support, and set up here without
// the step CLI.
const (
	stepCAVersion = "v0.30.2"
	stepCAPackage = "github.com/smallstep/certificates/cmd/step-ca"
	// stepCATags leaves out step-ca's YubiKey KMS (go.step.sm/crypto/kms/yubikey is built under
	// `cgo && !noyubikey` and needs libpcsclite's headers, which the appliance does not need);
	// the PKCS#11 KMS stays (its constraint is `cgo && !nopkcs11`).
	stepCATags = "noyubikey"
	// stepCAToolchain is the toolchain to retry with when this one is too old for step-ca's go.mod.
	stepCAToolchain = "go1.27.3"
	// stepCAPKCS11Symbol is in the binary only when go.step.sm/crypto/kms/pkcs11's cgo file was
	// compiled (its build constraint is `cgo && !nopkcs11`; without cgo the KMS only says it is
	// not supported): the crypto11 library that file uses.
	stepCAPKCS11Symbol = "github.com/ThalesIgnite/crypto11.Configure"
)

// errStepCABuild says that step-ca could not be built or lacks PKCS#11 support; the test skips on
// it, naming the reason.
var errStepCABuild = errors.New("step-ca cannot be built here")

// stepCACacheDir is where the built step-ca is kept, once per machine (as the client keys and
// the Samba domains are): $TMPDIR/aeappliance-step-ca-VERSION, so that every checkout and the
// tests find the one make bench built.
func stepCACacheDir() string {
	return filepath.Join(os.TempDir(), "aeappliance-step-ca-"+stepCAVersion)
}

// ensureStepCA returns the step-ca binary of cacheDir, building it first if it is not there
// (`CGO_ENABLED=1 GOBIN=... go install -tags noyubikey github.com/smallstep/certificates/cmd/step-ca@v0.30.2`,
// once per machine; an flock keeps concurrent runs apart), and checks that it was built with cgo
// and carries the PKCS#11 KMS. built says whether this call built it, and how long that took.
func ensureStepCA(ctx context.Context, cacheDir string, progress io.Writer) (bin string, built time.Duration, err error) {
	if err := os.MkdirAll(filepath.Dir(cacheDir), 0o755); err != nil {
		return "", 0, err
	}
	lock, err := os.OpenFile(cacheDir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", 0, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", 0, fmt.Errorf("flock %s: %w", lock.Name(), err)
	}
	bin = filepath.Join(cacheDir, "step-ca")
	if fileExists(bin) {
		return bin, 0, checkStepCA(bin)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", 0, fmt.Errorf("%w: no go command on PATH to build it with: %v", errStepCABuild, err)
	}
	stage := cacheDir + ".new"
	os.RemoveAll(stage)
	if err := os.MkdirAll(stage, 0o755); err != nil {
		return "", 0, err
	}
	defer os.RemoveAll(stage)
	start := time.Now()
	install := func(toolchain string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, goBin, "install", "-tags", stepCATags, stepCAPackage+"@"+stepCAVersion)
		cmd.Dir = stage // outside any module: `go install pkg@version` builds step-ca's own module graph
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "GOBIN="+stage, "GOFLAGS=-buildvcs=false")
		if toolchain != "" {
			cmd.Env = append(cmd.Env, "GOTOOLCHAIN="+toolchain)
		}
		return cmd.CombinedOutput()
	}
	fmt.Fprintf(progress, "enrollbench: building step-ca %s once for this machine into %s (CGO_ENABLED=1 go install -tags %s %s@%s; minutes)\n",
		stepCAVersion, cacheDir, stepCATags, stepCAPackage, stepCAVersion)
	out, err := install("")
	if err != nil && bytes.Contains(out, []byte("requires go >=")) {
		fmt.Fprintf(progress, "enrollbench: step-ca %s needs a newer Go; retrying with GOTOOLCHAIN=%s\n", stepCAVersion, stepCAToolchain)
		out, err = install(stepCAToolchain)
	}
	if err != nil {
		return "", 0, fmt.Errorf("%w: go install %s@%s: %v\n%s", errStepCABuild, stepCAPackage, stepCAVersion, err, out)
	}
	if err := checkStepCA(filepath.Join(stage, "step-ca")); err != nil {
		return "", 0, err
	}
	os.RemoveAll(cacheDir)
	if err := os.Rename(stage, cacheDir); err != nil {
		return "", 0, err
	}
	built = time.Since(start)
	fmt.Fprintf(progress, "enrollbench: step-ca built in %s\n", built.Round(time.Second))
	return bin, built, nil
}

// checkStepCA checks that bin is step-ca of the expected version, built with cgo, with the
// PKCS#11 KMS compiled in.
func checkStepCA(bin string) error {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", errStepCABuild, bin, err)
	}
	if bi.Main.Path != "github.com/smallstep/certificates" || bi.Main.Version != stepCAVersion {
		return fmt.Errorf("%w: %s is %s %s, not github.com/smallstep/certificates %s", errStepCABuild, bin, bi.Main.Path, bi.Main.Version, stepCAVersion)
	}
	cgo, tags := "", ""
	for _, s := range bi.Settings {
		switch s.Key {
		case "CGO_ENABLED":
			cgo = s.Value
		case "-tags":
			tags = s.Value
		}
	}
	if cgo != "1" {
		return fmt.Errorf("%w: %s was built with CGO_ENABLED=%q: step-ca's PKCS#11 KMS needs cgo", errStepCABuild, bin, cgo)
	}
	if strings.Contains(tags, "nopkcs11") {
		return fmt.Errorf("%w: %s was built with -tags %s", errStepCABuild, bin, tags)
	}
	f, err := elf.Open(bin)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", errStepCABuild, bin, err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return fmt.Errorf("%w: %s has no symbol table to check its PKCS#11 support in: %v", errStepCABuild, bin, err)
	}
	for _, s := range syms {
		if s.Name == stepCAPKCS11Symbol {
			return nil
		}
	}
	return fmt.Errorf("%w: %s lacks %s: its PKCS#11 KMS was not compiled in", errStepCABuild, bin, stepCAPKCS11Symbol)
}

// stepCAServer is a running step-ca with a SoftHSM2 token of its own: the intermediate CA's
// RSA-2048 key and the SCEP provisioner's RSA-2048 decrypter key are in the token, the root's is a
// throw-away software key, and SCEP is served on the plain-HTTP listener.
type stepCAServer struct {
	dir          string
	httpBase     string // http://127.0.0.1:PORT, the insecureAddress (SCEP)
	dbDir        string
	root         *x509.Certificate
	intermediate *x509.Certificate
	decrypter    *x509.Certificate
	cmd          *exec.Cmd
	done         chan error
	log          string
}

// stepCAProvisioner is the SCEP provisioner's name, the last element of its URL path.
const stepCAProvisioner = "peer"

// stepCAConfig is the part of step-ca's ca.json this bench writes (field names from
// authority/config.Config, kms/apiv1.Options, db.Config and provisioner.SCEP of
// github.com/smallstep/certificates v0.30.2 and go.step.sm/crypto v0.77.1).
type stepCAConfig struct {
	Root            string          `json:"root"`
	Crt             string          `json:"crt"`
	Key             string          `json:"key"`
	Address         string          `json:"address"`
	InsecureAddress string          `json:"insecureAddress"`
	DNSNames        []string        `json:"dnsNames"`
	KMS             stepCAKMS       `json:"kms"`
	Logger          map[string]any  `json:"logger"`
	DB              stepCADB        `json:"db"`
	Authority       stepCAAuthority `json:"authority"`
}

type stepCAKMS struct {
	Type string `json:"type"`
	URI  string `json:"uri"`
}

type stepCADB struct {
	Type       string `json:"type"`
	DataSource string `json:"dataSource"`
}

type stepCAAuthority struct {
	Provisioners []stepCASCEP `json:"provisioners"`
}

type stepCASCEP struct {
	Type                 string `json:"type"`
	Name                 string `json:"name"`
	Challenge            string `json:"challenge"`
	MinimumPublicKeyLen  int    `json:"minimumPublicKeyLength"`
	DecrypterCertificate []byte `json:"decrypterCertificate"` // PEM (JSON carries it in base64)
	DecrypterKey         string `json:"decrypterKey"`
	// EncryptionAlgorithmIdentifier is the reply's content cipher, numbered as in
	// github.com/smallstep/pkcs7: 0 DES-CBC (step-ca's default), 1 AES-128-CBC, 2 AES-256-CBC.
	EncryptionAlgorithmIdentifier int `json:"encryptionAlgorithmIdentifier"`
}

// The step-ca set-up's fixed choices.
const (
	stepCATokenLabel     = "enrollbench-step-ca"
	stepCAIntermediateID = "01"
	stepCADecrypterID    = "02"
	stepCAAES256CBC      = 2
	// stepCADBType is what `step ca init` writes. Badger v2.2007.4's default SyncWrites opens its
	// value log, where every commit is written first, with O_DSYNC: a commit returns once its
	// write is on the disk (step-ca stores each certificate before it answers).
	stepCADBType = "badgerv2"
)

// startStepCA sets step-ca up in a new temporary directory without the step CLI and starts it:
// a SoftHSM2 token (softhsm2-util, its own SOFTHSM2_CONF), the intermediate's and the SCEP
// decrypter's RSA-2048 keys generated in it (pkcs11-tool), the certificates made here, ca.json
// with the pkcs11 KMS and a SCEP provisioner with a static challenge.
func startStepCA(ctx context.Context, bin, challenge string, progress io.Writer) (*stepCAServer, error) {
	module, err := softhsm.ModulePath()
	if err != nil {
		return nil, err
	}
	for _, tool := range []string{"softhsm2-util", "pkcs11-tool"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is needed to set step-ca's token up (Debian's softhsm2 and opensc; make deps): %v", tool, err)
		}
	}
	dir, err := os.MkdirTemp("", "enrollbench-step-ca-")
	if err != nil {
		return nil, err
	}
	s := &stepCAServer{dir: dir, dbDir: filepath.Join(dir, "db"), log: filepath.Join(dir, "step-ca.log")}
	fail := func(err error) (*stepCAServer, error) { s.close(); return nil, err }
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := softhsm.WriteConfig(conf, filepath.Join(dir, "tokens")); err != nil {
		return fail(err)
	}
	// Every child gets this token's SOFTHSM2_CONF (this process may have another in its environment)
	// and a HOME and STEPPATH of its own.
	env := []string{"SOFTHSM2_CONF=" + conf, "HOME=" + dir, "STEPPATH=" + filepath.Join(dir, "step")}
	for _, e := range os.Environ() {
		if k, _, _ := strings.Cut(e, "="); k != "SOFTHSM2_CONF" && k != "HOME" && k != "STEPPATH" {
			env = append(env, e)
		}
	}
	pin, soPIN := randomHex(8), randomHex(8)
	run := func(name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s %s: %v\n%s", name, args[0], err, out)
		}
		return nil
	}
	fmt.Fprintf(progress, "enrollbench: setting step-ca up in %s (SoftHSM2 token, RSA-2048 keys in it)\n", dir)
	// The throw-away token's PINs are on these commands' lines: neither tool reads them otherwise
	// without a terminal.
	if err := run("softhsm2-util", "--init-token", "--free", "--label", stepCATokenLabel, "--so-pin", soPIN, "--pin", pin); err != nil {
		return fail(err)
	}
	p11 := []string{"--module", module, "--token-label", stepCATokenLabel}
	pubs := map[string]any{}
	for _, k := range []struct{ id, label, usage string }{
		{stepCAIntermediateID, "intermediate-key", "--usage-sign"},
		{stepCADecrypterID, "scep-decrypter", "--usage-decrypt"}, // step-ca signs its replies with the decrypter key too
	} {
		args := append(slices.Clone(p11), "--login", "--pin", pin, "--keypairgen", "--key-type", "rsa:2048",
			"--id", k.id, "--label", k.label, "--usage-sign", "--sensitive")
		if k.usage != "--usage-sign" {
			args = append(args, k.usage)
		}
		if err := run("pkcs11-tool", args...); err != nil {
			return fail(err)
		}
		der := filepath.Join(dir, k.label+".pub.der")
		if err := run("pkcs11-tool", append(slices.Clone(p11), "--read-object", "--type", "pubkey", "--id", k.id, "-o", der)...); err != nil {
			return fail(err)
		}
		b, err := os.ReadFile(der)
		if err != nil {
			return fail(err)
		}
		if pubs[k.id], err = x509.ParsePKIXPublicKey(b); err != nil {
			return fail(fmt.Errorf("the public key of %s read from the token: %w", k.label, err))
		}
		if rk, ok := pubs[k.id].(*rsa.PublicKey); !ok || rk.N.BitLen() != 2048 {
			return fail(fmt.Errorf("the key %s in the token is not RSA-2048", k.label))
		}
	}
	// The root is made in software and signs the intermediate's and the decrypter's certificates,
	// which carry the token's public keys; the root's key is thrown away (step-ca never needs it).
	rootKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fail(err)
	}
	now := time.Now().Add(-time.Hour)
	mk := func(tmpl, parent *x509.Certificate, pub any) (*x509.Certificate, error) {
		tmpl.SerialNumber, _ = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		tmpl.NotBefore, tmpl.NotAfter = now, now.Add(10*365*24*time.Hour)
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, rootKey)
		if err != nil {
			return nil, err
		}
		return x509.ParseCertificate(der)
	}
	if s.root, err = mk(&x509.Certificate{Subject: pkix.Name{CommonName: "enrollbench step-ca Root CA"}, IsCA: true,
		BasicConstraintsValid: true, MaxPathLen: 1, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}, nil, rootKey.Public()); err != nil {
		return fail(err)
	}
	if s.intermediate, err = mk(&x509.Certificate{Subject: pkix.Name{CommonName: "enrollbench step-ca Intermediate CA"}, IsCA: true,
		BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature},
		s.root, pubs[stepCAIntermediateID]); err != nil {
		return fail(err)
	}
	if s.decrypter, err = mk(&x509.Certificate{Subject: pkix.Name{CommonName: "enrollbench step-ca SCEP decrypter"},
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
		s.root, pubs[stepCADecrypterID]); err != nil {
		return fail(err)
	}
	pemOf := func(c *x509.Certificate) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	for name, c := range map[string]*x509.Certificate{"root_ca.crt": s.root, "intermediate_ca.crt": s.intermediate} {
		if err := os.WriteFile(filepath.Join(dir, name), pemOf(c), 0o644); err != nil {
			return fail(err)
		}
	}
	tlsPort, err := freePort()
	if err != nil {
		return fail(err)
	}
	httpPort, err := freePort()
	if err != nil {
		return fail(err)
	}
	s.httpBase = "http://127.0.0.1:" + httpPort
	object := func(id, label string) string { return "pkcs11:id=%" + id + ";object=" + label }
	// The step-ca binary gives the SCEP provisioner no key manager of its own (only a program
	// embedding the authority can, with authority.WithSCEPKeyManager): the provisioner opens the
	// token itself from its decrypterKey, which must name the module, the token and the PIN too.
	kmsURI := func(id, label string) string {
		return "pkcs11:module-path=" + module + ";token=" + stepCATokenLabel + ";id=%" + id + ";object=" + label + "?pin-value=" + pin
	}
	cfg := stepCAConfig{
		Root: filepath.Join(dir, "root_ca.crt"), Crt: filepath.Join(dir, "intermediate_ca.crt"),
		Key:     object(stepCAIntermediateID, "intermediate-key"),
		Address: "127.0.0.1:" + tlsPort, InsecureAddress: "127.0.0.1:" + httpPort, DNSNames: []string{"localhost", "127.0.0.1"},
		// RFC 7512: the module and the token in the path, the PIN in the query.
		KMS:    stepCAKMS{Type: "pkcs11", URI: "pkcs11:module-path=" + module + ";token=" + stepCATokenLabel + "?pin-value=" + pin},
		Logger: map[string]any{"format": "json"},
		DB:     stepCADB{Type: stepCADBType, DataSource: s.dbDir},
		Authority: stepCAAuthority{Provisioners: []stepCASCEP{{Type: "SCEP", Name: stepCAProvisioner, Challenge: challenge,
			MinimumPublicKeyLen: 2048, DecrypterCertificate: pemOf(s.decrypter), DecrypterKey: kmsURI(stepCADecrypterID, "scep-decrypter"),
			EncryptionAlgorithmIdentifier: stepCAAES256CBC}}},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fail(err)
	}
	caJSON := filepath.Join(dir, "ca.json")
	if err := os.WriteFile(caJSON, b, 0o600); err != nil {
		return fail(err)
	}
	logFile, err := os.Create(s.log)
	if err != nil {
		return fail(err)
	}
	defer logFile.Close() // the child has its own descriptor
	s.cmd = exec.Command(bin, caJSON)
	s.cmd.Env, s.cmd.Dir = env, dir
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return fail(err)
	}
	s.done = make(chan error, 1)
	go func() { s.done <- s.cmd.Wait() }()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-s.done:
			s.cmd = nil
			return fail(fmt.Errorf("step-ca exited: %v\n%s", err, s.logTail(30)))
		default:
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("step-ca did not answer within a minute\n%s", s.logTail(30)))
		}
		switch body, status, err := httpDo(ctx, http.MethodGet, s.scepURL()+"?operation=GetCACaps", nil, nil); {
		case err != nil: // not listening yet
		case status == http.StatusOK:
			return s, nil
		default: // step-ca answers, but its SCEP provisioner did not start
			return fail(fmt.Errorf("step-ca answers GetCACaps with HTTP %d: %s\n%s", status, bytes.TrimSpace(body), s.logGrep("provisioner", 10)))
		}
	}
}

// scepURL is the SCEP provisioner's URL on the plain-HTTP listener.
func (s *stepCAServer) scepURL() string { return s.httpBase + "/scep/" + stepCAProvisioner }

func (s *stepCAServer) pid() int {
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// logTail is the end of step-ca's log.
func (s *stepCAServer) logTail(lines int) string {
	b, _ := os.ReadFile(s.log)
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}

// logGrep is up to n lines of step-ca's log that contain word.
func (s *stepCAServer) logGrep(word string, n int) string {
	b, _ := os.ReadFile(s.log)
	var out []string
	for l := range strings.Lines(string(b)) {
		if strings.Contains(l, word) && len(out) < n {
			out = append(out, strings.TrimRight(l, "\n"))
		}
	}
	return strings.Join(out, "\n")
}

// stop stops step-ca with SIGTERM (it closes its database) and waits.
func (s *stepCAServer) stop() error {
	if s.cmd == nil {
		return nil
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		// step-ca ends with a non-zero status on SIGTERM after a clean shutdown; its log says how it went.
		s.cmd = nil
		return nil
	case <-time.After(time.Minute):
		s.cmd.Process.Kill()
		<-s.done
		s.cmd = nil
		return errors.New("step-ca did not stop within a minute of SIGTERM")
	}
}

func (s *stepCAServer) close() {
	if s.cmd != nil {
		s.cmd.Process.Kill()
		<-s.done
		s.cmd = nil
	}
	os.RemoveAll(s.dir)
}

// inValueLog counts the certificates whose DER is in step-ca's badger value log after it stopped:
// badger writes every entry (key and value, uncompressed) to the value log, its write-ahead log,
// before it commits, so a certificate step-ca stored is there.
func (s *stepCAServer) inValueLog(certs []*x509.Certificate) (int, error) {
	logs, err := filepath.Glob(filepath.Join(s.dbDir, "*.vlog"))
	if err != nil || len(logs) == 0 {
		return 0, fmt.Errorf("no badger value log in %s (%v)", s.dbDir, err)
	}
	var all []byte
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			return 0, err
		}
		all = append(all, b...)
	}
	n := 0
	for _, c := range certs {
		if bytes.Contains(all, c.Raw) {
			n++
		}
	}
	return n, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
