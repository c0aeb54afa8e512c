package bench

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a child process whose output is captured; it is stopped when
// the test ends, and its output is printed if the test failed.
type Process struct {
	Name string
	// Dir is a temp dir of its own for config files, pid files, logs.
	Dir string

	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	once sync.Once
}

type lockedWriter struct{ p *Process }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// StartProcess runs name with args until the test ends.
func StartProcess(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	return startProcess(t, name, os.Environ(), t.TempDir(), name, args...)
}

func startProcess(t testing.TB, label string, env []string, dir, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: label, Dir: dir, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	p.cmd.Dir = dir
	p.cmd.Stdout = lockedWriter{p}
	p.cmd.Stderr = lockedWriter{p}
	// its own process group, so that Stop reaches its children too
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", label, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("---- %s output ----\n%s\n---- end of %s output ----", label, p.Log(), label)
		}
	})
	return p
}

func (p *Process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Log is the process's output so far.
func (p *Process) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// WaitLog waits until the output contains substr.
func (p *Process) WaitLog(t testing.TB, substr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(p.Log(), substr) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %q did not appear in the log within %s", p.Name, substr, timeout)
}

// Stop terminates the process group (SIGTERM, then SIGKILL after 5s).
func (p *Process) Stop() {
	p.once.Do(func() {
		if p.cmd.Process == nil {
			return
		}
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
}

// issuedPorts are the ports FreeAddr has handed out in this process: the
// kernel may offer a just-closed port again, and two servers of one test
// given the same port would clash.
var issuedPorts = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// FreeAddr returns a loopback address with a port free at the time of the
// call and never returned before in this process.
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().(*net.TCPAddr)
		l.Close()
		issuedPorts.Lock()
		fresh := !issuedPorts.m[addr.Port]
		issuedPorts.m[addr.Port] = true
		issuedPorts.Unlock()
		if fresh {
			return addr.String()
		}
	}
	t.Fatal("no fresh loopback port after 100 tries")
	return ""
}

// Port is the port of a host:port address.
func Port(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// WaitPort waits until addr accepts TCP connections.
func WaitPort(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not accept connections within %s", addr, timeout)
}

// Need returns the path of tool. When it is missing the test fails under
// CI (where the test script installs everything) and is skipped elsewhere.
func Need(t testing.TB, tool string) string {
	t.Helper()
	path, err := exec.LookPath(tool)
	if err == nil {
		return path
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := dir + "/" + tool; isExecutable(p) {
			return p
		}
	}
	msg := fmt.Sprintf("%s is not installed (scripts/test.sh installs it)", tool)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode()&0o111 != 0
}

// Run runs a command to completion and returns its combined output; the
// test fails if it exits non-zero.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(Need(t, name), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// OpenSSL runs openssl with args (fails the test on error).
func OpenSSL(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, "openssl", args...)
}

// Keytool runs Java's keytool with args (fails the test on error).
func Keytool(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, "keytool", args...)
}

// Curl runs curl with args; it does not fail the test on a non-zero exit,
// since tests check refusals too.
func Curl(t testing.TB, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	cmd := exec.Command(Need(t, "curl"), append([]string{"--silent", "--show-error", "--max-time", "20"}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		exitCode = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("curl: %v", err)
	}
	return o.String(), e.String(), exitCode
}

// StartProcessEnv runs name with args and extra KEY=VALUE environment
// entries until the test ends.
func StartProcessEnv(t testing.TB, env []string, name string, args ...string) *Process {
	t.Helper()
	return startProcess(t, filepath.Base(name), append(os.Environ(), env...), t.TempDir(), name, args...)
}
