package main

// Checks of the Workload API subcommands (mtls-server, mtls-client, jwt-fetch,
// jwt-validate) against two in-test Workload API servers on unix sockets, one per
// trust domain, each handing out its workload's SVIDs, its own bundles and the other
// domain's bundles as federated: the situation of two SPIRE agents of federated trust
// domains. The subcommands run as real processes (this test binary re-executed as
// fedgw-peer, see TestMain).

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestMain runs main instead of the tests when FEDGW_PEER_AS_MAIN is set, so the
// tests can run the subcommands as separate processes.
func TestMain(m *testing.M) {
	if os.Getenv("FEDGW_PEER_AS_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stderr))
	}
	os.Exit(m.Run())
}

// ca is a SPIFFE CA of one trust domain with a JWT signing key.
type ca struct {
	td     string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	jwtKey *ecdsa.PrivateKey
	jwtKid string
}

func newCA(t *testing.T, td string) *ca {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: td + " test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: td}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &ca{td: td, cert: cert, key: key, jwtKey: newKey(t), jwtKid: td + "-jwt-1"}
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// svid issues an X509-SVID for id: DER chain (leaf only) and PKCS#8 key.
func (c *ca) svid(t *testing.T, id string) ([]byte, []byte) {
	t.Helper()
	key := newKey(t)
	uri, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der, pkcs8
}

// jwks is the JWT bundle of the CA's trust domain, as the Workload API sends it.
func (c *ca) jwks(t *testing.T) []byte {
	t.Helper()
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &c.jwtKey.PublicKey, KeyID: c.jwtKid, Use: "jwt-svid"}}}
	doc, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// jwt signs a JWT-SVID for id and audience.
func (c *ca) jwt(id string, audience []string) (string, error) {
	options := (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", c.jwtKid)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: c.jwtKey}, options)
	if err != nil {
		return "", err
	}
	now := time.Now()
	claims := jwt.Claims{
		Subject:  id,
		Audience: audience,
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(5 * time.Minute)),
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}

// agent is an in-test Workload API for one workload of one trust domain.
type agent struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	own       *ca
	federated []*ca
	id        string
	svidDER   []byte
	svidKey   []byte
}

func (a *agent) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	federated := map[string][]byte{}
	for _, f := range a.federated {
		federated["spiffe://"+f.td] = f.cert.Raw
	}
	response := &workload.X509SVIDResponse{
		Svids: []*workload.X509SVID{{
			SpiffeId:    a.id,
			X509Svid:    a.svidDER,
			X509SvidKey: a.svidKey,
			Bundle:      a.own.cert.Raw,
		}},
		FederatedBundles: federated,
	}
	if err := stream.Send(response); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func (a *agent) jwtBundles(t *testing.T) map[string][]byte {
	bundles := map[string][]byte{"spiffe://" + a.own.td: a.own.jwks(t)}
	for _, f := range a.federated {
		bundles["spiffe://"+f.td] = f.jwks(t)
	}
	return bundles
}

func (a *agent) FetchJWTSVID(_ context.Context, request *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if request.SpiffeId != "" && request.SpiffeId != a.id {
		return nil, status.Errorf(codes.PermissionDenied, "no identity %s", request.SpiffeId)
	}
	token, err := a.own.jwt(a.id, request.Audience)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &workload.JWTSVIDResponse{Svids: []*workload.JWTSVID{{SpiffeId: a.id, Svid: token}}}, nil
}

// serve starts the agent on a unix socket in dir; returns the socket path.
func (a *agent) serve(t *testing.T, dir, name string, jwtBundles map[string][]byte) string {
	t.Helper()
	socket := filepath.Join(dir, name+".sock")
	listener, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(server, &bundleAgent{agent: a, bundles: jwtBundles})
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	return socket
}

// bundleAgent adds the JWT bundle stream, with the bundles fixed at start.
type bundleAgent struct {
	*agent
	bundles map[string][]byte
}

func (b *bundleAgent) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	if err := stream.Send(&workload.JWTBundlesResponse{Bundles: b.bundles}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

const (
	serverID = "spiffe://a.test/server"
	clientID = "spiffe://b.test/client"
)

// federatedPair: the server's agent in a.test and the client's in b.test, each
// trusting the other domain's X.509 and JWT bundles.
func federatedPair(t *testing.T) (serverSocket, clientSocket string, a, b *ca) {
	t.Helper()
	// Unix socket paths are short: not under t.TempDir's long names.
	dir, err := os.MkdirTemp("", "wl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	a, b = newCA(t, "a.test"), newCA(t, "b.test")
	serverDER, serverKey := a.svid(t, serverID)
	clientDER, clientKey := b.svid(t, clientID)
	server := &agent{own: a, federated: []*ca{b}, id: serverID, svidDER: serverDER, svidKey: serverKey}
	client := &agent{own: b, federated: []*ca{a}, id: clientID, svidDER: clientDER, svidKey: clientKey}
	return server.serve(t, dir, "a", server.jwtBundles(t)), client.serve(t, dir, "b", client.jwtBundles(t)), a, b
}

// peer runs this binary as fedgw-peer with args; returns stdout, stderr and the exit
// code.
func peer(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "FEDGW_PEER_AS_MAIN=1")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		exit, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("running fedgw-peer %v: %v", args, err)
		}
		code = exit.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

// startServer runs mtls-server accepting clientID; returns its URL.
func startServer(t *testing.T, socket, allowed string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "mtls-server", "--socket", socket, "--client-id", allowed, "--timeout", "10s")
	cmd.Env = append(os.Environ(), "FEDGW_PEER_AS_MAIN=1")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		t.Fatalf("mtls-server printed %q (%v), not `listening ADDR`", line, err)
	}
	return "https://" + addr + "/"
}

