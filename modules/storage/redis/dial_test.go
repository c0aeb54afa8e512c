package redis

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// dialLog records the addresses the dialer actually connects to.
type dialLog struct {
	mu    sync.Mutex
	addrs []string
}

// dial records addr; it connects only to a loopback address and refuses
// any other without touching the network (a test never reaches out).
func (l *dialLog) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	l.mu.Lock()
	l.addrs = append(l.addrs, addr)
	l.mu.Unlock()
	if !isLoopback(addr) {
		return nil, fmt.Errorf("test: would have connected to %s", addr)
	}
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

func (l *dialLog) dialed() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.addrs...)
}

// TestDialerPlaintextRule: without TLS and without insecure_plaintext, the
// dialer refuses any address that is not a loopback address, before
// connecting, and logs it once per address naming the fix; with
// insecure_plaintext it dials.
func TestDialerPlaintextRule(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	var seen dialLog
	d := newDialer(nil, caddy2s, false, zap.New(core))
	d.dialTCP = seen.dial
	for _, addr := range []string{"192.0.2.1:6379", "[2001:db8::1]:6379", "redis.internal:6379", "10.0.0.5:6379", "192.0.2.1:6379"} {
		_, err := d.dial(context.Background(), "tcp", addr)
		if !errors.Is(err, errPlaintextRefused) || !containsAll(err.Error(), addr, "tls { ... }", "insecure_plaintext") {
			t.Errorf("dial %s: %v", addr, err)
		}
	}
	if got := seen.dialed(); len(got) != 0 {
		t.Errorf("connections attempted: %v", got)
	}
	if n := logs.FilterMessageSnippet("refusing to connect to Redis in plain TCP").FilterField(zap.String("address", "192.0.2.1:6379")).Len(); n != 1 {
		t.Errorf("refusal of 192.0.2.1:6379 logged %d times, want once", n)
	}
	if n := logs.FilterMessageSnippet("refusing").Len(); n != 4 {
		t.Errorf("%d refusals logged, want 4 (one per address)", n)
	}

	// loopback addresses are dialed
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	for _, addr := range []string{"127.0.0.1:" + port, "localhost:" + port} {
		c, err := d.dial(context.Background(), "tcp", addr)
		if err != nil {
			t.Errorf("dial %s: %v", addr, err)
			continue
		}
		c.Close()
	}

	// insecure_plaintext: the address is dialed
	var asked dialLog
	ok := newDialer(nil, caddy2s, true, zap.NewNop())
	ok.dialTCP = asked.dial
	ok.dial(context.Background(), "tcp", "192.0.2.1:6379")
	if got := asked.dialed(); len(got) != 1 || got[0] != "192.0.2.1:6379" {
		t.Errorf("with insecure_plaintext: dialed %v", got)
	}
}

// TestDialerResolvedAddressChecked: a name allowed as loopback
// ("localhost") is checked again once resolved, before connecting.
func TestDialerResolvedAddressChecked(t *testing.T) {
	if err := loopbackOnly("tcp4", "127.0.0.1:6379", nil); err != nil {
		t.Error(err)
	}
	if err := loopbackOnly("tcp6", "[::1]:6379", nil); err != nil {
		t.Error(err)
	}
	if err := loopbackOnly("tcp4", "192.0.2.1:6379", nil); !errors.Is(err, errPlaintextRefused) {
		t.Errorf("a resolved non-loopback address: %v", err)
	}
}

// fakeRedis is a RESP server on loopback that answers each command with
// reply(args) (a raw RESP reply); "" answers an error.
func fakeRedis(t *testing.T, reply func(args []string) string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				go func() { <-t.Context().Done(); c.Close() }()
				r := bufio.NewReader(c)
				for {
					args, err := readCommand(r)
					if err != nil {
						return
					}
					out := reply(args)
					if out == "" {
						out = "-ERR unknown command '" + strings.Join(args, " ") + "'\r\n"
					}
					if _, err := io.WriteString(c, out); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// readCommand reads one RESP array of bulk strings.
func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(line, "*") {
		return nil, fmt.Errorf("not an array: %q", line)
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || n < 0 || n > 64 {
		return nil, fmt.Errorf("bad array length %q", line)
	}
	args := make([]string, n)
	for i := range args {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "$")))
		if err != nil || size < 0 || size > 1<<20 {
			return nil, fmt.Errorf("bad bulk length %q", line)
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		args[i] = string(buf[:size])
	}
	return args, nil
}

func bulk(s string) string { return "$" + strconv.Itoa(len(s)) + "\r\n" + s + "\r\n" }

// TestSentinelAnnouncingRemoteMaster: a Sentinel on loopback that names a
// master on another machine does not lead the storage to send AUTH and
// the stored keys there in clear: the dial to the master is refused before
// any connection is attempted, and the config load fails naming the
// address and the fix.
func TestSentinelAnnouncingRemoteMaster(t *testing.T) {
	sentinel := fakeRedis(t, func(args []string) string {
		cmd := strings.ToLower(strings.Join(args, " "))
		switch {
		case strings.HasPrefix(cmd, "sentinel get-master-addr-by-name"):
			return "*2\r\n" + bulk("192.0.2.1") + bulk("6379")
		case strings.HasPrefix(cmd, "sentinel"):
			return "*0\r\n"
		case cmd == "ping":
			return "+PONG\r\n"
		}
		return ""
	})
	var seen dialLog
	r := &Redis{Sentinel: &Sentinel{MasterName: "caddy", Addresses: []string{sentinel}}, Password: "s3cret",
		DialTimeout: caddy2s, ReadTimeout: caddy2s, dialTCP: seen.dial}
	err := provision(t, r)
	if err == nil || !containsAll(err.Error(), "192.0.2.1:6379", "non-loopback address", "tls { ... }", "insecure_plaintext") {
		t.Fatalf("provision with a Sentinel naming a remote master: %v", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Error("the error shows the password")
	}
	for _, a := range seen.dialed() {
		if a != sentinel {
			t.Errorf("connection attempted to %s (only the Sentinel %s may be dialed)", a, sentinel)
		}
	}
	if len(seen.dialed()) == 0 {
		t.Error("the Sentinel was never dialed")
	}
	t.Log(err)
}

// TestClusterSeedAnnouncingRemoteNode: a Redis Cluster seed on loopback
// that announces its slots on another machine: the dial to that node is
// refused before any connection is attempted.
func TestClusterSeedAnnouncingRemoteNode(t *testing.T) {
	slots := "*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n" + bulk("192.0.2.1") + ":6379\r\n" + bulk("0123456789abcdef0123456789abcdef01234567")
	seed := func(args []string) string {
		switch strings.ToLower(strings.Join(args, " ")) {
		case "cluster slots":
			return slots
		case "ping":
			return "+PONG\r\n"
		}
		return ""
	}
	a, b := fakeRedis(t, seed), fakeRedis(t, seed)
	var seen dialLog
	r := &Redis{Addresses: []string{a, b}, DialTimeout: caddy2s, ReadTimeout: caddy2s, dialTCP: seen.dial}
	err := provision(t, r)
	if err == nil || !containsAll(err.Error(), "192.0.2.1:6379", "non-loopback address") {
		t.Fatalf("provision with seeds announcing a remote node: %v", err)
	}
	for _, addr := range seen.dialed() {
		if addr != a && addr != b {
			t.Errorf("connection attempted to %s", addr)
		}
	}
	t.Log(err)
}
