package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/enrollment-appliance/aeappliance/aeagent/agent"
	"github.com/enrollment-appliance/aeappliance/aeagent/wsclient"
	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store"
	"github.com/enrollment-appliance/aeappliance/internal/freeport"
	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
	"github.com/enrollment-appliance/aeappliance/proto/cms"
	"github.com/enrollment-appliance/aeappliance/proto/scep"
)

// The storm's kinds of client.
const (
	kindKerberos = "kerberos" // MS-XCEP GetPolicies + MS-WSTEP over the _Kerberos endpoints (SPNEGO, RFC 4559)
	kindPassword = "password" // the same over the _UsernamePassword endpoints (WS-Security UsernameToken)
	kindSCEP     = "scep"     // SCEP PKCSReq (RFC 8894) with a one-time challenge per device
)

const stormCA = "Storm CA"

// stormOptions are the storm's flags.
type stormOptions struct {
	clients     int           // clients of each kind, each a distinct account (and device)
	password    int           // clients of the password kind (default clients)
	concurrency int           // clients in flight at once
	kinds       []string      // kindKerberos, kindPassword, kindSCEP, in this order
	enrollsvc   string        // the enrollsvc binary
	timeout     time.Duration // per client
	cpuProfile  string        // write enrollsvc's CPU profile here (then it runs without seccomp)
	out         io.Writer     // the report
	progress    io.Writer     // set-up progress
}

