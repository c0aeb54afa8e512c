package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// StartNginx runs nginx in the foreground with a config made of body (the
// http{} and/or stream{} blocks) and the process-level lines the bench needs
// (pid and log paths in its own temp dir, the stream module when body uses
// it). Paths in body may use {{DIR}}, replaced by the process's temp dir.
func StartNginx(t testing.TB, body string) *Process {
	t.Helper()
	bin := Need(t, "nginx")
	dir := t.TempDir()
	body = replaceDir(body, dir)
	var head string
	if mod := "/usr/lib/nginx/modules/ngx_stream_module.so"; containsWord(body, "stream") && fileExists(mod) {
		head = "load_module " + mod + ";\n"
	}
	conf := head + fmt.Sprintf(`daemon off;
pid %[1]s/nginx.pid;
error_log stderr info;
worker_processes 1;
events { worker_connections 4096; }
`, dir) + body + "\n"
	// nginx writes temp files under its prefix: give it the temp dir
	for _, sub := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"} {
		_ = os.MkdirAll(filepath.Join(dir, sub), 0o755)
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runOut(bin, "-t", "-p", dir, "-c", path); err != nil {
		t.Fatalf("nginx config test failed: %v\n%s\n---- nginx.conf ----\n%s", err, out, conf)
	}
	p := startProcess(t, "nginx", os.Environ(), dir, bin, "-p", dir, "-c", path)
	p.Dir = dir
	return p
}

// StartHAProxy runs haproxy in the foreground with cfg (the whole config;
// {{DIR}} is replaced by the process's temp dir).
func StartHAProxy(t testing.TB, cfg string) *Process {
	t.Helper()
	bin := Need(t, "haproxy")
	dir := t.TempDir()
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(replaceDir(cfg, dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runOut(bin, "-c", "-f", path); err != nil {
		t.Fatalf("haproxy config check failed: %v\n%s", err, out)
	}
	p := startProcess(t, "haproxy", os.Environ(), dir, bin, "-db", "-f", path)
	p.Dir = dir
	return p
}

// StartRedis runs redis-server on a free loopback port with nothing
// persisted outside its temp dir; extra arguments are appended (for example
// "--requirepass", "secret"). It returns the address once it accepts
// connections.
func StartRedis(t testing.TB, extra ...string) (addr string, p *Process) {
	t.Helper()
	bin := Need(t, "redis-server")
	dir := t.TempDir()
	addr = FreeAddr(t)
	args := append([]string{"--port", Port(addr), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}, extra...)
	p = startProcess(t, "redis-server", os.Environ(), dir, bin, args...)
	p.Dir = dir
	WaitPort(t, addr, 10*time.Second)
	return addr, p
}

func replaceDir(s, dir string) string { return strings.ReplaceAll(s, "{{DIR}}", dir) }

func containsWord(s, word string) bool {
	for _, f := range strings.Fields(s) {
		if f == word || f == word+"{" {
			return true
		}
	}
	return false
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func runOut(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}
