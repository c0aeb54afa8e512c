package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/caddyinternals"
	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/material/castore"
	storageredis "github.com/trustline/trustline/modules/storage/redis"
	"github.com/trustline/trustline/modules/topology"
)

// The cluster tests run the Caddyfile of examples/cluster (every node the
// same file, told apart by its environment): nodes on 127.0.0.1, .2, .3
// (and .4 when one joins) on one port, sharing one Redis and through it one
// internal CA; each node serves node-to-node mTLS with its own SPIFFE ID
// and calls the others through `transport mtls` on its local API.

const clusterPrefix = "cluster-example" // key_prefix in the example's Caddyfile

type cluster struct {
	t         *testing.T
	caddyfile string
	redis     string
	redisP    *bench.Process
	keyFile   string
	peerPort  string
	nodes     map[string]*clusterNode
	storage   *storageredis.Redis
}

type clusterNode struct {
	name, ip, spiffeID string
	api                string // host:port of the local API (plain HTTP)
	c                  *bench.Caddy
}

// newCluster starts Redis (keeping its data across a restart) and reads
// the example's Caddyfile.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	raw, err := os.ReadFile(bench.RepoPath("examples", "cluster", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	// the bench gives each Caddy its admin address as TL_ADMIN
	cf := strings.Replace(string(raw), "admin {$ADMIN}", "admin {$TL_ADMIN}", 1)
	cl := &cluster{t: t, caddyfile: cf, nodes: map[string]*clusterNode{}}
	cl.redis, cl.redisP = bench.StartRedis(t, "--appendonly", "yes")
	dir := t.TempDir()
	key := make([]byte, 32)
	rand.Read(key)
	cl.keyFile = filepath.Join(dir, "storage.key")
	if err := os.WriteFile(cl.keyFile, []byte(base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	cl.peerPort = bench.Port(bench.FreeAddr(t))
	return cl
}

// start starts a node; spiffeID "" is the node's own.
func (cl *cluster) start(name, ip, spiffeID string) *clusterNode {
	cl.t.Helper()
	if spiffeID == "" {
		spiffeID = "spiffe://cluster.local/node/" + name
	}
	n := &clusterNode{name: name, ip: ip, spiffeID: spiffeID, api: bench.FreeAddr(cl.t)}
	n.c = bench.Start(cl.t, cl.caddyfile,
		"NODE="+name, "NODE_IP="+ip, "SPIFFE_ID="+spiffeID,
		"API_PORT="+bench.Port(n.api), "PEER_PORT="+cl.peerPort,
		"REDIS="+cl.redis, "STORAGE_KEY="+cl.keyFile,
		"LOCK_TTL=2s", "KEEPALIVE=off")
	bench.WaitPort(cl.t, ip+":"+cl.peerPort, 10*time.Second)
	bench.WaitPort(cl.t, n.api, 10*time.Second)
	cl.nodes[name] = n
	return n
}

// restartRedis stops Redis and starts it again on the same port and
// data directory after pause.
func (cl *cluster) restartRedis(pause time.Duration) {
	cl.t.Helper()
	cl.redisP.Stop()
	time.Sleep(pause)
	cl.redisP = bench.StartProcess(cl.t, "redis-server", "--port", bench.Port(cl.redis), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "yes", "--dir", cl.redisP.Dir)
	bench.WaitPort(cl.t, cl.redis, 10*time.Second)
}

// store reads the cluster's storage in this process, as another node does.
func (cl *cluster) store() *storageredis.Redis {
	cl.t.Helper()
	if cl.storage == nil {
		cl.storage = &storageredis.Redis{
			Addresses:  []string{cl.redis},
			KeyPrefix:  clusterPrefix,
			Encryption: &storageredis.Encryption{Key: &storageredis.KeySource{File: cl.keyFile, ID: "example-1"}},
		}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		cl.t.Cleanup(cancel)
		if err := cl.storage.Provision(ctx); err != nil {
			cl.t.Fatal(err)
		}
		cl.t.Cleanup(func() { cl.storage.Cleanup() })
	}
	return cl.storage
}

// ca is the cluster's CA as storage holds it now: a testpki CA of its
// intermediate (chain: intermediate, root), to issue test clients.
func (cl *cluster) ca() (*testpki.CA, *castore.CA) {
	cl.t.Helper()
	st, _ := cl.store().CertMagicStorage()
	ctx := context.Background()
	stored, err := castore.Load(ctx, st, "local", nil, true)
	if err != nil {
		cl.t.Fatal(err)
	}
	var certs bytes.Buffer
	certs.Write(testpki.CertsPEM(stored.Intermediates...))
	certs.Write(testpki.CertsPEM(stored.Root))
	keyPEM, err := st.Load(ctx, caddyinternals.PKIKey("local", caddyinternals.PKIIntermediateKey))
	if err != nil {
		cl.t.Fatal(err)
	}
	return testpki.ParseCA(cl.t, certs.Bytes(), keyPEM), stored
}

// get asks node from's local API to call node to.
func (cl *cluster) get(from, to string) (string, http.Header, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + cl.nodes[from].api + "/to/" + to)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(body), resp.Header, fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
	}
	if want := to + ": hello spiffe://cluster.local/node/" + from + "\n"; string(body) != want {
		return string(body), resp.Header, fmt.Errorf("body %q, want %q", body, want)
	}
	return string(body), resp.Header, nil
}

