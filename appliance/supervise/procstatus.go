package supervise

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Confinement is what the kernel says about a process's privileges (proc(5): /proc/PID/status).
type Confinement struct {
	UID, GID   int    // real user and group
	NoNewPrivs bool   // prctl(PR_SET_NO_NEW_PRIVS)
	Seccomp    int    // 0 none, 1 strict, 2 filter
	CapEff     uint64 // effective capabilities, bit n is capability n (capabilities(7))
}

// capNames are the capabilities status names; others are shown by number.
var capNames = map[int]string{0: "cap_chown", 1: "cap_dac_override", 2: "cap_dac_read_search", 3: "cap_fowner",
	5: "cap_kill", 6: "cap_setgid", 7: "cap_setuid", 10: "cap_net_bind_service", 12: "cap_net_admin",
	13: "cap_net_raw", 16: "cap_sys_module", 19: "cap_sys_ptrace", 21: "cap_sys_admin", 22: "cap_sys_boot"}

// String is the status line: "uid 900, seccomp filter, no_new_privs, capabilities cap_net_bind_service".
func (c Confinement) String() string {
	mode := map[int]string{0: "no seccomp", 1: "seccomp strict", 2: "seccomp filter"}[c.Seccomp]
	parts := []string{fmt.Sprintf("uid %d", c.UID), mode}
	if c.NoNewPrivs {
		parts = append(parts, "no_new_privs")
	}
	var caps []string
	for i := range 64 {
		if c.CapEff&(1<<i) != 0 {
			if n, ok := capNames[i]; ok {
				caps = append(caps, n)
			} else {
				caps = append(caps, "cap_"+strconv.Itoa(i))
			}
		}
	}
	if len(caps) == 0 {
		caps = []string{"none"}
	}
	return strings.Join(parts, ", ") + ", capabilities " + strings.Join(caps, " ")
}

// ReadConfinement reads /proc/PID/status.
func ReadConfinement(pid int) (Confinement, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Confinement{}, err
	}
	return parseConfinement(b)
}

func parseConfinement(b []byte) (Confinement, error) {
	var c Confinement
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		var err error
		switch k {
		case "Uid":
			c.UID, err = strconv.Atoi(f[0])
		case "Gid":
			c.GID, err = strconv.Atoi(f[0])
		case "NoNewPrivs":
			c.NoNewPrivs = f[0] == "1"
		case "Seccomp":
			c.Seccomp, err = strconv.Atoi(f[0])
		case "CapEff":
			c.CapEff, err = strconv.ParseUint(f[0], 16, 64)
		default:
			continue
		}
		if err != nil {
			return Confinement{}, fmt.Errorf("supervise: /proc status %s: %w", k, err)
		}
		seen[k] = true
	}
	for _, k := range []string{"Uid", "Gid", "NoNewPrivs", "Seccomp", "CapEff"} {
		if !seen[k] {
			return Confinement{}, fmt.Errorf("supervise: /proc status has no %s", k)
		}
	}
	return c, nil
}
