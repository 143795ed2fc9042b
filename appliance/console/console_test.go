package console

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// session runs a console over the given input and returns everything it printed.
func session(t *testing.T, input string, cmds []Command) string {
	t.Helper()
	var out bytes.Buffer
	c := New(strings.NewReader(input), &out, "appliance> ", cmds)
	if err := c.Run(context.Background()); !errors.Is(err, io.EOF) {
		t.Fatalf("Run = %v, want EOF at the end of the input", err)
	}
	return out.String()
}

// wantAll checks that out holds every one of wants.
func wantAll(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q; got:\n%s", want, out)
		}
	}
}

// wantRun checks which commands ran, in order.
func wantRun(t *testing.T, log []string, want ...string) {
	t.Helper()
	if !reflect.DeepEqual(log, want) {
		t.Errorf("commands run = %q, want %q", log, want)
	}
}

func testCommands(log *[]string) []Command {
	return []Command{
		{Name: "status", Help: "show the state", Menu: "Status", Run: func(_ context.Context, _ []string, w io.Writer) error {
			*log = append(*log, "status")
			io.WriteString(w, "State: unprovisioned\n")
			return nil
		}},
		{Name: "provision selfsigned", Args: "CA-NAME", Help: "make a self-signed root", MinArgs: 1, MaxArgs: -1,
			Menu: "Provision", Ask: []string{"CA name"}, Run: func(_ context.Context, args []string, w io.Writer) error {
				*log = append(*log, "provision "+strings.Join(args, "|"))
				return nil
			}},
		{Name: "poweroff", Help: "power off", Menu: "Power off", Confirm: "Power off?", Run: func(context.Context, []string, io.Writer) error {
			*log = append(*log, "poweroff")
			return nil
		}},
		{Name: "fail", Help: "fails", Run: func(context.Context, []string, io.Writer) error { return errors.New("disk full") }},
		{Name: "boom", Help: "panics", Run: func(context.Context, []string, io.Writer) error { panic("oops") }},
	}
}

func TestCommands(t *testing.T) {
	var log []string
	out := session(t, "status\n\nfrobnicate --now\nprovision\nprovision selfsigned\n"+
		"provision selfsigned Corp \"Root  CA\"\nstatus extra\nfail\nboom\nhelp\nstatus\r\nx\x03y\n", testCommands(&log))
	wantAll(t, out,
		"appliance> State: unprovisioned\n",
		"unknown command \"frobnicate\": type \"help\" for the list, or \"menu\"\n",
		"\"provision\" needs more: provision selfsigned CA-NAME\n",
		"usage: provision selfsigned CA-NAME\n",
		"usage: status\n",
		"fail: disk full\n",
		"internal error in boom: oops\n",
		"  provision selfsigned CA-NAME       make a self-signed root\n",
		"  menu                               choose from a numbered menu\n",
		"(line discarded: it held control characters)\n")
	wantRun(t, log, "status", "provision Corp|Root  CA", "status")
	for i, l := range strings.Split(out, "\n") {
		for strings.HasPrefix(l, "appliance> ") { // a terminal echoes the input after the prompt
			l = strings.TrimPrefix(l, "appliance> ")
		}
		if len(l) > 79 {
			t.Errorf("line %d is %d columns: %q", i, len(l), l)
		}
		if strings.ContainsRune(l, 0x1b) {
			t.Errorf("line %d has an escape sequence: %q", i, l)
		}
	}
	if !strings.HasSuffix(out, "appliance> ") {
		t.Errorf("output does not end at the prompt: %q", out[max(0, len(out)-40):])
	}
}

func TestMenu(t *testing.T) {
	var log []string
	out := session(t, "menu\n1\n9\nabc\n2\nIssuing CA\n3\nn\n3\ny\n2\n\n0\nstatus\n", testCommands(&log))
	wantAll(t, out,
		"Menu:\n  1) Status\n  2) Provision\n  3) Power off\n  0) Leave the menu\nChoose 0-3: ",
		"no menu entry \"9\": type a number from 0 to 3\n",
		"no menu entry \"abc\"",
		"CA name: ",
		"Power off? [y/N]: cancelled: nothing changed\n")
	wantRun(t, log, "status", "provision Issuing CA", "poweroff", "status")
	if strings.Count(out, "cancelled: nothing changed") != 2 {
		t.Errorf("want two cancellations (declined confirmation, empty CA name); got:\n%s", out)
	}
}