// clientCertIssuer is the key ID of the intermediate that issued the
// client certificate a node presented (from the Client-Cert header the
// called node sets).
func clientCertIssuer(t *testing.T, h http.Header) []byte {
	t.Helper()
	v := strings.Trim(h.Get("Client-Cert"), ":")
	der, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		t.Fatalf("Client-Cert %q: %v", v, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c.AuthorityKeyId
}

// probe connects straight to node n's peer address with a client
// certificate and returns the chain it served; err when refused.
func (cl *cluster) probe(n *clusterNode, cert tls.Certificate, roots *x509.CertPool) ([]*x509.Certificate, string, error) {
	name := n.name + ".cluster.internal"
	tr := &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{ServerName: name, RootCAs: roots, Certificates: []tls.Certificate{cert}},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, n.ip+":"+cl.peerPort)
		},
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + name + ":" + cl.peerPort + "/")
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, string(body), fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
	}
	return resp.TLS.PeerCertificates, string(body), nil
}

// adminPost POSTs to a node's admin API.
func adminPost(t *testing.T, c *bench.Caddy, path string) (int, string) {
	t.Helper()
	status, body, err := c.AdminDo(http.MethodPost, path, nil, nil)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return status, body
}

type renewResult struct {
	Renewed        bool   `json:"renewed"`
	Serial         string `json:"serial"`
	PreviousSerial string `json:"previous_serial"`
}

// renew forces a renewal on node n.
func (cl *cluster) renew(n *clusterNode, query string) renewResult {
	cl.t.Helper()
	status, body := adminPost(cl.t, n.c, "/trustline/cluster/renew?ca=local"+query)
	if status != http.StatusOK {
		cl.t.Fatalf("renew on %s: HTTP %d: %s", n.name, status, body)
	}
	var r renewResult
	if err := json.Unmarshal([]byte(body), &r); err != nil || !r.Renewed || r.Serial == "" {
		cl.t.Fatalf("renew on %s: %s (%v)", n.name, body, err)
	}
	return r
}

type clusterStatus struct {
	CAs []struct {
		Intermediate struct {
			Serial string `json:"serial"`
		} `json:"intermediate"`
		CaddyInStep bool   `json:"caddy_in_step"`
		CaddySerial string `json:"caddy_intermediate_serial"`
	} `json:"cas"`
}

// following reports whether node n's view of the CA (its stored
// intermediate and Caddy's in-memory copy) is serial.
func (cl *cluster) following(n *clusterNode, serial string) bool {
	status, body := n.c.AdminGet(cl.t, "/trustline/cluster")
	var st clusterStatus
	if status != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil || len(st.CAs) != 1 {
		return false
	}
	return st.CAs[0].Intermediate.Serial == serial && st.CAs[0].CaddyInStep && st.CAs[0].CaddySerial == serial
}

