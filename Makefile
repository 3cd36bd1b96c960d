# peapod — the two README commands are `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
export PATH := /usr/local/go/bin:$(PATH)
export GOFLAGS := -buildvcs=false
# Test-only knobs: PEAPOD_INTEGRATION turns on tests that need root, runc,
# conmon and CNI; GOTESTFLAGS adds go test flags.
GOTESTFLAGS ?=
OUT := _output

.PHONY: all build deps test-deps bench-deps lxcfs runc run test unit integration tools conformance conformance-containerd bench clean k8s csi-sidecars cluster cluster-down flannel cluster-multinode test-multinode conformance-k8s conformance-k8s-agent conformance-k8s-csi conformance-k8s-containerd conformance-k8s-containerd-debian conformance-containerd-debian containerd bench-cluster conformance-v1.37 conformance-containerd-v1.37 critest-v1.37 fuzz soak

all: build

deps:
	@bash hack/install-deps.sh runtime

test-deps:
	@bash hack/install-deps.sh test

# grpcnotrace: gRPC's golang.org/x/net/trace (off unless grpc.EnableTracing,
# which peapod never sets) pulls in html/template, whose reflective method
# calls keep every exported method of every type in the binary: -5 MB of
# binary, -3 MB of idle RSS.
BUILDTAGS := grpcnotrace

# Static binaries: the pause helper is bind-mounted into every sandbox's
# minimal rootfs, and peapod itself can stand in for it.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(BUILDTAGS) -ldflags "-s -w" -o bin/peapod ./cmd/peapod
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(BUILDTAGS) -ldflags "-s -w" -o bin/peapod-agent ./cmd/peapod-agent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o bin/peapod-pause ./cmd/peapod-pause
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(BUILDTAGS) -ldflags "-s -w" -o bin/peapod-csi-loop ./cmd/peapod-csi-loop

# lxcfs at /var/lib/lxcfs (containers.lxcfs = "auto" uses it when it
# answers), started where it is not running; it stays up after peapod.
lxcfs:
	@bash hack/lxcfs.sh start

# README command 1: install, build, import a locally built busybox image,
# and run `peapod serve` on embedded defaults in the foreground, plus the
# handler runc-userns (make runc; README.md "User namespaces").
run: deps build lxcfs runc
	@bash hack/run.sh

# README command 2: install, build and run the whole suite for real, then
# critest against peapod (~75 s; the digest-pinned image spec cannot pass
# offline and is skipped here, see README.md "Conformance").
test: test-deps build k8s flannel runc csi-sidecars
	PEAPOD_INTEGRATION=1 $(GO) test -count=1 -timeout 40m $(GOTESTFLAGS) $$($(GO) list ./... | grep -v -e '^peapod/test/cluster$$' -e '^peapod/test/multinode$$')
	PEAPOD_INTEGRATION=1 $(GO) test -count=1 -timeout 30m $(GOTESTFLAGS) ./test/cluster
	PEAPOD_INTEGRATION=1 $(GO) test -count=1 -timeout 15m $(GOTESTFLAGS) ./test/multinode
	$(MAKE) --no-print-directory fuzz FUZZTIME=3s
	bash hack/conformance/run.sh peapod -ginkgo.skip='public image with digest'

# runc v1.5.3 built from the Go module proxy (cgo, libseccomp) into
# /var/cache/peapod/runc-v1.5.3/bin/runc (~30 s the first time, instant
# after): the handler runc-userns, for pods with their own user namespace
# (hostUsers: false), which Debian's runc 1.1.5 cannot run (no idmapped
# mounts). Builds with gcc, libseccomp-dev and pkg-config (install-deps.sh build).
runc:
	@bash hack/install-deps.sh build
	@bash hack/runc.sh >/dev/null

# Kubernetes v1.37.2 (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, kubelet, etcd) built from the Go module proxy into
# /var/cache/peapod/kubernetes-v1.37.2/bin: ~8 min the first time on a
# machine, instant after (hack/cluster/README.md).
k8s:
	@bash hack/cluster/build.sh control-plane >/dev/null

# external-provisioner v6.4.0, external-attacher v4.13.0 and external-resizer
# v2.3.0 (csi-provisioner, csi-attacher, csi-resizer) built from the Go module
# proxy into /var/cache/peapod/csi-sidecars-v6.4.0-v4.13.0-v2.3.0/bin (~20 min cold on a busy
# 2-core machine, ~1 min with Go's build cache warm, instant after): the
# cluster's dynamic provisioning with peapod-csi-loop
# (StorageClass peapod-loop; hack/cluster/README.md).
csi-sidecars:
	@bash hack/cluster/build.sh csi-sidecars >/dev/null

