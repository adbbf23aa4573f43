// Command fedgw-peer is a SPIFFE peer built on go-spiffe, used by fedgw's tests to
// check that fedgw interoperates with the reference Go library: it fetches bundles
// from fedgw, serves bundles to fedgw, and (against a SPIFFE Workload API socket)
// speaks X509-SVID mTLS and fetches and validates JWT-SVIDs.
//
// Every subcommand takes explicit flags (see README.md or `fedgw-peer <cmd> -h`),
// writes its result on stdout and its errors on stderr, and exits 0 on success, 1 when
// the operation fails and 2 when the command line is wrong.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
)

// usageError is a wrong command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{msg: fmt.Sprintf(format, args...)}
}

type command struct {
	summary string
	run     func(args []string) error
}

var commands = map[string]command{
	"fetch":        {"fetch a bundle with federation.FetchBundle and print it as JSON", runFetch},
	"serve":        {"serve a bundle file with federation.NewHandler (https_web or https_spiffe)", runServe},
	"mtls-server":  {"X509-SVID mTLS server from a Workload API socket, authorising one client ID", runMTLSServer},
	"mtls-client":  {"X509-SVID mTLS client from a Workload API socket, authorising one server ID", runMTLSClient},
	"jwt-fetch":    {"fetch a JWT-SVID for an audience from a Workload API socket and print it", runJWTFetch},
	"jwt-validate": {"validate a JWT-SVID with the Workload API's JWT bundles and print its subject", runJWTValidate},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "fedgw-peer: unknown command %q\n", args[0])
		printUsage(stderr)
		return 2
	}
	err := cmd.run(args[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	default:
		fmt.Fprintf(stderr, "fedgw-peer %s: %v\n", args[0], err)
		var usage usageError
		if errors.As(err, &usage) {
			return 2
		}
		return 1
	}
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: fedgw-peer <command> [flags]   (fedgw-peer <command> -h for its flags)")
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-13s %s\n", name, commands[name].summary)
	}
}

// newFlags is a flag set that reports errors to the caller instead of exiting.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("fedgw-peer "+name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	return fs
}

// parseFlags parses args, refusing positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q (every value is given by a flag)", fs.Arg(0))
	}
	return nil
}

// required returns a usage error naming the first empty flag.
func required(flags map[string]string) error {
	names := make([]string, 0, len(flags))
	for name := range flags {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if flags[name] == "" {
			return usagef("--%s is required", name)
		}
	}
	return nil
}
