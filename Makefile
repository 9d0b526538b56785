# ckptfs: make run mounts the default store at ./mnt; make test runs everything
# from nothing (installs fuse3 and the Python venv when missing).

GO       ?= go
MOUNT    ?= $(CURDIR)/mnt
VENV     ?= $(HOME)/.cache/ckptfs/venv
PY       := $(VENV)/bin/python
CVENV    ?= $(HOME)/.cache/ckptfs/venv-colossalai
CPY      := $(CVENV)/bin/python
# Execution counts, not durations: go1.26's fuzz coordinator can fail a run with
# "context deadline exceeded" at a -fuzztime duration boundary (golang/go#75804).
FUZZTIME ?= 2000000x

.PHONY: build install wheel wheel-test minio run test test-parts check mod lint unit unit-torch smoke fuzz integration integration-suite integration-local integration-remote python python-dcp python-rest python-colossalai fuse venv venv-colossalai bench bench-codec bench-dedup bench-delta venv-bench bench-mount bench-dcp bench-remote stress clean

# Built as the wheel's binary is (static, no cgo, paths trimmed): the suites
# test what ships. Vet, the wheel and the integration suite are built the
# same way (STATIC), after it, so they reuse its compiled packages: with
# Go's defaults each compiled them all again (vet 114 CPU-s from nothing,
# the suite 106; 25 and 20 with them).
STATIC := CGO_ENABLED=0
# The compiler spends a seventh of its CPU collecting garbage at Go's default
# GOGC=100: at 400, ckptfs builds from an empty cache in 93 CPU-s instead of
# 108 (peak 0.5 GB a compile). For the builds and the unit tests: the daemons
# the integration suites start keep the default.
BUILDGC := GOGC=400
build:
	$(STATIC) $(BUILDGC) $(GO) build -trimpath -o bin/ckptfs ./cmd/ckptfs

# The binary, and the helper mount(8) runs for type fuse.ckptfs (mount(8)
# looks for helpers in /sbin only).
PREFIX  ?= /usr/local
SBINDIR ?= /sbin
install: build
	install -D -m 0755 bin/ckptfs $(DESTDIR)$(PREFIX)/bin/ckptfs
	install -d $(DESTDIR)$(SBINDIR)
	ln -sf $(PREFIX)/bin/ckptfs $(DESTDIR)$(SBINDIR)/mount.fuse.ckptfs

# The pip-installable ckptfs: one platform wheel per architecture in dist/,
# each with a static binary (no cgo, so no libc to match: the wheel serves
# glibc and musl systems alike) and the Python package cmd/ckptfs/python/ckptfs.
VERSION      := $(shell cat cmd/ckptfs/VERSION)
WHEEL_ARCHES ?= amd64 arm64
PYTHON3      ?= python3
wheel: build
	@for arch in $(WHEEL_ARCHES); do \
		$(STATIC) $(BUILDGC) GOOS=linux GOARCH=$$arch $(NICE) $(GO) build -trimpath -ldflags='-s -w' -o bin/linux-$$arch/ckptfs ./cmd/ckptfs && \
		$(PYTHON3) cmd/ckptfs/python/build_wheel.py --goarch $$arch --binary bin/linux-$$arch/ckptfs --out dist || exit 1; \
	done

# The wheel as a user gets it: pip installs it into a new venv (in a temp
# folder, removed after), whose tests run with a bare environment and no Go
# on PATH. The test venv's pip installs it (pip --python), which spares the
# new venv a copy of pip (ensurepip: 8 s). The MiniLM round trip also needs
# pytest, torch and transformers: rather than download them again (over
# 1 GB), they come from the test venv through PYTHONPATH, which holds no
# ckptfs; test_wheel.py checks that ckptfs comes from the new venv, and that
# the new venv without PYTHONPATH mounts, saves and reads on its own.
wheel-test: wheel fuse venv
	@tmp=$$(mktemp -d /tmp/ckptfs-wheel-XXXXXX) && trap 'rm -rf $$tmp' EXIT && \
	$(PY) -m venv --without-pip $$tmp/venv && \
	$(PY) -m pip --python $$tmp/venv/bin/python install -q --no-index --disable-pip-version-check \
		dist/ckptfs-$(VERSION)-py3-none-*_$$(uname -m).whl && \
	env -i HOME=$$HOME PATH=$$tmp/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin HF_HUB_OFFLINE=1 \
		PYTHONPATH=$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
		CKPTFS_WHEEL_DIR=$(CURDIR)/dist CKPTFS_REQUIRE_WHEEL=1 \
		$$tmp/venv/bin/python -m pytest -q -x -p no:cacheprovider integration/python/test_wheel.py

