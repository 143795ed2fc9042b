// Command enrollbench measures the CA's throughput on this machine and prints one table: raw
// HSM signatures per second and complete issuances per second (build, lint, reserve the serial
// durably, sign in the HSM, verify, store durably with audit events) for each key type on 1 and
// 2 goroutines, and the ratio of the two; each with the SQLite store of one appliance, and with a
// PostgreSQL store (a throw-away PostgreSQL 15 server on loopback, TLS) shared by 1 and by 2
// instances (the second joined with a copy of the token, the goroutines split over both). It
// creates throw-away data directories (SoftHSM tokens) under a temporary directory and removes
// them afterwards.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/enrollment-appliance/aeappliance/enrollsvc"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/store/pgtest"
	"github.com/enrollment-appliance/aeappliance/provisioning/ceremony"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "enrollbench:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("enrollbench", flag.ContinueOnError)
	keys := fs.String("keys", "ecdsa-p256,rsa-2048", "CA key types to measure")
	dur := fs.Duration("duration", 3*time.Second, "how long each measurement runs")
	gs := fs.String("goroutines", "1,2", "goroutine counts")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	stores := fs.String("stores", "sqlite,postgres", "stores to measure: sqlite, postgres (1 and 2 instances)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: enrollbench [flags]\n\nPrints raw HSM signatures/s and complete issuances/s per CA key type.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
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
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "CA key\tstore\tinstances\tgoroutines\traw HSM signatures/s\tissuances/s\tissuance/raw\t")
	leaf, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := sha256.Sum256([]byte("enrollbench"))
	order := enrollsvc.ProfileRequest{Profile: enrollsvc.ProfileServer, Subject: pkix.Name{CommonName: "bench.example.test"},
		DNSNames: []string{"bench.example.test"}, PublicKey: leaf.Public(), Validity: 30 * 24 * time.Hour,
		Meta: enrollsvc.Meta{Requester: "enrollbench", Account: "bench", Template: "bench"}}
	for _, kt := range strings.Split(*keys, ",") {
		raws := map[int]float64{}
		for _, setup := range []struct {
			store     string
			instances int
		}{{"sqlite", 1}, {"postgres", 1}, {"postgres", 2}} {
			if !strings.Contains(*stores, setup.store) {
				continue
			}
			rts, err := instances(ctx, filepath.Join(tmp, kt+"-"+setup.store+fmt.Sprint(setup.instances)), kt, pg, setup.store, setup.instances, log)
			if err != nil {
				return fmt.Errorf("%s on %s: %w", kt, setup.store, err)
			}
			for _, g := range counts {
				raw, ok := raws[g]
				if !ok {
					if raw, err = measure(*dur, g, func(int) error {
						_, err := rts[0].Key.Sign(rand.Reader, digest[:], crypto.SHA256)
						return err
					}); err != nil {
						closeAll(rts)
						return fmt.Errorf("%s raw signatures: %w", kt, err)
					}
					raws[g] = raw
				}
				iss, err := measure(*dur, g, func(w int) error {
					_, err := rts[w%len(rts)].Service.IssueProfile(ctx, order)
					return err
				})
				if err != nil {
					closeAll(rts)
					return fmt.Errorf("%s issuances on %s: %w", kt, setup.store, err)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%.0f\t%.2f\t\n", kt, setup.store, setup.instances, g, raw, iss, iss/raw)
			}
			closeAll(rts)
		}
	}
	return tw.Flush()
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
