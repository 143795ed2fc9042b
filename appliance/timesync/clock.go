package timesync

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Clock is the clock the Keeper corrects.
type Clock interface {
	Now() time.Time
	// Step jumps the clock by d at once.
	Step(d time.Duration) error
	// Slew makes the clock run slightly fast or slow until it has gained d.
	Slew(d time.Duration) error
}

// DefaultRTC is the hardware clock SystemClock writes after a step.
const DefaultRTC = "/dev/rtc0"

// SystemClock is the kernel's CLOCK_REALTIME, and the hardware clock behind it. Setting
// it needs CAP_SYS_TIME; never use it in a test that runs on a developer's machine.
type SystemClock struct {
	// RTC is the hardware clock device to write, in UTC, after a step; DefaultRTC when
	// empty. A missing device is skipped.
	RTC string
	// Log receives the error of writing the hardware clock, which does not fail the step;
	// slog.Default() when nil.
	Log *slog.Logger
}

var _ Clock = SystemClock{}

// Now is time.Now.
func (SystemClock) Now() time.Time { return time.Now() }

// Step sets CLOCK_REALTIME to now+d, after cancelling any slew still under way, then
// writes the hardware clock (best effort, see RTC and Log).
func (c SystemClock) Step(d time.Duration) error {
	// A slew still under way would go on adding to the stepped clock: cancel it.
	// Best effort: the step below is what matters.
	cancel := unix.Timex{Modes: unix.ADJ_OFFSET_SINGLESHOT}
	unix.Adjtimex(&cancel)

	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("step clock: read CLOCK_REALTIME: %w", err)
	}
	to := time.Unix(ts.Unix()).Add(d)
	ts = unix.NsecToTimespec(to.UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("step clock by %v: %w", d, err)
	}
	dev := c.RTC
	if dev == "" {
		dev = DefaultRTC
	}
	if err := SetRTC(dev, time.Now()); err != nil && !errors.Is(err, os.ErrNotExist) {
		log := c.Log
		if log == nil {
			log = slog.Default()
		}
		log.Warn("cannot write the hardware clock", "err", err)
	}
	return nil
}

// Slew asks the kernel to gain d gradually (adjtimex ADJ_OFFSET_SINGLESHOT, the call
// behind adjtime(3): 0.5 ms per second, so 128 ms take about 4 minutes). A new slew
// replaces the rest of the previous one, which is right: the new offset was measured
// with the previous slew partly done.
func (SystemClock) Slew(d time.Duration) error {
	tx := unix.Timex{Modes: unix.ADJ_OFFSET_SINGLESHOT, Offset: d.Microseconds()}
	if _, err := unix.Adjtimex(&tx); err != nil {
		return fmt.Errorf("slew clock by %v: %w", d, err)
	}
	return nil
}

// SetRTC writes t, in UTC and to the second, to the hardware clock device dev
// (RTC_SET_TIME). The error wraps os.ErrNotExist when there is no such device.
func SetRTC(dev string, t time.Time) error {
	f, err := os.Open(dev)
	if err != nil {
		return fmt.Errorf("set hardware clock: %w", err)
	}
	defer f.Close()
	u := t.UTC()
	rt := unix.RTCTime{
		Sec: int32(u.Second()), Min: int32(u.Minute()), Hour: int32(u.Hour()),
		Mday: int32(u.Day()), Mon: int32(u.Month()) - 1, Year: int32(u.Year()) - 1900,
		Wday: int32(u.Weekday()), Yday: int32(u.YearDay()) - 1, Isdst: 0,
	}
	if err := unix.IoctlSetRTCTime(int(f.Fd()), &rt); err != nil {
		return fmt.Errorf("set hardware clock %s: %w", dev, err)
	}
	return nil
}