# fusermount3 comes with Debian's fuse3; the POSIX tests copy with rsync and
# tar and set xattrs with attr's setfattr.
fuse:
	@for c in fusermount3 rsync tar setfattr; do command -v $$c >/dev/null || missing=1; done; \
		test -z "$$missing" || { apt-get update -qq && apt-get install -y -qq fuse3 rsync tar attr; }

# uv installs the venvs' packages from PyPI: both venvs from nothing in
# about 45 s here, where pip took 12 min, unpacking two torch stacks with
# their CUDA wheels on two cores. It lives in a venv of its own, its
# download cache in ~/.cache/uv, both outside the clone.
UV_VERSION ?= 0.13.9
UVENV      ?= $(HOME)/.cache/ckptfs/uv
UV         := $(UVENV)/bin/uv
$(UV):
	python3 -m venv $(UVENV) && $(UVENV)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

# The venv lives outside the clone and is made only once; packages are
# installed again only when the requirements differ from those it was made
# with (by content, not by time: a new clone's files are all newer than the
# venv). It keeps its own pip, which wheel-test uses.
# uv writes no bytecode, and a test process that finds none compiles what it
# imports (torch, transformers, Trainer, DCP: 18 CPU-s, 7 with it), each
# process again where PYTHONDONTWRITEBYTECODE is set, or several at once on
# a new venv: one import after the install writes it for all (a compileall
# of the venv took 62 CPU-s).
WARM_IMPORTS := import torch, transformers, safetensors, numpy, pytest, torch.distributed.checkpoint; \
	from transformers import AutoModel, AutoModelForSequenceClassification, Trainer
venv: $(UV)
	@cmp -s integration/python/requirements.txt $(VENV)/.requirements || { \
		{ test -x $(PY) || python3 -m venv $(VENV); } && \
		$(UV) pip install -q --python $(PY) -r integration/python/requirements.txt && \
		env -u PYTHONDONTWRITEBYTECODE $(PY) -c '$(WARM_IMPORTS)' && \
		cp integration/python/requirements.txt $(VENV)/.requirements; }

# A real S3-compatible server for the remote tests, built once from the Go
# module proxy into the cache outside the clone. Built without the
# compiler's optimizations and symbols: from nothing that takes 2.8 CPU-min
# where an optimized build took 4.9 (its hashing and erasure coding are
# assembly either way), and the remote tests run as fast against it.
MINIO_VERSION ?= v0.0.0-20260212201848-7aac2a2c5b7c
MINIO         ?= $(HOME)/.cache/ckptfs/bin/minio
minio: $(MINIO)
$(MINIO):
	CGO_ENABLED=0 $(BUILDGC) GOBIN=$(dir $(MINIO)) $(GO) install -gcflags='all=-N -l' -ldflags='-s -w' github.com/minio/minio@$(MINIO_VERSION)

# colossalai pins older torch and transformers than the main venv tests.
venv-colossalai: $(UV) | $(VENVS_IN_TURN)
	@cmp -s integration/python/requirements-colossalai.txt $(CVENV)/.requirements || { \
		{ test -x $(CPY) || python3 -m venv $(CVENV); } && \
		$(UV) pip install -q --python $(CPY) -r integration/python/requirements-colossalai.txt && \
		env -u PYTHONDONTWRITEBYTECODE $(CPY) -c 'import torch, safetensors, pytest, colossalai.checkpoint_io; \
			from transformers import AutoModel' && \
		cp integration/python/requirements-colossalai.txt $(CVENV)/.requirements; }

run: build fuse
	mkdir -p $(MOUNT)
	./bin/ckptfs mount $(MOUNT)
	@echo "ckptfs mounted at $(MOUNT) (store: $${CKPTFS_STORE:-$${XDG_DATA_HOME:-$$HOME/.local/share}/ckptfs})"
	@echo "unmount with: ./bin/ckptfs umount $(MOUNT)"

