package appliance

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// The hardware watchdog (Linux watchdog API, Documentation/watchdog/watchdog-api.rst).
// The factory image arms it just before it kexecs into an update's one trial boot; the
// driver is loaded with nowayout (appliance/kmod.Params), so nothing in the kexec or the
// next kernel stops it. An update that comes up keeps it fed from appinit for as long as it
// runs; one that hangs without panicking (a panic reboots by itself, panic=-1) is reset
// when the watchdog expires, and the factory image then finds the trial used and rolls
// back (firmware/slots).

// watchdogDevice is the first watchdog the kernel registered.
const watchdogDevice = "/dev/watchdog0"

// WatchdogTimeout is the watchdog's period. The i6300esb resets the machine when a second
// period ends without a keepalive, so a trial boot has about twice this to reach appinit.
const WatchdogTimeout = 30 * time.Second

// openWatchdog opens (and so starts) the watchdog with WatchdogTimeout and feeds it once.
func openWatchdog() (*os.File, error) {
	f, err := os.OpenFile(watchdogDevice, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, int(WatchdogTimeout/time.Second)); err != nil {
		f.Close()
		return nil, fmt.Errorf("setting the watchdog's timeout: %w", err)
	}
	if err := unix.IoctlWatchdogKeepalive(fd); err != nil {
		f.Close()
		return nil, fmt.Errorf("feeding the watchdog: %w", err)
	}
	return f, nil
}

// armWatchdog starts the watchdog for a trial boot and leaves it running: closing the
// device without the magic character does not stop a nowayout watchdog.
func (a *Appliance) armWatchdog() {
	f, err := openWatchdog()
	if err != nil {
		a.log.Warn("no hardware watchdog for the trial boot: a hang needs a manual reset", "err", err)
		return
	}
	f.Close()
	a.log.Info("watchdog armed for the trial boot", "period", WatchdogTimeout)
}

// feedWatchdog keeps the watchdog fed for as long as appinit runs, in a firmware slot
// (whose trial the factory image armed it for; on a confirmed slot it starts it, which
// then also covers a hang later on).
func (a *Appliance) feedWatchdog(ctx context.Context) {
	if a.o.Dev || a.running == "" {
		return
	}
	f, err := openWatchdog()
	if err != nil {
		a.log.Warn("no hardware watchdog", "err", err)
		return
	}
	a.log.Info("feeding the hardware watchdog", "period", WatchdogTimeout)
	go func() {
		t := time.NewTicker(WatchdogTimeout / 3)
		defer t.Stop()
		for {
			if err := unix.IoctlWatchdogKeepalive(int(f.Fd())); err != nil {
				a.log.Error("feeding the watchdog", "err", err)
			}
			select {
			case <-ctx.Done():
				return // Dev mode only; the image never ends Run
			case <-t.C:
			}
		}
	}()
}
