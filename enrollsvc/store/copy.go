// Moving a single appliance's history from its SQLite file into a PostgreSQL database (enrollsvc
// store migrate): every table, row by row, with the same IDs, in one PostgreSQL transaction, then
// the row counts of both compared.

package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// colKind is how a column's values are read from SQLite and written to PostgreSQL.
type colKind int

const (
	colText     colKind = iota // text, NOT NULL
	colNullText                // text or NULL (JSON included)
	colBytes                   // blob/bytea, NULL as nil
	colInt                     // integer, NOT NULL
	colNullInt                 // integer or NULL
	colTime                    // time, NULL as the zero time
	colBool                    // 0/1 in SQLite, boolean in PostgreSQL
)

type copyTable struct {
	name     string
	cols     []string
	kinds    []colKind
	identity string // a GENERATED ALWAYS AS IDENTITY column in PostgreSQL, "" none
}

// copyTables are the tables a migration moves, in an order that keeps references satisfied.
// The instances table is not moved: instances register themselves when they start.
var copyTables = []copyTable{
	{name: "serials", cols: []string{"serial", "reserved_at"}, kinds: []colKind{colText, colTime}},
	{name: "requests", identity: "id",
		cols:  []string{"id", "state", "template", "requester", "account", "csr", "submitted", "updated", "reason", "serial", "decision"},
		kinds: []colKind{colInt, colText, colText, colText, colText, colBytes, colTime, colTime, colText, colNullText, colBytes}},
	{name: "certificates",
		cols: []string{"serial", "der", "template", "account", "subject", "not_before", "not_after", "status", "revoked_at",
			"revocation_reason", "request_id", "issued_at"},
		kinds: []colKind{colText, colBytes, colText, colText, colText, colTime, colTime, colText, colTime, colInt, colNullInt, colTime}},
	{name: "events", identity: "seq", cols: []string{"seq", "id", "category", "level", `"time"`, "message", "fields",
		"instance", "n", "prev", "hash"},
		kinds: []colKind{colInt, colInt, colText, colText, colTime, colText, colNullText, colNullText, colNullInt, colBytes, colBytes}},
	{name: "event_chains", cols: []string{"instance", "n", "hash"}, kinds: []colKind{colText, colInt, colBytes}},
	{name: "settings", cols: []string{"name", "value", "updated", "by"}, kinds: []colKind{colText, colText, colTime, colText}},
	{name: "scep_profiles", cols: []string{"name", "template", "account", "mode", "challenge_sha256", "created", "allow_des", "account_sid", "mdm"},
		kinds: []colKind{colText, colText, colText, colText, colBytes, colTime, colBool, colText, colText}},
	{name: "scep_challenges", cols: []string{"sha256", "profile", "subject", "account", "created", "expires", "used_at", "account_sid"},
		kinds: []colKind{colBytes, colText, colText, colText, colTime, colTime, colTime, colText}},
	{name: "scep_transactions", cols: []string{"profile", "transaction_id", "body_sha256", "request_id", "created"},
		kinds: []colKind{colText, colText, colBytes, colNullInt, colTime}},
	{name: "cluster", cols: []string{"id", "ca_cert", "ca_chain", "key_uri", "settings", "created"},
		kinds: []colKind{colInt, colBytes, colText, colText, colText, colTime}},
	{name: "crls", cols: []string{"kind", "number", "this_update", "next_update", "der"},
		kinds: []colKind{colText, colInt, colTime, colTime, colBytes}},
	// Imported keys stay encrypted to the HSM's import key (not the MDM jobs and notifications,
	// which are transient).
	{name: "mdm_imports", cols: []string{"id", "mdm", "account", "subject", "email", "serial", "thumbprint", "not_after", "envelope", "created"},
		kinds: []colKind{colText, colText, colText, colText, colText, colText, colText, colTime, colBytes, colTime}},
	{name: "archived_keys", cols: []string{"spki_sha256", "account", "template", "envelope", "kras", "created"},
		kinds: []colKind{colText, colText, colText, colBytes, colText, colTime}},
}

// Counts are the rows of each table moved (and found in both databases afterwards), and the
// last CRL number handed out.
type Counts struct {
	Rows      map[string]int64
	CRLNumber int64
}

