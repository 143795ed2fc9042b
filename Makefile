# The two commands that matter: `make run` (set up and run the service) and `make test`.
SHELL   := /bin/bash
GO      ?= go
DATA    ?= var
CA_NAME ?= Development Root CA
KEY     ?= ecdsa-p256
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the build, the service and the tests need.
DEB_PKGS := softhsm2 opensc openssl gcc ca-certificates \
            samba samba-ad-dc samba-ad-provision python3-ldb winbind krb5-user ldap-utils \
            certmonger scep dbus curl \
            qemu-system-x86 zstd e2fsprogs cpio chrony \
            swtpm swtpm-tools cryptsetup-bin postgresql-15 \
            libestr0 libfastjson4 liblognorm5 libgnutls30

.PHONY: all deps tools build run run-native test bench lint clean image image-check update-bundle run-vm

all: build

deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	$(GO) mod download
	cd firmware/debugtools && $(GO) mod download

build: deps
	CGO_ENABLED=1 $(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

# The appliance: builds the image and boots it in QEMU (TCG) on this terminal, with the serial
# console here, a persistent data disk build/appliance/data.img (created blank on first use)
# and a TPM 2.0 (Debian's swtpm) whose state is kept beside it in build/appliance/data.img.tpm;
# the API is forwarded to https://127.0.0.1:9443, the HTTP listener to http://127.0.0.1:8080 and
# the enrollment web services to https://127.0.0.1:8443 (127.0.0.1 only). Provision it at the
# console: type "menu" or "help".
run: run-vm

# Development mode without the VM: creates ./var on first use (SoftHSM token, CA key in it, dev
# root CA), then serves in the foreground.
run-native: build
	@if [ ! -e $(DATA)/config.json ]; then \
		bin/enrollsvc init --data $(DATA) --ca-name "$(CA_NAME)" --key $(KEY) --http-url http://127.0.0.1:8080; \
	fi
	bin/enrollsvc serve --data $(DATA)

# Tools the tests run but the machine must not run as services: Prometheus's promtool (from
# Debian's prometheus package) and rsyslogd with its TLS driver (rsyslog, rsyslog-gnutls), fetched
# with apt-get download into build/cache and unpacked into build/tools, never installed (installing
# them would start a Prometheus server and a system syslog daemon).
TOOLS := $(CURDIR)/build/tools
TOOL_DEBS := prometheus rsyslog rsyslog-gnutls
tools: $(TOOLS)/.done
$(TOOLS)/.done:
	mkdir -p build/cache/tools $(TOOLS)
	cd build/cache/tools && (apt-get download -qq $(TOOL_DEBS) || ($(SUDO) apt-get update -qq && apt-get download -qq $(TOOL_DEBS)))
	for d in $(TOOL_DEBS); do dpkg-deb -x build/cache/tools/$${d}_*.deb $(TOOLS)/root; done
	mkdir -p $(TOOLS)/bin && ln -sf ../root/usr/bin/promtool $(TOOLS)/bin/promtool && ln -sf ../root/usr/sbin/rsyslogd $(TOOLS)/bin/rsyslogd
	touch $@

# The whole suite: unit, SoftHSM integration, real binaries. CI runs exactly this. The VM tests
# (testvm: QEMU, about 11 minutes, mostly one core) start first and run beside the rest (every other
# package, then the race pass), rather than last and alone with a core idle; their output follows
# the rest's. The rest runs at a lower priority (nice 10): the VM tests are the longest chain, one
# QEMU after another, and on two cores the rest would otherwise take a share of the VM's core too
# and leave one idle at the end (testvm took 1,070-1,120 s beside them, 624 s alone). The VM
# tests' package timeout is only a guard against a hang (each test has its own deadline): QEMU
# emulates the guest (TCG), and how fast depends on the host CPU far more than native code does
# (testvm alone: 624 s on one 2-core host, 1,129 s on another whose native tests ran as fast), so
# 20 minutes would fail a slower host's run as if it hung.
RACE_PKGS := ./proto/... ./enrollsvc/... ./hsm/... ./ldap/... ./aeagent/... ./appliance/... ./provisioning/... \
	./firmware/slots/ ./firmware/update/ ./firmware/fwapi/ ./apiclient/ ./config/ ./ratelimit/
test: export PATH := $(TOOLS)/bin:$(PATH)
test: deps tools lint
	@vmlog=$$(mktemp); \
	CI=true $(GO) test -count=1 -timeout 40m ./testvm/... > $$vmlog 2>&1 & vm=$$!; \
	CI=true nice -n 10 $(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -v '/testvm') && \
	CI=true nice -n 10 $(GO) test -race -count=1 -timeout 20m $(RACE_PKGS); rc=$$?; \
	wait $$vm; vmrc=$$?; echo "--- the VM tests (testvm):"; cat $$vmlog; rm -f $$vmlog; \
	if [ $$rc -ne 0 ] || [ $$vmrc -ne 0 ]; then echo "make test: FAILED (other packages: $$rc, VM tests: $$vmrc)"; exit 1; fi

# Issuance throughput (one table per CA key type, with CPU per stage), a logon storm through the
# real enrollsvc binary (10,000 Kerberos clients, 2,000 password clients, 10,000 SCEP devices with
# one-time challenges; the first run on a machine makes and caches 10,000 client keys and users,
# about 10 minutes), policy decisions against a real DC (an account 51 levels deep, warm and cold;
# a domain of 100,000 accounts, made once per machine, cold, new accounts and warm), SCEP over HTTP through the running service (8 and 32 clients,
# fresh RSA-2048 keys), SCEP side by side with smallstep step-ca v0.30.2 on SoftHSM2 (the same client,
# RSA-2048 CA keys, 1,000 requests at 8 and 32 clients; step-ca built once per machine with go install,
# about six minutes the first time), OCSP over HTTP from pre-signed answers, a 1,000,000-entry CRL through the
# running service's store and HSM, then a 100,000-entry CRL and the in-memory OCSP responder. docs/performance.md
# records the figures and where the time goes.
bench: build
	bin/enrollbench
	bin/enrollbench storm -clients 10000 -password-clients 2000
	bin/enrollbench scep-peer -requests 1000 -concurrency 8,32
	CI=true $(GO) test -run '^$$' -bench PolicyDecision -benchtime 2s ./enrollsvc/daemon/
	CI=true $(GO) test -run '^$$' -bench DirectoryAtScale -benchtime 2000x -timeout 60m ./enrollsvc/daemon/
	CI=true $(GO) test -run '^$$' -bench SCEP -benchtime 256x ./enrollsvc/daemon/
	CI=true $(GO) test -run '^$$' -bench OCSPOverHTTP -benchtime 3s ./enrollsvc/daemon/
	CI=true $(GO) test -run '^$$' -bench CRLMillion -benchtime 1x ./enrollsvc/daemon/
	$(GO) test -run '^$$' -bench 'BuildCRL100k' -benchtime 3x ./enrollsvc/revoke/
	$(GO) test -run '^$$' -bench 'OCSP' -benchtime 2s ./enrollsvc/revoke/

# The appliance image (firmware/): build/appliance/vmlinuz (Debian's linux-image-amd64, fetched
# with apt-get download into build/cache, never installed) and build/appliance/initramfs.cpio.zst
# (a u-root archive: cmd/appinit as /init, enrollsvc built with cgo, SoftHSM, e2fsprogs, kernel modules).
# Reproducible: the same sources, VERSION, SOURCE_DATE_EPOCH, Go toolchain, kernel package and
# host packages give the same bytes (build/appliance/manifest.json records them). The VM test in
# testvm/ (part of make test) builds the same image the same way.
#   HSM_MODULE=/path/lib.so  bundles that PKCS#11 module (symlinks followed, with every library it needs) at
#                            /usr/lib/pkcs11/<name> instead of SoftHSM2's; /etc/appliance/hsm.json names it.
#   DEBUG=1                  builds a debug image (version suffixed -debug, /bin/gosh as /bin/sh, a few u-root
#                            tools); a release image has no shell. Only DEBUG on the make command line counts,
#                            never one from the environment. Give it its own IMAGE_DIR (e.g. build/appliance-debug)
#                            to keep the release image the VM tests use.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
IMAGE_DIR ?= build/appliance

image: deps
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./cmd/mkfirmware -out $(IMAGE_DIR) -version $(VERSION) \
		$(if $(HSM_MODULE),-hsm-module '$(HSM_MODULE)') $(if $(and $(filter command line,$(origin DEBUG)),$(filter-out 0,$(DEBUG))),-debug)

# Builds the image a second time from scratch (empty Go build cache, fresh temporary directories)
# and fails unless both builds are byte-identical. A few minutes on two cores, so not in make test.
image-check: deps
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./cmd/mkfirmware -out $(IMAGE_DIR) -version $(VERSION) -check \
		$(if $(HSM_MODULE),-hsm-module '$(HSM_MODULE)') $(if $(and $(filter command line,$(origin DEBUG)),$(filter-out 0,$(DEBUG))),-debug)

# A signed update bundle of the image: build/appliance/update-VERSION.aeu (signed with
# SIGNING_KEY, default the development key build/keys/update-signing.key, which the image built
# here trusts). Install it with: aectl --api ... firmware upload FILE, then reboot the appliance.
update-bundle: deps
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./cmd/mkfirmware -out $(IMAGE_DIR) -version $(VERSION) -bundle \
		$(if $(SIGNING_KEY),-signing-key '$(SIGNING_KEY)') $(if $(UPDATE_KEYS),-update-keys '$(UPDATE_KEYS)') \
		$(if $(HSM_MODULE),-hsm-module '$(HSM_MODULE)')

# Boots the image in QEMU (make run).
run-vm: image
	$(GO) run ./testvm/runvm -image $(IMAGE_DIR) -disk $(IMAGE_DIR)/data.img

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) build -o /dev/null ./...

clean:
	rm -rf bin