func parseStorm(args []string, out io.Writer) (stormOptions, error) {
	fs := flag.NewFlagSet("enrollbench storm", flag.ContinueOnError)
	o := stormOptions{out: out, progress: os.Stderr}
	fs.IntVar(&o.clients, "clients", 10000, "clients of each kind, each a distinct account (the directory gets that many users, once per machine)")
	fs.IntVar(&o.password, "password-clients", 0, "clients of the password kind, when not --clients (each password check is an LDAP bind the DC verifies)")
	fs.IntVar(&o.concurrency, "concurrency", 64, "clients in flight at once")
	kinds := fs.String("kinds", "kerberos,password,scep", "kinds of client, run one after the other: kerberos, password, scep")
	fs.StringVar(&o.enrollsvc, "enrollsvc", "", "the enrollsvc binary (default: enrollsvc beside this program, else on PATH)")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long one client may take before it counts as an error")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write enrollsvc's CPU profile of the whole run to FILE (enrollsvc then runs without its seccomp allow-list, which has no profiling timers)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: enrollbench storm [flags]

Drives the real enrollsvc binary over the network as clients do: a Samba AD DC with one user per
client (made once per machine and cached), SoftHSM2 with an RSA-2048 CA key, and N clients of each
kind, each a distinct account, with keys and requests made before the clock starts (Kerberos clients
have their TGT, as after a logon). It prints throughput, latency percentiles, errors by kind and where
the time went, then stops the service and checks its store: every certificate a client received is
there, none twice, each valid under the CA.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.password == 0 {
		o.password = o.clients
	}
	if o.clients < 1 || o.concurrency < 1 || o.password < 1 || o.password > o.clients {
		return o, errors.New("--clients and --concurrency must be positive, --password-clients from 1 to --clients")
	}
	for _, k := range strings.Split(*kinds, ",") {
		switch k = strings.TrimSpace(k); k {
		case kindKerberos, kindPassword, kindSCEP:
			if !slices.Contains(o.kinds, k) {
				o.kinds = append(o.kinds, k)
			}
		default:
			return o, fmt.Errorf("--kinds: %q is not kerberos, password or scep", k)
		}
	}
	if o.enrollsvc == "" {
		o.enrollsvc = defaultEnrollsvc()
	}
	return o, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// pemDecode is the DER of the first PEM block of b (nil when there is none).
func pemDecode(b []byte) ([]byte, []byte) {
	block, rest := pem.Decode(b)
	if block == nil {
		return nil, rest
	}
	return block.Bytes, rest
}

func runStorm(args []string, out io.Writer) error {
	o, err := parseStorm(args, out)
	if err != nil {
		return err
	}
	rep, err := storm(context.Background(), o)
	if rep != nil {
		rep.write(out)
	}
	if err != nil {
		return err
	}
	return rep.problems()
}

// stormReport is what a storm measured and what the store check found.
type stormReport struct {
	clients, concurrency int
	kinds                []*kindReport
	check                storeCheck
	setup                time.Duration
}

// kindReport is one kind's storm.
type kindReport struct {
	kind      string
	clients   int
	wall      time.Duration
	latencies []time.Duration // of the clients that got a certificate
	errors    map[string]int  // by kind of error
	phases    phases          // summed over the clients
	cpu       map[string]time.Duration
	received  []*x509.Certificate
}

// phases splits the time of a client's requests, from the client's side (net/http/httptrace):
// before the connection is asked for (building the SOAP envelope; with Kerberos, the TGS
// exchange for the service ticket and the authenticator), connecting with its TLS handshake,
// from the request written to the first byte of the answer (the server's work), and reading and
// checking the answer.
type phases struct {
	prepare, connect, server, read time.Duration
}

// storeCheck is the store after the storm.
type storeCheck struct {
	received    int // certificates clients received
	stored      int // certificates in the store
	lost        int // received but not in the store (or different there)
	duplicates  int // serials received more than once
	invalid     int // received certificates that do not verify under the CA
	undelivered int // stored with a storm account but received by no client (the client timed out or failed after issuance)
	samples     []string
}

func (r *stormReport) problems() error {
	var p []string
	for _, k := range r.kinds {
		if n := k.clients - len(k.received); n > 0 {
			p = append(p, fmt.Sprintf("%s: %d of %d clients got no certificate", k.kind, n, k.clients))
		}
	}
	c := r.check
	if c.lost+c.duplicates+c.invalid > 0 {
		p = append(p, fmt.Sprintf("store check: %d lost, %d duplicate serials, %d invalid", c.lost, c.duplicates, c.invalid))
	}
	if len(p) > 0 {
		return errors.New(strings.Join(p, "; "))
	}
	return nil
}

func (r *stormReport) write(w io.Writer) {
	fmt.Fprintf(w, "\nenrollbench storm: up to %d clients of each kind, %d in flight, %d CPUs; set-up %s (not timed below)\n",
		r.clients, r.concurrency, runtime.NumCPU(), r.setup.Round(time.Second))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kind\tclients\tissued\tper s\tp50\tp95\tp99\tmax\terrors\t")
	for _, k := range r.kinds {
		l := slices.Clone(k.latencies)
		slices.Sort(l)
		var errs []string
		for e, n := range k.errors {
			errs = append(errs, fmt.Sprintf("%d× %s", n, e))
		}
		slices.Sort(errs)
		es := "0"
		if len(errs) > 0 {
			es = strings.Join(errs, "; ")
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t\n", k.kind, k.clients, len(k.received),
			float64(len(k.received))/k.wall.Seconds(), pct(l, 50), pct(l, 95), pct(l, 99), pct(l, 100), es)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nwhere a client's time went (ms per client, client side) and CPU (ms per client) of each process:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kind\tprepare+Kerberos\tconnect+TLS\tserver\tread\tCPU enrollsvc\tCPU samba\tCPU clients\t")
	for _, k := range r.kinds {
		n := float64(max(1, k.clients))
		ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)/n) }
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", k.kind, ms(k.phases.prepare), ms(k.phases.connect),
			ms(k.phases.server), ms(k.phases.read), ms(k.cpu["enrollsvc"]), ms(k.cpu["samba"]), ms(k.cpu["clients"]))
	}
	tw.Flush()
	for _, k := range r.kinds {
		if cpu := k.cpu["enrollsvc"]; cpu > 0 && len(k.received) > 0 {
			per := cpu / time.Duration(len(k.received))
			fmt.Fprintf(w, "%s: enrollsvc used %.1f ms of CPU per certificate: on its own %d CPUs (the DC and the clients elsewhere) about %.0f/s\n",
				k.kind, float64(per)/float64(time.Millisecond), runtime.NumCPU(), float64(runtime.NumCPU())*float64(time.Second)/float64(per))
		}
	}
	c := r.check
	fmt.Fprintf(w, "\nstore check: %d certificates received, %d in the store; lost %d, duplicate serials %d, invalid %d; "+
		"issued but not delivered %d\n", c.received, c.stored, c.lost, c.duplicates, c.invalid, c.undelivered)
	for _, s := range c.samples {
		fmt.Fprintln(w, "  "+s)
	}
}

// pct is the p-th percentile of sorted l (nearest rank).
func pct(l []time.Duration, p int) string {
	if len(l) == 0 {
		return "-"
	}
	i := (p*len(l)+99)/100 - 1
	return l[max(0, min(i, len(l)-1))].Round(time.Millisecond).String()
}

