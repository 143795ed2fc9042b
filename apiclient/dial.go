package apiclient

import (
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/enrollment-appliance/aeappliance/config"
)

// DialDataDir makes a client from what a data directory holds (config.json, read and validated
// by package config): the address the running service wrote (or the configured one), the
// admin token and the CA certificate.
func DialDataDir(dir string) (*Client, error) {
	cfg, err := config.Load(dir)
	if err != nil {
		return nil, err
	}
	addr := cfg.API.Listen
	if b, err := os.ReadFile(config.Path(dir, config.APIAddrFile)); err == nil {
		addr = strings.TrimSpace(string(b))
	}
	return DialFiles(dialable(addr), config.Path(dir, cfg.API.TokenFile), config.Path(dir, cfg.CACert))
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
