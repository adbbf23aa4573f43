package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

const (
	profileWeb    = "https_web"
	profileSPIFFE = "https_spiffe"
)

func checkProfile(profile string) error {
	if profile != profileWeb && profile != profileSPIFFE {
		return usagef("--profile must be %s or %s, not %q", profileWeb, profileSPIFFE, profile)
	}
	return nil
}

func parseTrustDomain(flagName, value string) (spiffeid.TrustDomain, error) {
	td, err := spiffeid.TrustDomainFromString(value)
	if err != nil {
		return spiffeid.TrustDomain{}, usagef("--%s %q: %v", flagName, value, err)
	}
	return td, nil
}

func parseID(flagName, value string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(value)
	if err != nil {
		return spiffeid.ID{}, usagef("--%s %q: %v", flagName, value, err)
	}
	return id, nil
}

func checkTimeout(timeout time.Duration) error {
	if timeout <= 0 {
		return usagef("--timeout must be positive, not %s", timeout)
	}
	return nil
}

// loadCertPool reads PEM certificates from path into a pool.
func loadCertPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading CA file: %w", err)
	}
	pool := x509.NewCertPool()
	count := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA file %s: certificate %d: %w", path, count+1, err)
		}
		pool.AddCert(cert)
		count++
	}
	if count == 0 {
		return nil, fmt.Errorf("CA file %s: no PEM certificate", path)
	}
	return pool, nil
}

// loadX509Bundle reads a bundle of trust domain td from path: a SPIFFE bundle (JSON,
// the file starts with '{') or PEM certificates.
func loadX509Bundle(td spiffeid.TrustDomain, path string) (*x509bundle.Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading bundle file: %w", err)
	}
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
		bundle, err := spiffebundle.Parse(td, data)
		if err != nil {
			return nil, fmt.Errorf("bundle file %s: %w", path, err)
		}
		if len(bundle.X509Authorities()) == 0 {
			return nil, fmt.Errorf("bundle file %s: no X.509 authority for %s", path, td)
		}
		return bundle.X509Bundle(), nil
	}
	bundle, err := x509bundle.Parse(td, data)
	if err != nil {
		return nil, fmt.Errorf("bundle file %s: %w", path, err)
	}
	return bundle, nil
}

// workloadAddr turns a socket path into the unix:// address go-spiffe expects; an
// address with a scheme (unix://, tcp://) is kept as written.
func workloadAddr(socket string) (string, error) {
	if strings.Contains(socket, "://") {
		return socket, nil
	}
	abs, err := filepath.Abs(socket)
	if err != nil {
		return "", usagef("--socket %q: %v", socket, err)
	}
	return "unix://" + abs, nil
}

// workloadOptions are the source options reaching the Workload API at socket.
func workloadOptions(socket string) (workloadapi.SourceOption, error) {
	if socket == "" {
		return nil, usagef("--socket is required (the Workload API socket path, or unix:///path)")
	}
	addr, err := workloadAddr(socket)
	if err != nil {
		return nil, err
	}
	return workloadapi.WithClientOptions(workloadapi.WithAddr(addr)), nil
}
