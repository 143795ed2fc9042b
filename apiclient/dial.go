package apiclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// The parts of a data directory a client reads (the layout is enrollsvc/config's; this package
// cannot import it, see the package comment, and TestDialDataDirReadsWhatInitWrites checks that
// the two agree).
const (
	configFile  = "config.json"
	apiAddrFile = "api/address" // written by `enrollsvc serve` once it listens
)

// dataDirConfig is what a client needs of config.json: where the API listens, the admin token
// and the CA certificate (paths relative to the data directory unless absolute).
type dataDirConfig struct {
	CACert string `json:"ca_cert"`
	API    struct {
		Listen    string `json:"listen"`
		TokenFile string `json:"token_file"`
	} `json:"api"`
}

// DialDataDir makes a client from what a data directory holds: the address the running service
// wrote (or the configured one), the admin token and the CA certificate.
func DialDataDir(dir string) (*Client, error) {
	p := filepath.Join(dir, configFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: no configuration; is %s a data directory made by `enrollsvc init`?", p, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	var cfg dataDirConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: corrupt configuration: %w", p, err)
	}
	switch {
	case cfg.API.TokenFile == "":
		return nil, fmt.Errorf("%s: api.token_file is empty", p)
	case cfg.CACert == "":
		return nil, fmt.Errorf("%s: ca_cert is empty", p)
	}
	addr := cfg.API.Listen
	if b, err := os.ReadFile(filepath.Join(dir, apiAddrFile)); err == nil {
		addr = strings.TrimSpace(string(b))
	}
	return DialFiles(dialable(addr), inDir(dir, cfg.API.TokenFile), inDir(dir, cfg.CACert))
}

// DialFiles makes a client for the API at addr (HOST:PORT) with the admin token in tokenFile and
// the CA certificate (PEM) that issued the API's certificate in caFile: a service elsewhere, such
// as an appliance (its console's "api token" and "ca").
func DialFiles(addr, tokenFile, caFile string) (*Client, error) {
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("reading the admin token: %w", err)
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading the CA certificate: %w", err)
	}
	return NewClient(addr, strings.TrimSpace(string(token)), ca)
}

// inDir resolves a path from config.json against the data directory.
func inDir(dir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// dialable turns a wildcard listen address into one a client can connect to.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" {
		host = "127.0.0.1"
	} else if host == "::" {
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}
