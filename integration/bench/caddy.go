// Package bench is the integration test bench: it builds the custom Caddy
// binary once per test run, starts it (and nginx, HAProxy, redis-server) on
// free loopback ports with everything it writes kept in temp dirs, talks to
// its admin API, and stops every process when the test ends.
package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary returns the path of the Caddy binary with the suite built in: the
// one named by $TRUSTLINE_CADDY (the test script builds it with xcaddy), or
// else ./cmd/trustline-caddy built once per test process.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv("TRUSTLINE_CADDY"); p != "" {
			buildPath, buildErr = filepath.Abs(p)
			if buildErr == nil {
				_, buildErr = os.Stat(buildPath)
			}
			return
		}
		dir, err := os.MkdirTemp("", "trustline-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "caddy")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/trustline-caddy")
		cmd.Dir = repoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building the suite: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("caddy binary: %v", buildErr)
	}
	return buildPath
}

// repoRoot is the module root, found from this file's location.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// RepoPath joins parts onto the repository root.
func RepoPath(parts ...string) string {
	return filepath.Join(append([]string{repoRoot()}, parts...)...)
}

// Caddy is one running Caddy process of the suite.
type Caddy struct {
	// Admin is the admin API address (host:port), also in $TL_ADMIN.
	Admin string
	// Dir is the process's own temp dir: HOME, XDG dirs, the Caddyfile.
	Dir string
	// Env is the environment the process (and Command) runs with.
	Env []string

	proc *Process
}

// New prepares a Caddy process: a free admin address and private dirs, so
// nothing is written outside the test's temp dir. extraEnv entries are
// KEY=VALUE strings added to its environment.
func New(t testing.TB, extraEnv ...string) *Caddy {
	t.Helper()
	dir := t.TempDir()
	c := &Caddy{Admin: FreeAddr(t), Dir: dir}
	c.Env = append(os.Environ(),
		"HOME="+dir,
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"TL_ADMIN="+c.Admin,
	)
	c.Env = append(c.Env, extraEnv...)
	return c
}

// Start runs `caddy run` with caddyfile, whose global options must contain
// `admin {$TL_ADMIN}`, and waits until the admin API answers.
func Start(t testing.TB, caddyfile string, extraEnv ...string) *Caddy {
	t.Helper()
	c := New(t, extraEnv...)
	c.Start(t, caddyfile)
	return c
}

// Start runs this Caddy with caddyfile; see the package func Start.
func (c *Caddy) Start(t testing.TB, caddyfile string) {
	t.Helper()
	if !strings.Contains(caddyfile, "{$TL_ADMIN}") {
		t.Fatal("bench: the Caddyfile's global options must contain `admin {$TL_ADMIN}`")
	}
	path := filepath.Join(c.Dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o644); err != nil {
		t.Fatal(err)
	}
	c.proc = startProcess(t, "caddy", c.Env, c.Dir, Binary(t), "run", "--config", path, "--adapter", "caddyfile")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c.proc.exited() {
			t.Fatalf("caddy exited during start-up:\n%s", c.proc.Log())
		}
		if status, _, err := c.admin("GET", "/config/", "", nil); err == nil && status == 200 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("caddy did not become ready within 30s:\n%s", c.proc.Log())
}

// Tries of an admin request that got no response, and the pause before
// the first retry (doubled at each).
const (
	adminAttempts = 5
	adminRetry    = 50 * time.Millisecond
)

func (c *Caddy) admin(method, path, contentType string, body []byte) (int, string, error) {
	h := http.Header{}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	return c.AdminDo(method, path, h, body)
}

// AdminDo sends a request to the admin API with the given headers and
// returns the answer's status and body. Every config load (failed ones
// included) replaces Caddy's admin server and shuts the old one down: a
// request that meets the closing one gets no response at all (a reset,
// EOF, a refused connection), without having been served. Such a request
// is sent again, a few times with a short pause; an answer, whatever its
// status, is final, and so is a timeout.
func (c *Caddy) AdminDo(method, path string, header http.Header, body []byte) (int, string, error) {
	pause := adminRetry
	for attempt := 1; ; attempt++ {
		status, resp, err := c.adminOnce(method, path, header, body)
		if err == nil || !noResponse(err) || attempt == adminAttempts {
			return status, resp, err
		}
		time.Sleep(pause)
		pause *= 2
	}
}

// noResponse reports whether err means the request got no response.
func noResponse(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

func (c *Caddy) adminOnce(method, path string, header http.Header, body []byte) (int, string, error) {
	req, err := http.NewRequest(method, "http://"+c.Admin+path, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	// the admin API refuses requests whose Origin/Host it does not expect
	req.Host = c.Admin
	// a fresh connection each time: a pooled one may belong to an admin
	// server that a load just replaced
	req.Close = true
	client := &http.Client{Timeout: 90 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// Load replaces the running config with caddyfile through the admin API
// (POST /load, text/caddyfile). It returns the API's error, if any.
func (c *Caddy) Load(t testing.TB, caddyfile string) error {
	t.Helper()
	return c.load("text/caddyfile", []byte(caddyfile))
}

// LoadJSON replaces the running config with a JSON config.
func (c *Caddy) LoadJSON(t testing.TB, config []byte) error {
	t.Helper()
	return c.load("application/json", config)
}

// ForceLoad is Load even when caddyfile is the running config
// (Cache-Control: must-revalidate, as `caddy reload --force`): Caddy then
// provisions a new config and cleans up the old one.
func (c *Caddy) ForceLoad(t testing.TB, caddyfile string) error {
	t.Helper()
	h := http.Header{"Content-Type": {"text/caddyfile"}, "Cache-Control": {"must-revalidate"}}
	return loadError(c.AdminDo("POST", "/load", h, []byte(caddyfile)))
}

func (c *Caddy) load(contentType string, body []byte) error {
	return loadError(c.admin("POST", "/load", contentType, body))
}

func loadError(status int, resp string, err error) error {
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("admin load: HTTP %d: %s", status, resp)
	}
	return nil
}

// AdminGet does a GET on the admin API.
func (c *Caddy) AdminGet(t testing.TB, path string) (int, string) {
	t.Helper()
	status, body, err := c.admin("GET", path, "", nil)
	if err != nil {
		t.Fatalf("admin GET %s: %v", path, err)
	}
	return status, body
}

// Metrics returns the admin API's /metrics page.
func (c *Caddy) Metrics(t testing.TB) string {
	t.Helper()
	status, body := c.AdminGet(t, "/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: HTTP %d: %s", status, body)
	}
	return body
}

// Log is everything the process wrote so far (Caddy logs to stderr).
func (c *Caddy) Log() string { return c.proc.Log() }

// WaitLog waits until the log contains substr.
func (c *Caddy) WaitLog(t testing.TB, substr string, timeout time.Duration) {
	t.Helper()
	c.proc.WaitLog(t, substr, timeout)
}

// Stop stops the process (also done at test cleanup).
func (c *Caddy) Stop() { c.proc.Stop() }

// Command runs the binary with this Caddy's environment (adapt, validate,
// trustline subcommands...) and returns its combined output.
func (c *Caddy) Command(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary(t), args...)
	cmd.Env = c.Env
	cmd.Dir = c.Dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// PID is the process id of the running Caddy.
func (c *Caddy) PID() int { return c.proc.cmd.Process.Pid }
