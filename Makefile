# Two commands on a fresh machine:  make demo  |  make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: lint venv demo test test-unit test-nats29 test-notebooks notebooks binder-smoke check-compose docker-ci bench bench-peers clean browser-test reliability

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: venv            ## the main job, end to end, on an embedded nats-server
	$(PY) examples/demo.py

lint: venv            ## ruff on the package, tests and benchmarks (errors, pyflakes, warnings, bugbear; formatted as ruff format does), then mypy ([tool.mypy] in pyproject.toml)
	$(VENV)/bin/ruff check naq_nb tests bench
	$(VENV)/bin/ruff format --check naq_nb
	$(PY) -m mypy

# pytest-xdist: most tests wait on servers and timeouts, not the CPU, so more workers than the 2 cores pay.
# Each worker is its own pytest session with its own nats-server; loadgroup keeps an xdist_group on one worker.
TEST_WORKERS ?= 3
test: venv            ## the whole suite (tests/unit, tests/integration), against real nats-server processes, in TEST_WORKERS processes
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup

test-unit: venv       ## the tests that need no server (seconds)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

test-nats29: venv     ## engine, scheduler, futures and sweeps against Debian's nats-server 2.9 (apt-get install nats-server)
	NAQ_NATS_SERVER_BIN=$${NATS29:-/usr/sbin/nats-server} $(PY) -m pytest -q -p no:cacheprovider \
	    $(addprefix tests/integration/,test_engine.py test_reliability.py test_bad_input.py \
	    test_sigkill.py test_scheduler.py test_scheduler_ha.py test_futures.py test_sweep.py test_blobs.py test_kv_reads.py test_enqueue_many.py test_one_pass.py test_inbound.py test_failed_lookup.py test_failed_requeue.py)

test-notebooks: venv  ## the notebooks under nbval, against their committed outputs (nq.local() stores in a fresh folder)
	NAQ_LOCAL_DIR=$$(mktemp -d) $(PY) -m pytest -q -p no:cacheprovider --nbval --nbval-current-env --nbval-cell-timeout 300 \
	    --nbval-sanitize-with notebooks/nbval-sanitize.cfg notebooks/

notebooks: venv       ## rewrite and re-execute notebooks/*.ipynb from notebooks/build.py
	$(PY) notebooks/build.py

binder-smoke:         ## imitate Binder without Docker: fresh venv from binder/, run every notebook via binder/start
	bash binder/smoke.sh

check-compose:        ## validate docker/docker-compose.yml (Debian's docker-compose v1; no engine needed)
	docker-compose -f docker/docker-compose.yml config -q && echo "docker/docker-compose.yml: valid"

reliability: venv     ## fault scenarios (worker/server/node/leader SIGKILL, poison jobs) -> bench/RELIABILITY.md
	$(PY) bench/reliability.py --quick

docker-ci: venv       ## the compose stack for real, offline (starts dockerd if needed; see docker/ci.sh)
	PY=$(PY) bash docker/ci.sh

bench: venv bench-peers  ## throughput, latency, scheduler and notebook figures, peers (not run in CI)
	$(PY) bench/throughput.py
	$(PY) bench/scheduler_bench.py
	$(PY) bench/notebook_bench.py

# Quick look: make bench-peers PEERS_ARGS="--jobs 500 --runs 1"; peers' venvs go to bench/.venvs (made on first use).
PEERS_ARGS ?=
bench-peers: venv     ## naq_nb beside huey, dramatiq, taskiq, saq, arq, rq, celery + raw nats-py -> bench/PEERS.md, peers.png
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
	$(PY) bench/peers.py $(PEERS_ARGS)

# Notebooks checked in JupyterLab as NAME.ipynb:TEXT (TEXT must be shown after Run All); those absent are left
# Notebooks checked in JupyterLab as NAME.ipynb:TEXT (TEXT must be shown after Run All, and again after saving
# through JupyterLab and reopening without running: no widget errors); those absent are left
# out, and with none a generated scratch notebook (job + dashboard from nq.local()) is checked instead.
BROWSER_NOTEBOOKS ?= $(foreach n,01-quickstart 02-parameter-sweep,$(if $(wildcard notebooks/$(n).ipynb),$(n).ipynb:succeeded)) \
    $(if $(wildcard notebooks/03-scheduling.ipynb),03-scheduling.ipynb:stopped)

$(VENV)/.browser-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[test,browser]'
	touch $@

browser-test: $(VENV)/.browser-installed  ## real browser (Debian's Chromium): naq dashboard page + notebooks in JupyterLab
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }  # never `playwright install`
	$(PY) browser/run_browser_tests.py --out artifacts/browser $(if $(strip $(BROWSER_NOTEBOOKS)),--notebooks $(BROWSER_NOTEBOOKS))

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
