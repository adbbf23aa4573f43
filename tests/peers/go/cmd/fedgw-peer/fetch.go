package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/federation"
)

// runFetch: federation.FetchBundle, then the bundle as JSON (bundle.Marshal) on stdout.
func runFetch(args []string) error {
	fs := newFlags("fetch")
	trustDomain := fs.String("trust-domain", "", "trust domain of the bundle to fetch (required)")
	url := fs.String("url", "", "bundle endpoint URL, e.g. https://127.0.0.1:8443/relay/west.test (required)")
	profile := fs.String("profile", "", "endpoint profile: https_web or https_spiffe (required)")
	ca := fs.String("ca", "", "https_web: PEM file of the roots that sign the server certificate (federation.WithWebPKIRoots); without it, the system roots")
	endpointBundle := fs.String("endpoint-bundle", "", "https_spiffe: bundle of the endpoint's trust domain, SPIFFE JSON or PEM (required for https_spiffe)")
	endpointID := fs.String("endpoint-id", "", "https_spiffe: the SPIFFE ID the endpoint must present (required for https_spiffe)")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline for the whole fetch")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := required(map[string]string{"trust-domain": *trustDomain, "url": *url, "profile": *profile}); err != nil {
		return err
	}
	if err := checkProfile(*profile); err != nil {
		return err
	}
	if err := checkTimeout(*timeout); err != nil {
		return err
	}
	td, err := parseTrustDomain("trust-domain", *trustDomain)
	if err != nil {
		return err
	}

	var option federation.FetchOption
	switch *profile {
	case profileWeb:
		if *endpointBundle != "" || *endpointID != "" {
			return usagef("--endpoint-bundle and --endpoint-id are for https_spiffe; https_web takes --ca")
		}
		if *ca != "" {
			roots, err := loadCertPool(*ca)
			if err != nil {
				return err
			}
			option = federation.WithWebPKIRoots(roots)
		}
	case profileSPIFFE:
		if *ca != "" {
			return usagef("--ca is for https_web; https_spiffe takes --endpoint-bundle and --endpoint-id")
		}
		if err := required(map[string]string{"endpoint-bundle": *endpointBundle, "endpoint-id": *endpointID}); err != nil {
			return err
		}
		id, err := parseID("endpoint-id", *endpointID)
		if err != nil {
			return err
		}
		bundle, err := loadX509Bundle(id.TrustDomain(), *endpointBundle)
		if err != nil {
			return err
		}
		option = federation.WithSPIFFEAuth(bundle, id)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var options []federation.FetchOption
	if option != nil {
		options = append(options, option)
	}
	bundle, err := federation.FetchBundle(ctx, td, *url, options...)
	if err != nil {
		return fmt.Errorf("%s %s: %w", *profile, *url, err)
	}
	doc, err := bundle.Marshal()
	if err != nil {
		return fmt.Errorf("marshalling the fetched bundle: %w", err)
	}
	if _, err := fmt.Fprintf(os.Stdout, "%s\n", doc); err != nil {
		return fmt.Errorf("writing stdout: %w", err)
	}
	return nil
}
