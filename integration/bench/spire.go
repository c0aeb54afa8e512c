package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

var (
	spireOnce sync.Once
	spireDir  string
	spireErr  error
)

// SPIREDir returns the directory holding spire-server and spire-agent
// (SPIRE v1.13.3, pinned in tools/spire): $TRUSTLINE_SPIRE_DIR, or else
// what scripts/build-spire.sh prints (it builds them once into a cache).
// When they cannot be had the test fails under CI and is skipped
// elsewhere, as Need does for other tools.
func SPIREDir(t testing.TB) string {
	t.Helper()
	spireOnce.Do(func() {
		dir := os.Getenv("TRUSTLINE_SPIRE_DIR")
		if dir != "" && isExecutable(filepath.Join(dir, "spire-server")) && isExecutable(filepath.Join(dir, "spire-agent")) {
			spireDir = dir
			return
		}
		cmd := exec.Command(RepoPath("scripts", "build-spire.sh"))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			spireErr = fmt.Errorf("scripts/build-spire.sh: %v\n%s", err, stderr.String())
			return
		}
		spireDir = strings.TrimSpace(string(out))
	})
	if spireErr != nil {
		msg := "SPIRE is not available (scripts/test.sh builds it): " + spireErr.Error()
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return spireDir
}

// SPIREServer is a running spire-server: its own trust domain, a sqlite
// datastore and an in-memory key manager in a temp dir, join-token node
// attestation, and a short default X509-SVID TTL.
type SPIREServer struct {
	TrustDomain string
	// Addr is the server's agent API address (127.0.0.1:port).
	Addr string
	// Socket is the server's admin socket (the spire-server CLI's
	// -socketPath).
	Socket string
	Dir    string

	bin  string
	proc *Process
}

// SPIREServerOptions tune a server.
type SPIREServerOptions struct {
	// SVIDTTL is the default X509-SVID TTL. Default 90s.
	SVIDTTL time.Duration
	// UpstreamCert and UpstreamKey, when set, are PEM files of a CA the
	// server's own CA is signed by (the disk UpstreamAuthority): the
	// trust bundle is then that CA, whose key the test holds.
	UpstreamCert, UpstreamKey string
}

