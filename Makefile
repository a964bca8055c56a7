# The task runner: build, test, bench, lint, demo. See README.md.
#
# Everything it installs goes into a project environment, $(VENV) (.venv unless
# named otherwise: make test VENV=/path/to/env), made from $(BASE_PYTHON) on first
# use, and into target/: the Python found first on PATH and the system's packages
# are never changed. `make clean` removes both.
BASE_PYTHON ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# Every recipe's PATH starts with the project environment's bin folder (maturin
# finds zig there, as `python3 -m ziglang`, and nowhere else on a new machine), then
# Debian's Prometheus (with promtool), Pushgateway and VictoriaMetrics, unpacked
# into target/ by tools/debian.py; rustup's bin folder ($(CARGO_HOME)/bin, or
# ~/.cargo/bin) comes last, for shells whose PATH lacks cargo.
CARGO_BIN := $(if $(CARGO_HOME),$(CARGO_HOME),$(HOME)/.cargo)/bin
export PATH := $(abspath $(VENV))/bin:$(CURDIR)/target/debian/$(shell . /etc/os-release && echo $$VERSION_CODENAME)/root/usr/bin:$(PATH):$(CARGO_BIN)

.PHONY: build deps test test-suite wheel test-wheels bench bench-load bench-table instructions lint targets nightly miri loom golang-native fuzz demo ops-image clean

