# The two promises of the README: `make run` starts the service, `make test` passes the tests.
# Both create the virtual environment on first use and reinstall only when pyproject.toml changes. `make run`
# installs what running needs (the API, the trainer and sweeps: the `trainer` extra); `make test` and the
# developer targets add the `test` extra (Playwright, schemathesis, mypy, ruff, TensorBoard, pytest...).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYPROJECT_HASH := $(shell sha1sum pyproject.toml | cut -c1-12)
RUN_STAMP := $(VENV)/.installed-run-$(PYPROJECT_HASH)
TEST_STAMP := $(VENV)/.installed-test-$(PYPROJECT_HASH)

.PHONY: run test test-readme test-docker lint typecheck unit bench clean venv

venv: $(TEST_STAMP)

$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[trainer]'
	rm -f $(VENV)/.installed-run-* && touch $@

# The test extra includes the trainer extra, so a test install also satisfies `make run`.
$(TEST_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-test-* $(VENV)/.installed-run-* && touch $@ $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/python -m app

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(TEST_STAMP)
	$(BIN)/mypy app trainer models store ddpg_client episodes

# Three pytest processes: each test module goes to one runner whole (its tests share its server or cluster), the
# longest first (tests/scheduling.py); the 20 slowest tests are listed at the end. Three, not two, on a 2-core
# machine: the server, worker and cluster tests wait as much as they compute, and a third runner fills those waits
# (measured on a quiet machine: 5 min 2 s to 5 min 16 s in three runs with three, 5 min 52 s with two, 5 min 1 s
# with four, which used more CPU for it). The type check runs beside them and its result is printed at the end:
# `make test` fails if either fails. The project's bytecode is compiled first: where PYTHONDONTWRITEBYTECODE is set,
# each of the ~150 server, worker and CLI processes the tests start would otherwise compile its sources again
# (0.2 CPU s for the API). For the same reason the tests run with bytecode writing on: pytest then caches the
# test modules it rewrites for its assertions, which every runner otherwise redoes at collection (11.5 against
# 7.1 CPU s to collect the suite once). The server, worker and CLI processes the tests start are forked from a
# Python that has imported their libraries once (tests/processes.py; PREFORK=0 starts them the usual way).
PYTEST_WORKERS ?= 3

test: lint
	@$(BIN)/python -m compileall -q app trainer models store ddpg_client episodes
	@echo "mypy runs beside the tests (its result is printed at the end)"; \
	{ $(BIN)/mypy app trainer models store ddpg_client episodes > $(VENV)/mypy.log 2>&1; echo $$? > $(VENV)/mypy.status; } & \
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --durations=20; tests=$$?; wait; \
	echo "mypy: $$(tail -n 1 $(VENV)/mypy.log)"; \
	if [ "$$(cat $(VENV)/mypy.status)" != 0 ]; then cat $(VENV)/mypy.log; exit 1; fi; exit $$tests

# The README's tour as written (tests/readme/run_readme.py): starts the service as `make run` does, on a fresh
# DATA_DIR and a free port, and runs the README's bash and python blocks in order (then docs/TOUR.md's and
# docs/API.md's), the slow ones (a CLI training run, a sweep on a local Ray) included and the Docker one skipped; the
# first block that fails stops it with its output. Needs curl and jq. 2.5 minutes on a 2-core machine at load 5, 7 at
# load 13 (the sweep block is 25 to 110 s of it); not part of `make test`.
test-readme: $(RUN_STAMP)
	$(BIN)/python -m tests.readme.run_readme

# docker-compose for real (tests/stack): builds both images, runs the compose file on a Docker engine and checks
# the service through its published port. Starts a private dockerd (root; installs Debian's docker.io) when no
# engine answers. 4 to 6 minutes; not part of `make test`. Figures at the end and in test-artifacts/.
test-docker: $(TEST_STAMP)
	$(BIN)/python -m pytest tests/stack -m docker -p no:xdist -o log_cli=true --log-cli-level=INFO --durations=10 \
		--log-cli-format='%(asctime)s %(name)s: %(message)s' --log-cli-date-format=%H:%M:%S

bench: $(TEST_STAMP)
	$(BIN)/python bench/train_bench.py
	$(BIN)/python bench/forward_bench.py
	$(BIN)/python bench/serve_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
