// Archived keys: private keys encrypted to the key recovery agents, kept for recovery.

package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ArchivedKey is a private key archived for recovery, encrypted to the key recovery agents.
type ArchivedKey struct {
	SPKISHA256 string // hex SHA-256 of the key's SubjectPublicKeyInfo
	Account    string
	Template   string
	Envelope   []byte // CMS EnvelopedData to the agents' certificates, holding the PKCS#8 key
	KRAs       string // the agents' certificate thumbprints (hex SHA-256), comma-separated
	Created    time.Time
}

// ArchiveStore keeps archived keys.
type ArchiveStore interface {
	AddArchivedKey(ctx context.Context, k ArchivedKey, e Event) error
	GetArchivedKey(ctx context.Context, spkiSHA256 string) (ArchivedKey, error)
	DeleteArchivedKey(ctx context.Context, spkiSHA256 string, e Event) error
}

var (
	_ ArchiveStore = (*SQLite)(nil)
	_ ArchiveStore = (*Postgres)(nil)
)

// AddArchivedKey stores an archived key with its audit event. ErrConflict if that key is
// archived already (a key pair is certified once per archive).
func (s *core) AddArchivedKey(ctx context.Context, k ArchivedKey, e Event) error {
	if len(k.SPKISHA256) != 64 || k.Account == "" || k.Template == "" || len(k.Envelope) == 0 || k.KRAs == "" ||
		k.Created.IsZero() || checkTimes(k.Created) != nil {
		return errors.New("store: archived key: key hash, account, template, envelope, agents and time are required")
	}
	event, err := s.prepareEvent(e)
	if err != nil {
		return err
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		n, err := tx.exec(ctx, `INSERT INTO archived_keys (spki_sha256, account, template, envelope, kras, created)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (spki_sha256) DO NOTHING`, k.SPKISHA256, k.Account, k.Template, k.Envelope, k.KRAs, k.Created)
		if err != nil {
			return fmt.Errorf("store: archiving a key: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("store: the key %s is archived already: %w", k.SPKISHA256, ErrConflict)
		}
		_, err = event(ctx, tx)
		return err
	})
}

// GetArchivedKey returns the archived key whose public key hashes to spkiSHA256, or ErrNotFound.
func (s *core) GetArchivedKey(ctx context.Context, spkiSHA256 string) (ArchivedKey, error) {
	var k ArchivedKey
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		err := db.queryRow(ctx, "SELECT spki_sha256, account, template, envelope, kras, created FROM archived_keys WHERE spki_sha256 = ?",
			spkiSHA256).Scan(&k.SPKISHA256, &k.Account, &k.Template, &k.Envelope, &k.KRAs, &k.Created)
		if noRows(err) {
			return fmt.Errorf("store: archived key %s: %w", spkiSHA256, ErrNotFound)
		}
		return err
	})
	return k, err
}

// DeleteArchivedKey removes an archived key whose request was not issued, with its audit event.
func (s *core) DeleteArchivedKey(ctx context.Context, spkiSHA256 string, e Event) error {
	event, err := s.prepareEvent(e)
	if err != nil {
		return err
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		if _, err := tx.exec(ctx, "DELETE FROM archived_keys WHERE spki_sha256 = ?", spkiSHA256); err != nil {
			return err
		}
		_, err := event(ctx, tx)
		return err
	})
}
