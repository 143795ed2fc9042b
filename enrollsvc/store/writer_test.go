package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// blockWriter makes the writer run an op that waits until release is called, so that the
// test can queue ops behind it and have them run as one batch.
func blockWriter(t *testing.T, s *SQLite) (release func()) {
	t.Helper()
	started, unblock := make(chan struct{}), make(chan struct{})
	go s.write(context.Background(), func(context.Context, conn) error {
		close(started)
		<-unblock
		return nil
	})
	<-started
	var once sync.Once
	release = func() { once.Do(func() { close(unblock) }) }
	t.Cleanup(release)
	return release
}

// waitQueued waits until n ops are queued for the writer.
func waitQueued(t *testing.T, s *SQLite, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(s.ops) < n {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %d queued ops: %d queued", n, len(s.ops))
		}
		time.Sleep(time.Millisecond)
	}
}

func countRows(t *testing.T, s *SQLite, table string) int {
	t.Helper()
	var n int
	if err := s.rdb.QueryRow("SELECT count(*) FROM " + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBatchIsolation runs one batch of ReserveSerial calls of which some reuse a serial and
// checks that exactly those fail, and that every other one is stored with its event.
func TestBatchIsolation(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()

	// 10 serials reserved beforehand, 5 submitted twice within the batch, 185 unique.
	var old, twice, fresh []string
	for range 10 {
		sr := newSerial(t)
		if err := s.ReserveSerial(ctx, sr, ev(1, "old")); err != nil {
			t.Fatal(err)
		}
		old = append(old, sr)
	}
	for range 5 {
		twice = append(twice, newSerial(t))
	}
	for range 185 {
		fresh = append(fresh, newSerial(t))
	}
	var submit []string
	submit = append(submit, old...)
	submit = append(submit, twice...)
	submit = append(submit, twice...)
	submit = append(submit, fresh...)

	release := blockWriter(t, s)
	batchesBefore := s.batches.Load()
	errs := make([]error, len(submit))
	var wg sync.WaitGroup
	for i, sr := range submit {
		wg.Go(func() { errs[i] = s.ReserveSerial(ctx, sr, ev(2, sr)) })
	}
	waitQueued(t, s, len(submit))
	release()
	wg.Wait()

	if got := s.batches.Load() - batchesBefore; got != 1 {
		t.Errorf("writer ran %d transactions, want 1 (all %d ops in one)", got, len(submit))
	}
	results := map[string][]error{}
	for i, sr := range submit {
		results[sr] = append(results[sr], errs[i])
	}
	for _, sr := range old {
		if err := results[sr][0]; !errors.Is(err, ErrSerialUsed) {
			t.Errorf("ReserveSerial(previously reserved %s) = %v, want ErrSerialUsed", sr, err)
		}
	}
	for _, sr := range twice {
		var ok, used int
		for _, err := range results[sr] {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrSerialUsed):
				used++
			default:
				t.Errorf("ReserveSerial(%s) = %v", sr, err)
			}
		}
		if ok != 1 || used != 1 {
			t.Errorf("ReserveSerial(%s) twice in one batch: %d succeeded, %d ErrSerialUsed, want 1 and 1", sr, ok, used)
		}
	}
	for _, sr := range fresh {
		if err := results[sr][0]; err != nil {
			t.Errorf("ReserveSerial(%s) = %v, want nil", sr, err)
		}
	}
	if got, want := countRows(t, s, "serials"), len(old)+len(twice)+len(fresh); got != want {
		t.Errorf("serials stored = %d, want %d", got, want)
	}
	// One event per successful reservation: the refused ones wrote none.
	if got, want := countRows(t, s, "events"), len(old)+len(twice)+len(fresh); got != want {
		t.Errorf("events stored = %d, want %d", got, want)
	}
	for _, sr := range append(twice, fresh...) {
		events, err := s.ListEvents(ctx, EventFilter{ID: 2, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range events {
			if e.Message == sr {
				n++
			}
		}
		if n != 1 {
			t.Errorf("events for serial %s = %d, want 1", sr, n)
		}
	}
}

// TestBatchAbort checks that when the transaction itself is lost, every op of the batch fails
// and none of them is stored, and that the writer carries on afterwards.
func TestBatchAbort(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	good := []string{newSerial(t), newSerial(t)}

	release := blockWriter(t, s)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	wg.Go(func() { errs[0] = s.ReserveSerial(ctx, good[0], ev(1, "")) })
	waitQueued(t, s, 1)
	wg.Go(func() {
		errs[1] = s.write(ctx, func(ctx context.Context, tx conn) error {
			_, err := tx.exec(ctx, "ROLLBACK") // as SQLite does after some I/O errors
			return err
		})
	})
	waitQueued(t, s, 2)
	wg.Go(func() { errs[2] = s.ReserveSerial(ctx, good[1], ev(1, "")) })
	waitQueued(t, s, 3)
	release()
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			t.Errorf("op %d of an aborted batch = nil, want error", i)
		}
	}
	if n := countRows(t, s, "serials"); n != 0 {
		t.Errorf("serials stored after aborted batch = %d, want 0", n)
	}
	for _, sr := range good {
		if err := s.ReserveSerial(ctx, sr, ev(1, "")); err != nil {
			t.Errorf("ReserveSerial(%s) after aborted batch = %v, want nil", sr, err)
		}
	}
}

