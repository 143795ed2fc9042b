// The relay: the provisioning API's network front, so that no process running as root listens
// on the network. The appliance (root, which the ceremony's steps need: the data disk, the TPM,
// the HSM token) serves the API only on a Unix socket that the relay's user alone may reach; the
// relay runs as an unprivileged user, confined (no_new_privs, the seccomp allow-list), terminates
// TLS with the API's certificate and forwards each request over that socket, naming the client's
// address in PeerHeader. TLS, HTTP parsing of whatever the network sends and the connection
// handling of slow or hostile clients happen in the relay; the root side reads only requests the
// relay re-encoded.

package provapi

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"time"
)

// PeerHeader carries, from the relay to the API on the Unix socket, the address (host:port) of
// the client the relay accepted. The relay always sets it, replacing whatever the client sent;
// FromRelay takes the request's remote address from it, so that lockouts stay per client.
const PeerHeader = "X-Provapi-Relay-Peer"

// Server timeouts and limits, for the relay's TLS listener and the API's Unix socket alike.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = time.Minute
	writeTimeout      = 5 * time.Minute
	idleTimeout       = time.Minute
	maxHeaderBytes    = 16 << 10
)

// NewRelay returns the relay's server: TLS 1.2 or later with cert, each request forwarded to the
// API listening on the Unix socket at socket. Serve it with ServeTLS(l, "", "").
func NewRelay(cert tls.Certificate, socket string, logger *slog.Logger) *http.Server {
	if logger == nil {
		logger = slog.Default()
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns: 4, IdleConnTimeout: idleTimeout, ResponseHeaderTimeout: writeTimeout,
	}
	proxy := &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = "http", "provapi"
			r.Out.Host = r.In.Host // the API's cross-origin check compares Origin with Host
			r.Out.Header.Set(PeerHeader, r.In.RemoteAddr)
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			logger.Error("provisioning API relay: the API did not answer", "err", err)
			http.Error(w, "the provisioning API is not available", http.StatusBadGateway)
		},
	}
	return &http.Server{Handler: proxy, ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout,
		WriteTimeout: writeTimeout, IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ErrorLog:  slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
}

// FromRelay wraps the API's handler for the Unix socket the relay forwards to: the request's
// remote address becomes the client address of PeerHeader (which is removed), and a request
// without a valid one is refused, since only the relay connects there.
func FromRelay(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer := r.Header.Get(PeerHeader)
		if _, err := netip.ParseAddrPort(peer); err != nil {
			http.Error(w, "request did not come through the provisioning API relay", http.StatusBadRequest)
			return
		}
		r2 := r.Clone(r.Context())
		r2.Header.Del(PeerHeader)
		r2.RemoteAddr = peer
		h.ServeHTTP(w, r2)
	})
}

// NewUnixServer is the API's server for the relay's Unix socket, with the relay's limits.
func NewUnixServer(h http.Handler) *http.Server {
	return &http.Server{Handler: FromRelay(h), ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout,
		WriteTimeout: writeTimeout, IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes + 256}
}

// ErrRelayStopped is what ServeRelay returns after ctx ended and the relay shut down.
var ErrRelayStopped = errors.New("provisioning API relay stopped")

// ServeRelay serves the relay on l until ctx ends, then shuts it down gracefully (answers in
// flight get up to 10 s) and returns ErrRelayStopped.
func ServeRelay(ctx context.Context, l net.Listener, srv *http.Server) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(l, "", "") }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	return ErrRelayStopped
}