func TestMTLSAcrossFederatedDomains(t *testing.T) {
	serverSocket, clientSocket, _, _ := federatedPair(t)
	url := startServer(t, serverSocket, clientID)

	stdout, stderr, code := peer(t, "mtls-client", "--socket", clientSocket, "--url", url, "--server-id", serverID, "--timeout", "10s")
	if code != 0 {
		t.Fatalf("mtls-client failed (exit %d): %s", code, stderr)
	}
	if want := "hello " + clientID + " from " + serverID + "\n"; stdout != want {
		t.Fatalf("mtls-client printed %q, want %q", stdout, want)
	}

	// The client refuses a server with another ID.
	_, stderr, code = peer(t, "mtls-client", "--socket", clientSocket, "--url", url, "--server-id", "spiffe://a.test/other", "--timeout", "10s")
	if code != 1 {
		t.Fatalf("mtls-client accepted the wrong server ID (exit %d): %s", code, stderr)
	}

	// A server that accepts only another client refuses this one.
	other := startServer(t, serverSocket, "spiffe://b.test/someone-else")
	_, stderr, code = peer(t, "mtls-client", "--socket", clientSocket, "--url", other, "--server-id", serverID, "--timeout", "10s")
	if code != 1 {
		t.Fatalf("a server for another client accepted this one (exit %d): %s", code, stderr)
	}
}

func TestJWTAcrossFederatedDomains(t *testing.T) {
	serverSocket, clientSocket, _, _ := federatedPair(t)

	token, stderr, code := peer(t, "jwt-fetch", "--socket", clientSocket, "--audience", "spiffe://a.test/server", "--timeout", "10s")
	if code != 0 {
		t.Fatalf("jwt-fetch failed (exit %d): %s", code, stderr)
	}
	token = strings.TrimSpace(token)
	if strings.Count(token, ".") != 2 {
		t.Fatalf("jwt-fetch printed %q, not a JWS compact token", token)
	}

	// Validated in a.test with b.test's federated JWT bundle.
	subject, stderr, code := peer(t, "jwt-validate", "--socket", serverSocket, "--audience", "spiffe://a.test/server", "--token", token, "--timeout", "10s")
	if code != 0 {
		t.Fatalf("jwt-validate failed (exit %d): %s", code, stderr)
	}
	if subject != clientID+"\n" {
		t.Fatalf("jwt-validate printed %q, want %q", subject, clientID)
	}

	// Another audience is refused.
	_, stderr, code = peer(t, "jwt-validate", "--socket", serverSocket, "--audience", "spiffe://a.test/other", "--token", token, "--timeout", "10s")
	if code != 1 {
		t.Fatalf("jwt-validate accepted another audience (exit %d): %s", code, stderr)
	}
}

func TestJWTRefusedWithoutTheFederatedBundle(t *testing.T) {
	dir, err := os.MkdirTemp("", "wl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	a, b := newCA(t, "a.test"), newCA(t, "b.test")
	serverDER, serverKey := a.svid(t, serverID)
	alone := &agent{own: a, id: serverID, svidDER: serverDER, svidKey: serverKey}
	socket := alone.serve(t, dir, "a", alone.jwtBundles(t))
	token, err := b.jwt(clientID, []string{"spiffe://a.test/server"})
	if err != nil {
		t.Fatal(err)
	}
	_, stderr, code := peer(t, "jwt-validate", "--socket", socket, "--audience", "spiffe://a.test/server", "--token", token, "--timeout", "10s")
	if code != 1 || !strings.Contains(stderr, "b.test") {
		t.Fatalf("a token of an unfederated domain: exit %d, stderr %q", code, stderr)
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"no-such-command"},
		{"fetch", "--url", "https://127.0.0.1/"},
		{"fetch", "--trust-domain", "a.test", "--url", "https://127.0.0.1/", "--profile", "https_web", "--endpoint-id", "spiffe://a.test/x"},
		{"serve", "--trust-domain", "a.test", "--bundle", "x.json", "--profile", "ftp"},
		{"mtls-client", "--url", "https://127.0.0.1/", "--server-id", serverID},
		{"jwt-validate", "--socket", "/nonexistent", "--audience", "x", "--token", "t", "extra"},
	} {
		_, stderr, code := peer(t, args...)
		if code != 2 || stderr == "" {
			t.Errorf("fedgw-peer %v: exit %d (want 2), stderr %q", args, code, stderr)
		}
	}
}
