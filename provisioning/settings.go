// Package provisioning holds what the provisioning ceremony's parts share without the
// PKCS#11 code: the appliance's own settings (admin passphrase, network), the steps' names,
// reports and progress, and the ceremony's saved state. The ceremony itself is package
// provisioning/ceremony; the HTTP API over it, provisioning/provapi.
package provisioning

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"

	"github.com/enrollment-appliance/aeappliance/config"
)

// The appliance's own settings (not the service's) live in a settings directory on the
// data disk: the admin passphrase and the network.
const (
	AdminFile   = "admin.json"
	NetworkFile = "network.json"
)

// Errors of the passphrase checks.
var (
	ErrNoPassphrase    = errors.New("no admin passphrase is set")
	ErrWrongPassphrase = errors.New("wrong passphrase")
)

// MinPassphrase is the shortest admin passphrase accepted, in characters.
const MinPassphrase = 12

// adminFile is admin.json: an Argon2id hash of the passphrase.
type adminFile struct {
	Algorithm string `json:"algorithm"` // "argon2id"
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
	Salt      string `json:"salt"` // base64
	Hash      string `json:"hash"` // base64, 32 bytes
}

// Argon2id parameters: OWASP's minimum (19 MiB, 2 passes), which stays under a second
// on the appliance even under QEMU's TCG.
const (
	argonTime   = 2
	argonMemory = 19 * 1024
	argonLanes  = 1
)

func hashPassphrase(p string, salt []byte, t, m uint32, lanes uint8) []byte {
	return argon2.IDKey([]byte(p), salt, t, m, lanes, 32)
}

// HasPassphrase reports whether an admin passphrase is set in the settings directory.
func HasPassphrase(settings string) bool {
	_, err := os.Stat(filepath.Join(settings, AdminFile))
	return err == nil
}

// CheckPassphrase checks p against the admin passphrase: nil, ErrNoPassphrase,
// ErrWrongPassphrase, or why the stored hash could not be read.
func CheckPassphrase(settings, p string) error {
	b, err := os.ReadFile(filepath.Join(settings, AdminFile))
	if errors.Is(err, os.ErrNotExist) {
		return ErrNoPassphrase
	}
	if err != nil {
		return fmt.Errorf("reading the admin passphrase hash: %w", err)
	}
	var a adminFile
	if err := json.Unmarshal(b, &a); err != nil || a.Algorithm != "argon2id" {
		return fmt.Errorf("%s is corrupt", filepath.Join(settings, AdminFile))
	}
	salt, err1 := base64.StdEncoding.DecodeString(a.Salt)
	want, err2 := base64.StdEncoding.DecodeString(a.Hash)
	if err1 != nil || err2 != nil || len(want) != 32 || a.Time == 0 || a.MemoryKiB == 0 || a.Threads == 0 {
		return fmt.Errorf("%s is corrupt", filepath.Join(settings, AdminFile))
	}
	if subtle.ConstantTimeCompare(hashPassphrase(p, salt, a.Time, a.MemoryKiB, a.Threads), want) != 1 {
		return ErrWrongPassphrase
	}
	return nil
}

// ValidatePassphrase says why p is not acceptable as the admin passphrase.
func ValidatePassphrase(p string) error {
	switch {
	case !utf8.ValidString(p):
		return errors.New("the passphrase is not valid UTF-8")
	case utf8.RuneCountInString(p) < MinPassphrase:
		return fmt.Errorf("the passphrase is too short: at least %d characters", MinPassphrase)
	case utf8.RuneCountInString(p) > 256:
		return errors.New("the passphrase is too long: at most 256 characters")
	case strings.TrimSpace(p) != p:
		return errors.New("the passphrase must not begin or end with a space")
	}
	return nil
}

// SetPassphrase sets the admin passphrase. The first time current is ignored; after that
// it must be the passphrase in force. Setting the same passphrase again changes nothing.
func SetPassphrase(settings, current, next string) (Report, error) {
	r := Report{Step: StepPassphrase}
	had := HasPassphrase(settings)
	if had {
		if err := CheckPassphrase(settings, current); err != nil {
			if errors.Is(err, ErrWrongPassphrase) {
				return r, errors.New("the current passphrase is wrong: nothing changed")
			}
			return r, err
		}
		if current == next {
			r.Say("The admin passphrase is already set to this one: nothing changed.")
			return r, nil
		}
	}
	if err := ValidatePassphrase(next); err != nil {
		return r, fmt.Errorf("%w: nothing changed", err)
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return r, err
	}
	a := adminFile{Algorithm: "argon2id", Time: argonTime, MemoryKiB: argonMemory, Threads: argonLanes,
		Salt: base64.StdEncoding.EncodeToString(salt),
		Hash: base64.StdEncoding.EncodeToString(hashPassphrase(next, salt, argonTime, argonMemory, argonLanes))}
	b, _ := json.MarshalIndent(a, "", "  ")
	if err := os.MkdirAll(settings, 0o700); err != nil {
		return r, fmt.Errorf("creating %s: %w", settings, err)
	}
	if err := config.WriteFileAtomic(filepath.Join(settings, AdminFile), append(b, '\n'), 0o600); err != nil {
		return r, fmt.Errorf("saving the passphrase hash: %w", err)
	}
	r.Changed = true
	if had {
		r.Say("Changed the admin passphrase.")
	} else {
		r.Say("Set the admin passphrase. The console asks for it from now on (login).")
	}
	return r, nil
}