# containerd v2.4.2 and its runc shim, the reference runtime, built from the
# Go module proxy into /var/cache/peapod/containerd-v2.4.2/bin (~1-2 min the
# first time, instant after).
containerd:
	@bash hack/cluster/build.sh containerd >/dev/null

# A real control plane on 127.0.0.1 and one node: the upstream kubelet on
# peapod, or with NODE=peapod-agent peapod-agent as the node (no kubelet).
# Ends by printing KUBECONFIG=... and KUBECTL=...; CLUSTER_FLAGS: e.g.
# --runtime containerd (v2.4.2; make containerd first), --runtime
# containerd-debian (1.6), --dir DIR, --metrics-server (kubectl top; built
# on first use, hack/cluster/README.md). NODE counts only on make's command
# line: `hack/cluster env` prints NODE=<node name>, which a shell may have
# exported.
CLUSTER_FLAGS ?=
CLUSTER_NODE := $(if $(filter command line,$(origin NODE)),$(NODE),kubelet)
cluster: test-deps build k8s csi-sidecars
	@$(GO) run ./hack/cluster up --node $(CLUSTER_NODE) $(CLUSTER_FLAGS)

cluster-down:
	@$(GO) run ./hack/cluster down $(CLUSTER_FLAGS)

# flanneld v0.28.10 and the flannel CNI meta plugin, built from the Go module
# proxy into /var/cache/peapod/flannel-v0.28.10 (~1.5 min the first time).
flannel:
	@bash hack/cluster/build.sh flannel >/dev/null

# The same control plane and two test hosts (network namespaces on a shared
# bridge), each a peapod-agent node (NODE=kubelet: the upstream kubelet) on
# its own peapod with flanneld (BACKEND=host-gw or vxlan): pods reach each
# other across hosts by pod IP (hack/cluster/README.md, "Several nodes").
# Ends by printing KUBECONFIG=..., KUBECTL=... and one HOST= line per host;
# make cluster-down removes it.
BACKEND ?= host-gw
MULTINODE_NODE := $(if $(filter command line,$(origin NODE)),$(NODE),peapod-agent)
cluster-multinode: test-deps build k8s flannel
	@$(GO) run ./hack/cluster up --hosts 2 --backend $(BACKEND) --node $(MULTINODE_NODE) $(CLUSTER_FLAGS)

# test/multinode alone (make test runs it too, after test/cluster): a
# two-host cluster per Flannel backend, then one of kubelet hosts (host-gw):
# pod to pod across hosts without NAT, hostPort across hosts, a host's link
# down and up, nothing leaked (~3-4 min).
test-multinode: test-deps build k8s flannel
	PEAPOD_INTEGRATION=1 $(GO) test -count=1 -timeout 15m -v $(GOTESTFLAGS) ./test/multinode

# Kubernetes' own [NodeConformance] specs (e2e.test v1.37.2) against a fresh
# cluster whose kubelet runs on peapod / on containerd v2.4.2 / on Debian's
# containerd 1.6.
conformance-k8s: test-deps build
	$(GO) run ./hack/cluster conformance --runtime peapod $(CLUSTER_FLAGS)

conformance-k8s-containerd: bench-deps build containerd
	$(GO) run ./hack/cluster conformance --runtime containerd $(CLUSTER_FLAGS)

conformance-k8s-containerd-debian: bench-deps build
	$(GO) run ./hack/cluster conformance --runtime containerd-debian $(CLUSTER_FLAGS)

