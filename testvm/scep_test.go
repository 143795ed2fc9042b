package testvm

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/ldap/ldaptest"
	"github.com/enrollment-appliance/aeappliance/proto/scep/sceptest"
)

// proxy forwards connections to 127.0.0.1:port (which QEMU's user network gives the
// guest as 10.0.2.2:port) to target, and returns port.
func proxy(t *testing.T, target string) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				d, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer d.Close()
				go io.Copy(d, c)
				io.Copy(c, d)
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// TestApplianceSCEP: the appliance in the VM joined to a real Samba AD DC (reached through
// QEMU's user network; its certificate checked against the DC's name given at the
// console) enrolls a device with Debian's scepclient over the forwarded HTTP port, through
// a SCEP profile bound to a directory template; the certificate verifies against the CA.
func TestApplianceSCEP(t *testing.T) {
	needVM(t)
	scepclient := sceptest.NeedTool(t, "scepclient")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dc := ldaptest.StartDC(t)
	s := dc.Seed(t)
	ldapPort := proxy(t, net.JoinHostPort(dc.IP, "389"))
	vm, _ := boot(t, ctx, nil)
	must(t, vm, prompt, 2*time.Minute)
	ceremonyToKey(t, vm)
	command(t, vm, "provision selfsigned SCEP VM CA", 2*time.Minute)

	dcCA, err := os.ReadFile(dc.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.SendLine(fmt.Sprintf("provision directory ldap://10.0.2.2:%d %s %q %s", ldapPort, s.SvcEnroll.UPN,
		ldaptest.CACN, ldaptest.DCDNSName)); err != nil {
		t.Fatal(err)
	}
	must(t, vm, "Password of", 30*time.Second)
	vm.SendLine(s.SvcEnroll.Password)
	must(t, vm, "or just an empty line", 30*time.Second)
	for _, l := range strings.Split(strings.TrimSpace(string(dcCA)), "\n") {
		vm.SendLine(l)
		time.Sleep(20 * time.Millisecond)
	}
	vm.SendLine("")
	if out := must(t, vm, prompt, 2*time.Minute); !strings.Contains(out, "Checked and saved the directory settings") {
		t.Fatalf("provision directory: %s", out)
	}
	finish(t, vm)

	dir := t.TempDir()
	tokenFile, caFile := apiCredentials(t, vm, dir)
	static := "vm-Static-Challenge-42"
	challengeFile := filepath.Join(dir, "challenge")
	os.WriteFile(challengeFile, []byte(static+"\n"), 0o600)
	out, err := exec.CommandContext(ctx, aectl(t), "--api", fmt.Sprintf("127.0.0.1:%d", vm.HostPort(apiPort)), "--token-file", tokenFile,
		"--ca-file", caFile, "scep", "profile", "add", "devices", "--template", "SuppliesSubject", "--account", "dave",
		"--static-challenge-file", challengeFile, "--allow-des").CombinedOutput() // scepclient sends DES
	if err != nil {
		t.Fatalf("aectl scep profile add over the forwarded port: %v\n%s", err, out)
	}

	// The RA's certificates, from GetCACert over the forwarded HTTP port: one to sign, one to
	// encrypt to, told apart by keyUsage (RFC 8894 §3.5.1).
	base := fmt.Sprintf("http://127.0.0.1:%d/scep/devices", vm.HostPort(httpPort))
	resp, err := http.Get(base + "?operation=GetCACert")
	if err != nil {
		t.Fatal(err)
	}
	p7, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cmd := exec.Command("openssl", "pkcs7", "-inform", "DER", "-print_certs")
	cmd.Stdin = strings.NewReader(string(p7))
	pemOut, err := cmd.Output()
	if err != nil {
		t.Fatalf("GetCACert: %v (HTTP %d, %d bytes)", err, resp.StatusCode, len(p7))
	}
	caPEM, _ := os.ReadFile(caFile)
	blk, _ := pem.Decode(caPEM)
	var signing, encryption int
	for rest := pemOut; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil && string(c.Raw) != string(blk.Bytes) {
			switch c.KeyUsage {
			case x509.KeyUsageDigitalSignature:
				signing++
			case x509.KeyUsageKeyEncipherment:
				encryption++
			}
		}
	}
	if signing != 1 || encryption != 1 {
		t.Fatalf("GetCACert holds %d signing and %d encryption RA certificates, want one each:\n%s", signing, encryption, pemOut)
	}
	device := filepath.Join(dir, "device")
	os.MkdirAll(device, 0o700)
	certPath := filepath.Join(device, "cert.pem")
	sout, err := sceptest.Run(t, 2*time.Minute, nil, scepclient, "-server-url="+base, "-challenge="+static,
		"-private-key="+filepath.Join(device, "key.pem"), "-certificate="+certPath, "-cn=scep-vm-1",
		"-cacert-message=ra-only") // enrollsvc/scep.RAOnly: the RA's certificates only, each of which scepclient encrypts to
	if err != nil {
		t.Fatalf("scepclient against the appliance: %v\n%s", err, sout)
	}
	if out, err := exec.Command("openssl", "verify", "-CAfile", caFile, certPath).CombinedOutput(); err != nil {
		t.Errorf("openssl verify of the SCEP certificate: %v\n%s", err, out)
	}
	if c := sceptest.ReadCert(t, certPath); c.Subject.CommonName != "scep-vm-1" {
		t.Errorf("the SCEP certificate's subject: %s", c.Subject)
	}
	if out := command(t, vm, "requests issued", 30*time.Second); !strings.Contains(out, "SuppliesSubject") {
		t.Errorf("requests issued lacks the SCEP request:\n%s", out)
	}
}
