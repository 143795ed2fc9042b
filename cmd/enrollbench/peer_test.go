package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/enrollment-appliance/aeappliance/hsm/softhsm"
)

// scep-peer at a small scale: 20 PKCSReq from 4 concurrent clients against the real enrollsvc
// binary (SoftHSM2, RSA-2048 CA key, Samba DC, static-challenge profile) and against step-ca
// v0.30.2 (SoftHSM2 token, pkcs11 KMS, badger v2), when make bench has built it on this machine
// (once, about six minutes from a cold Go cache: too long for make test, which then checks the
// appliance's side alone and says so). Every request gets a SUCCESS answer with a certificate for
// its key that verifies under the server's own CA, and each server's durable store holds every
// certificate. No figure is asserted.
func TestSCEPPeer(t *testing.T) {
	if _, err := softhsm.ModulePath(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM2 is required on CI: %v", err)
		}
		t.Skipf("SoftHSM2 not installed (make deps): %v", err)
	}
	for _, tool := range []string{"softhsm2-util", "pkcs11-tool"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (make deps installs softhsm2 and opensc): %v", tool, err)
		}
	}
	var out bytes.Buffer
	servers := []string{serverAppliance, serverStepCA}
	if !fileExists(filepath.Join(stepCACacheDir(), "step-ca")) {
		servers = servers[:1]
		t.Logf("step-ca is not built on this machine (make bench builds it): the appliance's side only")
	}
	o := peerOptions{requests: 20, concurrency: []int{4}, enrollsvc: enrollsvcBin, cache: stepCACacheDir(),
		rawDuration: 200 * time.Millisecond, warmup: 4, timeout: 2 * time.Minute,
		servers: servers, out: &out, progress: testWriter{t}}
	start := time.Now()
	rep, err := peer(context.Background(), o)
	if errors.Is(err, errStepCABuild) {
		t.Skipf("step-ca %s cannot be built here: %v", stepCAVersion, err)
	}
	if rep != nil {
		rep.write(&out)
		t.Logf("%s\n(%s, step-ca %s)", out.String(), time.Since(start).Round(time.Second), rep.stepcaHow)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.problems(); err != nil {
		t.Error(err)
	}
	if len(rep.runs) != len(servers) {
		t.Fatalf("%d runs, want %d (%v at 4 clients)", len(rep.runs), len(servers), servers)
	}
	for _, r := range rep.runs {
		if len(r.received) != 20 || len(r.errors) != 0 {
			t.Errorf("%s: %d certificates, errors %v; want 20 and none", r.server, len(r.received), r.errors)
		}
		for _, c := range r.received {
			if _, err := c.Verify(x509.VerifyOptions{Roots: r.roots, Intermediates: r.inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Errorf("%s: certificate %v does not verify under its CA: %v", r.server, c.Subject, err)
			}
		}
		if r.cpu <= 0 {
			t.Errorf("%s: no CPU time measured for the server process", r.server)
		}
	}
	// Each server's certificates verify under its own CA only.
	if len(rep.runs) == 2 {
		a, s := rep.runs[0], rep.runs[1]
		if _, err := s.received[0].Verify(x509.VerifyOptions{Roots: a.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
			t.Error("a step-ca certificate verifies under the appliance's CA")
		}
	}
	if len(rep.raw) != 1 || rep.raw[4] <= 0 {
		t.Errorf("raw HSM rate = %v, want one figure at 4", rep.raw)
	}
	if len(rep.durability) != len(servers) {
		t.Errorf("durability checks: %q, want one per server", rep.durability)
	}
	wants := []string{"HSM ceiling/s"}
	if len(servers) == 2 {
		wants = append(wants, "appliance/step-ca")
	}
	for _, want := range wants {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q", want)
		}
	}
}

func TestParsePeer(t *testing.T) {
	o, err := parsePeer([]string{"-requests", "50", "-concurrency", "8, 32", "-stepca", "/x/step-ca", "-enrollsvc", "/x/enrollsvc"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.requests != 50 || !slices.Equal(o.concurrency, []int{8, 32}) || o.stepca != "/x/step-ca" || o.enrollsvc != "/x/enrollsvc" ||
		!slices.Equal(o.servers, []string{serverAppliance, serverStepCA}) {
		t.Errorf("parsed %+v", o)
	}
	for _, bad := range [][]string{{"-concurrency", "8,x"}, {"-concurrency", "0"}, {"-requests", "0"}, {"-servers", "nginx"}, {"extra"}} {
		if _, err := parsePeer(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("parsePeer(%q) succeeded", bad)
		}
	}
	var help bytes.Buffer
	if _, err := parsePeer([]string{"-h"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
	if err := runPeer([]string{"-h"}, &help); err != nil {
		t.Errorf("runPeer -h: %v", err)
	}
}

// A binary that is not step-ca, or lacks its PKCS#11 KMS, is refused with errStepCABuild.
func TestCheckStepCA(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := checkStepCA(self); !errors.Is(err, errStepCABuild) || !strings.Contains(err.Error(), "not github.com/smallstep/certificates") {
		t.Errorf("checkStepCA(the test binary) = %v", err)
	}
	if err := checkStepCA("/nonexistent/step-ca"); !errors.Is(err, errStepCABuild) {
		t.Errorf("checkStepCA(nonexistent) = %v", err)
	}
}