## the project environment, with a current pip
$(PYTHON):
	$(BASE_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip

## build: compile the Rust extension (release profile) and install the package in editable mode
build: $(PYTHON)
	$(PYTHON) -m pip install -e .

## deps: the package and its test dependencies (the `test` group, Ray among them) in the project
## environment, and Debian's Prometheus (with promtool), Pushgateway and VictoriaMetrics
## unpacked into target/ (downloaded once, with apt's own tools and a private state)
deps: $(PYTHON)
	$(PYTHON) -m pip install -e . --group test
	$(PYTHON) tools/debian.py servers

## test: everything CI runs: the suite, the lints, the hot path's instruction
## budgets, the core's tests under Miri, the loom models, native buckets against
## client_golang, the fuzz targets, and the wheels on every Python (built
## meanwhile, on the other core: a release build is one core's work)
test: deps
	$(PYTHON) tools/test_wheels.py --build-only > target/wheels-build.log 2>&1 & builder=$$!; \
	$(MAKE) --no-print-directory test-suite lint instructions miri loom golang-native fuzz; suite=$$?; \
	wait $$builder; built=$$?; cat target/wheels-build.log; \
	test $$suite -eq 0 && test $$built -eq 0
	$(PYTHON) tools/test_wheels.py --prebuilt

## test-suite: Rust unit tests, then pytest over tests/ and benches/ (benchmarks not timed)
test-suite: deps
	cargo test
	$(PYTHON) -m pytest tests benches --benchmark-disable -q

## wheel: a manylinux2014 release wheel for $(PYTHON), and the tag auditwheel finds for it
wheel: deps
	rm -rf target/wheels/release
	$(PYTHON) -m maturin build --release --zig --compatibility manylinux2014 \
		--out target/wheels/release -i $(PYTHON)
	$(PYTHON) -m auditwheel show target/wheels/release/*.whl

## test-wheels: manylinux2014 wheels for CPython 3.9 to 3.15, each tested in a fresh
## environment (3.14 and 3.15 from Debian sid), and the cp39 one on Debian bullseye's glibc 2.31
test-wheels: deps
	$(PYTHON) tools/test_wheels.py

## bench: the benchmark suite against the reference and the do-nothing floor
## (numpy's BLAS threads are kept from spinning on the second core while timing),
## then serving under load while scraped (bench-load)
bench: deps
	OPENBLAS_NUM_THREADS=1 $(PYTHON) -m pytest benches --benchmark-only --benchmark-sort=mean \
		--benchmark-columns=min,median,mean,stddev,rounds -q
	$(PYTHON) benches/load.py

## bench-load: a uvicorn worker at 500 requests/s scraped every 1 s and 100 ms, at
## 2,500 and 25,000 label sets, ours against the reference (a few minutes)
bench-load: deps
	$(PYTHON) benches/load.py

## bench-table: a short comparison table with the reference and the floor (under a minute)
bench-table: deps
	OPENBLAS_NUM_THREADS=1 $(PYTHON) benches/report.py

## instructions: instructions per record_request (seed-only; four models in turn),
## record_cache_hit and record_batch row, counted by callgrind (repeatable whatever
## the load), each checked against its budget; `benches/instructions.py --python
## OTHER` measures another build
instructions: deps
	$(PYTHON) benches/instructions.py --check

## lint: rustfmt, clippy (pedantic, warnings are errors) here and for aarch64 Linux
## and macOS (PORTABLE_TARGETS, checked, not linked), the build with the declared
## rust-version's toolchain, rustdoc (no broken or
## private links), ruff, mypy --strict,
## stubtest of the stub against the built module, and the module graph (no cycles,
## the core's layers in order: tools/module_graph.py)
lint: deps targets
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	for target in $(PORTABLE_TARGETS); do \
		PYO3_CROSS_PYTHON_VERSION=3.9 cargo clippy --all-targets --features python \
			--target $$target -- -D warnings || exit 1; \
	done
	cargo +$(RUST_VERSION) check --features python --lib --target-dir target/rust-version
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --document-private-items --features python
	RUSTFLAGS="--cfg loom" cargo clippy --all-targets --target-dir target/loom-lint -- -D warnings
	cd fuzz && cargo fmt --check && \
		cargo clippy --all-targets --target-dir ../target/fuzz-lint -- -D warnings
	$(PYTHON) -m ruff check python tests benches examples tools
	$(PYTHON) -m ruff format --check python tests benches examples tools
	$(PYTHON) -m mypy --strict python/gateway_metrics tools
	$(PYTHON) -m mypy.stubtest gateway_metrics._core --allowlist tools/stubtest-allowlist.txt
	$(PYTHON) tools/module_graph.py

## targets: the standard libraries of the platforms whose code paths `make lint`
## compiles besides this one's: aarch64 Linux (the portable twins of the SSE2
## routines) and macOS on both processors (where the source distribution must
## build: no posix_fallocate there), installed by rustup (at once when they are there)
PORTABLE_TARGETS := aarch64-unknown-linux-gnu aarch64-apple-darwin x86_64-apple-darwin
## and the oldest toolchain the crate declares it builds with (Cargo.toml's rust-version)
RUST_VERSION := $(shell sed -n 's/^rust-version = "\(.*\)"$$/\1/p' Cargo.toml)
targets:
	rustup target add $(PORTABLE_TARGETS)
	rustup toolchain install $(RUST_VERSION) --profile minimal --no-self-update

## nightly: the pinned nightly toolchain Miri and the fuzz targets build with,
## installed by rustup (at once when it is there)
NIGHTLY ?= nightly-2026-05-20
nightly:
	rustup toolchain install $(NIGHTLY) --profile minimal --component miri,rust-src \
		--no-self-update

## miri: the tests of the cells (atomics, arena, histograms, exemplar slots) and
## of the store (label maps, series, recording) under Miri, which stops at
## undefined behaviour the unsafe code might have (a pinned nightly with Miri,
## installed by rustup on first use; the clock readable, for created timestamps;
## floats made deterministic, as the native histograms' bucket bounds are
## compared exactly)
miri: nightly
	MIRIFLAGS="-Zmiri-deterministic-floats -Zmiri-disable-isolation" \
		cargo +$(NIGHTLY) miri test --lib --target-dir target/miri -- cells:: store:: formats::arrow::

## loom: models of the lock-free parts (the label map's publication and growth, the
## exemplar slot's sequence lock) run by loom through every interleaving of their
## threads, up to a bound of preemptions (about 30 s, most of it compiling)
loom:
	RUSTFLAGS="--cfg loom" cargo test --release --lib --target-dir target/loom \
		-- loom_ --test-threads 1

## golang-native: native-histogram bucket indexes against client_golang's, for values
## on and beside every bucket bound at every schema (Debian's Go and client_golang
## source, unpacked into target/; tests/golang/native_keys.go asks client_golang)
golang-native: $(PYTHON)
	root=$$($(PYTHON) tools/debian.py golang) && \
	GOROOT=$$root/usr/lib/go-1.27 GOPATH=$$root/usr/share/gocode GO111MODULE=off \
		GOTOOLCHAIN=local GOFLAGS= GOCACHE=$(CURDIR)/target/go-cache \
		$$root/usr/lib/go-1.27/bin/go run tests/golang/native_keys.go > target/golang-native-keys.txt
	GATEWAY_METRICS_GOLANG_KEYS=$(CURDIR)/target/golang-native-keys.txt \
		cargo test --lib native_buckets -- --include-ignored

## fuzz: libFuzzer over the parsers of untrusted bytes (snapshots merged, our and
## prometheus_client's multi-process files read, a directory's admitted label sets read,
## the gzip body inflated by zlib-rs, Arrow arrays of any contents read),
## each for FUZZ_SECONDS (30; longer: make fuzz FUZZ_SECONDS=3600), with
## AddressSanitizer, starting from valid inputs (fuzz/src/seeds.rs) and the corpus
## earlier runs left in target/fuzz/corpus
FUZZ_SECONDS ?= 30
FUZZ_TARGETS = snapshot_merge own_file_read prometheus_file_read admission_read gzip_round_trip arrow_read
FUZZ_BIN = target/fuzz-build/x86_64-unknown-linux-gnu/release
FUZZ_RUSTFLAGS = -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
	-Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares \
	--cfg fuzzing -Cdebug-assertions -Coverflow-checks -Zsanitizer=address
fuzz: nightly
	cd fuzz && RUSTFLAGS="$(FUZZ_RUSTFLAGS)" cargo +$(NIGHTLY) build --release --bins \
		--target x86_64-unknown-linux-gnu --target-dir ../target/fuzz-build
	rm -rf target/fuzz/seeds && $(FUZZ_BIN)/seeds target/fuzz/seeds
	for target in $(FUZZ_TARGETS); do \
		mkdir -p target/fuzz/corpus/$$target && \
		$(FUZZ_BIN)/$$target -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
			-rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 \
			-artifact_prefix=target/fuzz/$$target- \
			target/fuzz/corpus/$$target target/fuzz/seeds/$$target \
			2> target/fuzz/$$target.log \
		|| { tail -n 40 target/fuzz/$$target.log; exit 1; }; \
		grep -h "^Done\|peak_rss" target/fuzz/$$target.log | tr '\n' ' '; echo "($$target)"; \
	done

## demo: simulated gateway traffic recorded, served, scraped and summarised
demo: build
	$(PYTHON) -m pip install -q 'rich>=13'
	$(PYTHON) -m gateway_metrics demo

## ops-image: docs/ops-kit.md's picture of the dashboard, from a real Prometheus scraping
## a minute of the demo's traffic (see tests/test_ops.py)
ops-image: deps
	GATEWAY_METRICS_OPS_IMAGE=$(CURDIR)/docs/ops-dashboard.png GATEWAY_METRICS_OPS_TRAFFIC_S=60 \
		$(PYTHON) -m pytest tests/test_ops.py -k real_prometheus -q

## clean: the project environment, build products and fetched interpreters
clean:
	rm -rf $(VENV) target
