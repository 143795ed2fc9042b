// Command enrollbench measures the CA on this machine and prints, for each CA key type, one table
// from one run: at 1, 2, 8 and 32 goroutines, raw HSM signatures per second; certificates built
// and signed in the HSM per second (no lint, no store); complete issuances per second (the gate:
// key checks, build, lint, serial reserved durably, HSM signature, verification, certificate and
// audit events stored durably) with the SQLite store of one appliance and with a PostgreSQL store
// (a throw-away PostgreSQL 15 on loopback, TLS) shared by 1 and by 2 instances (the second joined
// with a copy of the token, the goroutines split over both); and the ratios complete/raw and
// complete/build+sign. A second table per key type splits the CPU time of one complete issuance
// by stage (build, lint, HSM, verify, events, store), measured one stage at a time on one
// goroutine, the store's share being the rest of the measured total. It creates throw-away data
// directories (SoftHSM tokens) under a temporary directory and removes them afterwards.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/events"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/issue"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store/pgtest"
	"github.com/enrollment-appliance/aeappliance/provisioning/ceremony"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "enrollbench:", err)
		os.Exit(1)
	}
}

// setup is one way of running the CA: a store kind and a number of instances sharing it.
type setup struct {
	store     string
	instances int
}

func (s setup) String() string {
	if s.store == "sqlite" {
		return "SQLite"
	}
	return fmt.Sprintf("PG×%d", s.instances)
}

