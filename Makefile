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

.PHONY: build install wheel wheel-test minio venvs run test unit fuzz integration python fuse venv venv-colossalai bench bench-codec bench-dedup bench-delta venv-bench bench-mount bench-dcp bench-remote stress clean

build:
	$(GO) build -o bin/ckptfs ./cmd/ckptfs

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
wheel:
	@for arch in $(WHEEL_ARCHES); do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags='-s -w' -o bin/linux-$$arch/ckptfs ./cmd/ckptfs && \
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

# The venv lives outside the clone and is made only once; pip runs again only
# when the requirements change.
venv: $(VENV)/.requirements
$(VENV)/.requirements: integration/python/requirements.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r integration/python/requirements.txt
	cp integration/python/requirements.txt $@

# A real S3-compatible server for the remote tests, built once from the Go
# module proxy into the cache outside the clone.
MINIO_VERSION ?= v0.0.0-20260212201848-7aac2a2c5b7c
MINIO         ?= $(HOME)/.cache/ckptfs/bin/minio
minio: $(MINIO)
$(MINIO):
	GOBIN=$(dir $(MINIO)) $(GO) install github.com/minio/minio@$(MINIO_VERSION)

venvs:
	$(MAKE) venv
	$(MAKE) venv-colossalai

# colossalai pins older torch and transformers than the main venv tests.
venv-colossalai: $(CVENV)/.requirements
$(CVENV)/.requirements: integration/python/requirements-colossalai.txt
	@test -x $(CPY) || python3 -m venv $(CVENV)
	$(CPY) -m pip install -q --upgrade pip
	$(CPY) -m pip install -q -r integration/python/requirements-colossalai.txt
	cp integration/python/requirements-colossalai.txt $@

run: build fuse
	mkdir -p $(MOUNT)
	./bin/ckptfs mount $(MOUNT)
	@echo "ckptfs mounted at $(MOUNT) (store: $${CKPTFS_STORE:-$${XDG_DATA_HOME:-$$HOME/.local/share}/ckptfs})"
	@echo "unmount with: ./bin/ckptfs umount $(MOUNT)"

# The venvs (mostly downloads) and MinIO (mostly compiling) are made side by
# side on a fresh machine; each venv on its own, so pip never races pip.
test: fuse
	$(MAKE) -j2 venvs minio
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt needed"; exit 1; }
	$(MAKE) unit
	$(MAKE) fuzz FUZZTIME=30000x
	$(MAKE) integration
	$(MAKE) python
	$(MAKE) wheel-test

# With the venv made, layout's tests also read files today's torch.save writes.
unit:
	CKPTFS_PYTHON=$$(test -x $(PY) && echo $(PY)) $(GO) test -race -count=1 ./layout/... ./cache/... ./fs/ ./cmd/...

# Every parser has a fuzz target; make test runs each briefly.
fuzz:
	@for t in FuzzParseFile:layout/safetensors FuzzParseIndex:layout/safetensors FuzzParseTorch:layout/torch FuzzParse:layout/pickle FuzzParsePickle:layout/torch FuzzReadRecords:layout/torch FuzzParseDCPMetadata:layout/dcp FuzzShardedSafetensors:layout/view; do \
		$(GO) test -run '^$$' -fuzz "^$${t%%:*}$$" -fuzztime $(FUZZTIME) ./$${t#*:}/ || exit 1; done
	@for t in FuzzParseManifest:cache/remote FuzzChunkRoundTrip:cache/chunk FuzzDeltaRoundTrip:cache/chunk FuzzDeltaDecode:cache/chunk \
			FuzzSplitZip:cache/ingest FuzzDecodeInode:cache/meta; do \
		$(GO) test -run '^$$' -fuzz "^$${t%%:*}$$" -fuzztime $(FUZZTIME) ./$${t#*:}/ || exit 1; done

integration: fuse minio venv
	CKPTFS_MINIO=$(MINIO) CKPTFS_REQUIRE_MINIO=1 CKPTFS_PYTHON=$(PY) $(GO) test -race -count=1 -parallel 4 -timeout 30m ./integration/

# Long variants of the randomized tests.
stress: fuse
	CKPTFS_STRESS_STEPS=50000 CKPTFS_RACE_STEPS=10000 CKPTFS_CRASH_KILLS=60 $(GO) test -race -count=1 -timeout 90m \
		-run 'TestRandomOps|TestConcurrent|TestCrash' -v ./integration/

python: build fuse venv venv-colossalai
	CKPTFS_BIN=$(CURDIR)/bin/ckptfs HF_HUB_OFFLINE=1 $(PY) -m pytest -q -x -p no:cacheprovider integration/python
	CKPTFS_BIN=$(CURDIR)/bin/ckptfs HF_HUB_OFFLINE=1 CKPTFS_REQUIRE_COLOSSALAI=1 CKPTFS_REQUIRE_BIN_SAVE=1 \
		$(CPY) -m pytest -q -x -p no:cacheprovider -W ignore::FutureWarning \
		integration/python/test_colossalai.py integration/python/test_torch_bin.py

# Benchmarks print side-by-side tables and write them to integration/bench/out/.
bench: bench-mount bench-dcp bench-codec bench-dedup bench-delta bench-remote

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

bench-remote: fuse minio
	CKPTFS_BENCH_REMOTE=1 CKPTFS_MINIO=$(MINIO) $(GO) test -count=1 -timeout 60m -run '^TestBenchRemote$$' -v ./integration/

clean:
	rm -rf bin dist
	-fusermount3 -u -z $(MOUNT) 2>/dev/null; rmdir $(MOUNT) 2>/dev/null || true