// stormEnv is the running set-up: the DC, the service and what clients need to reach them.
type stormEnv struct {
	dir, tmp  string
	dc        *ldaptest.DC
	sample    *ldaptest.Sample
	pop       ldaptest.Population
	krb5Conf  string
	roots     *x509.CertPool
	caCert    *x509.Certificate
	httpsBase string // https://localhost:PORT (the enrollment web services and SCEP over HTTPS)
	httpBase  string // http://127.0.0.1:PORT (SCEP)
	svc       *exec.Cmd
	svcDone   chan error
	svcErr    *bytes.Buffer
	api       *apiclient.Client
}

func storm(ctx context.Context, o stormOptions) (*stormReport, error) {
	start := time.Now()
	rep := &stormReport{clients: o.clients, concurrency: o.concurrency}
	keys, err := rsaKeys(o.clients, o.progress)
	if err != nil {
		return nil, fmt.Errorf("client keys: %w", err)
	}
	env, err := startStormEnv(ctx, o)
	if env != nil {
		defer env.close()
	}
	if err != nil {
		return nil, err
	}
	rep.setup = time.Since(start)
	for _, kind := range o.kinds {
		t := time.Now()
		k, err := env.run(ctx, o, kind, keys)
		if err != nil {
			return rep, fmt.Errorf("%s storm: %w", kind, err)
		}
		rep.kinds = append(rep.kinds, k)
		rep.setup += time.Since(t) - k.wall
	}
	if err := env.stopService(); err != nil {
		return rep, err
	}
	if o.cpuProfile != "" {
		b, err := os.ReadFile(filepath.Join(env.dir, "cpu.pprof"))
		if err == nil {
			err = os.WriteFile(o.cpuProfile, b, 0o644)
		}
		if err != nil {
			return rep, fmt.Errorf("enrollsvc's CPU profile: %w", err)
		}
	}
	var received []*x509.Certificate
	for _, k := range rep.kinds {
		received = append(received, k.received...)
	}
	stored, err := storedCertificates(ctx, filepath.Join(env.dir, config.StoreFile))
	if err != nil {
		return rep, err
	}
	rep.check = checkStore(stored, env.caCert, received, func(account string) bool {
		return strings.HasPrefix(account, "storm")
	})
	return rep, nil
}

// storedCertificates reads every certificate of the SQLite store at path.
func storedCertificates(ctx context.Context, path string) ([]store.Certificate, error) {
	st, err := store.Open(ctx, path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, fmt.Errorf("opening the store after the storm: %w", err)
	}
	defer st.Close()
	var all []store.Certificate
	for off := 0; ; off += 100000 {
		page, err := st.ListCertificates(ctx, store.CertFilter{Limit: 100000, Offset: off})
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < 100000 {
			return all, nil
		}
	}
}

