package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// runServe: a federation.NewHandler bundle endpoint serving a bundle file, re-read
// whenever the file changes.
func runServe(args []string) error {
	fs := newFlags("serve")
	trustDomain := fs.String("trust-domain", "", "trust domain of the served bundle (required)")
	bundlePath := fs.String("bundle", "", "SPIFFE bundle (JSON) to serve; re-read when it changes, so write it atomically (required)")
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (port 0: any free port; the chosen address is printed)")
	profile := fs.String("profile", "", "endpoint profile: https_web or https_spiffe (required)")
	cert := fs.String("cert", "", "https_web: server certificate chain, PEM (required for https_web)")
	key := fs.String("key", "", "https_web: its private key, PEM (required for https_web)")
	svid := fs.String("svid", "", "https_spiffe: the endpoint's X509-SVID chain, PEM (required for https_spiffe)")
	svidKey := fs.String("svid-key", "", "https_spiffe: its private key, PEM (required for https_spiffe)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := required(map[string]string{"trust-domain": *trustDomain, "bundle": *bundlePath, "profile": *profile}); err != nil {
		return err
	}
	if err := checkProfile(*profile); err != nil {
		return err
	}
	td, err := parseTrustDomain("trust-domain", *trustDomain)
	if err != nil {
		return err
	}

	var tlsConfig *tls.Config
	switch *profile {
	case profileWeb:
		if *svid != "" || *svidKey != "" {
			return usagef("--svid and --svid-key are for https_spiffe; https_web takes --cert and --key")
		}
		if err := required(map[string]string{"cert": *cert, "key": *key}); err != nil {
			return err
		}
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			return fmt.Errorf("loading --cert %s and --key %s: %w", *cert, *key, err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	case profileSPIFFE:
		if *cert != "" || *key != "" {
			return usagef("--cert and --key are for https_web; https_spiffe takes --svid and --svid-key")
		}
		if err := required(map[string]string{"svid": *svid, "svid-key": *svidKey}); err != nil {
			return err
		}
		loaded, err := x509svid.Load(*svid, *svidKey)
		if err != nil {
			return fmt.Errorf("loading --svid %s and --svid-key %s: %w", *svid, *svidKey, err)
		}
		fmt.Fprintf(os.Stderr, "serving as %s\n", loaded.ID)
		tlsConfig = tlsconfig.TLSServerConfig(loaded)
	}

	source := &fileSource{trustDomain: td, path: *bundlePath}
	if _, err := source.GetBundleForTrustDomain(td); err != nil {
		return err
	}
	handler, err := federation.NewHandler(td, source)
	if err != nil {
		return fmt.Errorf("federation.NewHandler: %w", err)
	}

	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", *listen, err)
	}
	server := &http.Server{
		Handler:           handler,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
	}
	fmt.Printf("listening %s\n", listener.Addr())
	return serveUntilSignal(server, func() error { return server.ServeTLS(listener, "", "") })
}

// serveUntilSignal runs serve until it fails or SIGINT/SIGTERM arrives, then shuts
// the server down.
func serveUntilSignal(server *http.Server, serve func() error) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- serve() }()
	select {
	case err := <-done:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := server.Shutdown(shutdown); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", err)
	}
	return nil
}

// fileSource is a spiffebundle.Source for one trust domain read from a file. The file
// is checked on every request and parsed again when its identity, size or modification
// time changed; a file that does not parse is reported on stderr and the last good
// bundle keeps being served.
type fileSource struct {
	trustDomain spiffeid.TrustDomain
	path        string

	mu     sync.Mutex
	info   os.FileInfo
	bundle *spiffebundle.Bundle
}

func (s *fileSource) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	if td != s.trustDomain {
		return nil, fmt.Errorf("no bundle for trust domain %q (serving %q)", td, s.trustDomain)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	info, err := os.Stat(s.path)
	if err != nil {
		return s.lastGood(fmt.Errorf("bundle file: %w", err))
	}
	if s.info != nil && os.SameFile(s.info, info) && s.info.Size() == info.Size() && s.info.ModTime().Equal(info.ModTime()) {
		return s.bundle, nil
	}
	bundle, err := spiffebundle.Load(s.trustDomain, s.path)
	if err != nil {
		return s.lastGood(fmt.Errorf("bundle file %s: %w", s.path, err))
	}
	s.info = info
	s.bundle = bundle
	seq, hasSeq := bundle.SequenceNumber()
	seqText := "none"
	if hasSeq {
		seqText = fmt.Sprint(seq)
	}
	fmt.Fprintf(os.Stderr, "loaded %s: %d X.509 authorities, %d JWT authorities, sequence %s\n",
		s.path, len(bundle.X509Authorities()), len(bundle.JWTAuthorities()), seqText)
	return bundle, nil
}

func (s *fileSource) lastGood(err error) (*spiffebundle.Bundle, error) {
	fmt.Fprintf(os.Stderr, "%v\n", err)
	if s.bundle == nil {
		return nil, err
	}
	return s.bundle, nil
}