# make test: everything, from nothing. What is mostly downloading (fuse3,
# the Go modules, the venvs) and the MinIO build start at once, beside the
# daemon's build and the unit tests; the rest start as soon as what they need
# is there (see the README's Tests). From nothing the two cores are busy
# throughout, so order only moves work around: what no suite waits for (vet,
# the wheels, unit-torch) runs niced (NICE). The unit tests are not niced:
# niced, they ran last, after the suites, for 3 min. The main venv is
# installed before the ColossalAI one, whose suite is short. Each part's
# output is printed whole when it ends (-Otarget). Fuzzing is make fuzz's:
# each target's seeds run in make unit.
TEST_JOBS ?= 8
test:
	$(MAKE) -j$(TEST_JOBS) -Otarget test-parts NICE='nice -n 19' VENVS_IN_TURN=venv
test-parts: fuse mod venv venv-colossalai minio lint unit unit-torch integration python python-colossalai wheel-test
# Here unit runs without the venv, which may still be in the making, and
# unit-torch runs what needs it once it is there.
test-parts: UNIT_PYTHON :=

# make check: the inner loop, a few minutes. vet, gofmt, the unit tests
# under -race (go test runs each fuzz target's seed corpus as a test) and
# one short mount: an HF checkpoint copied in, read back as written and
# through @single, after a remount too.
check:
	$(MAKE) -j3 -Otarget lint unit smoke

mod:
	$(GO) mod download

lint: mod build
	$(STATIC) $(BUILDGC) $(NICE) $(GO) vet -trimpath ./...
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt needed"; exit 1; }

# Every package but the integration suite. With the venv made, layout's
# tests also read files today's torch.save writes (CKPTFS_PYTHON).
UNIT_PYTHON ?= $(if $(wildcard $(VENV)/.requirements),$(PY))
# -vet=off: lint vets every package beside it (the subset go test would
# vet costs 27 CPU-s more from nothing).
unit: mod
	CKPTFS_PYTHON=$(UNIT_PYTHON) $(BUILDGC) $(GO) test -race -vet=off -count=1 $$($(GO) list ./... | grep -v /integration$$)

# The unit tests that need the venv's torch, for make test.
unit-torch: mod venv
	CKPTFS_PYTHON=$(PY) $(BUILDGC) $(NICE) $(GO) test -race -vet=off -count=1 -run 'FreshSave' ./layout/...