// startStormEnv starts the DC with the population, initialises a data directory (SoftHSM, RSA-2048
// CA key, the directory, the Kerberos keytab of HTTP/localhost, SCEP over HTTP) and serves it.
func startStormEnv(ctx context.Context, o stormOptions) (*stormEnv, error) {
	env := &stormEnv{pop: ldaptest.Population{Users: o.clients}}
	var err error
	if env.tmp, err = os.MkdirTemp("", "enrollbench-storm-"); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.progress, "enrollbench: starting a Samba DC with %d users\n", o.clients)
	if env.dc, env.sample, err = ldaptest.LaunchPopulated(env.pop); err != nil {
		return env, fmt.Errorf("the DC: %w", err)
	}
	keytabPath, err := env.dc.ServiceKeytab("svc-http", "HTTP/localhost")
	if err != nil {
		return env, err
	}
	env.krb5Conf = filepath.Join(env.tmp, "krb5.conf")
	if err := env.dc.WriteKrb5Conf(env.krb5Conf); err != nil {
		return env, err
	}
	pw := filepath.Join(env.tmp, "svc-enroll.pw")
	if err := os.WriteFile(pw, []byte(env.sample.SvcEnroll.Password), 0o600); err != nil {
		return env, err
	}
	port, err := freePort()
	if err != nil {
		return env, err
	}
	env.httpBase = "http://127.0.0.1:" + port
	env.dir = filepath.Join(env.tmp, "data")
	initArgs := []string{"init", "--data", env.dir, "--ca-name", stormCA, "--key", "rsa-2048",
		"--ldap-url", env.dc.URL, "--ldap-ca-file", env.dc.CAFile, "--ldap-bind-user", env.sample.SvcEnroll.UPN,
		"--ldap-password-file", pw, "--ca-cn", ldaptest.CACN, "--keytab", keytabPath,
		"--http-url", env.httpBase, "--http-listen", "127.0.0.1:" + port}
	if out, err := exec.CommandContext(ctx, o.enrollsvc, initArgs...).CombinedOutput(); err != nil {
		return env, fmt.Errorf("%s init: %v\n%s", o.enrollsvc, err, out)
	}
	// Every client comes from 127.0.0.1, as from behind one NAT or load balancer: the per-source
	// limits are raised to let the storm through; the per-account limits stay.
	cfg, err := config.Load(env.dir)
	if err != nil {
		return env, err
	}
	lim := config.Limits{}
	if cfg.Limits != nil {
		lim = *cfg.Limits
	}
	lim.EnrollPerSource = &config.RateLimit{PerMinute: 6e6, Burst: 1e6}
	lim.SCEPPerSource = &config.RateLimit{PerMinute: 6e6, Burst: 1e6}
	cfg.Limits = &lim
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return env, err
	}
	if err := config.WriteFileAtomic(filepath.Join(env.dir, config.File), append(b, '\n'), 0o600); err != nil {
		return env, err
	}
	if err := env.serve(ctx, o.enrollsvc, o.cpuProfile != ""); err != nil {
		return env, err
	}
	pem, err := os.ReadFile(filepath.Join(env.dir, config.CACertFile))
	if err != nil {
		return env, err
	}
	env.roots = x509.NewCertPool()
	env.roots.AppendCertsFromPEM(pem)
	block, _ := pemDecode(pem)
	if env.caCert, err = x509.ParseCertificate(block); err != nil {
		return env, fmt.Errorf("the CA certificate %s: %w", config.CACertFile, err)
	}
	return env, nil
}

// freePort is a port for a server started as a command (freeport: outside the kernel's
// ephemeral range, where no other listener on port 0 takes it first).
func freePort() (string, error) {
	p, err := freeport.Port()
	if err != nil {
		return "", err
	}
	return strconv.Itoa(p), nil
}

