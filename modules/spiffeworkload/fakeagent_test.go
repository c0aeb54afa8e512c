package spiffeworkload

import (
	"context"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trustline/trustline/internal/testpki"
)

// fakeAgent is a Workload API server on a unix socket, speaking the real
// gRPC protocol go-spiffe's client speaks: it streams the X509SVIDResponse
// set last (a new one to every open stream), or PermissionDenied when none
// is set, as SPIRE does for a workload with no registration entry. It can
// be stopped and started again on the same socket.
type fakeAgent struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	t       testing.TB
	network string // unix or tcp
	path    string // the socket's path, or ip:port
	addr    string // unix:///path or tcp://ip:port

	mu      sync.Mutex
	resp    *workload.X509SVIDResponse
	changed chan struct{}
	srv     *grpc.Server

	streams atomic.Int32 // streams opened in all
	open    atomic.Int32 // streams open now
}

func newFakeAgent(t testing.TB) *fakeAgent {
	dir, err := os.MkdirTemp("", "swl") // short: a socket path has ~100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "agent.sock")
	f := &fakeAgent{t: t, network: "unix", path: path, addr: "unix://" + path, changed: make(chan struct{})}
	t.Cleanup(f.stop)
	return f
}

// newFakeAgentTCP is a fake agent on a TCP port of ip (the Workload API
// over tcp://, plaintext gRPC as go-spiffe speaks it).
func newFakeAgentTCP(t testing.TB, ip string) *fakeAgent {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	hostPort := l.Addr().String()
	l.Close()
	f := &fakeAgent{t: t, network: "tcp", path: hostPort, addr: "tcp://" + hostPort, changed: make(chan struct{})}
	t.Cleanup(f.stop)
	return f
}

func (f *fakeAgent) start() *fakeAgent {
	f.t.Helper()
	if f.network == "unix" {
		_ = os.Remove(f.path)
	}
	l, err := net.Listen(f.network, f.path)
	if err != nil {
		f.t.Fatal(err)
	}
	srv := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(srv, f)
	f.mu.Lock()
	f.srv = srv
	f.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
	return f
}

// stop ends every stream and closes the socket (the agent goes away).
func (f *fakeAgent) stop() {
	f.mu.Lock()
	srv := f.srv
	f.srv = nil
	f.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

func (f *fakeAgent) set(resp *workload.X509SVIDResponse) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resp = resp
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeAgent) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	f.streams.Add(1)
	f.open.Add(1)
	defer f.open.Add(-1)
	for {
		f.mu.Lock()
		resp, changed := f.resp, f.changed
		f.mu.Unlock()
		if resp == nil {
			return status.Error(codes.PermissionDenied, "no identity issued")
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// svid is one SVID of a fake answer: a leaf issued by ca for id.
type svid struct {
	id   string
	ca   *testpki.CA
	opts []testpki.Option
}

// answer builds a Workload API answer: the SVIDs (each with its own trust
// domain's bundle, the root of its CA) and the federated bundles.
func answer(t testing.TB, svids []svid, federated map[string]*testpki.CA) (*workload.X509SVIDResponse, []*testpki.Leaf) {
	t.Helper()
	resp := &workload.X509SVIDResponse{FederatedBundles: map[string][]byte{}}
	var leaves []*testpki.Leaf
	for _, s := range svids {
		leaf := s.ca.Issue(t, append([]testpki.Option{testpki.URI(s.id)}, s.opts...)...)
		leaves = append(leaves, leaf)
		der := leaf.Cert.Raw
		for _, c := range leaf.Chain {
			der = append(der, c.Raw...)
		}
		key, err := x509.MarshalPKCS8PrivateKey(leaf.Key)
		if err != nil {
			t.Fatal(err)
		}
		resp.Svids = append(resp.Svids, &workload.X509SVID{
			SpiffeId: s.id, X509Svid: der, X509SvidKey: key, Bundle: s.ca.Root().Raw,
		})
	}
	for td, ca := range federated {
		resp.FederatedBundles["spiffe://"+td] = ca.Root().Raw
	}
	return resp, leaves
}

func testCtx(t testing.TB) caddy.Context {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond every 10ms until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
