# peapod — the two README commands are `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
export PATH := /usr/local/go/bin:$(PATH)
export GOFLAGS := -buildvcs=false
# Test-only knobs: PEAPOD_INTEGRATION turns on tests that need root, runc,
# conmon and CNI; GOTESTFLAGS adds go test flags.
GOTESTFLAGS ?=
OUT := _output

.PHONY: all build deps test-deps run test unit integration tools clean

all: build

deps:
	@bash hack/install-deps.sh runtime

test-deps:
	@bash hack/install-deps.sh test

# Static binaries: the pause helper is bind-mounted into every sandbox's
# minimal rootfs, and peapod itself can stand in for it.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o bin/peapod ./cmd/peapod
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o bin/peapod-pause ./cmd/peapod-pause

# README command 1: install, build, import a locally built busybox image,
# and run `peapod serve` on embedded defaults in the foreground.
run: deps build
	@bash hack/run.sh

# README command 2: install, build and run the whole suite for real.
test: test-deps build
	PEAPOD_INTEGRATION=1 $(GO) test -count=1 -timeout 40m $(GOTESTFLAGS) ./...

unit:
	$(GO) test -count=1 ./...

tools:
	@bash hack/build-tools.sh

clean:
	rm -rf bin $(OUT)
