package firmware

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
)

// DefaultHSMModule is the PKCS#11 module an image bundles unless told otherwise: Debian's
// SoftHSM2.
const DefaultHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// HSMDir is where the image keeps the PKCS#11 module, under the file name it has on the
// build host (symlinks resolved). release.HSMPath names the module in the image.
const HSMDir = "/usr/lib/pkcs11"

// softHSMName is SoftHSM2's module file name: a module of this name is SoftHSM2 (its
// tokens are files the appliance sets up on the data disk).
const softHSMName = "libsofthsm2.so"

// softHSMCompat is where hsm/softhsm.ModulePaths looks first; a SoftHSM image has a
// symlink there to the module under HSMDir, for code that looks for SoftHSM rather than
// reading release.HSMPath.
const softHSMCompat = "/usr/lib/softhsm/" + softHSMName

// loaderDirs are the dynamic loader's system search path on Debian amd64 (`ld.so --help`).
// The image has no ld.so.cache, so a library the module needs must sit in one of these
// directories, or the loader in the image does not find it.
var loaderDirs = map[string]bool{
	"/lib/x86_64-linux-gnu":     true,
	"/usr/lib/x86_64-linux-gnu": true,
	"/lib":                      true,
	"/usr/lib":                  true,
}

// HSMMeta is the PKCS#11 module an image bundles.
type HSMMeta struct {
	Module    string   `json:"module"`    // path in the image, e.g. /usr/lib/pkcs11/libsofthsm2.so
	Source    string   `json:"source"`    // the host file it was copied from (symlinks resolved)
	SHA256    string   `json:"sha256"`    // of the module file
	SoftHSM   bool     `json:"softhsm"`   // the module is SoftHSM2
	Libraries []string `json:"libraries"` // image paths of the libraries it needs, the loader included
}

// inspectHSMModule checks that file (a symlink is followed) is a PKCS#11 module for the
// image, an x86-64 ELF shared object that exports C_GetFunctionList, and describes it.
// Libraries is left empty (hsmFiles fills it).
func inspectHSMModule(file string) (HSMMeta, error) {
	if file == "" {
		return HSMMeta{}, errors.New("HSM module: no path given")
	}
	src, err := filepath.EvalSymlinks(file)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return HSMMeta{}, fmt.Errorf("HSM module %s does not exist", file)
		}
		return HSMMeta{}, fmt.Errorf("HSM module %s: %w", file, err)
	}
	if src, err = filepath.Abs(src); err != nil {
		return HSMMeta{}, fmt.Errorf("HSM module %s: %w", file, err)
	}
	fi, err := os.Stat(src)
	if err != nil {
		return HSMMeta{}, fmt.Errorf("HSM module %s: %w", file, err)
	}
	if !fi.Mode().IsRegular() {
		return HSMMeta{}, fmt.Errorf("HSM module %s is not a regular file", file)
	}
	f, err := elf.Open(src)
	var ferr *elf.FormatError
	if errors.As(err, &ferr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return HSMMeta{}, fmt.Errorf("HSM module %s is not an ELF shared library", file)
	}
	if err != nil {
		return HSMMeta{}, fmt.Errorf("HSM module %s: %w", file, err)
	}
	defer f.Close()
	if f.Type != elf.ET_DYN || f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return HSMMeta{}, fmt.Errorf("HSM module %s is not an x86-64 shared library (%s, %s, %s)", file, f.Type, f.Class, f.Machine)
	}
	syms, err := f.DynamicSymbols()
	if err != nil {
		return HSMMeta{}, fmt.Errorf("HSM module %s: reading its symbols: %w", file, err)
	}
	exported := false
	for _, s := range syms {
		if s.Name == "C_GetFunctionList" && s.Section != elf.SHN_UNDEF && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			exported = true
			break
		}
	}
	if !exported {
		return HSMMeta{}, fmt.Errorf("HSM module %s is not a PKCS#11 module: it does not export C_GetFunctionList", file)
	}
	sum, err := fileSHA256(src)
	if err != nil {
		return HSMMeta{}, fmt.Errorf("HSM module %s: %w", file, err)
	}
	base := filepath.Base(src)
	return HSMMeta{Module: path.Join(HSMDir, base), Source: src, SHA256: sum, SoftHSM: base == softHSMName}, nil
}

// hsmFiles returns the host files that carry the module m into the image (image path ->
// host path) and fills m.Libraries. enrollsvc loads the module with dlopen, so the
// libraries it needs are listed here: every DT_NEEDED entry, recursively, as the host's
// loader resolves them (without LD_LIBRARY_PATH). A library in one of the loader's system
// directories keeps its path; one found elsewhere (through the module's RUNPATH or the
// host's ld.so.conf) goes to /usr/lib, where the image's loader looks by itself.
func hsmFiles(ctx context.Context, m *HSMMeta) (map[string]string, error) {
	libs, err := sharedLibs(ctx, m.Source)
	if err != nil {
		return nil, fmt.Errorf("HSM module %s: %w", m.Source, err)
	}
	files := map[string]string{m.Module: m.Source}
	m.Libraries = nil
	for _, l := range libs {
		dst := l
		if l != defaultInterp && !loaderDirs[filepath.Dir(l)] {
			dst = path.Join("/usr/lib", filepath.Base(l))
		}
		if prev, ok := files[dst]; ok && prev != l {
			return nil, fmt.Errorf("HSM module %s: %s and %s would both go to %s in the image", m.Source, prev, l, dst)
		}
		files[dst] = l
		m.Libraries = append(m.Libraries, dst)
	}
	sort.Strings(m.Libraries)
	return files, nil
}