// A command marked ConfirmTyped asks its question when typed too; only yes runs it, and poweroff
// (not marked) still runs when typed without one.
func TestConfirmTyped(t *testing.T) {
	var log []string
	cmds := append(testCommands(&log), Command{Name: "update force", Help: "force", Confirm: "Install it anyway?", ConfirmTyped: true,
		Run: func(context.Context, []string, io.Writer) error {
			log = append(log, "forced")
			return nil
		}})
	out := session(t, "update force\nn\nupdate force\n\nupdate force\nyes\npoweroff\n", cmds)
	if n := strings.Count(out, "Install it anyway? [y/N]: "); n != 3 {
		t.Errorf("the question was asked %d times, want 3:\n%s", n, out)
	}
	if n := strings.Count(out, "cancelled: nothing changed"); n != 2 {
		t.Errorf("%d cancellations, want 2:\n%s", n, out)
	}
	wantRun(t, log, "forced", "poweroff")
}

func TestPrintfAtPrompt(t *testing.T) {
	pr, pw := io.Pipe()
	var out bytes.Buffer
	var mu = make(chan struct{})
	c := New(pr, &syncBuf{b: &out, ch: mu}, "> ", nil)
	done := make(chan error)
	go func() { done <- c.Run(context.Background()) }()
	<-mu // the prompt was written
	c.Printf("service started")
	pw.Close()
	<-done
	if got, want := out.String(), "> \nservice started\n> "; got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
}

type syncBuf struct {
	b    *bytes.Buffer
	ch   chan struct{}
	once bool
}

func (s *syncBuf) Write(p []byte) (int, error) {
	n, err := s.b.Write(p)
	if !s.once {
		s.once = true
		close(s.ch)
	}
	return n, err
}

func TestSplit(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  status  ", []string{"status"}},
		{`provision selfsigned "Corp Root CA"`, []string{"provision", "selfsigned", "Corp Root CA"}},
		{`a 'b c'd ""`, []string{"a", "b cd", ""}},
	} {
		got, err := Split(c.in)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("Split(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	if _, err := Split(`say "hi`); err == nil {
		t.Error(`Split("say \"hi") = nil error, want unterminated quote`)
	}
}

// TestDrain: Drain flushes a buffered output, and on a terminal waits for the line
// (tcdrain) without error; a pipe is not a terminal and needs nothing.
func TestDrain(t *testing.T) {
	var sink bytes.Buffer
	bw := bufio.NewWriter(&sink)
	c := New(strings.NewReader(""), bw, "> ", nil)
	c.Printf("Powering off.")
	if sink.Len() != 0 {
		t.Fatalf("bufio.Writer wrote %q before Drain", sink.String())
	}
	if err := c.Drain(); err != nil {
		t.Fatalf("Drain() = %v", err)
	}
	if got := sink.String(); got != "Powering off.\n" {
		t.Errorf("after Drain the output is %q, want %q", got, "Powering off.\n")
	}

	master, slave := openPTY(t)
	c.SetOutput(slave)
	c.Printf("Stopping enrollsvc...")
	if err := c.Drain(); err != nil {
		t.Fatalf("Drain() on a terminal = %v", err)
	}
	got := make([]byte, 64)
	n, err := master.Read(got)
	if err != nil || !strings.Contains(string(got[:n]), "Stopping enrollsvc...") {
		t.Errorf("the terminal's other side read %q, %v", got[:n], err)
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	c.SetOutput(w)
	if err := c.Drain(); err != nil {
		t.Errorf("Drain() on a pipe = %v, want nil", err)
	}
}

// openPTY opens a pseudo-terminal pair (pty(7)): the master and the slave terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}