// serve runs `enrollsvc serve` confined as the appliance runs it and waits for its API and
// enrollment listener.
func (env *stormEnv) serve(ctx context.Context, bin string, profile bool) error {
	args := []string{"serve", "--data", env.dir, "--api-listen", "127.0.0.1:0", "--enroll-listen", "127.0.0.1:0", "--landlock"}
	if profile {
		args = append(args, "--cpuprofile", filepath.Join(env.dir, "cpu.pprof"))
	} else {
		args = append(args, "--seccomp")
	}
	env.svc = exec.Command(bin, args...)
	env.svcErr = &bytes.Buffer{}
	env.svc.Stdout, env.svc.Stderr = io.Discard, &lockedBuffer{b: env.svcErr}
	env.svc.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := env.svc.Start(); err != nil {
		return err
	}
	env.svcDone = make(chan error, 1)
	go func() { env.svcDone <- env.svc.Wait() }()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-env.svcDone:
			env.svc = nil
			return fmt.Errorf("enrollsvc serve exited: %v\n%s", err, env.svcErr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("enrollsvc serve did not answer within a minute\n%s", env.svcErr)
		}
		cl, err := apiclient.DialDataDir(env.dir)
		if err != nil || cl.Health(ctx) != nil {
			continue
		}
		addr, err := os.ReadFile(filepath.Join(env.dir, config.EnrollAddr))
		if err != nil {
			continue
		}
		_, port, _ := net.SplitHostPort(strings.TrimSpace(string(addr)))
		env.httpsBase, env.api = "https://localhost:"+port, cl
		if resp, err := http.Get(env.httpBase + "/scep/none?operation=GetCACaps"); err == nil {
			resp.Body.Close()
			return nil
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// stopService stops enrollsvc with SIGTERM (it finishes what it has begun) and waits.
func (env *stormEnv) stopService() error {
	if env.svc == nil {
		return nil
	}
	env.svc.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-env.svcDone:
		env.svc = nil
		if err != nil {
			return fmt.Errorf("enrollsvc serve ended with %v\n%s", err, env.svcErr)
		}
		return nil
	case <-time.After(time.Minute):
		env.svc.Process.Kill()
		<-env.svcDone
		env.svc = nil
		return errors.New("enrollsvc serve did not stop within a minute of SIGTERM")
	}
}

func (env *stormEnv) close() {
	if env.svc != nil {
		env.svc.Process.Kill()
		<-env.svcDone
	}
	if env.dc != nil {
		env.dc.Close()
	}
	os.RemoveAll(env.tmp)
}

// client is one storm client, ready before the clock: what it sends and how.
type client struct {
	ws      *wsclient.Client // kerberos, password
	csr     []byte           // kerberos, password: PKCS#10 naming the template
	key     *rsa.PrivateKey
	scepMsg []byte            // scep: the whole pkiMessage
	self    *x509.Certificate // scep: the self-signed certificate the message is signed with
	tx      string            // scep: the transactionID the reply must carry
	nonce   []byte            // scep: the senderNonce the reply must carry as its recipientNonce
	// who is what the certificate must name: the account's e-mail address (AEUser puts the
	// directory's mail in the SAN), or the device's common name (the challenge binds it).
	who string
}

// prepare makes the kind's clients: keys are the pool's, requests and envelopes are made now,
// Kerberos clients log in (AS exchange) now, SCEP devices get their one-time challenges now.
func (env *stormEnv) prepare(ctx context.Context, o stormOptions, kind string, keys []*rsa.PrivateKey) ([]*client, error) {
	clients := make([]*client, o.count(kind))
	cep := env.httpsBase + "/ADPolicyProvider_CEP_Kerberos/service.svc/CEP"
	if kind == kindPassword {
		cep = env.httpsBase + "/ADPolicyProvider_CEP_UsernamePassword/service.svc/CEP"
	}
	// The requests are aeagent's, for the AEUser template as the policy server describes it to
	// the first account.
	var tmpl wsclient.Template
	if kind != kindSCEP {
		first, err := wsclient.New(env.httpsBase+"/ADPolicyProvider_CEP_UsernamePassword/service.svc/CEP",
			wsclient.PasswordAuth{Username: env.pop.UserName(0) + "@" + ldaptest.DomainDNS, Password: ldaptest.Password(env.pop.UserName(0))}, env.roots)
		if err != nil {
			return nil, err
		}
		p, err := first.GetPolicies(ctx, nil)
		if err != nil {
			return nil, fmt.Errorf("the policy: %w", err)
		}
		var ok bool
		if tmpl, ok = p.Template("AEUser"); !ok {
			return nil, errors.New("the policy offers no AEUser")
		}
	}
	var ra *x509.Certificate
	if kind == kindSCEP {
		if _, err := env.api.AddSCEPProfile(ctx, apiclient.SCEPProfileSpec{Name: "storm", Template: "SuppliesSubject",
			Account: env.sample.Dave.Name, OneTime: true}); err != nil {
			return nil, fmt.Errorf("the SCEP profile: %w", err)
		}
		var err error
		if ra, err = env.raCert(ctx); err != nil {
			return nil, err
		}
	}
	ktDir := filepath.Join(env.tmp, "keytabs")
	if err := os.MkdirAll(ktDir, 0o700); err != nil {
		return nil, err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(clients) {
					return
				}
				c, err := env.prepareOne(ctx, kind, i, keys[i], cep, ktDir, tmpl, ra)
				if err != nil {
					errs <- fmt.Errorf("client %d: %w", i, err)
					return
				}
				clients[i] = c
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return clients, nil
}

func (env *stormEnv) prepareOne(ctx context.Context, kind string, i int, key *rsa.PrivateKey, cep, ktDir string,
	tmpl wsclient.Template, ra *x509.Certificate) (*client, error) {
	name := env.pop.UserName(i)
	password := ldaptest.Password(name)
	c := &client{key: key, who: name + "@" + ldaptest.DomainDNS}
	switch kind {
	case kindKerberos, kindPassword:
		var err error
		if c.csr, err = agent.NewRequest(tmpl, key, name); err != nil {
			return nil, err
		}
		var auth wsclient.Auth = wsclient.PasswordAuth{Username: name + "@" + ldaptest.DomainDNS, Password: password}
		if kind == kindKerberos {
			kt := keytab.New()
			for _, e := range []int32{etypeID.AES256_CTS_HMAC_SHA1_96, etypeID.AES128_CTS_HMAC_SHA1_96} {
				if err := kt.AddEntry(name, ldaptest.Realm, password, time.Now(), 1, e); err != nil {
					return nil, err
				}
			}
			b, err := kt.Marshal()
			if err != nil {
				return nil, err
			}
			path := filepath.Join(ktDir, name+".keytab")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				return nil, err
			}
			auth = wsclient.KerberosAuth{Keytab: path, Principal: name, Krb5Conf: env.krb5Conf}
		}
		if c.ws, err = wsclient.New(cep, auth, env.roots); err != nil {
			return nil, err
		}
		if err := c.ws.Login(ctx); err != nil { // the TGT, as a logged-on client has it
			return nil, err
		}
	case kindSCEP:
		cn := fmt.Sprintf("device-%06d.storm.example.test", i)
		c.who = cn
		ch, err := env.api.SCEPChallenge(ctx, apiclient.ChallengeRequest{Profile: "storm", Subject: cn, Account: name, TTL: "24h"})
		if err != nil {
			return nil, fmt.Errorf("a one-time challenge: %w", err)
		}
		return newSCEPClient(key, cn, ch.Challenge, ra, fmt.Sprintf("storm-%d-%06d", time.Now().UnixNano(), i))
	}
	return c, nil
}

// newSCEPClient makes a SCEP device's PKCSReq: a CSR for cn from key with the challenge, in an
// AES-256-CBC envelope to the RA's encryption certificate ra, signed with key under a self-signed
// certificate, with transactionID tx and a fresh senderNonce.
func newSCEPClient(key *rsa.PrivateKey, cn, challenge string, ra *x509.Certificate, tx string) (*client, error) {
	c := &client{key: key, who: cn, tx: tx}
	csr, err := scep.NewCSR(&x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key, challenge)
	if err != nil {
		return nil, err
	}
	envelope, err := cms.Encrypt(csr, ra, cms.AES256CBC)
	if err != nil {
		return nil, err
	}
	if c.self, err = selfSigned(key, cn); err != nil {
		return nil, err
	}
	if c.nonce, err = scep.NewNonce(); err != nil {
		return nil, err
	}
	m := &scep.PKIMessage{MessageType: scep.PKCSReq, TransactionID: tx, SenderNonce: c.nonce, Signer: c.self}
	if c.scepMsg, err = m.Sign(envelope, key); err != nil {
		return nil, err
	}
	return c, nil
}

func selfSigned(key *rsa.PrivateKey, cn string) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// raCert is the RA certificate SCEP requests are encrypted to, from GetCACert.
func (env *stormEnv) raCert(ctx context.Context) (*x509.Certificate, error) {
	certs, err := getCACert(ctx, env.httpBase+"/scep/storm")
	if err != nil {
		return nil, err
	}
	return raEncryptionCert(certs)
}

// getCACert asks the SCEP service at u (http://host/scep/PROFILE) for its certificates.
func getCACert(ctx context.Context, u string) ([]*x509.Certificate, error) {
	body, status, err := httpDo(ctx, http.MethodGet, u+"?operation=GetCACert", nil, nil)
	if err != nil || status != http.StatusOK {
		return nil, fmt.Errorf("GetCACert: HTTP %d, %v", status, err)
	}
	sd, err := cms.ParseSignedData(body)
	if err != nil {
		return nil, fmt.Errorf("GetCACert: %w", err)
	}
	return sd.Certificates, nil
}

// raEncryptionCert is the first of GetCACert's certificates whose key may encrypt keys: the RA
// certificate requests are encrypted to (RFC 8894 §3.5.1).
func raEncryptionCert(certs []*x509.Certificate) (*x509.Certificate, error) {
	for _, c := range certs {
		if c.KeyUsage&x509.KeyUsageKeyEncipherment != 0 {
			return c, nil
		}
	}
	return nil, errors.New("GetCACert names no RA encryption certificate")
}

var plainHTTP = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 5 * time.Minute}