// load runs requests between every pair of the named nodes until stopped,
// and records every failure.
type load struct {
	mu       sync.Mutex
	failures []string
	requests int
	stop     context.CancelFunc
	wg       sync.WaitGroup
}

func (cl *cluster) startLoad(names ...string) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{stop: cancel}
	for _, from := range names {
		for _, to := range names {
			if from == to {
				continue
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				for ctx.Err() == nil {
					_, _, err := cl.get(from, to)
					l.mu.Lock()
					l.requests++
					if err != nil {
						l.failures = append(l.failures, fmt.Sprintf("%s %s->%s: %v", time.Now().Format("15:04:05.000"), from, to, err))
					}
					l.mu.Unlock()
					time.Sleep(10 * time.Millisecond)
				}
			}()
		}
	}
	cl.t.Cleanup(func() { l.halt() })
	return l
}

func (l *load) halt() {
	l.stop()
	l.wg.Wait()
}

// check fails the test if any request failed so far.
func (l *load) check(t *testing.T, phase string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failures) > 0 {
		t.Fatalf("%s: %d of %d requests failed, first ones:\n%s", phase, len(l.failures), l.requests,
			strings.Join(l.failures[:min(10, len(l.failures))], "\n"))
	}
	t.Logf("%s: %d requests, none failed", phase, l.requests)
}

