package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// x509Source opens an X509Source on the Workload API at socket, waiting at most
// timeout for the first X509-SVID.
func x509Source(socket string, timeout time.Duration) (*workloadapi.X509Source, error) {
	options, err := workloadOptions(socket)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	source, err := workloadapi.NewX509Source(ctx, options)
	if err != nil {
		return nil, fmt.Errorf("X509-SVID from the Workload API at %s: %w", socket, err)
	}
	return source, nil
}

// runMTLSServer: an HTTPS server whose certificate and trust come from the Workload
// API, accepting only the client with --client-id. It answers every request with
// "hello <client ID> from <server ID>".
func runMTLSServer(args []string) error {
	fs := newFlags("mtls-server")
	socket := fs.String("socket", "", "Workload API socket: a path or unix:///path (required)")
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (port 0: any free port; the chosen address is printed)")
	clientID := fs.String("client-id", "", "the only client SPIFFE ID accepted (tlsconfig.AuthorizeID) (required)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the first X509-SVID")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := required(map[string]string{"socket": *socket, "client-id": *clientID}); err != nil {
		return err
	}
	if err := checkTimeout(*timeout); err != nil {
		return err
	}
	allowed, err := parseID("client-id", *clientID)
	if err != nil {
		return err
	}
	source, err := x509Source(*socket, *timeout)
	if err != nil {
		return err
	}
	defer source.Close()
	own, err := source.GetX509SVID()
	if err != nil {
		return fmt.Errorf("X509-SVID: %w", err)
	}
	fmt.Fprintf(os.Stderr, "serving as %s, accepting %s\n", own.ID, allowed)

	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", *listen, err)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The handshake authorised the client; name it from its certificate.
		peer := "unknown"
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			if id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0]); err == nil {
				peer = id.String()
			}
		}
		current, err := source.GetX509SVID()
		if err != nil {
			http.Error(w, "no X509-SVID", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "hello %s from %s\n", peer, current.ID)
	})
	server := &http.Server{
		Handler:           handler,
		TLSConfig:         tlsconfig.MTLSServerConfig(source, source, tlsconfig.AuthorizeID(allowed)),
		ReadHeaderTimeout: 10 * time.Second,
	}
	fmt.Printf("listening %s\n", listener.Addr())
	return serveUntilSignal(server, func() error { return server.ServeTLS(listener, "", "") })
}

// runMTLSClient: GET --url over mTLS with the Workload API's X509-SVID, accepting only
// the server with --server-id; prints the answer. Fails (exit 1) when either side
// refuses the handshake or the answer is not 200.
func runMTLSClient(args []string) error {
	fs := newFlags("mtls-client")
	socket := fs.String("socket", "", "Workload API socket: a path or unix:///path (required)")
	url := fs.String("url", "", "URL of the mtls-server, e.g. https://127.0.0.1:9443/ (required)")
	serverID := fs.String("server-id", "", "the only server SPIFFE ID accepted (tlsconfig.AuthorizeID) (required)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the first X509-SVID, and then for the request")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := required(map[string]string{"socket": *socket, "url": *url, "server-id": *serverID}); err != nil {
		return err
	}
	if err := checkTimeout(*timeout); err != nil {
		return err
	}
	allowed, err := parseID("server-id", *serverID)
	if err != nil {
		return err
	}
	source, err := x509Source(*socket, *timeout)
	if err != nil {
		return err
	}
	defer source.Close()

	client := &http.Client{
		Transport: &http.Transport{
			TLSClientConfig: tlsconfig.MTLSClientConfig(source, source, tlsconfig.AuthorizeID(allowed)),
		},
		Timeout: *timeout,
	}
	response, err := client.Get(*url)
	if err != nil {
		return fmt.Errorf("GET %s: %w", *url, err)
	}
	defer response.Body.Close()
	body, err := io.ReadAll(io.LimitReader(response.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("GET %s: reading the answer: %w", *url, err)
	}
	if response.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", *url, response.Status, strings.TrimSpace(string(body)))
	}
	if _, err := os.Stdout.Write(body); err != nil {
		return fmt.Errorf("writing stdout: %w", err)
	}
	return nil
}
