// Package console is the appliance's admin console on the serial line: a prompt that
// takes typed commands (the same words as aectl), `help`, and a numbered `menu` for the
// same commands. It writes plain text only, no escape sequences and no terminal queries,
// in lines that fit 80 columns; line editing is the kernel's (canonical mode).
//
// The command set is data (Command) supplied by the caller; this package only reads
// lines, parses them, dispatches and prints. A command that fails or panics prints its
// error and the prompt comes back: the console never goes away.
package console

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"

	"golang.org/x/sys/unix"
)

// Command is one console command.
type Command struct {
	Name    string // one or more words: "status", "provision selfsigned"
	Args    string // how its arguments read in usage lines: "CA-NAME"
	Help    string // one line, what it does
	MinArgs int
	MaxArgs int // -1: any number
	// Menu is the title of its entry in the numbered menu ("" leaves it out). Ask are the
	// questions for its arguments there, Confirm a yes/no question asked before it runs.
	Menu    string
	Ask     []string
	Confirm string
	// ConfirmTyped asks Confirm when the command is typed too, not only from the menu: for the
	// few commands an administrator must confirm however they start them.
	ConfirmTyped bool
	Run          func(ctx context.Context, args []string, out io.Writer) error
}

func (c Command) usage() string {
	if c.Args == "" {
		return c.Name
	}
	return c.Name + " " + c.Args
}

// Console reads commands from In and writes to Out.
type Console struct {
	Prompt string
	Log    *slog.Logger // where a panicking command's stack goes
	// Echo turns the terminal's echo off and on again around secrets (nil: not a
	// terminal, nothing to do).
	Echo func(on bool)
	// Allow, when set, is asked before a command runs; an error is printed instead of
	// running it (the appliance uses it for its login).
	Allow    func(cmd Command) error
	commands []Command
	in       *bufio.Reader
	mu       sync.Mutex // guards out and atPrompt
	out      io.Writer
	atPrompt string // the prompt showing while waiting for input, "" when busy
}

// New returns a console with the given commands; help and menu are added to them.
func New(in io.Reader, out io.Writer, prompt string, cmds []Command) *Console {
	c := &Console{Prompt: prompt, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), in: bufio.NewReader(in), out: out}
	c.commands = append(slices.Clone(cmds),
		Command{Name: "help", Help: "list the commands", MaxArgs: 0, Run: c.help},
		Command{Name: "menu", Help: "choose from a numbered menu", MaxArgs: 0, Run: c.menu})
	return c
}

// SetInput replaces the input (after the console device had to be reopened).
func (c *Console) SetInput(in io.Reader) { c.in = bufio.NewReader(in) }

// SetOutput replaces the output.
func (c *Console) SetOutput(out io.Writer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out = out
}

// Printf writes to the console from any goroutine. When the console is waiting at a
// prompt, the message goes on its own line and the prompt is shown again after it.
func (c *Console) Printf(format string, a ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	msg := strings.TrimRight(fmt.Sprintf(format, a...), "\n") + "\n"
	if c.atPrompt != "" {
		fmt.Fprint(c.out, "\n"+msg+c.atPrompt)
		return
	}
	fmt.Fprint(c.out, msg)
}

// Drain returns once everything written to the console so far has left the machine:
// a writer with a Flush method (bufio.Writer) is flushed, and on a terminal it waits
// until the line has transmitted its output, as tcdrain(3) does (ioctl TCSBRK with a
// non-zero argument, tty_ioctl(4)). Writes from other goroutines wait meanwhile. Call
// it before reboot(2): the kernel powers down without emptying the serial port's
// transmit buffer, and what is still in it is lost.
func (c *Console) Drain() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return drain(c.out)
}

