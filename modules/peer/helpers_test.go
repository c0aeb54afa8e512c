package peer

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// jsonLog collects a logger's entries as JSON lines.
type jsonLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *jsonLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *jsonLog) Sync() error { return nil }

// last is the last entry logged ("" if none).
func (l *jsonLog) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(l.buf.String()), "\n")
	return lines[len(lines)-1]
}

// observedLogger replaces *logger with one that records JSON at INFO.
func observedLogger(logger **zap.Logger) *jsonLog {
	l := new(jsonLog)
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{MessageKey: "msg", LevelKey: "level", EncodeLevel: zapcore.LowercaseLevelEncoder})
	*logger = zap.New(zapcore.NewCore(enc, l, zap.InfoLevel))
	return l
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

var _ = testing.Short