func httpDo(ctx context.Context, method, u string, body []byte, trace *httptrace.ClientTrace) ([]byte, int, error) {
	if trace != nil {
		ctx = httptrace.WithClientTrace(ctx, trace)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-pki-message")
	}
	resp, err := plainHTTP.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return b, resp.StatusCode, err
}

// count is the number of clients of kind.
func (o stormOptions) count(kind string) int {
	if kind == kindPassword && o.password > 0 {
		return o.password
	}
	return o.clients
}

// run prepares the kind's clients, then, on the clock, runs them o.concurrency at a time.
func (env *stormEnv) run(ctx context.Context, o stormOptions, kind string, keys []*rsa.PrivateKey) (*kindReport, error) {
	fmt.Fprintf(o.progress, "enrollbench: preparing %d %s clients\n", o.count(kind), kind)
	clients, err := env.prepare(ctx, o, kind, keys)
	if err != nil {
		return nil, err
	}
	rep := &kindReport{kind: kind, clients: len(clients), errors: map[string]int{}, cpu: map[string]time.Duration{}}
	var mu sync.Mutex
	cpuBefore := env.cpu()
	fmt.Fprintf(o.progress, "enrollbench: %s storm\n", kind)
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(o.concurrency, len(clients)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(clients) {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, o.timeout)
				var ph phases
				t := time.Now()
				cert, err := env.one(cctx, kind, clients[i], &ph)
				d := time.Since(t)
				if err == nil && !slices.Contains(cert.EmailAddresses, clients[i].who) && cert.Subject.CommonName != clients[i].who {
					err = fmt.Errorf("wrong identity: a certificate for %v %v, not %s", cert.Subject, cert.EmailAddresses, clients[i].who)
				}
				cancel()
				ph.read = d - ph.prepare - ph.connect - ph.server
				mu.Lock()
				rep.phases.prepare += ph.prepare
				rep.phases.connect += ph.connect
				rep.phases.server += ph.server
				rep.phases.read += ph.read
				if err != nil {
					rep.errors[errorKind(err)]++
				} else {
					rep.latencies = append(rep.latencies, d)
					rep.received = append(rep.received, cert)
				}
				mu.Unlock()
				clients[i] = nil // its keytab login and connections can go
			}
		})
	}
	wg.Wait()
	rep.wall = time.Since(start)
	after := env.cpu()
	for k, v := range after {
		rep.cpu[k] = v - cpuBefore[k]
	}
	return rep, nil
}