func drain(w io.Writer) error {
	if f, ok := w.(interface{ Flush() error }); ok {
		if err := f.Flush(); err != nil {
			return fmt.Errorf("console: flushing: %w", err)
		}
	}
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return nil
	}
	fd := int(f.Fd())
	if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
		return nil // not a terminal (a pipe, a file): nothing waits in a line discipline
	}
	for {
		err := unix.IoctlSetInt(fd, unix.TCSBRK, 1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("console: draining the terminal: %w", err)
		}
		return nil
	}
}

// writer serialises command output with notices from other goroutines.
type writer struct{ c *Console }

func (w writer) Write(p []byte) (int, error) {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	return w.c.out.Write(p)
}

// Out is a writer onto the console, safe to use alongside Printf.
func (c *Console) Out() io.Writer { return writer{c} }

// readLine shows prompt and reads one line. Control characters (such as a ^C typed on a
// line with signals off) make the line count as empty.
func (c *Console) readLine(prompt string) (string, error) {
	line, err := c.readRaw(prompt)
	if err != nil {
		return "", err
	}
	if strings.ContainsFunc(line, func(r rune) bool { return unicode.IsControl(r) && r != '\t' }) {
		fmt.Fprintln(c.Out(), "(line discarded: it held control characters)")
		return "", nil
	}
	return strings.TrimSpace(line), nil
}

// Ask shows prompt and reads one line of an answer, for commands that ask questions.
// With secret the terminal does not echo it and the line break is printed after it.
func (c *Console) Ask(prompt string, secret bool) (string, error) {
	if !secret {
		return c.readLine(prompt)
	}
	if c.Echo != nil {
		c.Echo(false)
		defer c.Echo(true)
	}
	line, err := c.readRaw(prompt)
	fmt.Fprintln(c.Out())
	return line, err
}

// AskLines reads lines until one that is empty (or ".") after at least one line that
// is not, or until max lines; for pasted PEM blocks.
func (c *Console) AskLines(prompt string, max int) ([]string, error) {
	fmt.Fprintln(c.Out(), prompt)
	var lines []string
	for len(lines) < max {
		line, err := c.readLine("")
		if err != nil {
			return lines, err
		}
		if line == "." || line == "" && len(lines) > 0 {
			break
		}
		if line != "" {
			lines = append(lines, line)
		}
	}
	return lines, nil
}

