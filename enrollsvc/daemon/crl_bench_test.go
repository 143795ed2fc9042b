package daemon_test

import (
	"context"
	"crypto/x509"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/config"
	"github.com/enrollment-appliance/aeappliance/enrollsvc/daemon"
	"github.com/enrollment-appliance/aeappliance/provisioning/ceremony"
)

// BenchmarkCRLMillion: a full CRL (and its delta) of 1,000,000 revoked certificates published by
// the running service through its real store (SQLite) and signed with the CA key in SoftHSM, then
// fetched from its plain-HTTP listener and parsed. The revoked rows are written into the store's
// file before the service opens it (setup, not measured), revoked over the past year. The
// service's first publication walks every revocation (cold-s, from its log); the measured one
// is a running service's next, which carries the previous CRL's entries over and walks the last
// minutes again (revoke.BuildCRLs). It reports both times, the largest Go heap seen while
// publishing, the CRL's size and the delta's entries (a publication makes both); the CRL must
// list every one of them.
func BenchmarkCRLMillion(b *testing.B) {
	const n = 1_000_000
	needSoftHSM(b)
	b.Setenv("SOFTHSM2_CONF", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close() // Serve takes it; this is for a failure before Serve
	httpListen := l.Addr().String()
	dir := filepath.Join(b.TempDir(), "var")
	if _, err := ceremony.Init(ctx, ceremony.InitOptions{Dir: dir, CAName: "CRL Bench CA", KeyType: "ecdsa-p256",
		HTTPURL: "http://" + httpListen, HTTPListen: httpListen, Logger: quiet}); err != nil {
		b.Fatal(err)
	}
	cfg, err := config.Load(dir)
	if err != nil {
		b.Fatal(err)
	}
	fillRevoked(b, config.Path(dir, cfg.Store), n)
	published := &crlLog{}
	rt, err := daemon.Open(ctx, dir, slog.New(published))
	if err != nil {
		b.Fatal(err)
	}
	up := make(chan struct{})
	done := make(chan struct{}) // closed when Serve returned, with serveErr
	var serveErr error
	go func() {
		defer close(done)
		serveErr = daemon.Serve(ctx, dir, daemon.ServeOptions{APIListen: "127.0.0.1:0", HTTPListener: l,
			OnHTTPListen: func(string) { close(up) }}, rt)
	}()
	defer func() { cancel(); <-done; rt.Close() }()
	select {
	case <-up:
	case <-done:
		b.Fatalf("Serve: %v", serveErr)
	}
	for b.Loop() {
		runtime.GC()
		var peak uint64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			var ms runtime.MemStats
			for {
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		})
		start := time.Now()
		info, err := rt.PublishCRL(ctx)
		took := time.Since(start)
		close(stop)
		wg.Wait()
		if err != nil {
			b.Fatal(err)
		}
		if info.Entries != n {
			b.Fatalf("the CRL lists %d certificates, want %d", info.Entries, n)
		}
		b.ReportMetric(took.Seconds(), "s/publish")
		b.ReportMetric(published.first().Seconds(), "cold-s")
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(info.Bytes)/(1<<20), "crl-MiB")
		// The delta lists the revocations recorded in the last DeltaMargin (here about 20).
		b.ReportMetric(float64(info.DeltaEntries), "delta-entries")
	}
	resp, err := http.Get("http://" + httpListen + "/crl/CRL-Bench-CA.crl")
	if err != nil {
		b.Fatal(err)
	}
	der, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	crl, err := x509.ParseRevocationList(der)
	if err != nil || len(crl.RevokedCertificateEntries) != n {
		b.Fatalf("the CRL served: %v, %d entries; want %d", err, len(crl.RevokedCertificateEntries), n)
	}
	if err := crl.CheckSignatureFrom(rt.CACert); err != nil {
		b.Fatalf("the CRL served does not verify: %v", err)
	}
}

// fillRevoked writes n revoked certificates (a serial reserved, a certificate row) into the
// SQLite store at path, in one transaction.
func fillRevoked(b *testing.B, path string, n int) {
	b.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(1)")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	ser, err := tx.Prepare("INSERT INTO serials (serial, reserved_at) VALUES (?, ?)")
	if err != nil {
		b.Fatal(err)
	}
	cert, err := tx.Prepare(`INSERT INTO certificates (serial, der, template, account, subject, not_before, not_after,
		status, revoked_at, revocation_reason, issued_at) VALUES (?, ?, 'bench', 'bench', 'CN=bench', ?, ?, 'revoked', ?, 1, ?)`)
	if err != nil {
		b.Fatal(err)
	}
	const layout = "2006-01-02T15:04:05.000000000Z" // the store's
	year := 365 * 24 * time.Hour
	now := time.Now().UTC()
	nb, na := now.Add(-year-24*time.Hour).Format(layout), now.Add(year).Format(layout)
	der := []byte{0x30, 0x00} // the CRL reads serial, time and reason only
	for i := range n {
		serial := fmt.Sprintf("7f%016x%016x", i, i*2654435761)
		at := now.Add(-year + time.Duration(i)*(year/time.Duration(n))).Format(layout) // one every 31.5 s
		if _, err := ser.Exec(serial, at); err != nil {
			b.Fatal(err)
		}
		if _, err := cert.Exec(serial, der, nb, na, at, at); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

// crlLog is a slog handler that keeps the time the service's first full CRL took to publish
// (revoke's "CRL published" record) and drops everything else.
type crlLog struct {
	mu   sync.Mutex
	took time.Duration
}

func (h *crlLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *crlLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *crlLog) WithGroup(string) slog.Handler            { return h }

func (h *crlLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "CRL published" {
		return nil
	}
	full, took := false, time.Duration(0)
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "kind":
			full = a.Value.String() == "full"
		case "took":
			took = a.Value.Duration()
		}
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if full && h.took == 0 {
		h.took = took
	}
	return nil
}

func (h *crlLog) first() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.took
}
