package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os/signal"
	"syscall"

	"github.com/enrollment-appliance/aeappliance/enrollsvc/sandbox"
	"github.com/enrollment-appliance/aeappliance/provisioning/provapi"
)

// cmdRelay runs the provisioning API's network front (provapi.NewRelay): the appliance starts it
// as an unprivileged user while unprovisioned, so that no root process listens on the network.
func cmdRelay(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("enrollsvc relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var listen, socket, certFile, keyFile, logLevel string
	var confine bool
	fs.StringVar(&listen, "listen", "", "address the provisioning API is reached at (HOST:PORT)")
	fs.StringVar(&socket, "socket", "", "Unix socket the provisioning API is served on")
	fs.StringVar(&certFile, "tls-cert", "", "PEM file with the API's certificate")
	fs.StringVar(&keyFile, "tls-key", "", "PEM file with its private key")
	fs.BoolVar(&confine, "seccomp", false, "confine the relay: no_new_privs and the service's system-call allow-list")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: enrollsvc relay --listen HOST:PORT --socket PATH --tls-cert F --tls-key F [--seccomp]

The provisioning API's network front. The appliance serves the provisioning ceremony's API as root
(its steps need the data disk, the TPM and the HSM), but only on a Unix socket; it starts this relay
as an unprivileged user to accept clients on HOST:PORT, terminate TLS with the certificate and
forward each request over the socket, naming the client's address. It stops on SIGTERM.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if listen == "" || socket == "" || certFile == "" || keyFile == "" {
		return fmt.Errorf("%w: --listen, --socket, --tls-cert and --tls-key are required", errUsage)
	}
	log, err := newLogger(stderr, logLevel)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("relay: the API's certificate: %w", err)
	}
	if confine {
		if err := sandbox.Apply(); err != nil {
			return fmt.Errorf("relay: %w", err)
		}
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	log.Info("provisioning API relay listening", "listen", l.Addr().String(), "socket", socket, "confined", confine)
	fmt.Fprintf(stdout, "Provisioning API relay listening on https://%s\n", l.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := provapi.ServeRelay(ctx, l, provapi.NewRelay(cert, socket, log)); !errors.Is(err, provapi.ErrRelayStopped) {
		return fmt.Errorf("relay: %w", err)
	}
	return nil
}