func TestOpPanic(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	release := blockWriter(t, s)
	var wg sync.WaitGroup
	var panicErr, okErr error
	wg.Go(func() {
		panicErr = s.write(ctx, func(context.Context, conn) error { panic("boom") })
	})
	waitQueued(t, s, 1)
	sr := newSerial(t)
	wg.Go(func() { okErr = s.ReserveSerial(ctx, sr, ev(1, "")) })
	waitQueued(t, s, 2)
	release()
	wg.Wait()
	if panicErr == nil {
		t.Errorf("panicking op = nil, want error")
	}
	if okErr != nil {
		t.Errorf("ReserveSerial in the batch of a panicking op = %v, want nil", okErr)
	}
}

func TestWriteContext(t *testing.T) {
	s, _ := openTest(t)

	// Done before the call: nothing is queued.
	done, cancel := context.WithCancel(context.Background())
	cancel()
	sr := newSerial(t)
	if err := s.ReserveSerial(done, sr, ev(1, "")); !errors.Is(err, context.Canceled) {
		t.Errorf("ReserveSerial(cancelled ctx) = %v, want context.Canceled", err)
	}

	// Done while queued: the op is dropped.
	release := blockWriter(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.ReserveSerial(ctx, sr, ev(1, "")) }()
	waitQueued(t, s, 1)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("ReserveSerial(ctx cancelled while queued) = %v, want context.Canceled", err)
	}
	release()
	if err := s.ReserveSerial(context.Background(), sr, ev(1, "")); err != nil {
		t.Errorf("ReserveSerial(%s) after the cancelled one = %v, want nil (the cancelled op must not run)", sr, err)
	}

	// Done after the op was taken: it runs, and the caller gets its real result.
	ctx, cancel = context.WithCancel(context.Background())
	started, unblock := make(chan struct{}), make(chan struct{})
	go func() {
		errc <- s.write(ctx, func(ctx context.Context, tx conn) error {
			close(started)
			<-unblock
			_, err := tx.exec(ctx, "INSERT INTO serials VALUES ('abc', 'x')")
			return err
		})
	}()
	<-started
	cancel()
	close(unblock)
	if err := <-errc; err != nil {
		t.Errorf("write(ctx cancelled while running) = %v, want nil", err)
	}
	if err := s.ReserveSerial(context.Background(), "abc", ev(1, "")); !errors.Is(err, ErrSerialUsed) {
		t.Errorf("ReserveSerial(abc) = %v, want ErrSerialUsed (the running op must have committed)", err)
	}
}

// TestCloseFinishesQueued checks that Close answers the ops queued before it, durably.
func TestCloseFinishesQueued(t *testing.T) {
	s, path := openTest(t)
	ctx := context.Background()
	release := blockWriter(t, s)
	serials := make([]string, 50)
	errs := make([]error, len(serials))
	var wg sync.WaitGroup
	for i := range serials {
		serials[i] = newSerial(t)
		wg.Go(func() { errs[i] = s.ReserveSerial(ctx, serials[i], ev(1, "")) })
	}
	waitQueued(t, s, len(serials))
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	// Close must wait for the queued ops; later calls fail at once.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := s.Ping(ctx); errors.Is(err, ErrClosed) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("store not closing")
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.ReserveSerial(ctx, newSerial(t), ev(1, "")); !errors.Is(err, ErrClosed) {
		t.Errorf("ReserveSerial during Close = %v, want ErrClosed", err)
	}
	release()
	if err := <-closed; err != nil {
		t.Errorf("Close() = %v", err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("ReserveSerial(%s) queued before Close = %v, want nil", serials[i], err)
		}
	}
	s2 := openAt(t, path)
	for _, sr := range serials {
		if err := s2.ReserveSerial(ctx, sr, ev(1, "")); !errors.Is(err, ErrSerialUsed) {
			t.Errorf("ReserveSerial(%s) after reopen = %v, want ErrSerialUsed", sr, err)
		}
	}
}

// TestConcurrentIssue issues 8 × 1000 certificates from 8 goroutines (8 × 200 under the race
// detector: the same races, a fifth of the time).
func TestConcurrentIssue(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	const workers = 8
	each := 1000
	if raceDetector {
		each = 200
	}
	serials := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				sr := newSerial(t)
				if err := s.ReserveSerial(ctx, sr, ev(2100, "")); err != nil {
					t.Errorf("worker %d: ReserveSerial(%s) = %v", w, sr, err)
					return
				}
				c := Certificate{Serial: sr, DER: testDER(sr), Template: "T", Account: fmt.Sprintf("w%d-%d", w, i)}
				if err := s.CommitCertificate(ctx, c, ev(2101, "")); err != nil {
					t.Errorf("worker %d: CommitCertificate(%s) = %v", w, sr, err)
					return
				}
				serials[w] = append(serials[w], sr)
			}
		})
	}
	wg.Wait()
	if n, err := s.CountCertificates(ctx); n != int64(workers*each) || err != nil {
		t.Errorf("CountCertificates() = %d, %v, want %d", n, err, workers*each)
	}
	for _, list := range serials {
		for _, sr := range list {
			c, err := s.GetCertificate(ctx, sr)
			if err != nil || string(c.DER) != string(testDER(sr)) {
				t.Errorf("GetCertificate(%s) = DER ok %v, %v", sr, err == nil && string(c.DER) == string(testDER(sr)), err)
			}
		}
	}
	if n := countRows(t, s, "events"); n != 2*workers*each {
		t.Errorf("events = %d, want %d", n, 2*workers*each)
	}
	t.Logf("%d ops in %d transactions", s.batchedOps.Load(), s.batches.Load())
}
