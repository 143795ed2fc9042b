package daemon

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/enrollment-appliance/aeappliance/config"
)

// startup records how long each step of the service's start took, from the process's creation
// to the API answering, and writes it to config.StartupFile once the API serves: the appliance's
// status shows it beside the boot's timeline (issue 16's "where every millisecond goes"). Only
// Open and Serve, one after the other on one goroutine, record steps.
type startup struct {
	last  time.Time
	steps []string
}

// newStartup begins the record at began.
func newStartup(began time.Time) *startup { return &startup{last: began} }

// step records that the step named name ended now.
func (s *startup) step(name string) {
	now := time.Now()
	s.steps = append(s.steps, fmt.Sprintf("%s %.2fs", name, now.Sub(s.last).Seconds()))
	s.last = now
}

// ProcessStart is when this process was created (proc(5): /proc/self/stat, starttime, in clock
// ticks since the boot), so that the time the program takes to load and initialise its packages
// before main runs can be told; the zero time when it cannot be read.
func ProcessStart() time.Time {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return time.Time{}
	}
	// The command name (field 2) is in parentheses and may hold spaces: count after its end.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return time.Time{}
	}
	f := strings.Fields(string(b[i+1:]))
	const starttime = 22 - 3 // field 22, counted from field 3
	if len(f) <= starttime {
		return time.Time{}
	}
	ticks, err := strconv.ParseInt(f[starttime], 10, 64)
	if err != nil {
		return time.Time{}
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}
	}
	const userHZ = 100 // sysconf(_SC_CLK_TCK) on Linux
	age := time.Duration(ts.Nano()) - time.Duration(ticks)*time.Second/userHZ
	if age < 0 {
		return time.Time{}
	}
	return time.Now().Add(-age)
}

// writeStartup writes the start's steps to config.StartupFile, after the command's own (o.Began),
// with the total since o.ProcessStart (since Open without it).
func (rt *Runtime) writeStartup(o ServeOptions) {
	line := strings.Join(rt.startup.steps, ", ")
	if o.Began != "" {
		line = o.Began + ", " + line
	}
	total := time.Since(rt.Started)
	if !o.ProcessStart.IsZero() {
		total = time.Since(o.ProcessStart)
	}
	line = fmt.Sprintf("%.2fs: %s", total.Seconds(), line)
	if err := config.WriteFileAtomic(config.Path(rt.Dir, config.StartupFile), []byte(line+"\n"), 0o644); err != nil {
		rt.Log.Warn("writing the start's timeline", "error", err)
	}
	rt.Log.Info("serving", "started_in", total.Round(time.Millisecond).String(), "steps", line)
}