# Kubernetes' storage e2e specs for peapod-csi-loop ("External Storage
# [Driver: loop.csi.peapod.io]", hack/cluster/csi-loop-testdriver.yaml)
# through the cluster's StorageClass peapod-loop, under the upstream kubelet
# on peapod (hack/cluster/README.md).
CSI_E2E_FOCUS ?= External.Storage.*loop.csi.peapod.io
CSI_E2E_SKIP ?= \[Feature:|\[Disruptive\]|\[Serial\]|\[Slow\]|should not mount / map unused volumes
conformance-k8s-csi: test-deps build csi-sidecars
	$(GO) run ./hack/cluster conformance --runtime peapod --storage-testdriver hack/cluster/csi-loop-testdriver.yaml --focus '$(CSI_E2E_FOCUS)' --skip '$(CSI_E2E_SKIP)' $(CLUSTER_FLAGS)

# The same specs with peapod-agent as the node (no kubelet), on peapod.
conformance-k8s-agent: test-deps build
	$(GO) run ./hack/cluster conformance --runtime peapod --node peapod-agent $(CLUSTER_FLAGS)

# critest v1.34.0, every spec, against peapod / containerd v2.4.2 / Debian's
# containerd 1.6.
conformance: build runc
	CONFORMANCE_VERBOSE=1 bash hack/conformance/run.sh peapod

conformance-containerd: containerd
	CONFORMANCE_VERBOSE=1 bash hack/conformance/run.sh containerd

conformance-containerd-debian:
	CONFORMANCE_VERBOSE=1 bash hack/conformance/run.sh containerd-debian

# critest v1.37.0 beside v1.34.0: built from the Go module proxy into
# /var/cache/peapod/cri-tools-v1.37.0/bin/critest (~30 s the first time with
# Go's build cache warm from v1.34, ~2 min without; instant after), then
# every spec against peapod / containerd v2.4.2. Not part of `make test`.
CRITEST_V137 = $(PEAPOD_CACHE_DIR)/cri-tools-v1.37.0/bin/critest
PEAPOD_CACHE_DIR = $(or $(PEAPOD_CACHE),/var/cache/peapod)

critest-v1.37:
	@bash hack/build-tools.sh critest-v1.37.0 >/dev/null

conformance-v1.37: build critest-v1.37 runc
	CRITEST=$(CRITEST_V137) CONFORMANCE_VERBOSE=1 bash hack/conformance/run.sh peapod

conformance-containerd-v1.37: containerd critest-v1.37
	CRITEST=$(CRITEST_V137) CONFORMANCE_VERBOSE=1 bash hack/conformance/run.sh containerd

# Go's native fuzzing of the parsers of hostile input (image layers,
# references, archives, manifests, indexes, configs and registry answers,
# CRI container configs, pod manifests, the config file, conmon's
# exit file): each target for FUZZTIME on top of its corpus (seeds in the
# test, crashers in testdata/fuzz). make test runs each for 3 s.
FUZZTIME ?= 1m
FUZZ_TARGETS = ./image:FuzzUnpackEntries ./image:FuzzUnpackTar ./image:FuzzNormalize \
	./image:FuzzArchiveEntries ./image:FuzzImportArchive ./image:FuzzParseImage ./image:FuzzSelectPlatform ./image:FuzzPullResponses \
	./sandbox/spec:FuzzContainer ./agent:FuzzParseManifest ./config:FuzzParse ./oci:FuzzParseExitFile
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz: $$name ($$pkg) for $(FUZZTIME)"; \
		log=$$(mktemp); \
		if ! $(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg >$$log 2>&1; then \
			if grep -q 'Failing input written' $$log; then cat $$log; rm -f $$log; exit 1; fi; \
			echo "fuzz: $$name: the fuzzing engine failed without an input (a loaded machine?); once more:"; grep -v '^fuzz: elapsed' $$log | tail -5; \
			$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg >$$log 2>&1 || { cat $$log; rm -f $$log; exit 1; }; \
		fi; \
		rm -f $$log; \
	done

unit:
	$(GO) test -count=1 ./...

# The soak (issue 17): 1,000 pod lifecycles (sandbox, one container, its
# log, an exec), 10 at a time, peapod killed with -9 about every 100 and
# restarted; nothing may be left behind, and peapod's RSS, fds and
# goroutines must not grow (~5 min; figures in the output). make test
# runs a 60-lifecycle version of it (TestSoak in test/e2e).
soak: test-deps
	PEAPOD_INTEGRATION=1 PEAPOD_SOAK_LIFECYCLES=1000 $(GO) test -count=1 -timeout 90m -v -run '^TestSoak$$' $(GOTESTFLAGS) ./test/e2e

# peapod vs containerd v2.4.2 vs Debian's containerd 1.6, same crictl
# workload, one run; the table
# goes to stdout and _output/bench/ (BENCHFLAGS: e.g. -n 50 -density 110).
# Not part of `make test`.
BENCHFLAGS ?=
bench-deps:
	@bash hack/install-deps.sh bench

bench: bench-deps build tools containerd
	$(GO) run ./hack/bench -out $(OUT)/bench $(BENCHFLAGS)

# The kubelet's own figures for one Deployment (busybox httpd, 0 -> 30 -> 100
# replicas, 2 min idle, deleted) on a cluster node running peapod, then
# containerd v2.4.2, then Debian's containerd 1.6, one at a time: pod start
# SLI, time to Ready and to gone, idle CPU and memory, CRI calls
# (hack/benchcluster/README.md; ~20 min with the four nodes). bench-deps: test-deps plus
# Debian's containerd. BENCHCLUSTERFLAGS: e.g. -only peapod -pods 50.
BENCHCLUSTERFLAGS ?=
bench-cluster: bench-deps build k8s containerd
	$(GO) run ./hack/benchcluster -out $(OUT)/bench-cluster $(BENCHCLUSTERFLAGS)

tools:
	@bash hack/build-tools.sh

clean:
	rm -rf bin $(OUT)
