package appliance

import (
	"bytes"
	"os"
	"sync"
)

// logSink receives the payload's log. Until the data disk is mounted it keeps the lines
// in memory; SetFile writes them out and sends later lines to the file as well.
type logSink struct {
	mu    sync.Mutex
	early bytes.Buffer
	f     *os.File
	done  bool // a file was set once: stop keeping lines in memory
}

// maxEarly bounds what is kept in memory before the data disk is there.
const maxEarly = 1 << 20

func newLogSink() *logSink { return &logSink{} }

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		_, _ = l.f.Write(p) // a failing log must not stop the appliance
	} else if !l.done && l.early.Len()+len(p) <= maxEarly {
		l.early.Write(p)
	}
	return len(p), nil
}

// SetFile sends the log to f (after what was kept so far); nil closes the current file.
func (l *logSink) SetFile(f *os.File) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
	}
	l.f = f
	if f != nil && !l.done {
		_, _ = f.Write(l.early.Bytes())
		l.early.Reset()
		l.done = true
	}
}