# Every parser has a fuzz target (func FuzzX in a _test.go file); each runs
# for FUZZTIME inputs (its seeds also run as unit tests).
fuzz: mod
	@for d in $$(grep -rl --include='*_test.go' '^func Fuzz' cache layout fs cmd | xargs -n1 dirname | sort -u); do \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$d/*_test.go); do \
			echo "$$t ./$$d/"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) ./$$d/ || exit 1; done; done

# The suite's own code is built without the race detector: the daemons it
# mounts are what it checks (see integration/helpers_test.go), and the data
# it generates costs 8x more under -race. make stress builds it with it.
# It is compiled once and run twice on make build's daemon: the tests that
# need MinIO (TestRemote..., which also run the venv's Python) once it is
# built, the others before, without waiting for it.
INTEGRATION := ../bin/integration.test -test.parallel 4 -test.timeout 30m
integration: integration-local integration-remote
integration-suite: mod build
	$(STATIC) $(BUILDGC) $(GO) test -trimpath -c -o bin/integration.test ./integration/
integration-local: fuse build integration-suite
	cd integration && CKPTFS_BIN=$(CURDIR)/bin/ckptfs $(INTEGRATION) -test.skip '^TestRemote'
integration-remote: fuse build integration-suite minio venv
	cd integration && CKPTFS_BIN=$(CURDIR)/bin/ckptfs CKPTFS_MINIO=$(MINIO) CKPTFS_REQUIRE_MINIO=1 CKPTFS_PYTHON=$(PY) \
		$(INTEGRATION) -test.run '^TestRemote'

# smoke and stress build no BUILDGC: go test hands its environment to the
# daemons the suite starts.
smoke: fuse mod
	$(STATIC) $(GO) test -trimpath -count=1 -run '^TestCopyRoundTripAndRemount$$' ./integration/

# Long variants of the randomized tests, and the whole integration suite
# on the daemon built with the race detector (make test builds none: its
# unit tests run under -race).
stress: fuse minio venv
	CKPTFS_RACE_DAEMON=1 CKPTFS_STRESS_STEPS=50000 CKPTFS_RACE_STEPS=10000 CKPTFS_CRASH_KILLS=60 \
	CKPTFS_MINIO=$(MINIO) CKPTFS_REQUIRE_MINIO=1 CKPTFS_PYTHON=$(PY) \
		$(GO) test -race -count=1 -timeout 120m -v ./integration/

# The DCP tests (4 ranks saving 6 checkpoints, then every view of them) run
# beside the rest, in a pytest and a mount of their own: make test's longest
# serial part in two.
PYTEST := CKPTFS_BIN=$(CURDIR)/bin/ckptfs HF_HUB_OFFLINE=1 $(PY) -m pytest -q -x -p no:cacheprovider --durations=8
python: python-dcp python-rest
python-dcp: build fuse venv
	$(PYTEST) integration/python/test_dcp.py
python-rest: build fuse venv
	$(PYTEST) --ignore=integration/python/test_dcp.py integration/python

# The ColossalAI and .bin tests again in the colossalai venv, apart, so that
# the main suite need not wait for a second torch to install.
python-colossalai: build fuse venv-colossalai
	CKPTFS_BIN=$(CURDIR)/bin/ckptfs HF_HUB_OFFLINE=1 CKPTFS_REQUIRE_COLOSSALAI=1 CKPTFS_REQUIRE_BIN_SAVE=1 \
		$(CPY) -m pytest -q -x -p no:cacheprovider -W ignore::FutureWarning \
		integration/python/test_colossalai.py integration/python/test_torch_bin.py

# Benchmarks print side-by-side tables and write them to integration/bench/out/.
bench: bench-mount bench-dcp bench-codec bench-dedup bench-delta bench-remote bench-scale

bench-codec: venv
	$(PY) -m pip install -q -r integration/bench/requirements.txt
	$(PY) integration/bench/codec_bench.py

bench-mount: build fuse venv
	CKPTFS_BIN=$(CURDIR)/bin/ckptfs HF_HUB_OFFLINE=1 $(PY) integration/bench/mount_bench.py

bench-dcp: build fuse venv
	CKPTFS_BIN=$(CURDIR)/bin/ckptfs $(PY) integration/bench/dcp_bench.py

bench-dedup: build fuse venv-bench
	CKPTFS_BIN=$(CURDIR)/bin/ckptfs HF_HUB_OFFLINE=1 $(BPY) integration/bench/dedup_bench.py

# The codecs bench-delta compares with (ZipNN, z4ai) go into a venv of their
# own, which sees the test venv's torch and transformers through a .pth file:
# no second download, and the test venv keeps only what its requirements say.
BVENV ?= $(HOME)/.cache/ckptfs/venv-bench
BPY   := $(BVENV)/bin/python
venv-bench: $(BVENV)/.requirements
$(BVENV)/.requirements: integration/bench/requirements-delta.txt | venv
	@test -x $(BPY) || $(PY) -m venv $(BVENV)
	$(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))' \
		> $$($(BPY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/ckptfs-venv.pth
	$(BPY) -m pip install -q -r integration/bench/requirements-delta.txt
	cp integration/bench/requirements-delta.txt $@

bench-delta: venv-bench
	HF_HUB_OFFLINE=1 $(BPY) integration/bench/delta_bench.py

# A store of 1,000,000 one-chunk files (about 25 minutes to build; keep it
# with CKPTFS_SCALE_KEEP=DIR): mount, ls, gc, and a create and an rm a second.
bench-scale: build fuse
	CKPTFS_BIN=$(CURDIR)/bin/ckptfs python3 integration/bench/scale_bench.py

bench-remote: fuse minio
	CKPTFS_MINIO=$(MINIO) $(GO) test -count=1 -timeout 60m -run '^$$' -bench '^BenchmarkRemote$$' -benchtime=1x ./integration/

clean:
	rm -rf bin dist
	-fusermount3 -u -z $(MOUNT) 2>/dev/null; rmdir $(MOUNT) 2>/dev/null || true