// one runs one client: MS-XCEP GetPolicies and MS-WSTEP RequestSecurityToken for AEUser, or a
// SCEP PKCSReq; it returns the certificate received.
func (env *stormEnv) one(ctx context.Context, kind string, c *client, ph *phases) (*x509.Certificate, error) {
	if kind == kindSCEP {
		return scepEnroll(ctx, env.httpBase+"/scep/storm", c, nil, ph)
	}
	pctx := httptrace.WithClientTrace(ctx, tracer(ph))
	p, err := c.ws.GetPolicies(pctx, nil)
	if err != nil {
		return nil, err
	}
	tmpl, ok := p.Template("AEUser")
	if !ok {
		return nil, errors.New("GetPolicies offers no AEUser")
	}
	auth := wsclient.AuthKerberos
	if kind == kindPassword {
		auth = wsclient.AuthUsername
	}
	ces, err := p.EnrollmentURL(tmpl, auth)
	if err != nil {
		return nil, err
	}
	res, err := c.ws.Issue(httptrace.WithClientTrace(ctx, tracer(ph)), ces, c.csr, nil)
	if err != nil {
		return nil, err
	}
	if res.Status != wsclient.StatusIssued {
		return nil, fmt.Errorf("%s: %s", res.Status, res.Reason)
	}
	return res.Certificate, nil
}

// scepEnroll sends c's PKCSReq to the SCEP service at u (http://host/scep/PROFILE) and returns the
// certificate of the reply, which must be a SUCCESS CertRep with c's transactionID and c's
// senderNonce as its recipientNonce, signed (the signature verified) by one of signers when
// signers is not nil, whose envelope c's key opens and holds a certificate for c's key.
func scepEnroll(ctx context.Context, u string, c *client, signers []*x509.Certificate, ph *phases) (*x509.Certificate, error) {
	body, status, err := httpDo(ctx, http.MethodPost, u+"?operation=PKIOperation", c.scepMsg, tracer(ph))
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("SCEP: HTTP %d", status)
	}
	m, err := scep.ParsePKIMessage(body)
	if err != nil {
		return nil, fmt.Errorf("SCEP: the reply: %w", err)
	}
	if m.MessageType != scep.CertRep || m.PKIStatus != 0 {
		return nil, fmt.Errorf("SCEP: pkiStatus %d failInfo %d", m.PKIStatus, m.FailInfo)
	}
	if m.TransactionID != c.tx || !bytes.Equal(m.RecipientNonce, c.nonce) {
		return nil, errors.New("SCEP: the reply's transactionID or recipientNonce is not the request's")
	}
	if signers != nil && !slices.ContainsFunc(signers, func(s *x509.Certificate) bool { return s.Equal(m.Signer) }) {
		return nil, fmt.Errorf("SCEP: the reply is signed by %v, not by a certificate of GetCACert", m.Signer.Subject)
	}
	inner, err := m.Decrypt(c.self, c.key)
	if err != nil {
		return nil, fmt.Errorf("SCEP: decrypting the reply: %w", err)
	}
	sd, err := cms.ParseSignedData(inner)
	if err != nil || len(sd.Certificates) == 0 {
		return nil, fmt.Errorf("SCEP: the reply carries no certificate (%v)", err)
	}
	for _, cert := range sd.Certificates {
		if certutil.PublicKeysEqual(cert.PublicKey, c.key.Public()) {
			return cert, nil
		}
	}
	return nil, errors.New("SCEP: no certificate in the reply is for the request's key")
}