// CopyTo moves everything this SQLite store holds (but its instances) into dst, which must hold
// nothing yet: no CA, no request, no certificate, no event. It runs as one PostgreSQL
// transaction, so a failure leaves dst empty; afterwards the row counts of every table are
// compared. The SQLite store is only read. Stop the service first: what it records during the
// copy would not be moved.
func (s *SQLite) CopyTo(ctx context.Context, dst *Postgres) (Counts, error) {
	for _, t := range []string{"cluster", "requests", "certificates", "events", "serials", "scep_profiles"} {
		var n int64
		if err := dst.eng.read(ctx, func(ctx context.Context, db conn) error {
			return db.queryRow(ctx, "SELECT COUNT(*) FROM "+t).Scan(&n)
		}); err != nil {
			return Counts{}, fmt.Errorf("store: migrate: the target database: %w", err)
		}
		if n > 0 {
			return Counts{}, fmt.Errorf("store: migrate: the target database already holds %d rows in %s: it must be empty", n, t)
		}
	}
	counts := Counts{Rows: map[string]int64{}}
	if err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		return db.queryRow(ctx, "SELECT number FROM crl_numbers WHERE id = 1").Scan(&counts.CRLNumber)
	}); err != nil {
		return Counts{}, fmt.Errorf("store: migrate: reading the CRL number: %w", err)
	}
	err := dst.eng.write(ctx, func(ctx context.Context, tx conn) error {
		for _, t := range copyTables {
			n, err := s.copyTable(ctx, t, tx)
			if err != nil {
				return fmt.Errorf("table %s: %w", t.name, err)
			}
			counts.Rows[t.name] = n
			if t.identity != "" {
				if _, err := tx.exec(ctx, fmt.Sprintf("SELECT setval(pg_get_serial_sequence('%s', '%s'), (SELECT COALESCE(MAX(%s), 0) + 1 FROM %s), false)",
					t.name, t.identity, t.identity, t.name)); err != nil {
					return fmt.Errorf("table %s: its identity sequence: %w", t.name, err)
				}
			}
		}
		if counts.CRLNumber > 0 {
			if _, err := tx.exec(ctx, "UPDATE crl_numbers SET number = ? WHERE id = 1", counts.CRLNumber); err != nil {
				return fmt.Errorf("the CRL number: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return Counts{}, fmt.Errorf("store: migrate: %w", err)
	}
	// Verify: every table holds as many rows in both, and the CRL number came along.
	var bad []string
	for _, t := range copyTables {
		var n int64
		if err := dst.eng.read(ctx, func(ctx context.Context, db conn) error {
			return db.queryRow(ctx, "SELECT COUNT(*) FROM "+t.name).Scan(&n)
		}); err != nil {
			return counts, fmt.Errorf("store: migrate: counting %s in the target: %w", t.name, err)
		}
		if n != counts.Rows[t.name] {
			bad = append(bad, fmt.Sprintf("%s: %d moved, %d found", t.name, counts.Rows[t.name], n))
		}
	}
	var number int64
	if err := dst.eng.read(ctx, func(ctx context.Context, db conn) error {
		return db.queryRow(ctx, "SELECT number FROM crl_numbers WHERE id = 1").Scan(&number)
	}); err != nil || number != counts.CRLNumber {
		bad = append(bad, fmt.Sprintf("CRL number: %d moved, %d found (%v)", counts.CRLNumber, number, err))
	}
	if len(bad) > 0 {
		return counts, fmt.Errorf("store: migrate: the counts differ: %s", strings.Join(bad, "; "))
	}
	return counts, nil
}

// copyTable copies t's rows from s into tx (PostgreSQL's) and returns how many.
func (s *SQLite) copyTable(ctx context.Context, t copyTable, tx conn) (int64, error) {
	var n int64
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		var err error
		n, err = copyRows(ctx, t, db, tx, true)
		return err
	})
	return n, err
}

// copyRows copies t's rows from src into dst and returns how many; toPG says dst is PostgreSQL
// (whose identity columns take the source's values only when told so).
func copyRows(ctx context.Context, t copyTable, src, dst conn, toPG bool) (int64, error) {
	var n int64
	insert := "INSERT INTO " + t.name + " (" + strings.Join(t.cols, ", ") + ")"
	if t.identity != "" && toPG {
		insert += " OVERRIDING SYSTEM VALUE"
	}
	insert += " VALUES (" + strings.TrimSuffix(strings.Repeat("?, ", len(t.cols)), ", ") + ")"
	err := func() error {
		db := src
		return eachRow(ctx, db, func(row scanner) error {
			dest, args := make([]any, len(t.cols)), make([]any, len(t.cols))
			for i, k := range t.kinds {
				switch k {
				case colText:
					dest[i] = new(string)
				case colNullText:
					dest[i] = new(sql.NullString)
				case colBytes:
					dest[i] = new([]byte)
				case colInt:
					dest[i] = new(int64)
				case colNullInt:
					dest[i] = new(sql.NullInt64)
				case colTime:
					dest[i] = new(time.Time)
				case colBool:
					dest[i] = new(bool)
				}
			}
			if err := row.Scan(dest...); err != nil {
				return err
			}
			for i, d := range dest {
				switch v := d.(type) {
				case *string:
					args[i] = *v
				case *sql.NullString:
					if v.Valid {
						args[i] = v.String
					}
				case *[]byte:
					if *v != nil {
						args[i] = *v
					}
				case *int64:
					args[i] = *v
				case *sql.NullInt64:
					if v.Valid {
						args[i] = v.Int64
					}
				case *time.Time:
					args[i] = *v // the zero time is NULL
				case *bool:
					args[i] = *v
				}
			}
			if _, err := dst.exec(ctx, insert, args...); err != nil {
				return err
			}
			n++
			return nil
		}, "SELECT "+strings.Join(t.cols, ", ")+" FROM "+t.name)
	}()
	if err != nil {
		return n, err
	}
	return n, nil
}