// readRaw reads one line without trimming spaces inside it (secrets keep them).
func (c *Console) readRaw(prompt string) (string, error) {
	c.mu.Lock()
	fmt.Fprint(c.out, prompt)
	c.atPrompt = prompt
	c.mu.Unlock()
	line, err := c.in.ReadString('\n')
	c.mu.Lock()
	c.atPrompt = ""
	c.mu.Unlock()
	if err != nil && (line == "" || !errors.Is(err, io.EOF)) {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// Run reads and runs commands until reading fails (end of input, a hung-up line), and
// returns that error. Callers on a real console reopen the device and call Run again.
func (c *Console) Run(ctx context.Context) error {
	for {
		line, err := c.readLine(c.Prompt)
		if err != nil {
			return fmt.Errorf("console: %w", err)
		}
		c.Exec(ctx, line)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// Exec runs one command line.
func (c *Console) Exec(ctx context.Context, line string) {
	out := c.Out()
	words, err := Split(line)
	if err != nil {
		fmt.Fprintf(out, "%v\n", err)
		return
	}
	if len(words) == 0 {
		return
	}
	cmd, args, ok := c.lookup(words)
	if !ok {
		var starts []string
		for _, k := range c.commands {
			if strings.HasPrefix(k.Name, words[0]+" ") {
				starts = append(starts, k.usage())
			}
		}
		if len(starts) > 0 {
			fmt.Fprintf(out, "%q needs more: %s\n", words[0], strings.Join(starts, ", "))
			return
		}
		fmt.Fprintf(out, "unknown command %q: type \"help\" for the list, or \"menu\"\n", words[0])
		return
	}
	if len(args) < cmd.MinArgs || cmd.MaxArgs >= 0 && len(args) > cmd.MaxArgs {
		fmt.Fprintf(out, "usage: %s\n", cmd.usage())
		return
	}
	if cmd.Confirm != "" && cmd.ConfirmTyped {
		if !c.allowed(cmd) { // refused before its question is asked
			return
		}
		if !c.confirmed(cmd) {
			return
		}
	}
	c.run(ctx, cmd, args)
}

// confirmed asks cmd's Confirm question and reports whether the answer was yes; otherwise it
// says nothing changed.
func (c *Console) confirmed(cmd Command) bool {
	a, err := c.readLine(cmd.Confirm + " [y/N]: ")
	if err != nil {
		return false
	}
	if a = strings.ToLower(a); a != "y" && a != "yes" {
		fmt.Fprintln(c.Out(), "cancelled: nothing changed")
		return false
	}
	return true
}

// allowed says whether cmd may run now (see Allow), printing why not.
func (c *Console) allowed(cmd Command) bool {
	if c.Allow == nil {
		return true
	}
	if err := c.Allow(cmd); err != nil {
		fmt.Fprintf(c.Out(), "%s: %v\n", cmd.Name, err)
		return false
	}
	return true
}

// run runs cmd, turning an error or a panic into a message.
func (c *Console) run(ctx context.Context, cmd Command, args []string) {
	out := c.Out()
	if !c.allowed(cmd) {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(out, "internal error in %s: %v\n", cmd.Name, r)
			c.Log.Error("console command panicked", "command", cmd.Name, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	if err := cmd.Run(ctx, args, out); err != nil {
		fmt.Fprintf(out, "%s: %v\n", cmd.Name, err)
	}
}

// lookup finds the command whose name is the longest prefix of words.
func (c *Console) lookup(words []string) (Command, []string, bool) {
	best, n := Command{}, 0
	for _, k := range c.commands {
		kw := strings.Fields(k.Name)
		if len(kw) > n && len(kw) <= len(words) && slices.Equal(kw, words[:len(kw)]) {
			best, n = k, len(kw)
		}
	}
	return best, words[min(n, len(words)):], n > 0
}

func (c *Console) help(_ context.Context, _ []string, out io.Writer) error {
	fmt.Fprintln(out, "Commands:")
	for _, k := range c.commands {
		fmt.Fprintf(out, "  %-34s %s\n", k.usage(), k.Help)
	}
	return nil
}

// menu shows the numbered menu until the operator leaves it with 0 (or an empty line).
func (c *Console) menu(ctx context.Context, _ []string, out io.Writer) error {
	var items []Command
	for _, k := range c.commands {
		if k.Menu != "" {
			items = append(items, k)
		}
	}
	for {
		fmt.Fprintln(out, "Menu:")
		for i, k := range items {
			fmt.Fprintf(out, "  %d) %s\n", i+1, k.Menu)
		}
		fmt.Fprintln(out, "  0) Leave the menu")
		choice, err := c.readLine(fmt.Sprintf("Choose 0-%d: ", len(items)))
		if err != nil {
			return err
		}
		if choice == "" || choice == "0" {
			return nil
		}
		i, err := strconv.Atoi(choice)
		if err != nil || i < 1 || i > len(items) {
			fmt.Fprintf(out, "no menu entry %q: type a number from 0 to %d\n", choice, len(items))
			continue
		}
		k := items[i-1]
		var args []string
		for _, q := range k.Ask {
			a, err := c.readLine(q + ": ")
			if err != nil {
				return err
			}
			if a == "" {
				break
			}
			args = append(args, a)
		}
		if len(args) < len(k.Ask) {
			fmt.Fprintln(out, "cancelled: nothing changed")
			continue
		}
		if k.Confirm != "" && !c.confirmed(k) {
			continue
		}
		c.run(ctx, k, args)
		if ctx.Err() != nil {
			return nil
		}
	}
}

// Split splits a command line into words at spaces; single or double quotes keep spaces
// inside a word.
func Split(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord, quote := false, rune(0)
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case unicode.IsSpace(r):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
