package update

import (
	"archive/tar"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Verify reads a bundle from r and checks all of it: the tar layout (exactly the five
// members, in order, regular files, within the size limits), the signature over
// bundle.json by one of keys, the header (format, product, version, the file list), and
// each file's size and SHA-256. It extracts vmlinuz, initramfs.cpio.zst and manifest.json
// into destDir, which must exist and be empty, and keeps bundle.json and bundle.sig there
// byte for byte, so that VerifyDir can check the signature again before every boot.
//
// The bundle is streamed: each file is written to a hidden temporary name as it is read,
// hashed on the way, and renamed to its own name only once its size and digest match the
// signed header. Files and directory are synced before Verify returns. On any failure
// Verify removes everything it wrote and returns an error that says what is wrong; destDir
// then holds what it held before. Nothing in destDir may be used unless Verify returned
// nil.
func Verify(r io.Reader, keys []ed25519.PublicKey, product string, destDir string) (h Header, err error) {
	if len(keys) == 0 {
		return Header{}, errors.New("update: no trusted keys")
	}
	for i, k := range keys {
		if len(k) != ed25519.PublicKeySize { // ed25519.Verify would panic
			return Header{}, fmt.Errorf("update: trusted key %d has %d bytes, want %d", i+1, len(k), ed25519.PublicKeySize)
		}
	}
	if product == "" {
		return Header{}, errors.New("update: no product to check the bundle against")
	}
	ents, err := os.ReadDir(destDir)
	if err != nil {
		return Header{}, fmt.Errorf("update: destination: %w", err)
	}
	if len(ents) != 0 {
		return Header{}, fmt.Errorf("update: destination %s is not empty", destDir)
	}

	x := &extractor{dir: destDir}
	defer func() {
		if err != nil {
			x.removeAll()
		}
	}()
	in := &boundedReader{r: r, max: MaxBundleSize}
	b := &bundleReader{tr: tar.NewReader(in), in: in}

	hb, err := b.small(HeaderName, MaxHeaderSize)
	if err != nil {
		return Header{}, err
	}
	sb, err := b.small(SignatureName, MaxSignatureSize)
	if err != nil {
		return Header{}, err
	}
	h, err = checkHeader(hb, sb, keys, product)
	if err != nil {
		return Header{}, err
	}
	for _, f := range h.Files {
		hdr, err := b.next(f.Name)
		if err != nil {
			return Header{}, err
		}
		if hdr.Size != f.Size {
			return Header{}, fmt.Errorf("%s: %d bytes in the bundle, bundle.json says %d", f.Name, hdr.Size, f.Size)
		}
		if err := x.extract(f, b); err != nil {
			return Header{}, err
		}
	}
	if err := b.end(); err != nil {
		return Header{}, err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{HeaderName, hb}, {SignatureName, sb}} {
		if err := x.keep(f.name, f.data); err != nil {
			return Header{}, err
		}
	}
	if err := syncDir(destDir); err != nil {
		return Header{}, err
	}
	return h, nil
}

// checkHeader checks the signature over bundle.json, then parses and checks the header.
// The signature comes first: nothing of an unsigned header is believed.
func checkHeader(hb, sb []byte, keys []ed25519.PublicKey, product string) (Header, error) {
	sig, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSuffix(string(sb), "\n"))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Header{}, errors.New("not an update bundle: bundle.sig is not a base64 Ed25519 signature")
	}
	var signer ed25519.PublicKey
	for _, k := range keys {
		if ed25519.Verify(k, hb, sig) {
			signer = k
			break
		}
	}
	if signer == nil {
		// The key ID is read from the unverified header only to make the message useful.
		var claimed struct {
			KeyID string `json:"key_id"`
		}
		_ = json.Unmarshal(hb, &claimed)
		var ids []string
		for _, k := range keys {
			ids = append(ids, KeyID(k))
		}
		return Header{}, fmt.Errorf("signature does not verify with any trusted key (bundle names key %q; trusted: %s)",
			claimed.KeyID, strings.Join(ids, ", "))
	}

	var h Header
	if err := json.Unmarshal(hb, &h); err != nil {
		return Header{}, fmt.Errorf("not an update bundle: bundle.json: %v", err)
	}
	if h.Format != Format {
		return Header{}, fmt.Errorf("bundle format %d, this appliance reads format %d", h.Format, Format)
	}
	if id := KeyID(signer); h.KeyID != id {
		return Header{}, fmt.Errorf("bundle.json names key %q but is signed by trusted key %s", h.KeyID, id)
	}
	if h.Product != product {
		return Header{}, fmt.Errorf("bundle for product %q, not %q", h.Product, product)
	}
	if h.Version == "" {
		return Header{}, errors.New("bundle.json: no version")
	}
	if h.SecurityVersion < 0 {
		return Header{}, fmt.Errorf("bundle.json: security version %d", h.SecurityVersion)
	}
	if h.Kernel == "" {
		return Header{}, errors.New("bundle.json: no kernel release")
	}
	if len(h.Files) != len(imageFiles) {
		return Header{}, fmt.Errorf("bundle.json: lists %d files, want %d", len(h.Files), len(imageFiles))
	}
	total := int64(len(hb) + len(sb))
	for i, f := range h.Files {
		if f.Name != imageFiles[i] {
			return Header{}, fmt.Errorf("bundle.json: file %d is %q, want %q", i+1, f.Name, imageFiles[i])
		}
		if d, err := hex.DecodeString(f.SHA256); err != nil || len(d) != sha256.Size || strings.ToLower(f.SHA256) != f.SHA256 {
			return Header{}, fmt.Errorf("bundle.json: %s: SHA-256 %q is not %d lower-case hex digits", f.Name, f.SHA256, 2*sha256.Size)
		}
		if f.Size < 0 || f.Size > MaxBundleSize {
			return Header{}, fmt.Errorf("bundle.json: %s: size %d out of range", f.Name, f.Size)
		}
		total += f.Size
	}
	if total > MaxBundleSize {
		return Header{}, fmt.Errorf("bundle.json declares %d bytes, more than a bundle may hold (%d)", total, MaxBundleSize)
	}
	return h, nil
}

