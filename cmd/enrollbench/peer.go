package main

import (
	"cmp"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/enrollment-appliance/aeappliance/apiclient"
	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/proto/certutil"
)

// `enrollbench scep-peer`: the same SCEP load against this appliance's enrollsvc and against
// smallstep's step-ca on the same machine, both with an RSA-2048 CA key in SoftHSM2.

const (
	serverAppliance = "appliance"
	serverStepCA    = "step-ca"
	peerChallenge   = "enrollbench scep-peer static challenge"
	peerProfile     = "peer" // the appliance's SCEP profile (step-ca's provisioner has the same name)
)

// peerOptions are scep-peer's flags.
type peerOptions struct {
	requests    int           // PKCSReq per run (one run per server and concurrency)
	concurrency []int         // clients in flight, one run each
	enrollsvc   string        // the enrollsvc binary
	stepca      string        // the step-ca binary; empty: build (once) into cache
	cache       string        // where the built step-ca is kept
	rawDuration time.Duration // how long the raw HSM signature rate is measured at each concurrency (0: not)
	warmup      int           // requests per server before the first run, not measured
	timeout     time.Duration // per request
	servers     []string      // serverAppliance, serverStepCA
	cpuProfile  string        // write enrollsvc's CPU profile here (then it runs without seccomp)
	out         io.Writer
	progress    io.Writer
}

func parsePeer(args []string, out io.Writer) (peerOptions, error) {
	fs := flag.NewFlagSet("enrollbench scep-peer", flag.ContinueOnError)
	fs.SetOutput(out)
	o := peerOptions{out: out, progress: os.Stderr}
	fs.IntVar(&o.requests, "requests", 1000, "PKCSReq requests per run (one run per server and concurrency), each from a fresh RSA-2048 key")
	conc := fs.String("concurrency", "8,32", "concurrent clients, one run each")
	fs.StringVar(&o.enrollsvc, "enrollsvc", "", "the enrollsvc binary (default: enrollsvc beside this program, else on PATH)")
	fs.StringVar(&o.stepca, "stepca", "", "the step-ca binary (default: built once by go install into -cache)")
	fs.StringVar(&o.cache, "cache", stepCACacheDir(), "where step-ca "+stepCAVersion+" is built and kept")
	fs.DurationVar(&o.rawDuration, "raw-duration", 2*time.Second, "how long the raw RSA-2048 HSM signature rate is measured at each concurrency (0: not measured)")
	fs.IntVar(&o.warmup, "warmup", 32, "requests each server answers before its first run, not measured")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long one request may take before it counts as an error")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write enrollsvc's CPU profile of all its runs to FILE (enrollsvc then runs without its seccomp allow-list, which has no profiling timers)")
	servers := fs.String("servers", serverAppliance+","+serverStepCA, "the servers to run")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: enrollbench scep-peer [flags]

Drives this appliance's enrollsvc and smallstep's step-ca %s on this machine, both running and
measured in turns at each concurrency (the first server first at the first concurrency, the other
first at the next, ...), with the same SCEP client (GetCACert, then PKCSReq POSTs over plain HTTP with a static challenge):
fresh RSA-2048 client keys (the cache enrollbench storm uses), CSRs, self-signed certificates and
AES-256-CBC envelopes all made before the clock. Both CAs have an RSA-2048 CA key in SoftHSM2 and
make three RSA private-key operations in it per request (the RA's decryption, the certificate's
signature, the reply's signature), and both commit each certificate durably (the appliance in its
SQLite store, step-ca in badger v2). Every answer must be SUCCESS, carry the request's transaction
and nonce, decrypt with the request's key to a certificate for that key and verify under its CA.