// Network is the management interface's configuration, as the administrator set it.
type Network struct {
	Mode     string   `json:"mode"`              // "dhcp" (the default) or "static"
	Address  string   `json:"address,omitempty"` // static: 192.0.2.10/24
	Gateway  string   `json:"gateway,omitempty"` // static: 192.0.2.1
	DNS      []string `json:"dns,omitempty"`     // name servers (static; with DHCP they replace the lease's)
	NTP      []string `json:"ntp,omitempty"`     // time servers: host or host:port
	Hostname string   `json:"hostname,omitempty"`
}

// Validate says what is wrong with n.
func (n Network) Validate() error {
	switch n.Mode {
	case "dhcp":
		if n.Address != "" || n.Gateway != "" {
			return errors.New("an address or gateway is only for a static configuration")
		}
	case "static":
		p, err := netip.ParsePrefix(n.Address)
		if err != nil || !p.Addr().Is4() || p.Bits() < 8 || p.Bits() > 30 {
			return fmt.Errorf("address %q: want an IPv4 address with its prefix length, like 192.0.2.10/24", n.Address)
		}
		if p.Addr() == p.Masked().Addr() {
			return fmt.Errorf("address %q is the network address of %s", n.Address, p.Masked())
		}
		if n.Gateway != "" {
			g, err := netip.ParseAddr(n.Gateway)
			if err != nil || !g.Is4() {
				return fmt.Errorf("gateway %q: want an IPv4 address", n.Gateway)
			}
			if !p.Masked().Contains(g) || g == p.Addr() {
				return fmt.Errorf("gateway %s is not another address on %s", g, p.Masked())
			}
		}
	default:
		return fmt.Errorf("mode %q: want dhcp or static", n.Mode)
	}
	for _, d := range n.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			return fmt.Errorf("DNS server %q: want an IP address", d)
		}
	}
	if len(n.DNS) > 3 {
		return errors.New("at most 3 DNS servers")
	}
	for _, s := range n.NTP {
		host := s
		if h, port, err := net.SplitHostPort(s); err == nil {
			host = h
			if port == "" {
				return fmt.Errorf("NTP server %q: empty port", s)
			}
		}
		if host == "" || !validHostname(host) && net.ParseIP(host) == nil {
			return fmt.Errorf("NTP server %q: want a host name or an IP address, optionally with :port", s)
		}
	}
	if n.Hostname != "" && !validHostname(n.Hostname) {
		return fmt.Errorf("hostname %q: want a DNS name (letters, digits, hyphens, dots)", n.Hostname)
	}
	return nil
}

// validHostname accepts DNS names of RFC 1123 labels.
func validHostname(h string) bool {
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// LoadNetwork reads the network settings; without any it returns DHCP.
func LoadNetwork(settings string) (Network, error) {
	b, err := os.ReadFile(filepath.Join(settings, NetworkFile))
	if errors.Is(err, os.ErrNotExist) {
		return Network{Mode: "dhcp"}, nil
	}
	if err != nil {
		return Network{}, fmt.Errorf("reading the network settings: %w", err)
	}
	var n Network
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&n); err != nil {
		return Network{}, fmt.Errorf("%s is corrupt: %w", filepath.Join(settings, NetworkFile), err)
	}
	if err := n.Validate(); err != nil {
		return Network{}, fmt.Errorf("%s: %w", filepath.Join(settings, NetworkFile), err)
	}
	return n, nil
}

// UpdateNetwork applies change to the saved network settings and saves them when they
// are valid and different. An invalid change saves nothing.
func UpdateNetwork(settings string, change func(*Network)) (Network, Report, error) {
	r := Report{Step: StepNetwork}
	old, err := LoadNetwork(settings)
	if err != nil {
		return old, r, err
	}
	n := old
	n.DNS, n.NTP = append([]string(nil), old.DNS...), append([]string(nil), old.NTP...)
	change(&n)
	if n.Mode == "dhcp" {
		n.Address, n.Gateway = "", ""
	}
	if err := n.Validate(); err != nil {
		return old, r, fmt.Errorf("%w: nothing changed", err)
	}
	if reflect.DeepEqual(n, old) && fileExists(filepath.Join(settings, NetworkFile)) {
		r.Say("The network settings are already these: nothing changed.")
		return n, r, nil
	}
	b, _ := json.MarshalIndent(n, "", "  ")
	if err := os.MkdirAll(settings, 0o700); err != nil {
		return old, r, fmt.Errorf("creating %s: %w", settings, err)
	}
	if err := config.WriteFileAtomic(filepath.Join(settings, NetworkFile), append(b, '\n'), 0o644); err != nil {
		return old, r, fmt.Errorf("saving the network settings: %w", err)
	}
	r.Changed = true
	r.Say("Saved the network settings: %s.", n)
	return n, r, nil
}

// String is a one-line summary: "static 192.0.2.10/24 gw 192.0.2.1, dns 192.0.2.53, ntp
// ntp.example.test, hostname pki".
func (n Network) String() string {
	s := n.Mode
	if n.Mode == "static" {
		s += " " + n.Address
		if n.Gateway != "" {
			s += " gw " + n.Gateway
		}
	}
	if len(n.DNS) > 0 {
		s += ", dns " + strings.Join(n.DNS, " ")
	}
	if len(n.NTP) > 0 {
		s += ", ntp " + strings.Join(n.NTP, " ")
	}
	if n.Hostname != "" {
		s += ", hostname " + n.Hostname
	}
	return s
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
