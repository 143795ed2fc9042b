package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkReserveAndCommit issues certificates (ReserveSerial then CommitCertificate, as the
// issuance path does) from 1, 2 and 8 goroutines. It reports certificates per second and the
// average number of writes the writer committed per transaction, which shows group commit at
// work: with more callers, more writes share one fsync.
func BenchmarkReserveAndCommit(b *testing.B) {
	for _, workers := range []int{1, 2, 8} {
		b.Run(fmt.Sprintf("goroutines=%d", workers), func(b *testing.B) {
			s, _ := openTest(b)
			ctx := context.Background()
			der := testDER("0123456789abcdef0123456789abcdef") // about 800 bytes, like a small certificate
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range workers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						sr := newSerial(b)
						if err := s.ReserveSerial(ctx, sr, ev(2100, "signing")); err != nil {
							b.Error(err)
							return
						}
						c := Certificate{Serial: sr, DER: der, Template: "T", Account: "a", Subject: "CN=a"}
						if err := s.CommitCertificate(ctx, c, ev(2101, "issued")); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "certs/s")
			b.ReportMetric(float64(s.batchedOps.Load())/float64(s.batches.Load()), "writes/tx")
		})
	}
}
