# `make demo` and `make test` each create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench readme lint clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the CPU build of torch first: a bare range would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet "torch==2.13.0" || $(BIN)/pip install --quiet "torch>=2.2,<=2.14.1"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pyro-vae train --out runs/demo --overwrite
	@echo "figures: runs/demo/*.png  metrics: runs/demo/metrics.json"
	@$(BIN)/python -c "import json; m = json.load(open('runs/demo/metrics.json')); \
	print(f\"test ELBO {m['test_elbo']:.2f} nats, test log-likelihood {m['test_log_likelihood']:.2f} nats (K={m['num_particles']})\")"

test: $(STAMP)
	$(BIN)/lint-imports  # the layers contract in pyproject.toml
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

# numpyro and jax (CPU) for the side-by-side benchmark: the optional bench extra
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/vae_throughput.py --compile --markdown docs/results/vae_throughput.md
	$(BIN)/python benchmarks/vs_numpyro.py --markdown docs/results/vs_numpyro.md
	$(BIN)/python benchmarks/step_profile.py --compiled --markdown docs/results/step_profile.md
	$(BIN)/python benchmarks/vae_reference.py --epochs 30
	$(BIN)/python benchmarks/gmm_vs_sklearn.py --quick

# the README's generated blocks from the docs/results files the benchmarks wrote
readme: $(STAMP)
	$(BIN)/python tools/sync_readme.py

lint: $(STAMP)
	$(BIN)/ruff check pyro_vae tests benchmarks tools

clean:
	rm -rf $(VENV) runs .pytest_cache
