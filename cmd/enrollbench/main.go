// Command enrollbench measures the CA's throughput on this machine and prints one table: raw
// HSM signatures per second and complete issuances per second (build, lint, reserve the serial
// durably, sign in the HSM, verify, store durably with audit events) for each key type on 1 and
// 2 goroutines, and the ratio of the two. It creates throw-away data directories (SoftHSM
// tokens) under a temporary directory and removes them afterwards.
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
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "CA key\tgoroutines\traw HSM signatures/s\tissuances/s\tissuance/raw\t")
	for _, kt := range strings.Split(*keys, ",") {
		dir := filepath.Join(tmp, kt)
		if _, err := ceremony.Init(ctx, ceremony.InitOptions{Dir: dir, CAName: "Bench CA " + kt, KeyType: kt, Logger: log}); err != nil {
			return err
		}
		rt, err := daemon.Open(ctx, dir, log)
		if err != nil {
			return err
		}
		leaf, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		digest := sha256.Sum256([]byte("enrollbench"))
		order := enrollsvc.ProfileRequest{Profile: enrollsvc.ProfileServer, Subject: pkix.Name{CommonName: "bench.example.test"},
			DNSNames: []string{"bench.example.test"}, PublicKey: leaf.Public(), Validity: 30 * 24 * time.Hour,
			Meta: enrollsvc.Meta{Requester: "enrollbench", Account: "bench", Template: "bench"}}
		for _, g := range counts {
			raw, err := measure(*dur, g, func() error {
				_, err := rt.Key.Sign(rand.Reader, digest[:], crypto.SHA256)
				return err
			})
			if err != nil {
				rt.Close()
				return fmt.Errorf("%s raw signatures: %w", kt, err)
			}
			iss, err := measure(*dur, g, func() error {
				_, err := rt.Service.IssueProfile(ctx, order)
				return err
			})
			if err != nil {
				rt.Close()
				return fmt.Errorf("%s issuances: %w", kt, err)
			}
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.2f\t\n", kt, g, raw, iss, iss/raw)
		}
		rt.Close()
	}
	return tw.Flush()
}

// measure runs f on g goroutines for d and returns calls per second.
func measure(d time.Duration, g int, f func() error) (float64, error) {
	var n atomic.Int64
	var firstErr error
	var once sync.Once
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if err := f(); err != nil {
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
