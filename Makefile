# The task runner: build, test, bench, lint, demo. See README.md.
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends

.PHONY: build deps test bench lint demo ops-image

## build: compile the Rust extension (release profile) and install the package in editable mode
build:
	$(PYTHON) -m pip install -e .

## deps: the package with its test dependencies (Ray among them), and Debian's Prometheus
## (with promtool), Pushgateway and VictoriaMetrics when missing
deps:
	$(PYTHON) -m pip install -e '.[test]'
	@missing=""; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v prometheus-pushgateway >/dev/null 2>&1 || missing="$$missing prometheus-pushgateway"; \
	command -v victoria-metrics >/dev/null 2>&1 || missing="$$missing victoria-metrics"; \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update && $(APT_INSTALL) $$missing; fi

## test: everything CI runs: Rust unit tests, then pytest over tests/ and benches/ (benchmarks not timed)
test: deps
	cargo test
	$(PYTHON) -m pytest tests benches --benchmark-disable -q

## bench: the benchmark suite against the reference and the do-nothing floor
## (numpy's BLAS threads are kept from spinning on the second core while timing)
bench: deps
	OPENBLAS_NUM_THREADS=1 $(PYTHON) -m pytest benches --benchmark-only --benchmark-sort=mean \
		--benchmark-columns=min,median,mean,stddev,rounds -q

## lint: rustfmt, clippy (warnings are errors) and ruff
lint: deps
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	$(PYTHON) -m ruff check python tests benches examples
	$(PYTHON) -m ruff format --check python tests benches examples

## demo: simulated gateway traffic recorded, served, scraped and summarised
demo: build
	$(PYTHON) -m pip install 'rich>=13'
	$(PYTHON) -m gateway_metrics demo

## ops-image: the README's picture of the dashboard, from a real Prometheus scraping
## a minute of the demo's traffic (see tests/test_ops.py)
ops-image: deps
	GATEWAY_METRICS_OPS_IMAGE=$(CURDIR)/docs/ops-dashboard.png GATEWAY_METRICS_OPS_TRAFFIC_S=60 \
		$(PYTHON) -m pytest tests/test_ops.py -k real_prometheus -q