enrollsvc runs as the storm runs it (confined, a Samba DC for the directory, the SCEP per-source
limit raised) with a static-challenge profile for SuppliesSubject; step-ca is built once with
`+"`go install`"+` (cgo, its PKCS#11 KMS) unless -stepca is given, and set up without the step CLI
(softhsm2-util, pkcs11-tool, ca.json written here). It prints one table: issued/s, latency, errors
and the server process's CPU per certificate, for each server and concurrency, with the ratio
appliance/step-ca, and the raw RSA-2048 HSM signature rate with its ceiling of a third of it.

Flags:
`, stepCAVersion)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, s := range strings.Split(*conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-concurrency %q: want positive integers", *conc)
		}
		o.concurrency = append(o.concurrency, n)
	}
	for _, sv := range strings.Split(*servers, ",") {
		switch sv = strings.TrimSpace(sv); sv {
		case serverAppliance, serverStepCA:
			if !slices.Contains(o.servers, sv) {
				o.servers = append(o.servers, sv)
			}
		default:
			return o, fmt.Errorf("-servers: %q is not %s or %s", sv, serverAppliance, serverStepCA)
		}
	}
	if o.requests < 1 || o.warmup < 0 || o.timeout <= 0 || o.rawDuration < 0 {
		return o, errors.New("-requests and -timeout must be positive, -warmup and -raw-duration not negative")
	}
	if o.enrollsvc == "" {
		o.enrollsvc = defaultEnrollsvc()
	}
	return o, nil
}

// defaultEnrollsvc is enrollsvc beside this program, else the one on PATH.
func defaultEnrollsvc() string {
	if self, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(self), "enrollsvc"); fileExists(p) {
			return p
		}
	}
	return "enrollsvc"
}

func runPeer(args []string, out io.Writer) error {
	o, err := parsePeer(args, out)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	rep, err := peer(context.Background(), o)
	if rep != nil {
		rep.write(out)
	}
	if err != nil {
		return err
	}
	return rep.problems()
}

// peerReport is what scep-peer measured.
type peerReport struct {
	requests   int
	load       string // /proc/loadavg at the start and before each server
	stepca     string // the binary
	stepcaHow  string // how it was obtained
	raw        map[int]float64
	rawDur     time.Duration
	runs       []*peerRun
	durability []string // one line per server
	order      []string // the order of the runs at each concurrency
	failures   []string // durability problems
}

// peerRun is one server at one concurrency.
type peerRun struct {
	server      string
	concurrency int
	requests    int
	wall        time.Duration
	latencies   []time.Duration // of the requests that got a certificate
	errors      map[string]int
	cpu         time.Duration // the server process (user and system)
	dcCPU       time.Duration // the appliance's Samba DC
	clientCPU   time.Duration // this process: the clients (HTTP, the replies' decryption and checks)
	otherCPU    time.Duration // the machine's busy time (/proc/stat) less the server's, the DC's and the clients'
	received    []*x509.Certificate
	invalid     int    // received but not valid under the server's CA
	duplicates  int    // serials received twice (over all runs of the server)
	sample      string // the first invalid or duplicate certificate
	roots       *x509.CertPool
	inter       *x509.CertPool
}

func (r *peerRun) rate() float64 { return float64(len(r.received)) / r.wall.Seconds() }

// cpuPerCert is the server's CPU time per certificate issued in the run.
func (r *peerRun) cpuPerCert(d time.Duration) float64 {
	if len(r.received) == 0 {
		return 0
	}
	return float64(d) / float64(time.Millisecond) / float64(len(r.received))
}

func (r *peerReport) problems() error {
	var p []string
	for _, run := range r.runs {
		if n := run.requests - len(run.received); n > 0 {
			p = append(p, fmt.Sprintf("%s at %d: %d of %d requests got no certificate", run.server, run.concurrency, n, run.requests))
		}
		if run.invalid+run.duplicates > 0 {
			p = append(p, fmt.Sprintf("%s at %d: %d invalid certificates, %d duplicate serials (%s)", run.server, run.concurrency, run.invalid, run.duplicates, run.sample))
		}
	}
	p = append(p, r.failures...)
	if len(p) > 0 {
		return errors.New(strings.Join(p, "; "))
	}
	return nil
}

func (r *peerReport) write(w io.Writer) {
	fmt.Fprintf(w, "\nenrollbench scep-peer: %d PKCSReq per run from fresh RSA-2048 keys, AES-256-CBC envelopes, %d CPUs\nload average (1, 5, 15 min) at the start: %s\n",
		r.requests, runtime.NumCPU(), r.load)
	fmt.Fprintf(w, "step-ca %s: %s (%s)\n", stepCAVersion, r.stepca, r.stepcaHow)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\tclients\tissued\terrors\tissued/s\tp50\tp99\tCPU ms/cert\tDC CPU ms/cert\tclient CPU ms/cert\tother CPU\traw HSM sig/s\tHSM ceiling/s\t")
	byKey := map[string]*peerRun{}
	for _, run := range r.runs {
		byKey[fmt.Sprint(run.server, run.concurrency)] = run
	}
	var concs []int
	ratios := false
	for _, run := range r.runs {
		if !slices.Contains(concs, run.concurrency) {
			concs = append(concs, run.concurrency)
		}
	}
	for _, c := range concs {
		raw, ceiling := "-", "-"
		if v, ok := r.raw[c]; ok {
			raw, ceiling = fmt.Sprintf("%.0f", v), fmt.Sprintf("%.0f", v/3)
		}
		for _, s := range []string{serverAppliance, serverStepCA} {
			run := byKey[fmt.Sprint(s, c)]
			if run == nil {
				continue
			}
			l := slices.Clone(run.latencies)
			slices.Sort(l)
			dc := "-"
			if s == serverAppliance {
				dc = fmt.Sprintf("%.2f", run.cpuPerCert(run.dcCPU))
			}
			other := float64(run.otherCPU) / float64(run.wall*time.Duration(runtime.NumCPU())) * 100
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.0f\t%s\t%s\t%.2f\t%s\t%.2f\t%.0f%%\t%s\t%s\t\n", s, c, len(run.received), errorList(run.errors),
				run.rate(), pct(l, 50), pct(l, 99), run.cpuPerCert(run.cpu), dc, run.cpuPerCert(run.clientCPU), other, raw, ceiling)
		}
		a, b := byKey[fmt.Sprint(serverAppliance, c)], byKey[fmt.Sprint(serverStepCA, c)]
		if a != nil && b != nil && len(a.received) > 0 && len(b.received) > 0 {
			ratios = true
			ratio := func(x, y float64) string {
				if y == 0 {
					return "-"
				}
				return fmt.Sprintf("%.2f", x/y)
			}
			la, lb := slices.Sorted(slices.Values(a.latencies)), slices.Sorted(slices.Values(b.latencies))
			p := func(l []time.Duration, q int) float64 { return float64(l[max(0, min((q*len(l)+99)/100-1, len(l)-1))]) }
			fmt.Fprintf(tw, "appliance/step-ca\t%d\t\t\t%s\t%s\t%s\t%s\t\t\t\t\t\t\n", c, ratio(a.rate(), b.rate()),
				ratio(p(la, 50), p(lb, 50)), ratio(p(la, 99), p(lb, 99)), ratio(a.cpuPerCert(a.cpu), b.cpuPerCert(b.cpu)))
		}
	}
	tw.Flush()
	if len(r.order) > 0 {
		fmt.Fprintf(w, "runs in turns, both servers up: %s\n", strings.Join(r.order, ", "))
	}
	if ratios {
		fmt.Fprintln(w, "appliance/step-ca: the appliance's figure over step-ca's (issued/s above 1: the appliance is faster; p50, p99, CPU above 1: slower, costlier)")
	}
	fmt.Fprintln(w, "CPU: the server process's user+system time from /proc per certificate; DC: the appliance's Samba DC (its directory);\n"+
		"client: this process (the SCEP clients: HTTP, each reply's signature check and decryption, the same for both servers);\n"+
		"other CPU: the machine's busy CPU time (/proc/stat) not accounted for by those, in % of the run's capacity (all CPUs × wall time):\n"+
		"the kernel's share of loopback networking and I/O, and whatever else ran on the machine (more than a few % disturbs the run)")
	if len(r.raw) > 0 {
		fmt.Fprintf(w, "raw HSM: RSA-2048 PKCS#1 v1.5 signatures/s with a SoftHSM2 key through this repository's hsm package (%s at each concurrency);\n"+
			"each request needs three RSA-2048 private-key operations in the HSM, so a third of it is the HSM's ceiling\n", r.rawDur)
	}
	for _, d := range r.durability {
		fmt.Fprintln(w, d)
	}
}

func errorList(m map[string]int) string {
	var errs []string
	for e, n := range m {
		errs = append(errs, fmt.Sprintf("%d× %s", n, e))
	}
	slices.Sort(errs)
	if len(errs) == 0 {
		return "0"
	}
	return strings.Join(errs, "; ")
}

// peer runs scep-peer: step-ca found or built, the client keys, the raw HSM rate; then both
// servers are started and warmed up, and run one after the other at each concurrency, in turns
// (the appliance first at the first concurrency, step-ca first at the second, ...), so that a
// drift of the machine's speed during the runs does not favour one of them; then each is stopped
// and its store checked.
func peer(ctx context.Context, o peerOptions) (*peerReport, error) {
	rep := &peerReport{requests: o.requests, stepca: o.stepca, rawDur: o.rawDuration, load: loadAverage()}
	if rep.stepca == "" {
		bin, built, err := ensureStepCA(ctx, o.cache, o.progress)
		if err != nil {
			return nil, err
		}
		rep.stepca, rep.stepcaHow = bin, "cached build"
		if built > 0 {
			rep.stepcaHow = fmt.Sprintf("built now with go install in %s", built.Round(time.Second))
		}
	} else {
		if err := checkStepCA(rep.stepca); err != nil {
			return nil, err
		}
		rep.stepcaHow = "given with -stepca"
	}
	total := o.requests * len(o.concurrency)
	keys, err := rsaKeys(total+o.warmup, o.progress)
	if err != nil {
		return nil, fmt.Errorf("client keys: %w", err)
	}
	runKeys, warmKeys := keys[:total], keys[total:]
	if o.rawDuration > 0 {
		fmt.Fprintf(o.progress, "enrollbench: raw RSA-2048 signatures in SoftHSM2\n")
		if rep.raw, err = rawRSA2048(ctx, o.concurrency, o.rawDuration); err != nil {
			return rep, fmt.Errorf("raw HSM signatures: %w", err)
		}
	}
	var sides []*peerSide
	defer func() {
		for _, sd := range sides {
			sd.close()
		}
	}()
	for _, sv := range o.servers {
		start := startAppliance
		if sv == serverStepCA {
			start = startStepCASide
		}
		sd, err := start(ctx, o, rep)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", sv, err)
		}
		sides = append(sides, sd)
		if err := sd.warm(ctx, o, warmKeys); err != nil {
			return rep, fmt.Errorf("%s: %w", sv, err)
		}
	}
	rep.load += ", after the set-up: " + loadAverage()
	for i, c := range o.concurrency {
		order := slices.Clone(sides)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		var names []string
		for _, sd := range order {
			names = append(names, sd.t.name)
		}
		rep.order = append(rep.order, fmt.Sprintf("at %d %s", c, strings.Join(names, " then ")))
		for _, sd := range order {
			r, err := sd.t.runOnce(ctx, o, runKeys[i*o.requests:(i+1)*o.requests], c)
			if err != nil {
				return rep, fmt.Errorf("%s: %w", sd.t.name, err)
			}
			sd.runs = append(sd.runs, r)
		}
	}
	// The table lists each concurrency's runs in the order of o.servers.
	for _, sd := range sides {
		rep.runs = append(rep.runs, sd.runs...)
	}
	for _, sd := range sides {
		received := sd.warmCerts
		for _, r := range sd.runs {
			received = append(received, r.received...)
		}
		line, failure, err := sd.finish(ctx, received)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", sd.t.name, err)
		}
		rep.durability = append(rep.durability, line)
		if failure != "" {
			rep.failures = append(rep.failures, failure)
		}
	}
	return rep, nil
}

// machineBusy is the CPU time all CPUs have spent other than idle or waiting for I/O so far: the
// first line of /proc/stat (proc(5)), in clock ticks of 1/100 s.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		if i == 3 || i == 4 {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * 10 * time.Millisecond
}

// loadAverage is the 1-, 5- and 15-minute load averages of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// rawRSA2048 measures RSA-2048 signatures per second with a SoftHSM2 key at each concurrency, as
// the first table of enrollbench does (a throw-away CA made by the ceremony, its key through the
// daemon's key store).
func rawRSA2048(ctx context.Context, concurrency []int, d time.Duration) (map[int]float64, error) {
	tmp, err := os.MkdirTemp("", "enrollbench-raw-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	// The ceremony sets SOFTHSM2_CONF for this process; put it back afterwards.
	saved, had := os.LookupEnv("SOFTHSM2_CONF")
	defer func() {
		if had {
			os.Setenv("SOFTHSM2_CONF", saved)
		} else {
			os.Unsetenv("SOFTHSM2_CONF")
		}
	}()
	rts, err := instances(ctx, tmp, "rsa-2048", nil, "sqlite", 1, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	if err != nil {
		return nil, err
	}
	defer closeAll(rts)
	digest := sha256.Sum256([]byte("enrollbench scep-peer"))
	out := map[int]float64{}
	for _, g := range concurrency {
		if out[g], err = measure(d, g, func(int) error {
			_, err := rts[0].Key.Sign(rand.Reader, digest[:], crypto.SHA256)
			return err
		}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// scepTarget is one server as the SCEP clients see it.
type scepTarget struct {
	name    string
	url     string              // http://host/scep/NAME
	ra      *x509.Certificate   // the RA certificate requests are encrypted to
	signers []*x509.Certificate // GetCACert's certificates: one of them must sign every reply
	roots   *x509.CertPool
	inter   *x509.CertPool
	cpu     func() (server, dc time.Duration)
	serials map[string]bool // over all the server's runs
	logTail func() string   // the end of the server's log (nil: none to show)
}

// peerSide is one running server of scep-peer and what its runs received.
type peerSide struct {
	t         *scepTarget
	warmCerts []*x509.Certificate
	runs      []*peerRun
	// finish stops the server and checks that its store holds the certificates received: a
	// line for the report, and a failure when it does not.
	finish func(ctx context.Context, received []*x509.Certificate) (line, failure string, err error)
	close  func()
}

// startAppliance starts enrollsvc as the storm starts it (confined, RSA-2048 CA key in SoftHSM2,
// a Samba DC, the SCEP per-source limit raised) and adds a static-challenge SCEP profile for
// SuppliesSubject and the sample's dave, as BenchmarkSCEP does.
func startAppliance(ctx context.Context, o peerOptions, _ *peerReport) (*peerSide, error) {
	env, err := startStormEnv(ctx, stormOptions{enrollsvc: o.enrollsvc, timeout: o.timeout, cpuProfile: o.cpuProfile, out: io.Discard, progress: o.progress})
	if err != nil {
		if env != nil {
			env.close()
		}
		return nil, err
	}
	sd := &peerSide{close: env.close}
	fail := func(err error) (*peerSide, error) { env.close(); return nil, err }
	if _, err := env.api.AddSCEPProfile(ctx, apiclient.SCEPProfileSpec{Name: peerProfile, Template: "SuppliesSubject",
		Account: env.sample.Dave.Name, StaticChallenge: peerChallenge}); err != nil {
		return fail(fmt.Errorf("the SCEP profile: %w", err))
	}
	t := &scepTarget{name: serverAppliance, url: env.httpBase + "/scep/" + peerProfile, roots: x509.NewCertPool(), inter: x509.NewCertPool(),
		serials: map[string]bool{}}
	t.roots.AddCert(env.caCert)
	if t.signers, err = getCACert(ctx, t.url); err != nil {
		return fail(err)
	}
	if t.ra, err = raEncryptionCert(t.signers); err != nil {
		return fail(err)
	}
	pid := env.svc.Process.Pid
	t.cpu = func() (time.Duration, time.Duration) {
		var dc time.Duration
		if pids, err := env.dc.Pids(); err == nil {
			for _, p := range pids {
				dc += procCPU(p)
			}
		}
		return procCPU(pid), dc
	}
	sd.t = t
	sd.finish = func(ctx context.Context, received []*x509.Certificate) (string, string, error) {
		if err := env.stopService(); err != nil {
			return "", "", err
		}
		if o.cpuProfile != "" {
			b, err := os.ReadFile(filepath.Join(env.dir, "cpu.pprof"))
			if err == nil {
				err = os.WriteFile(o.cpuProfile, b, 0o644)
			}
			if err != nil {
				return "", "", fmt.Errorf("enrollsvc's CPU profile: %w", err)
			}
		}
		stored, err := storedCertificates(ctx, filepath.Join(env.dir, config.StoreFile))
		if err != nil {
			return "", "", err
		}
		c := checkStore(stored, env.caCert, received, func(string) bool { return false })
		line := fmt.Sprintf("appliance: after SIGTERM, %d certificates received (warm-up included), %d in its SQLite store; "+
			"lost %d, duplicate serials %d, invalid %d (the store also holds the appliance's own TLS and RA certificates)",
			c.received, c.stored, c.lost, c.duplicates, c.invalid)
		if c.lost+c.duplicates+c.invalid > 0 {
			return line, fmt.Sprintf("appliance store check: %d lost, %d duplicate, %d invalid %v", c.lost, c.duplicates, c.invalid, c.samples), nil
		}
		return line, "", nil
	}
	return sd, nil
}

// startStepCASide starts step-ca (see startStepCA); when it stops, every certificate received
// must be in its database's value log.
func startStepCASide(ctx context.Context, o peerOptions, rep *peerReport) (*peerSide, error) {
	s, err := startStepCA(ctx, rep.stepca, peerChallenge, o.progress)
	if err != nil {
		return nil, err
	}
	sd := &peerSide{close: s.close}
	t := &scepTarget{name: serverStepCA, url: s.scepURL(), roots: x509.NewCertPool(), inter: x509.NewCertPool(), serials: map[string]bool{}}
	t.roots.AddCert(s.root)
	t.inter.AddCert(s.intermediate)
	if t.signers, err = getCACert(ctx, t.url); err == nil {
		t.ra, err = raEncryptionCert(t.signers)
	}
	if err != nil {
		s.close()
		return nil, err
	}
	pid := s.pid()
	t.cpu = func() (time.Duration, time.Duration) { return procCPU(pid), 0 }
	t.logTail = func() string { return s.logTail(20) }
	sd.t = t
	sd.finish = func(_ context.Context, received []*x509.Certificate) (string, string, error) {
		if err := s.stop(); err != nil {
			return "", "", err
		}
		n, err := s.inValueLog(received)
		if err != nil {
			return "", "", err
		}
		line := fmt.Sprintf("step-ca: after SIGTERM, %d certificates received (warm-up included), %d of them in its %s database's value log (badger's write-ahead log)",
			len(received), n, stepCADBType)
		if n != len(received) {
			return line, fmt.Sprintf("step-ca: %d received certificates are not in its database", len(received)-n), nil
		}
		return line, "", nil
	}
	return sd, nil
}

// warm sends the warm-up requests, 4 at a time; every one must succeed.
func (sd *peerSide) warm(ctx context.Context, o peerOptions, keys []*rsa.PrivateKey) error {
	if len(keys) == 0 {
		return nil
	}
	fmt.Fprintf(o.progress, "enrollbench: %s: %d warm-up requests\n", sd.t.name, len(keys))
	clients, err := sd.t.prepare(keys, "warm")
	if err != nil {
		return err
	}
	r := sd.t.run(ctx, clients, min(4, len(clients)), o.timeout)
	if len(r.received) != len(clients) {
		return fmt.Errorf("warm-up: %d of %d requests failed: %s%s", len(clients)-len(r.received), len(clients), errorList(r.errors), sd.t.log())
	}
	sd.t.check(r)
	sd.warmCerts = r.received
	return nil
}

// runOnce prepares a request per key (before the clock) and sends them, c at a time.
func (t *scepTarget) runOnce(ctx context.Context, o peerOptions, keys []*rsa.PrivateKey, c int) (*peerRun, error) {
	fmt.Fprintf(o.progress, "enrollbench: %s: preparing %d requests\n", t.name, len(keys))
	clients, err := t.prepare(keys, fmt.Sprint("c", c))
	if err != nil {
		return nil, err
	}
	runtime.GC()
	fmt.Fprintf(o.progress, "enrollbench: %s: %d requests, %d concurrent clients\n", t.name, len(keys), c)
	r := t.run(ctx, clients, c, o.timeout)
	t.check(r)
	return r, nil
}

// log is the end of the server's log, when there is one to show.
func (t *scepTarget) log() string {
	if t.logTail == nil {
		return ""
	}
	return "\n" + t.name + "'s log:\n" + t.logTail()
}

// prepare makes a PKCSReq per key, before the clock, on every CPU.
func (t *scepTarget) prepare(keys []*rsa.PrivateKey, tag string) ([]*client, error) {
	clients := make([]*client, len(keys))
	stamp := time.Now().UnixNano()
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(keys) {
					return
				}
				cn := fmt.Sprintf("peer-%s-%s-%06d.corp.example.test", t.name, tag, i)
				c, err := newSCEPClient(keys[i], cn, peerChallenge, t.ra, fmt.Sprintf("peer-%s-%d-%06d", tag, stamp, i))
				if err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
					return
				}
				clients[i] = c
			}
		})
	}
	wg.Wait()
	return clients, first
}

// run sends clients' requests, c at a time, on the clock, and measures the server's CPU.
func (t *scepTarget) run(ctx context.Context, clients []*client, c int, timeout time.Duration) *peerRun {
	r := &peerRun{server: t.name, concurrency: c, requests: len(clients), errors: map[string]int{}, roots: t.roots, inter: t.inter}
	var mu sync.Mutex
	cpu0, dc0 := t.cpu()
	client0, busy0 := cpuTime(), machineBusy()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(c, len(clients)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(clients) {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, timeout)
				var ph phases
				t0 := time.Now()
				cert, err := scepEnroll(cctx, t.url, clients[i], t.signers, &ph)
				d := time.Since(t0)
				cancel()
				if err == nil && cert.Subject.CommonName != clients[i].who {
					err = fmt.Errorf("wrong identity: a certificate for %v, not %s", cert.Subject, clients[i].who)
				}
				mu.Lock()
				if err != nil {
					r.errors[errorKind(err)]++
				} else {
					r.latencies = append(r.latencies, d)
					r.received = append(r.received, cert)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	r.wall = time.Since(start)
	r.clientCPU = cpuTime() - client0
	cpu1, dc1 := t.cpu()
	r.cpu, r.dcCPU = cpu1-cpu0, dc1-dc0
	r.otherCPU = max(0, machineBusy()-busy0-r.cpu-r.dcCPU-r.clientCPU)
	return r
}

// check verifies, after the clock, every certificate of r under the server's CA and counts
// serials received before.
func (t *scepTarget) check(r *peerRun) {
	note := func(s string) {
		if r.sample == "" {
			r.sample = s
		}
	}
	for _, cert := range r.received {
		serial := certutil.SerialString(cert.SerialNumber)
		if t.serials[serial] {
			r.duplicates++
			note("serial " + serial + " twice")
		}
		t.serials[serial] = true
		if _, err := cert.Verify(x509.VerifyOptions{Roots: t.roots, Intermediates: t.inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			r.invalid++
			note(fmt.Sprintf("serial %s: %v", serial, err))
		}
	}
}
