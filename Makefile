# One interface for developers and CI: `make run`, `make test`, `make lint`
# (`make test-fast` while editing: everything but the end-to-end and slow suites).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The benchmarks' peers (Celery) are an optional extra, installed on first `make bench`
# (or `make test`, whose slow suite runs the burst harness).
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: run test test-fast test-chaos lint bench bench-full chaos clean chromium rabbitmq

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/notifier dev

# The bench extra too: tests/bench/ runs the burst harness with its Celery peer.
# Everything but the chaos experiments (`chaos_long`: about 2.5 minutes in their quick size,
# which with the cluster suites put the whole past its 10 minutes), which `make test-chaos`
# runs, and `make chaos` at full size.
test: $(STAMP) $(BENCH_STAMP) chromium rabbitmq
	$(BIN)/python -m pytest -q --durations=15 -m "not chaos_long"

test-chaos: $(STAMP)
	$(BIN)/python -m pytest -q -m chaos_long

test-fast: $(STAMP) chromium
	$(BIN)/python -m pytest -q -m "not e2e and not slow"

lint: $(STAMP)
	$(BIN)/ruff check notifier tests bench chaos
	$(BIN)/mypy notifier chaos

# tests/browser/ drives the distribution's headless Chromium (Playwright's own browser
# downloads are never used): installed here when missing, as root or through sudo. When it
# cannot be, one line says so and the browser tests fail with the same advice.
chromium:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" -eq 0 ]; then SUDO=; \
		elif command -v sudo >/dev/null; then SUDO=sudo; \
		else SUDO=false; fi; \
		$$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; \
	} || echo "make: could not install Chromium: run 'apt-get install chromium chromium-driver' as root; the browser tests (tests/browser/) fail without it" >&2

# tests/end_to_end/test_rabbitmq_end_to_end.py runs the service on RabbitMQ: a private
# rabbitmq-server of the distribution's package, started by the test on free loopback ports
# with an epmd of its own (tests/rabbitmq.py), so a service already running does not
# matter. Installed here when missing, as root or through sudo; the package's own service
# (on the default port) is stopped and disabled: only the tests' own runs are wanted. When it
# cannot be installed, one line says so and those tests fail with the same advice.
rabbitmq:
	@command -v rabbitmq-server >/dev/null || [ -x /usr/sbin/rabbitmq-server ] || { \
		if [ "$$(id -u)" -eq 0 ]; then SUDO=; \
		elif command -v sudo >/dev/null; then SUDO=sudo; \
		else SUDO=false; fi; \
		$$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server \
		&& { $$SUDO service rabbitmq-server stop; $$SUDO update-rc.d rabbitmq-server disable; \
		     true; } >/dev/null 2>&1; \
	} || echo "make: could not install RabbitMQ: run 'apt-get install rabbitmq-server' as root; the RabbitMQ tests (tests/end_to_end/test_rabbitmq_end_to_end.py) fail without it" >&2

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Every benchmark in its quick mode (about 2 minutes on an idle 2-core machine); tables on
# stdout, results in var/bench/*.json. `make bench-full` is the documented full run, and the
# only one with the cluster burst (bench/cluster_burst.py: one Redis against a 3-master cluster).
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick

bench-full: $(BENCH_STAMP)
	$(BIN)/python -m bench

# The chaos experiments at full size (about 6 minutes on a 2-core machine): a table on stdout,
# results in var/chaos/chaos.json; exits 1 on a loss or a duplicate outside the documented
# windows. `make test-chaos` runs them in their quick size (tests/chaos/test_chaos.py).
chaos: $(STAMP)
	$(BIN)/python -m chaos

# Stop the embedded Redis first: deleting var/ under a live server leaves it running on
# deleted files (and the next `make run` starting a second one).
clean:
	@if [ -S var/redis/redis.sock ] && [ -x $(BIN)/python ]; then \
		$(BIN)/python -m notifier.ledger.embedded_redis stop var; fi
	rm -rf $(VENV) var .pytest_cache
