package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Cluster is what every instance sharing a store agrees on: the CA they serve. The first
// instance records it (enrollsvc init); one that joins (enrollsvc join) checks that its HSM
// holds the key of CACert, by KeyURI, and takes its shared settings from Settings.
type Cluster struct {
	CACert   []byte    `json:"-"`        // DER
	CAChain  string    `json:"ca_chain"` // PEM of the certificates above a subordinate CA ("" for a root)
	KeyURI   string    `json:"key_uri"`  // RFC 7512
	Settings []byte    `json:"-"`        // JSON: the settings every instance shares
	Created  time.Time `json:"created"`
}

// Instance is one appliance (or enrollsvc) serving from the store, as it last said.
type Instance struct {
	Name      string   `json:"name"`
	Version   string   `json:"version"`
	Addresses []string `json:"addresses"` // the URLs it serves on
	// EnrollURLs are the base URLs of its enrollment web services as clients reach them
	// (https://host[:port], MS-XCEP CA URIs are under them).
	EnrollURLs []string  `json:"enroll_urls,omitempty"`
	Started    time.Time `json:"started"`
	Heartbeat  time.Time `json:"heartbeat"`
}

// ClusterStore is the part of the store that knows the CA and the instances sharing it.
type ClusterStore interface {
	InitCluster(ctx context.Context, c Cluster, e Event) error
	GetCluster(ctx context.Context) (Cluster, error)
	Heartbeat(ctx context.Context, in Instance) error
	ListInstances(ctx context.Context) ([]Instance, error)
}

var (
	_ ClusterStore = (*SQLite)(nil)
	_ ClusterStore = (*Postgres)(nil)
)

// InitCluster records the CA the store's instances serve, with its audit event. Recording the
// same CA certificate again changes nothing; another CA is ErrConflict: a store serves one CA.
func (s *core) InitCluster(ctx context.Context, c Cluster, e Event) error {
	if len(c.CACert) == 0 || c.KeyURI == "" || !json.Valid(c.Settings) || c.Created.IsZero() {
		return errors.New("store: cluster: CA certificate, key URI, settings (JSON) and time are required")
	}
	if err := checkTimes(c.Created); err != nil {
		return err
	}
	event, err := s.prepareEvent(e)
	if err != nil {
		return err
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		var have []byte
		err := tx.queryRow(ctx, "SELECT ca_cert FROM cluster WHERE id = 1").Scan(&have)
		switch {
		case err == nil && bytes.Equal(have, c.CACert):
			return nil
		case err == nil:
			return fmt.Errorf("store: the database already serves another CA: %w", ErrConflict)
		case !noRows(err):
			return err
		}
		if _, err := tx.exec(ctx, `INSERT INTO cluster (id, ca_cert, ca_chain, key_uri, settings, created) VALUES (1, ?, ?, ?, ?, ?)`,
			c.CACert, c.CAChain, c.KeyURI, string(c.Settings), c.Created); err != nil {
			return fmt.Errorf("store: recording the CA: %w", err)
		}
		_, err = event(ctx, tx)
		return err
	})
}

// GetCluster returns the CA the store serves, or ErrNotFound before InitCluster.
func (s *core) GetCluster(ctx context.Context) (Cluster, error) {
	var c Cluster
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		var settings string
		err := db.queryRow(ctx, "SELECT ca_cert, ca_chain, key_uri, settings, created FROM cluster WHERE id = 1").
			Scan(&c.CACert, &c.CAChain, &c.KeyURI, &settings, &c.Created)
		if noRows(err) {
			return fmt.Errorf("store: no CA recorded: %w", ErrNotFound)
		}
		c.Settings = []byte(settings)
		return err
	})
	return c, err
}

// Heartbeat records that an instance runs (its version, its addresses), now.
func (s *core) Heartbeat(ctx context.Context, in Instance) error {
	if in.Name == "" || in.Version == "" || in.Started.IsZero() || in.Heartbeat.IsZero() {
		return errors.New("store: instance: name, version and times are required")
	}
	if err := checkTimes(in.Started, in.Heartbeat); err != nil {
		return err
	}
	addrs, err := json.Marshal(in.Addresses)
	if err != nil {
		return err
	}
	enroll, err := json.Marshal(append([]string{}, in.EnrollURLs...))
	if err != nil {
		return err
	}
	return s.eng.write(ctx, func(ctx context.Context, tx conn) error {
		_, err := tx.exec(ctx, `INSERT INTO instances (name, version, addresses, started, heartbeat, enroll_urls) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET version = excluded.version, addresses = excluded.addresses,
			started = excluded.started, heartbeat = excluded.heartbeat, enroll_urls = excluded.enroll_urls`,
			in.Name, in.Version, string(addrs), in.Started, in.Heartbeat, string(enroll))
		if err != nil {
			return fmt.Errorf("store: instance %s: %w", in.Name, err)
		}
		return nil
	})
}

// ListInstances returns every instance that ever ran, by name.
func (s *core) ListInstances(ctx context.Context) ([]Instance, error) {
	var out []Instance
	err := s.eng.read(ctx, func(ctx context.Context, db conn) error {
		return eachRow(ctx, db, func(row scanner) error {
			var in Instance
			var addrs, enroll string
			if err := row.Scan(&in.Name, &in.Version, &addrs, &in.Started, &in.Heartbeat, &enroll); err != nil {
				return err
			}
			if err := json.Unmarshal([]byte(addrs), &in.Addresses); err != nil {
				return fmt.Errorf("instance %s: addresses: %w", in.Name, err)
			}
			if err := json.Unmarshal([]byte(enroll), &in.EnrollURLs); err != nil {
				return fmt.Errorf("instance %s: enrollment URLs: %w", in.Name, err)
			}
			if len(in.EnrollURLs) == 0 {
				in.EnrollURLs = nil
			}
			out = append(out, in)
			return nil
		}, "SELECT name, version, addresses, started, heartbeat, enroll_urls FROM instances ORDER BY name")
	})
	if err != nil {
		return nil, fmt.Errorf("store: listing instances: %w", err)
	}
	return out, nil
}
