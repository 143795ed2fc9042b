package firmware

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// defaultInterp is the dynamic loader used to list the dependencies of a shared library
// (which has no .interp section of its own).
const defaultInterp = "/lib64/ld-linux-x86-64.so.2"

// sharedLibs returns the shared libraries (with the dynamic loader) that the ELF files
// need, directly or through other libraries, as the absolute paths the loader finds them
// at on this host. A file that is not dynamically linked contributes nothing. Libraries
// a file loads with dlopen are not seen: list such a module among files itself (as
// hsmFiles does for the PKCS#11 module).
func sharedLibs(ctx context.Context, files ...string) ([]string, error) {
	seen := map[string]bool{}
	for _, f := range files {
		interp, dynamic, err := elfInterp(f)
		if err != nil {
			return nil, err
		}
		if !dynamic {
			continue
		}
		if interp == "" {
			interp = defaultInterp
		}
		seen[interp] = true
		cmd := exec.CommandContext(ctx, interp, "--list", f)
		cmd.Env = loaderEnv()
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("listing the libraries of %s: %w%s", f, err, stderrOf(err))
		}
		libs, err := parseLdList(out)
		if err != nil {
			return nil, fmt.Errorf("listing the libraries of %s: %w", f, err)
		}
		for _, l := range libs {
			seen[l] = true
		}
	}
	var libs []string
	for l := range seen {
		libs = append(libs, l)
	}
	sort.Strings(libs)
	return libs, nil
}

// loaderEnv is the environment without the variables that change where the loader looks
// (the image has none of them), so that the list depends only on the files.
func loaderEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "LD_") {
			env = append(env, kv)
		}
	}
	return env
}

// elfInterp reports the ELF interpreter of file and whether it is dynamically linked.
func elfInterp(file string) (interp string, dynamic bool, err error) {
	f, err := elf.Open(file)
	if err != nil {
		return "", false, fmt.Errorf("%s: %w", file, err)
	}
	defer f.Close()
	if s := f.Section(".interp"); s != nil {
		b, err := s.Data()
		if err != nil {
			return "", false, fmt.Errorf("%s: reading .interp: %w", file, err)
		}
		return string(bytes.TrimRight(b, "\x00")), true, nil
	}
	return "", f.Section(".dynamic") != nil, nil
}

// parseLdList reads `ld.so --list` output: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)"
// lines, plus the loader's own "/lib64/ld-linux-x86-64.so.2 (0x...)" line.
func parseLdList(out []byte) ([]string, error) {
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>":
			if f[2] == "not" {
				return nil, fmt.Errorf("library %s not found", f[0])
			}
			if strings.HasPrefix(f[2], "/") {
				libs = append(libs, f[2])
			}
		case len(f) == 2 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0])
		}
	}
	return libs, nil
}

// stageHostFile copies the host file at src (following symlinks) to stage/dst.
func stageHostFile(stage, src, dst string) error {
	real, err := filepath.EvalSymlinks(src)
	if err != nil {
		return fmt.Errorf("staging %s: %w", src, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return fmt.Errorf("staging %s: %w", src, err)
	}
	mode := os.FileMode(0o644)
	if fi.Mode()&0o111 != 0 {
		mode = 0o755
	}
	return copyFile(real, filepath.Join(stage, strings.TrimPrefix(dst, "/")), mode)
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok && len(ee.Stderr) > 0 {
		return ": " + strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}
