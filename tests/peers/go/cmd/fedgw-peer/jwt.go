package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// jwtSource opens a JWTSource on the Workload API at socket, waiting at most timeout
// for the first JWT bundles.
func jwtSource(ctx context.Context, socket string) (*workloadapi.JWTSource, error) {
	options, err := workloadOptions(socket)
	if err != nil {
		return nil, err
	}
	source, err := workloadapi.NewJWTSource(ctx, options)
	if err != nil {
		return nil, fmt.Errorf("JWT bundles from the Workload API at %s: %w", socket, err)
	}
	return source, nil
}

// runJWTFetch: a JWT-SVID for --audience from the Workload API, printed on stdout.
func runJWTFetch(args []string) error {
	fs := newFlags("jwt-fetch")
	socket := fs.String("socket", "", "Workload API socket: a path or unix:///path (required)")
	audience := fs.String("audience", "", "the audience (aud) of the token (required)")
	subject := fs.String("spiffe-id", "", "which of the workload's SPIFFE IDs to use when it has several (optional)")
	timeout := fs.Duration("timeout", 30*time.Second, "deadline for connecting and fetching")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := required(map[string]string{"socket": *socket, "audience": *audience}); err != nil {
		return err
	}
	if err := checkTimeout(*timeout); err != nil {
		return err
	}
	params := jwtsvid.Params{Audience: *audience}
	if *subject != "" {
		id, err := parseID("spiffe-id", *subject)
		if err != nil {
			return err
		}
		params.Subject = id
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	source, err := jwtSource(ctx, *socket)
	if err != nil {
		return err
	}
	defer source.Close()
	svid, err := source.FetchJWTSVID(ctx, params)
	if err != nil {
		return fmt.Errorf("JWT-SVID for audience %q: %w", *audience, err)
	}
	fmt.Fprintf(os.Stderr, "JWT-SVID for %s, audience %v, expires %s\n", svid.ID, svid.Audience, svid.Expiry.UTC().Format(time.RFC3339))
	if _, err := fmt.Println(svid.Marshal()); err != nil {
		return fmt.Errorf("writing stdout: %w", err)
	}
	return nil
}

// runJWTValidate: validate a JWT-SVID with the JWT bundles the Workload API gives
// (the agent's own and federated trust domains), for --audience; prints the subject.
func runJWTValidate(args []string) error {
	fs := newFlags("jwt-validate")
	socket := fs.String("socket", "", "Workload API socket: a path or unix:///path (required)")
	audience := fs.String("audience", "", "the audience the token must carry (required)")
	token := fs.String("token", "", "the token; \"-\" reads it from stdin (required)")
	timeout := fs.Duration("timeout", 30*time.Second, "deadline for connecting and receiving the JWT bundles")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := required(map[string]string{"socket": *socket, "audience": *audience, "token": *token}); err != nil {
		return err
	}
	if err := checkTimeout(*timeout); err != nil {
		return err
	}
	text := *token
	if text == "-" {
		data, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
		if err != nil {
			return fmt.Errorf("reading the token from stdin: %w", err)
		}
		text = string(data)
	}
	text = strings.TrimSpace(text)
	if text == "" {
		return usagef("the token is empty")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	source, err := jwtSource(ctx, *socket)
	if err != nil {
		return err
	}
	defer source.Close()
	svid, err := jwtsvid.ParseAndValidate(text, source, []string{*audience})
	if err != nil {
		return fmt.Errorf("token refused for audience %q: %w", *audience, err)
	}
	if _, err := fmt.Println(svid.ID.String()); err != nil {
		return fmt.Errorf("writing stdout: %w", err)
	}
	return nil
}
