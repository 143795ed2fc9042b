// Group commit. Every write is an op run by one writer goroutine that owns the only write
// connection. The writer takes the first queued op, then whatever else is already queued (up
// to maxBatch), and runs them all in one transaction, each inside its own SAVEPOINT: an op that
// fails is rolled back alone and only its caller sees the error. One COMMIT (one fsync of the
// write-ahead log under synchronous=FULL) then makes the whole batch durable, and only then is
// each caller answered. Under load the cost of the fsync is shared by the whole batch.

package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
)

// maxBatch bounds the ops in one transaction, and so the wait of the last of them.
const maxBatch = 256

// States of an op, so that exactly one of the caller (giving up on ctx) and the writer
// (taking the op to run it) decides its fate.
const (
	opQueued int32 = iota
	opTaken
	opCancelled
)

// opFunc does the work of one write inside the batch's transaction. ctx is the writer's, not
// the caller's: once taken, an op runs to the end.
type opFunc = func(ctx context.Context, tx conn) error

type writeOp struct {
	ctx   context.Context // the caller's, consulted only before the op is taken
	fn    opFunc
	state atomic.Int32
	done  chan error // buffered; receives exactly one value unless the caller cancelled first
}

// write queues fn and waits until it has been committed or has failed. If ctx is done before
// the writer takes the op, the op is dropped and ctx.Err() returned; after that, write waits
// for the real outcome, so a nil error always means committed.
func (s *SQLite) write(ctx context.Context, fn opFunc) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	op := &writeOp{ctx: ctx, fn: fn, done: make(chan error, 1)}

	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.ops <- op:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()

	select {
	case err := <-op.done:
		return err
	case <-ctx.Done():
		if op.state.CompareAndSwap(opQueued, opCancelled) {
			return ctx.Err()
		}
		return <-op.done
	}
}

// take claims op for running. It fails if the caller gave up first; if the caller's ctx is
// done but the caller has not noticed yet, take answers it with ctx.Err() and fails.
func take(op *writeOp) bool {
	if err := op.ctx.Err(); err != nil {
		if op.state.CompareAndSwap(opQueued, opCancelled) {
			op.done <- err
		}
		return false
	}
	return op.state.CompareAndSwap(opQueued, opTaken)
}

// runWriter is the writer goroutine. It ends when Close has closed s.ops and every op
// queued before that has been answered.
func (s *SQLite) runWriter() {
	defer close(s.writerDone)
	batch := make([]*writeOp, 0, maxBatch)
	for op := range s.ops {
		batch = batch[:0]
		if take(op) {
			batch = append(batch, op)
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case op, ok := <-s.ops:
				if !ok {
					break drain
				}
				if take(op) {
					batch = append(batch, op)
				}
			default:
				break drain
			}
		}
		if len(batch) > 0 {
			s.runBatch(batch)
		}
	}
}

// runBatch runs batch in one transaction and answers every op.
func (s *SQLite) runBatch(batch []*writeOp) {
	ctx := context.Background()
	s.batches.Add(1)
	s.batchedOps.Add(int64(len(batch)))

	errs := make([]error, len(batch)) // each op's own error
	answer := func(batchErr error) {
		for i, op := range batch {
			err := errs[i]
			if err == nil {
				err = batchErr
			}
			op.done <- err
		}
	}
	abort := func(tx *sql.Tx, err error) {
		if tx != nil {
			tx.Rollback()
		}
		s.log.Error("store: write transaction failed", "ops", len(batch), "err", err)
		answer(err)
	}

	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		abort(nil, fmt.Errorf("store: begin transaction: %w", err))
		return
	}
	if s.stmts == nil {
		s.stmts, s.unprepared = map[string]*sql.Stmt{}, map[string]bool{}
	}
	defer s.prepareNew(ctx) // after the commit or the rollback has freed the connection
	q := txStmts{tx, s}
	for i, op := range batch {
		if _, err := q.ExecContext(ctx, "SAVEPOINT op"); err != nil {
			abort(tx, fmt.Errorf("store: savepoint: %w", err))
			return
		}
		if errs[i] = runOp(ctx, sqliteConn{q}, op.fn); errs[i] != nil {
			// If SQLite rolled the whole transaction back itself (after an I/O error, say), the
			// savepoint is gone and this fails: then nothing of the batch can be kept.
			if _, err := q.ExecContext(ctx, "ROLLBACK TO op"); err != nil {
				abort(tx, fmt.Errorf("store: rolling back failed write (%v): %w", errs[i], err))
				return
			}
		}
		if _, err := q.ExecContext(ctx, "RELEASE op"); err != nil {
			abort(tx, fmt.Errorf("store: release savepoint: %w", err))
			return
		}
	}
	if err := tx.Commit(); err != nil {
		// database/sql forgets the transaction even if SQLite kept it open (a busy COMMIT
		// does); make sure the connection is not left inside it.
		s.wdb.ExecContext(ctx, "ROLLBACK")
		abort(nil, fmt.Errorf("store: commit: %w", err))
		return
	}
	answer(nil)
}

// runOp runs fn, turning a panic into an error so that one bad op cannot stop the writer.
func runOp(ctx context.Context, tx conn, fn opFunc) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("store: write panicked: %v", r)
		}
	}()
	return fn(ctx, tx)
}