// tracer adds a request's phases to ph: from the request's start to asking for a connection
// (prepare), the connection and TLS handshake, request written to first answer byte (server).
// The read phase is what remains of the client's whole time.
func tracer(ph *phases) *httptrace.ClientTrace {
	start := time.Now()
	var connStart, wrote time.Time
	return &httptrace.ClientTrace{
		GetConn: func(string) { ph.prepare += time.Since(start); connStart = time.Now() },
		GotConn: func(httptrace.GotConnInfo) {
			if !connStart.IsZero() {
				ph.connect += time.Since(connStart)
			}
		},
		WroteRequest:         func(httptrace.WroteRequestInfo) { wrote = time.Now() },
		GotFirstResponseByte: func() { ph.server += time.Since(wrote) },
	}
}

// errorKind names the kind of a client's error for the report.
func errorKind(err error) string {
	var ws *wsclient.Error
	switch {
	case strings.HasPrefix(err.Error(), "wrong identity"):
		return "wrong identity"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, wsclient.ErrAuthentication):
		return "authentication refused"
	case errors.Is(err, wsclient.ErrUnavailable):
		return "unavailable (503)"
	case errors.As(err, &ws):
		return fmt.Sprintf("HTTP %d", ws.StatusCode)
	}
	var ne net.Error
	var ue *url.Error
	if errors.As(err, &ne) || errors.As(err, &ue) {
		return "transport: " + firstWords(err.Error(), 8)
	}
	return firstWords(err.Error(), 8)
}

func firstWords(s string, n int) string {
	f := strings.Fields(s)
	if len(f) > n {
		f = append(f[:n], "…")
	}
	return strings.Join(f, " ")
}

// cpu is the CPU time (user and system) used so far by enrollsvc, by the DC's samba processes and
// by this process (the clients).
func (env *stormEnv) cpu() map[string]time.Duration {
	out := map[string]time.Duration{}
	if env.svc != nil {
		out["enrollsvc"] = procCPU(env.svc.Process.Pid)
	}
	if pids, err := env.dc.Pids(); err == nil {
		for _, p := range pids {
			out["samba"] += procCPU(p)
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		out["clients"] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return out
}

// procCPU reads utime+stime of a process from /proc/PID/stat (proc(5)), in clock ticks of 1/100 s.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

// checkStore checks received against the store: each there with the same bytes, no serial twice,
// each valid under ca now; and counts the certificates of storm accounts (ours) no client
// received.
func checkStore(all []store.Certificate, ca *x509.Certificate, received []*x509.Certificate, ours func(account string) bool) storeCheck {
	c := storeCheck{received: len(received)}
	stored := map[string]store.Certificate{}
	for _, sc := range all {
		stored[sc.Serial] = sc
	}
	c.stored = len(stored)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	seen := map[string]bool{}
	note := func(format string, args ...any) {
		if len(c.samples) < 5 {
			c.samples = append(c.samples, fmt.Sprintf(format, args...))
		}
	}
	for _, cert := range received {
		serial := certutil.SerialString(cert.SerialNumber)
		if seen[serial] {
			c.duplicates++
			note("serial %s received twice", serial)
			continue
		}
		seen[serial] = true
		if sc, ok := stored[serial]; !ok || !bytes.Equal(sc.DER, cert.Raw) {
			c.lost++
			note("serial %s received but not in the store (or not these bytes)", serial)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			c.invalid++
			note("serial %s does not verify: %v", serial, err)
		}
	}
	for serial, sc := range stored {
		if !seen[serial] && ours(sc.Account) {
			c.undelivered++
		}
	}
	return c
}
