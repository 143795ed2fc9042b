package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/enrollment-appliance/aeappliance/aeagent/store"
)

const (
	defaultHookTimeout = 5 * time.Minute
	hookOutputMax      = 2048
)

// hooks runs the configured hooks for a change of template's certificate c: event is
// "installed", "archived" or "removed". A failing hook is reported; the change stands.
func (x *executor) hooks(ctx context.Context, event, template string, c *store.Cert) error {
	var errs []error
	for i, h := range x.a.cfg.Hooks {
		if h.Template != "" && h.Template != template {
			continue
		}
		if err := runHook(ctx, h, hookEnv(event, template, c)); err != nil {
			errs = append(errs, fmt.Errorf("hook %d (%s) after %s %s: %w", i, h.Command[0], template, event, err))
			continue
		}
		x.a.log.Info("hook ran", "hook", h.Command[0], "event", event, "template", template)
	}
	return errors.Join(errs...)
}

func hookEnv(event, template string, c *store.Cert) []string {
	env := []string{"AEAGENT_EVENT=" + event, "AEAGENT_TEMPLATE=" + template}
	var serial, dir string
	if c != nil {
		if c.Certificate != nil {
			serial = serialOf(c.Certificate)
		}
		dir = c.Path
	}
	env = append(env, "AEAGENT_SERIAL="+serial)
	for _, f := range []struct{ name, file string }{{"AEAGENT_CERT", "cert.pem"}, {"AEAGENT_CHAIN", "chain.pem"}, {"AEAGENT_KEY", "key.pem"}} {
		v := ""
		if dir != "" {
			v = filepath.Join(dir, f.file)
		}
		env = append(env, f.name+"="+v)
	}
	return env
}

// runHook runs one hook without a shell, with the agent's environment plus env, and fails when
// it exits non-zero or outlives its timeout. Its output is quoted in the error, shortened.
func runHook(ctx context.Context, h Hook, env []string) error {
	timeout := defaultHookTimeout
	if h.Timeout != "" {
		if d, err := time.ParseDuration(h.Timeout); err == nil && d > 0 {
			timeout = d
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.Command[0], h.Command[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("did not finish within %s", timeout)
	}
	if err != nil {
		s := strings.TrimSpace(out.String())
		if len(s) > hookOutputMax {
			s = s[:hookOutputMax] + "…"
		}
		if s != "" {
			return fmt.Errorf("%w: %s", err, s)
		}
		return err
	}
	return nil
}