// bundleReader walks the tar members of a bundle in their fixed order.
type bundleReader struct {
	tr *tar.Reader
	in *boundedReader
	n  int // members read
}

// next reads the next member's header, which must be a regular file called want.
func (b *bundleReader) next(want string) (*tar.Header, error) {
	hdr, err := b.tr.Next()
	if err == io.EOF {
		if b.in.n == 0 {
			return nil, errors.New("not an update bundle: empty input")
		}
		return nil, fmt.Errorf("not an update bundle: %s missing", want)
	}
	if err != nil {
		return nil, b.readError("", err)
	}
	b.n++
	if hdr.Name != want {
		return nil, fmt.Errorf("not an update bundle: member %d is %q, want %q", b.n, hdr.Name, want)
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("not an update bundle: %s is not a regular file (tar type %q)", want, hdr.Typeflag)
	}
	// Build writes plain ustar. PAX records could make a member sparse or rename it; none
	// is needed, so none is accepted.
	if len(hdr.PAXRecords) != 0 {
		return nil, fmt.Errorf("not an update bundle: %s has PAX records", want)
	}
	return hdr, nil
}

// small reads a whole member of at most max bytes.
func (b *bundleReader) small(name string, max int64) ([]byte, error) {
	hdr, err := b.next(name)
	if err != nil {
		return nil, err
	}
	if hdr.Size > max {
		return nil, fmt.Errorf("not an update bundle: %s is %d bytes, more than %d", name, hdr.Size, max)
	}
	data, err := io.ReadAll(b.tr) // at most hdr.Size bytes: tar.Reader stops at the member's end
	if err != nil {
		return nil, b.readError(name, err)
	}
	return data, nil
}

// end checks that the archive ends after the last file.
func (b *bundleReader) end() error {
	hdr, err := b.tr.Next()
	switch {
	case err == io.EOF:
		return nil
	case err != nil:
		return b.readError("end of archive", err)
	default:
		return fmt.Errorf("not an update bundle: extra member %q after %s", hdr.Name, ManifestName)
	}
}

// readError explains an error reading the bundle (in member name, if not "").
func (b *bundleReader) readError(name string, err error) error {
	if name != "" {
		name += ": "
	}
	switch {
	case b.in.exceeded:
		return fmt.Errorf("not an update bundle: %slarger than %d bytes", name, b.in.max)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%struncated bundle", name)
	case errors.Is(err, tar.ErrHeader):
		return fmt.Errorf("not an update bundle: %s%v", name, err)
	default:
		return fmt.Errorf("reading bundle: %s%w", name, err)
	}
}