// followedWithin10s checks, for every node named, that within 10 s of a
// renewal to serial it follows the new intermediate: its cluster status
// and Caddy's in-memory CA, the chain of the certificate it serves, the
// issuer of the client certificate it presents to the others, and that it
// trusts a client certificate of the new intermediate sent without its
// chain (so from its pki_live pool).
func (cl *cluster) followedWithin10s(serial string, names ...string) {
	cl.t.Helper()
	testCA, stored := cl.ca()
	if got := stored.Issuer().SerialNumber.Text(16); got != serial {
		cl.t.Fatalf("storage holds intermediate %s, the renewal answered %s", got, serial)
	}
	roots := x509.NewCertPool()
	roots.AddCert(stored.Root)
	leafOnly := testCA.Issue(cl.t, testpki.URI("spiffe://cluster.local/node/probe"), testpki.ClientOnly()).TLS()
	leafOnly.Certificate = leafOnly.Certificate[:1]
	deadline := time.Now().Add(10 * time.Second)
	for _, name := range names {
		n := cl.nodes[name]
		var why string
		for {
			why = ""
			if !cl.following(n, serial) {
				why = "its status and Caddy's in-memory CA are not on the new intermediate"
			} else if chain, _, err := cl.probe(n, leafOnly, roots); err != nil {
				why = "a client certificate of the new intermediate, sent alone, is refused: " + err.Error()
			} else if len(chain) < 2 || chain[1].SerialNumber.Text(16) != serial {
				why = "its server certificate is not issued by the new intermediate"
			} else {
				other := names[0]
				if other == name {
					other = names[1]
				}
				if _, h, err := cl.get(name, other); err != nil {
					why = "calling " + other + ": " + err.Error()
				} else if !bytes.Equal(clientCertIssuer(cl.t, h), stored.Issuer().SubjectKeyId) {
					why = "the client certificate it presents to " + other + " is not issued by the new intermediate"
				}
			}
			if why == "" {
				break
			}
			if time.Now().After(deadline) {
				cl.t.Fatalf("node %s did not follow the renewal to %s within 10s: %s", name, serial, why)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// TestCluster: three Caddy nodes on one Redis, under continuous mTLS load
// between them: a renewal forced on one node is trusted and used by all
// within 10 s with no failed request; Redis restarts with no failed
// request; a certificate from another CA or with another identity is
// refused; a new node joins; when the node holding the renewal lock dies,
// another renews once the lock's TTL has run out.
func TestCluster(t *testing.T) {
	bench.Need(t, "redis-server")
	cl := newCluster(t)
	a := cl.start("a", "127.0.0.1", "") // the first node creates the CA
	b := cl.start("b", "127.0.0.2", "")
	c := cl.start("c", "127.0.0.3", "")
	names := []string{"a", "b", "c"}
	for _, from := range names {
		for _, to := range names {
			if from != to {
				if _, _, err := cl.get(from, to); err != nil {
					t.Fatalf("%s -> %s: %v", from, to, err)
				}
			}
		}
	}
	ld := cl.startLoad(names...)

	// a renewal forced on a: every node trusts and uses it within 10 s
	first := cl.renew(a, "")
	cl.followedWithin10s(first.Serial, names...)
	ld.check(t, "renewal")

	// refused: a node's SPIFFE ID from another CA; another identity from
	// the cluster's CA; accepted: a node's identity from the cluster's CA
	testCA, stored := cl.ca()
	roots := x509.NewCertPool()
	roots.AddCert(stored.Root)
	other := testpki.NewCA(t, "Other CA").Issue(t, testpki.URI("spiffe://cluster.local/node/x"), testpki.ClientOnly())
	if _, _, err := cl.probe(a, other.TLS(), roots); err == nil {
		t.Error("a node certificate from another CA was accepted")
	}
	app := testCA.Issue(t, testpki.URI("spiffe://cluster.local/app/intruder"), testpki.ClientOnly())
	if _, _, err := cl.probe(a, app.TLS(), roots); err == nil {
		t.Error("a certificate of the cluster's CA with another identity was accepted")
	}
	nodeX := testCA.Issue(t, testpki.URI("spiffe://cluster.local/node/x"), testpki.ClientOnly())
	if _, body, err := cl.probe(a, nodeX.TLS(), roots); err != nil || body != "a: hello spiffe://cluster.local/node/x\n" {
		t.Errorf("a node certificate of the cluster's CA: %q, %v", body, err)
	}
	a.c.WaitLog(t, `"issuer":"CN=Other CA"`, 5*time.Second)
	a.c.WaitLog(t, `"spiffe_id":"spiffe://cluster.local/app/intruder"`, 5*time.Second)

	// Redis goes away and comes back: nothing fails meanwhile (every node
	// serves from what it holds), and the cluster renews and follows again
	cl.restartRedis(2 * time.Second)
	ld.check(t, "Redis restart")
	var second renewResult
	eventually(t, 20*time.Second, "a renewal on b once Redis is back", func() (bool, string) {
		status, body := adminPost(t, b.c, "/trustline/cluster/renew?ca=local&wait=5s")
		return status == http.StatusOK && json.Unmarshal([]byte(body), &second) == nil && second.Renewed, body
	})
	if second.PreviousSerial != first.Serial {
		t.Errorf("after the restart b renewed %s, want the intermediate stored before it (%s): Redis lost its data?", second.PreviousSerial, first.Serial)
	}
	cl.followedWithin10s(second.Serial, names...)
	ld.check(t, "renewal after the Redis restart")

	// a new node joins: it gets its certificates from the CA in Redis and
	// the others accept it, as it accepts them
	cl.start("d", "127.0.0.4", "")
	for _, n := range names {
		if _, _, err := cl.get("d", n); err != nil {
			t.Errorf("d -> %s: %v", n, err)
		}
		if _, _, err := cl.get(n, "d"); err != nil {
			t.Errorf("%s -> d: %v", n, err)
		}
	}
	ld.halt()
	ld.check(t, "the whole run")

	// c takes the renewal lock and dies holding it: a's renewal waits for
	// the lock's TTL (2 s), then goes through
	held := cl.renew(c, "&hold=5m")
	rc := goredis.NewClient(&goredis.Options{Addr: cl.redis, DisableIdentity: true})
	defer rc.Close()
	lockKey := "{" + clusterPrefix + "}:l:trustline_cluster_ca_local"
	owner, err := rc.Get(context.Background(), lockKey).Result()
	if err != nil || !strings.Contains(owner, fmt.Sprintf("/%d/", c.c.PID())) {
		t.Fatalf("lock %s: owner %q (%v), want c (pid %d)", lockKey, owner, err, c.c.PID())
	}
	if err := syscall.Kill(c.c.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	third := cl.renew(a, "&wait=30s")
	if third.PreviousSerial != held.Serial {
		t.Errorf("a renewed %s, want c's %s", third.PreviousSerial, held.Serial)
	}
	delete(cl.nodes, "c")
	cl.followedWithin10s(third.Serial, "a", "b", "d")
}

// TestExampleCluster: examples/cluster as its README runs it: three nodes
// from run.sh, an intruder certificate refused, a fourth node joining, a
// workload with another identity refused, a renewal on one node followed
// by another, and the topology report of a node.
func TestExampleCluster(t *testing.T) {
	bench.Need(t, "redis-server")
	redis, peer := bench.FreeAddr(t), bench.FreeAddr(t)
	apis := []string{bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t)}
	admins := []string{bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t)}
	peerPort := bench.Port(peer)
	ex := runExample(t, "cluster", "REDIS_PORT="+bench.Port(redis), "PEER_PORT="+peerPort,
		"A_API="+bench.Port(apis[0]), "B_API="+bench.Port(apis[1]), "C_API="+bench.Port(apis[2]),
		"A_ADMIN="+admins[0], "B_ADMIN="+admins[1], "C_ADMIN="+admins[2])
	api := func(i int, path string) string { return "http://" + apis[i] + path }

	if got := curlOK(t, api(0, "/to/b")); got != "b: hello spiffe://cluster.local/node/a\n" {
		t.Errorf("a -> b: %q", got)
	}
	if got := curlOK(t, api(2, "/to/a")); got != "a: hello spiffe://cluster.local/node/c\n" {
		t.Errorf("c -> a: %q", got)
	}
	nodeA := "a.cluster.internal:" + peerPort
	curlRefused(t, "--cacert", ex.file("ca.crt"), "--cert", ex.file("intruder.crt"), "--key", ex.file("intruder.key"),
		"--resolve", nodeA+":127.0.0.1", "https://"+nodeA+"/")
	curlRefused(t, api(0, "/to/d")) // d has not joined yet

	node := func(i int, args ...string) {
		env := append(append([]string(nil), ex.env...), "REDIS_PORT="+bench.Port(redis), "PEER_PORT="+peerPort,
			"API_PORT="+bench.Port(apis[i]), "ADMIN="+admins[i])
		bench.StartProcessEnv(t, env, bench.RepoPath("examples", "cluster", "node.sh"), args...)
		bench.WaitPort(t, apis[i], 20*time.Second)
	}
	node(3, "d", "127.0.0.4")
	if got := curlOK(t, api(0, "/to/d")); got != "d: hello spiffe://cluster.local/node/a\n" {
		t.Errorf("a -> d: %q", got)
	}
	if got := curlOK(t, api(3, "/to/c")); got != "c: hello spiffe://cluster.local/node/d\n" {
		t.Errorf("d -> c: %q", got)
	}
	node(4, "web", "127.0.0.5", "spiffe://cluster.local/app/web")
	curlRefused(t, api(4, "/to/a"))
	ex.proc.WaitLog(t, `"spiffe_id":"spiffe://cluster.local/app/web"`, 5*time.Second)

	out, _, code := bench.Curl(t, "-sf", "-X", "POST", "http://"+admins[1]+"/trustline/cluster/renew?ca=local")
	var r renewResult
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || !r.Renewed {
		t.Fatalf("renew on b: exit %d: %s", code, out)
	}
	eventually(t, 10*time.Second, "a follows b's renewal", func() (bool, string) {
		out, _, _ := bench.Curl(t, "-sf", "http://"+admins[0]+"/trustline/cluster")
		return strings.Contains(out, `"caddy_intermediate_serial":"`+r.Serial+`"`) && strings.Contains(out, `"caddy_in_step":true`), out
	})

	// the report of node a (the file analysed with a's environment)
	ex.env = append(ex.env, "NODE=a", "NODE_IP=127.0.0.1", "SPIFFE_ID=spiffe://cluster.local/node/a",
		"API_PORT="+bench.Port(apis[0]), "ADMIN="+admins[0], "REDIS="+redis, "STORAGE_KEY="+ex.file("storage.key"))
	rep := ex.report(t, admins[0], "Caddyfile")
	var mtlsIn, mtlsOut int
	for _, l := range rep.Listeners {
		for _, rt := range l.Routes {
			if rt.Inbound.Mode == topology.ModeMTLS {
				mtlsIn++
			}
			for _, o := range rt.Outbound {
				if o.Mode == topology.OutMTLS && o.TrustPool != nil && o.TrustPool.Source == "pki_live" && len(o.UpstreamIdentity) == 1 {
					mtlsOut++
				}
			}
		}
	}
	if mtlsIn != 1 || mtlsOut != 4 {
		t.Errorf("report: %d mTLS inbound routes (want 1), %d mTLS outbound legs on pki_live with a pinned identity (want 4)", mtlsIn, mtlsOut)
	}
	if !hasFinding(rep, topology.KindPlaintextLeg, topology.SeverityWarning, "apps.http.servers.") {
		t.Errorf("the local API's plain HTTP is not flagged: %+v", rep.Findings)
	}
}

// TestClusterRollbackRefused: two nodes on a real Redis with encryption
// on. Someone with access to Redis (not to the storage key) captures the
// sealed intermediate (certificate and key) before a renewal and writes
// those bytes back after it: the values still open (genuine, recent), but
// neither node follows the older intermediate, and storage is repaired by
// a renewal under the lock that both nodes follow.
func TestClusterRollbackRefused(t *testing.T) {
	bench.Need(t, "redis-server")
	cl := newCluster(t)
	a := cl.start("a", "127.0.0.1", "")
	b := cl.start("b", "127.0.0.2", "")
	ctx := context.Background()
	rc := goredis.NewClient(&goredis.Options{Addr: cl.redis, DisableIdentity: true})
	defer rc.Close()
	crtKey := "{" + clusterPrefix + "}:v:" + caddyinternals.PKIKey("local", caddyinternals.PKIIntermediateCert)
	keyKey := "{" + clusterPrefix + "}:v:" + caddyinternals.PKIKey("local", caddyinternals.PKIIntermediateKey)
	oldCrt, err1 := rc.HGet(ctx, crtKey, "v").Bytes()
	oldKey, err2 := rc.HGet(ctx, keyKey, "v").Bytes()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if bytes.Contains(oldKey, []byte("PRIVATE KEY")) {
		t.Fatal("the intermediate key is not sealed in Redis")
	}
	_, before := cl.ca()
	old := before.Issuer().SerialNumber.Text(16)
	renewed := cl.renew(a, "")
	cl.followedWithin10s(renewed.Serial, "a", "b")

	// the older sealed pair written back, and announced
	if err := rc.HSet(ctx, crtKey, "v", oldCrt).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.HSet(ctx, keyKey, "v", oldKey).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Publish(ctx, "{"+clusterPrefix+"}:changes", caddyinternals.PKIKey("local", caddyinternals.PKIIntermediateCert)).Err(); err != nil {
		t.Fatal(err)
	}
	var repaired string
	eventually(t, 20*time.Second, "storage repaired by a renewal", func() (bool, string) {
		for _, n := range []*clusterNode{a, b} {
			if cl.following(n, old) {
				t.Fatalf("node %s followed the older intermediate %s written back", n.name, old)
			}
		}
		_, stored := cl.ca()
		repaired = stored.Issuer().SerialNumber.Text(16)
		return repaired != old && repaired != renewed.Serial && !castore.Older(stored.Issuer(), before.Issuer()), "storage holds " + repaired
	})
	cl.followedWithin10s(repaired, "a", "b")
	// one node refused the older pair at least (both, when both read it
	// before the repair): logged, and counted in /metrics
	counted := 0
	for _, n := range []*clusterNode{a, b} {
		m := n.c.Metrics(t)
		if strings.Contains(m, `trustline_cluster_intermediate_rollbacks_refused_total{ca="local"}`) &&
			!strings.Contains(m, `trustline_cluster_intermediate_rollbacks_refused_total{ca="local"} 0`) {
			counted++
			n.c.WaitLog(t, "refusing the intermediate in storage: it is older than the one this node holds", 5*time.Second)
		}
	}
	if counted == 0 {
		t.Error("no rollback counted in /metrics")
	}
}