func run(args []string, out io.Writer) error {
	if len(args) > 0 && args[0] == "storm" {
		return runStorm(args[1:], out)
	}
	if len(args) > 0 && args[0] == "scep-peer" {
		return runPeer(args[1:], out)
	}
	fs := flag.NewFlagSet("enrollbench", flag.ContinueOnError)
	keys := fs.String("keys", "rsa-2048,ecdsa-p256,ecdsa-p384", "CA key types to measure")
	dur := fs.Duration("duration", 2*time.Second, "how long each measurement runs")
	gs := fs.String("goroutines", "1,2,8,32", "goroutine counts")
	cpuProfile := fs.String("cpuprofile", "", "write CPU profiles of the complete issuances (first store, most goroutines) to FILE.KEYTYPE")
	stores := fs.String("stores", "sqlite,postgres", "stores to measure: sqlite, postgres (1 and 2 instances)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: enrollbench [flags]\n       enrollbench storm [flags]   (see enrollbench storm -h)\n       enrollbench scep-peer [flags]   (see enrollbench scep-peer -h)\n\nPrints, per CA key type, raw HSM signatures/s, build+sign/s and complete issuances/s\non each store, their ratios, and the CPU time of one issuance by stage.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	var prof *profiler
	if *cpuProfile != "" {
		prof = &profiler{path: *cpuProfile}
	}
	var counts []int
	for _, s := range strings.Split(*gs, ",") {
		var n int
		if _, err := fmt.Sscan(s, &n); err != nil || n < 1 {
			return fmt.Errorf("--goroutines %q: want positive integers", *gs)
		}
		counts = append(counts, n)
	}
	tmp, err := os.MkdirTemp("", "enrollbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// Audit events are formatted as in production and then discarded.
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	ctx := context.Background()
	var pg *pgtest.Server
	if strings.Contains(*stores, "postgres") {
		if pg, err = pgtest.Start(); err != nil {
			return fmt.Errorf("PostgreSQL for the bench (make deps installs it; it runs as the postgres user): %w", err)
		}
		defer pg.Destroy()
	}
	var setups []setup
	for _, s := range []setup{{"sqlite", 1}, {"postgres", 1}, {"postgres", 2}} {
		if strings.Contains(*stores, s.store) {
			setups = append(setups, s)
		}
	}
	fmt.Fprintf(out, "enrollbench: %d CPUs (GOMAXPROCS %d), %s each, SoftHSM2 CA keys; figures per second unless said;\n"+
		"PG×n: PostgreSQL 15 on loopback (TLS) shared by n instances\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), *dur)
	leaf, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req := enrollsvc.ProfileRequest{Profile: enrollsvc.ProfileServer, Subject: pkix.Name{CommonName: "bench.example.test"},
		DNSNames: []string{"bench.example.test"}, PublicKey: leaf.Public(), Validity: 30 * 24 * time.Hour,
		Meta: enrollsvc.Meta{Requester: "enrollbench", Account: "bench", Template: "bench"}}
	order := issue.Order{Subject: req.Subject, DNSNames: req.DNSNames, PublicKey: leaf.Public(), Validity: req.Validity,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, kt := range strings.Split(*keys, ",") {
		if err := benchKey(ctx, out, filepath.Join(tmp, kt), kt, pg, setups, counts, *dur, req, order, prof, log); err != nil {
			return fmt.Errorf("%s: %w", kt, err)
		}
	}
	return nil
}

// benchKey prints the two tables of key type kt.
func benchKey(ctx context.Context, out io.Writer, dir, kt string, pg *pgtest.Server, setups []setup, counts []int, dur time.Duration,
	req enrollsvc.ProfileRequest, order issue.Order, prof *profiler, log *slog.Logger) error {
	complete := map[setup]map[int]float64{}
	raw, built := map[int]float64{}, map[int]float64{}
	var stageCPU stages
	for si, s := range setups {
		rts, err := instances(ctx, filepath.Join(dir, fmt.Sprint(s.store, s.instances)), kt, pg, s.store, s.instances, log)
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		if si == 0 {
			// Raw signatures and build+sign, once per key type, on the first CA.
			rt := rts[0]
			digest := sha256.Sum256([]byte("enrollbench"))
			for _, g := range counts {
				if raw[g], err = measure(dur, g, func(int) error {
					_, err := rt.Key.Sign(rand.Reader, digest[:], crypto.SHA256)
					return err
				}); err != nil {
					closeAll(rts)
					return fmt.Errorf("raw signatures: %w", err)
				}
				if built[g], err = measure(dur, g, func(int) error { return buildAndSign(rt, order) }); err != nil {
					closeAll(rts)
					return fmt.Errorf("build+sign: %w", err)
				}
			}
			if stageCPU, err = measureStages(ctx, rt, order, req, dur); err != nil {
				closeAll(rts)
				return fmt.Errorf("stages: %w", err)
			}
		}
		complete[s] = map[int]float64{}
		for i, g := range counts {
			if si == 0 && i == len(counts)-1 {
				prof.start(kt)
			}
			iss, err := measure(dur, g, func(w int) error {
				_, err := rts[w%len(rts)].Service.IssueProfile(ctx, req)
				return err
			})
			prof.stop()
			if err != nil {
				closeAll(rts)
				return fmt.Errorf("issuances on %s: %w", s, err)
			}
			complete[s][g] = iss
		}
		closeAll(rts)
	}

	fmt.Fprintf(out, "\nCA key %s\n", kt)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	head := "goroutines\traw HSM\tbuild+sign\t"
	for _, s := range setups {
		head += s.String() + "\t"
	}
	for _, s := range setups {
		head += s.String() + "/raw\t" + s.String() + "/build+sign\t"
	}
	fmt.Fprintln(tw, head)
	for _, g := range counts {
		line := fmt.Sprintf("%d\t%.0f\t%.0f\t", g, raw[g], built[g])
		for _, s := range setups {
			line += fmt.Sprintf("%.0f\t", complete[s][g])
		}
		for _, s := range setups {
			line += fmt.Sprintf("%.2f\t%.2f\t", complete[s][g]/raw[g], complete[s][g]/built[g])
		}
		fmt.Fprintln(tw, line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(out, "CPU µs per complete issuance on SQLite, one goroutine (%s)\n", kt)
	fmt.Fprintln(tw, "build\tlint\tHSM\tverify\tevents\tstore (rest)\ttotal\t")
	st := stageCPU
	fmt.Fprintf(tw, "%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t\n", st.build, st.lint, st.hsm, st.verify, st.events, st.rest(), st.total)
	return tw.Flush()
}

// buildAndSign builds the certificate for order and has the CA key sign its TBS: the least a CA
// does per certificate, without the lint, the store or the audit trail.
func buildAndSign(rt *daemon.Runtime, order issue.Order) error {
	b, err := rt.Issuer.Build(order)
	if err != nil {
		return err
	}
	h := b.Hash().New()
	h.Write(b.TBS())
	_, err = rt.Key.Sign(rand.Reader, h.Sum(nil), b.Hash())
	return err
}

// stages is the CPU time, in µs, of one complete issuance by stage.
type stages struct {
	build, lint, hsm, verify, events, total float64
}

// rest is the CPU the stages measured alone do not account for: the store's work (both durable
// writes, the writer goroutine, SQLite) and what the service does around the stages.
func (s stages) rest() float64 {
	return s.total - s.build - s.lint - s.hsm - s.verify - s.events
}

// measureStages measures each stage alone on one goroutine, and the complete issuance.
func measureStages(ctx context.Context, rt *daemon.Runtime, order issue.Order, req enrollsvc.ProfileRequest, dur time.Duration) (stages, error) {
	var s stages
	var err error
	b, err := rt.Issuer.Build(order)
	if err != nil {
		return s, err
	}
	h := b.Hash().New()
	h.Write(b.TBS())
	digest := h.Sum(nil)
	res, err := rt.Service.IssueProfile(ctx, req)
	if err != nil {
		return s, err
	}
	der := res.Certificate.Raw
	ev := events.New(time.Now(), events.CertificateIssued, "", "serial", "0a1b2c", "subject", "CN=bench.example.test",
		"account", "bench", "template", "bench", "requester", "enrollbench", "not_after", time.Now().Format(time.RFC3339), "request_id", 1)
	for _, m := range []struct {
		dst *float64
		f   func() error
	}{
		{&s.build, func() error { _, err := rt.Issuer.Build(order); return err }},
		{&s.lint, func() error { return rt.Issuer.Lint(b) }},
		{&s.hsm, func() error { _, err := rt.Key.Sign(rand.Reader, digest, b.Hash()); return err }},
		{&s.verify, func() error {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return err
			}
			return c.CheckSignatureFrom(rt.CACert)
		}},
		// Two audit events per issuance (signing started, issued) go to the log as JSON.
		{&s.events, func() error { rt.Recorder.Log(ctx, ev); rt.Recorder.Log(ctx, ev); return nil }},
		{&s.total, func() error { _, err := rt.Service.IssueProfile(ctx, req); return err }},
	} {
		if *m.dst, err = cpuPerCall(dur/2, m.f); err != nil {
			return s, err
		}
	}
	return s, nil
}

// cpuPerCall runs f on one goroutine for about d and returns the process's CPU time per call in
// µs (user and system, every thread: the HSM's, the store's writer, the garbage collector).
func cpuPerCall(d time.Duration, f func() error) (float64, error) {
	runtime.GC()
	before := cpuTime()
	n := 0
	for start := time.Now(); time.Since(start) < d; n++ {
		if err := f(); err != nil {
			return 0, err
		}
	}
	return float64(cpuTime()-before) / float64(time.Microsecond) / float64(n), nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// profiler writes a CPU profile per key type of its complete issuances on the first store at the
// most goroutines: FILE.KEYTYPE (go tool pprof merges several).
type profiler struct {
	path string
	f    *os.File
}

func (p *profiler) start(kt string) {
	if p == nil {
		return
	}
	f, err := os.Create(p.path + "." + kt)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "enrollbench: cpuprofile:", err)
		return
	}
	p.f = f
}

func (p *profiler) stop() {
	if p == nil || p.f == nil {
		return
	}
	pprof.StopCPUProfile()
	p.f.Close()
	p.f = nil
}

// instances makes a CA with key type kt in dir and opens n instances of it: one on its SQLite
// store, or n sharing a new PostgreSQL database of pg (the others joined with a copy of the token).
func instances(ctx context.Context, dir, kt string, pg *pgtest.Server, kind string, n int, log *slog.Logger) ([]*daemon.Runtime, error) {
	o := ceremony.InitOptions{Dir: filepath.Join(dir, "a"), CAName: "Bench CA " + kt, KeyType: kt, Logger: log, Instance: "a"}
	var so ceremony.StoreOptions
	if kind == "postgres" {
		db, err := pg.CreateDatabase()
		if err != nil {
			return nil, err
		}
		so = ceremony.StoreOptions{URL: db.URL, CAFile: db.CAFile, PasswordFile: db.PasswordFile}
		o.Store = &so
	}
	if _, err := ceremony.Init(ctx, o); err != nil {
		return nil, err
	}
	for i := 1; i < n; i++ {
		if _, err := ceremony.Join(ctx, ceremony.JoinOptions{Dir: filepath.Join(dir, fmt.Sprint(i)), Store: so,
			TokenFrom: filepath.Join(o.Dir, "hsm"), Instance: fmt.Sprint("i", i), Logger: log}); err != nil {
			return nil, err
		}
	}
	var rts []*daemon.Runtime
	for i := range n {
		d := o.Dir
		if i > 0 {
			d = filepath.Join(dir, fmt.Sprint(i))
		}
		rt, err := daemon.Open(ctx, d, log)
		if err != nil {
			closeAll(rts)
			return nil, err
		}
		rts = append(rts, rt)
	}
	return rts, nil
}

func closeAll(rts []*daemon.Runtime) {
	for _, rt := range rts {
		rt.Close()
	}
}

// measure runs f on g goroutines (f is told which) for d and returns calls per second.
func measure(d time.Duration, g int, f func(goroutine int) error) (float64, error) {
	var n atomic.Int64
	var firstErr error
	var once sync.Once
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if err := f(w); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds(), firstErr
}