// extractor writes verified files into dir and remembers them, so that a failure can
// take them away again.
type extractor struct {
	dir     string
	written []string // paths, temporary or final
}

// extract copies the current member to dir/f.Name, through a temporary file that is
// renamed only once size and digest match f.
func (x *extractor) extract(f File, b *bundleReader) error {
	tmp := filepath.Join(x.dir, "."+f.Name+".partial")
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	x.written = append(x.written, tmp)
	defer out.Close() // after the explicit Close below, a no-op
	d := sha256.New()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		m, rerr := b.tr.Read(buf)
		if m > 0 {
			d.Write(buf[:m])
			if _, err := out.Write(buf[:m]); err != nil {
				return fmt.Errorf("update: %w", err)
			}
			n += int64(m)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return b.readError(f.Name, rerr)
		}
	}
	if n != f.Size { // tar.Reader reports a short member as ErrUnexpectedEOF; be sure
		return fmt.Errorf("%s: truncated bundle", f.Name)
	}
	if got := hex.EncodeToString(d.Sum(nil)); got != f.SHA256 {
		return fmt.Errorf("%s: SHA-256 mismatch (bundle.json says %s, the file has %s)", f.Name, f.SHA256, got)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	final := filepath.Join(x.dir, f.Name)
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	x.written[len(x.written)-1] = final
	return nil
}

// keep writes data (the signed header or its signature, as the bundle had them) to name
// in the directory, synced.
func (x *extractor) keep(name string, data []byte) error {
	path := filepath.Join(x.dir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	x.written = append(x.written, path)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("update: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("update: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	return nil
}

// VerifyDir checks a directory Verify filled (an installed firmware slot) before it is
// booted: the signature over its bundle.json by one of keys, the header as Verify checks
// it, and each file's size and SHA-256. Whoever can write the directory cannot make it
// pass without a trusted key.
func VerifyDir(dir string, keys []ed25519.PublicKey, product string) (Header, error) {
	if len(keys) == 0 {
		return Header{}, errors.New("update: no trusted keys")
	}
	read := func(name string, max int64) ([]byte, error) {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, max+1))
		if err == nil && int64(len(b)) > max {
			err = fmt.Errorf("%s is more than %d bytes", name, max)
		}
		return b, err
	}
	hb, err := read(HeaderName, MaxHeaderSize)
	if err != nil {
		return Header{}, fmt.Errorf("the signed header: %w", err)
	}
	sb, err := read(SignatureName, MaxSignatureSize)
	if err != nil {
		return Header{}, fmt.Errorf("the header's signature: %w", err)
	}
	h, err := checkHeader(hb, sb, keys, product)
	if err != nil {
		return Header{}, err
	}
	for _, f := range h.Files {
		file, err := os.Open(filepath.Join(dir, f.Name))
		if err != nil {
			return Header{}, err
		}
		d := sha256.New()
		n, err := io.Copy(d, io.LimitReader(file, f.Size+1))
		file.Close()
		if err != nil {
			return Header{}, fmt.Errorf("%s: %w", f.Name, err)
		}
		if n != f.Size || hex.EncodeToString(d.Sum(nil)) != f.SHA256 {
			return Header{}, fmt.Errorf("%s does not match its signed header (corrupt or replaced)", f.Name)
		}
	}
	return h, nil
}

// removeAll removes what extract wrote. Errors are ignored: the caller already has the
// error that matters, and the next Verify into the same directory refuses a non-empty
// one.
func (x *extractor) removeAll() {
	for _, p := range x.written {
		os.Remove(p)
	}
	if len(x.written) > 0 {
		syncDir(x.dir)
	}
}

// boundedReader reads at most max bytes from r: a stream that goes on is refused rather
// than read for ever (tar.Reader would skip any number of special headers).
type boundedReader struct {
	r        io.Reader
	max      int64
	n        int64 // bytes read
	exceeded bool
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.n >= b.max {
		var one [1]byte // at the limit: fine if the stream ends here, too large if not
		m, err := io.ReadFull(b.r, one[:])
		if m == 0 {
			return 0, err // io.EOF, or the stream's own error
		}
		b.exceeded = true
		return 0, errTooLarge
	}
	if rest := b.max - b.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	m, err := b.r.Read(p)
	b.n += int64(m)
	return m, err
}

var errTooLarge = errors.New("bundle too large")