// shortTempDir is a temp dir with a short path: a unix socket's path
// holds about 100 bytes, and t.TempDir() paths of long test names do not
// fit.
func shortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// StartSPIREServer starts a spire-server for trustDomain and waits until
// it is healthy.
func StartSPIREServer(t testing.TB, trustDomain string, opts SPIREServerOptions) *SPIREServer {
	t.Helper()
	bin := filepath.Join(SPIREDir(t), "spire-server")
	if opts.SVIDTTL == 0 {
		opts.SVIDTTL = 90 * time.Second
	}
	dir := shortTempDir(t, "spire-srv")
	s := &SPIREServer{TrustDomain: trustDomain, Addr: FreeAddr(t), Socket: filepath.Join(dir, "api.sock"), Dir: dir, bin: bin}
	upstream := ""
	if opts.UpstreamCert != "" {
		upstream = fmt.Sprintf(`	UpstreamAuthority "disk" {
		plugin_data {
			cert_file_path = %q
			key_file_path = %q
		}
	}
`, opts.UpstreamCert, opts.UpstreamKey)
	}
	conf := fmt.Sprintf(`server {
	bind_address = "127.0.0.1"
	bind_port = "%s"
	socket_path = %q
	trust_domain = %q
	data_dir = %q
	log_level = "INFO"
	ca_ttl = "24h"
	default_x509_svid_ttl = "%ds"
}
plugins {
	DataStore "sql" {
		plugin_data {
			database_type = "sqlite3"
			connection_string = %q
		}
	}
	NodeAttestor "join_token" {
		plugin_data {}
	}
	KeyManager "memory" {
		plugin_data {}
	}
%s}
`, Port(s.Addr), s.Socket, trustDomain, filepath.Join(dir, "data"), int(opts.SVIDTTL.Seconds()), filepath.Join(dir, "data", "datastore.sqlite3"), upstream)
	path := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s.proc = startProcess(t, "spire-server "+trustDomain, os.Environ(), dir, bin, "run", "-config", path)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if s.proc.exited() {
			t.Fatalf("spire-server exited during start-up:\n%s", s.proc.Log())
		}
		if _, err := s.cli("healthcheck"); err == nil {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("spire-server did not become healthy within 60s:\n%s", s.proc.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *SPIREServer) cli(args ...string) (string, error) {
	args = append(args, "-socketPath", s.Socket)
	out, err := exec.Command(s.bin, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("spire-server %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// CLI runs a spire-server command against this server (the socket is
// added); the test fails if it exits non-zero.
func (s *SPIREServer) CLI(t testing.TB, args ...string) string {
	t.Helper()
	out, err := s.cli(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ID is the SPIFFE ID of path in the server's trust domain.
func (s *SPIREServer) ID(path string) string { return "spiffe://" + s.TrustDomain + path }

// Entry registers spiffeID for the workloads of agent whose selectors
// match (e.g. "unix:uid:0"), federated with the given trust domains.
func (s *SPIREServer) Entry(t testing.TB, agent *SPIREAgent, spiffeID string, selectors []string, federatesWith ...string) {
	t.Helper()
	args := []string{"entry", "create", "-parentID", agent.ID, "-spiffeID", spiffeID}
	for _, sel := range selectors {
		args = append(args, "-selector", sel)
	}
	for _, td := range federatesWith {
		args = append(args, "-federatesWith", "spiffe://"+td)
	}
	s.CLI(t, args...)
}

// Bundle is the server's own trust bundle in the SPIFFE format.
func (s *SPIREServer) Bundle(t testing.TB) string {
	t.Helper()
	return s.CLI(t, "bundle", "show", "-format", "spiffe")
}

// Federate makes s and other trust each other's bundles (what a bundle
// endpoint would do, by the CLI: bundle show on one, bundle set on the
// other).
func (s *SPIREServer) Federate(t testing.TB, other *SPIREServer) {
	t.Helper()
	s.setBundle(t, other)
	other.setBundle(t, s)
}

func (s *SPIREServer) setBundle(t testing.TB, from *SPIREServer) {
	t.Helper()
	path := filepath.Join(s.Dir, from.TrustDomain+".bundle.json")
	if err := os.WriteFile(path, []byte(from.Bundle(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	s.CLI(t, "bundle", "set", "-format", "spiffe", "-id", "spiffe://"+from.TrustDomain, "-path", path)
}

// SPIREAgent is a running spire-agent attested to a server with a join
// token, serving the Workload API on a unix socket in its temp dir with
// the unix workload attestor. Its key and SVID are kept on disk, so a
// restarted agent is the same node (and its registration entries still
// apply).
type SPIREAgent struct {
	// ID is the agent's SPIFFE ID (the parent of its workloads' entries).
	ID string
	// Socket is the Workload API address (unix:///...).
	Socket string
	Dir    string

	server *SPIREServer
	bin    string
	conf   string
	mu     sync.Mutex
	proc   *Process
	t      testing.TB
}

// StartSPIREAgent starts an agent of server and waits until it is healthy.
func StartSPIREAgent(t testing.TB, server *SPIREServer) *SPIREAgent {
	t.Helper()
	bin := filepath.Join(SPIREDir(t), "spire-agent")
	dir := shortTempDir(t, "spire-ag")
	out := server.CLI(t, "token", "generate", "-ttl", "600")
	var token string
	for _, line := range strings.Split(out, "\n") { // a warning line may follow
		if tok, ok := strings.CutPrefix(strings.TrimSpace(line), "Token: "); ok {
			token = tok
		}
	}
	if token == "" {
		t.Fatalf("spire-server token generate: %q", out)
	}
	a := &SPIREAgent{
		ID:     server.ID("/spire/agent/join_token/" + token),
		Socket: "unix://" + filepath.Join(dir, "agent.sock"),
		Dir:    dir,
		server: server,
		bin:    bin,
		conf:   filepath.Join(dir, "agent.conf"),
		t:      t,
	}
	conf := fmt.Sprintf(`agent {
	data_dir = %q
	log_level = "INFO"
	server_address = "127.0.0.1"
	server_port = "%s"
	socket_path = %q
	trust_domain = %q
	insecure_bootstrap = true
	join_token = %q
}
plugins {
	NodeAttestor "join_token" {
		plugin_data {}
	}
	KeyManager "disk" {
		plugin_data {
			directory = %q
		}
	}
	WorkloadAttestor "unix" {
		plugin_data {}
	}
}
`, filepath.Join(dir, "data"), Port(server.Addr), filepath.Join(dir, "agent.sock"), server.TrustDomain, token, filepath.Join(dir, "data"))
	if err := os.WriteFile(a.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	a.Start(t)
	return a
}

// Start runs the agent (again, after Kill) and waits until it is healthy.
func (a *SPIREAgent) Start(t testing.TB) {
	t.Helper()
	a.mu.Lock()
	a.proc = startProcess(t, "spire-agent "+a.server.TrustDomain, os.Environ(), a.Dir, a.bin, "run", "-config", a.conf)
	proc := a.proc
	a.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	sock := strings.TrimPrefix(a.Socket, "unix://")
	for {
		if proc.exited() {
			t.Fatalf("spire-agent exited during start-up:\n%s", proc.Log())
		}
		if out, err := exec.Command(a.bin, "healthcheck", "-socketPath", sock).CombinedOutput(); err == nil && strings.Contains(string(out), "healthy") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("spire-agent did not become healthy within 60s:\n%s", proc.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Kill stops the agent at once (SIGKILL): its workloads lose the
// Workload API until Start.
func (a *SPIREAgent) Kill() {
	a.mu.Lock()
	p := a.proc
	a.mu.Unlock()
	if p != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Log is the running agent's output.
func (a *SPIREAgent) Log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.proc.Log()
}

// X509Source is this test process's own Workload API client on the
// agent (go-spiffe's X509Source: it follows rotations). It waits until
// the agent serves an SVID with spiffeID (registration entries reach the
// agent within its sync interval) and is closed when the test ends.
func (a *SPIREAgent) X509Source(t testing.TB, spiffeID string) *workloadapi.X509Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx,
		workloadapi.WithClientOptions(workloadapi.WithAddr(a.Socket)),
		workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
			for _, s := range svids {
				if s.ID.String() == spiffeID {
					return s
				}
			}
			return svids[0]
		}))
	if err != nil {
		t.Fatalf("Workload API at %s: %v", a.Socket, err)
	}
	t.Cleanup(func() { src.Close() })
	for {
		s, err := src.GetX509SVID()
		if err == nil && s.ID.String() == spiffeID {
			return src
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the agent at %s served no SVID %s within 60s (last: %v, %v)", a.Socket, spiffeID, s, err)
		case <-src.Updated():
		}
	}
}
