# Two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo demo-leads demo-forecast demo-assistant test lint types unit bench bench-dashboard bench-scale bench-learning bench-seatbelt bench-analysis bench-evaluate bench-serve bench-fuzz clean

$(BIN)/flywheel: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.dev: $(BIN)/flywheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# the forecast example's own forecasting library: not a dependency of Flywheel
$(VENV)/.forecast: $(BIN)/flywheel examples/forecast/requirements.txt
	$(BIN)/python -m pip install --quiet -r examples/forecast/requirements.txt
	@touch $@

demo: $(BIN)/flywheel ## simulate a product through the SDK into the embedded store
	$(BIN)/flywheel demo

demo-leads: $(BIN)/flywheel ## live lead scoring and next best follow-up on a simulated CRM
	$(BIN)/python examples/leads_live/demo_leads.py

demo-forecast: $(VENV)/.forecast ## a forecast that learns from its errors, on a simulated retailer
	$(BIN)/python examples/forecast/demo_forecast.py

demo-assistant: $(BIN)/flywheel ## an assistant that improves itself: themes, a revised prompt, example memory, training sets, candidate models
	$(BIN)/python examples/assistant/demo_assistant.py

# Debian's Chromium, for the dashboard's browser tests (Playwright drives it and never downloads
# a browser of its own); FLYWHEEL_CHROMIUM names another Chromium instead
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(VENV)/.browser: $(VENV)/.dev
	@if [ -z "$$FLYWHEEL_CHROMIUM" ] && ! command -v chromium >/dev/null; then \
		echo "installing Debian's chromium for the dashboard's browser tests"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
		|| { $(SUDO) apt-get update -q && \
		     $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
	fi
	@touch $@

test: lint types unit ## lint, types and the whole test suite

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(VENV)/.dev $(VENV)/.forecast  # the examples are typed too
	$(BIN)/mypy

unit: $(VENV)/.dev $(VENV)/.forecast $(VENV)/.browser
	$(BIN)/pytest

bench: $(VENV)/.dev ## the speed benchmarks behind BENCHMARKS.md (a few minutes)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/decide.py
	$(BIN)/python bench/align.py
	$(BIN)/python bench/learn.py
	$(BIN)/python bench/importer.py
	$(BIN)/python bench/health.py
	$(BIN)/python bench/recommend.py

bench-learning: $(VENV)/.dev ## the learning benchmark (about 20 minutes on 2 cores)
	$(BIN)/python -m pip install --quiet vowpalwabbit
	$(BIN)/python bench/learning.py

bench-seatbelt: $(VENV)/.dev ## the seatbelt benchmark (about 7 minutes on 2 cores)
	$(BIN)/python bench/seatbelt.py

bench-analysis: $(VENV)/.dev ## the analysis's error rates, power and coverage (about 2 minutes)
	$(BIN)/python bench/analysis.py

bench-evaluate: $(VENV)/.dev ## offline evaluation: coverage and error of IPS, SNIPS, DR and MIPS (about 8 minutes on 2 cores)
	$(BIN)/python bench/evaluate.py

bench-dashboard: $(VENV)/.dev ## the dashboard's overview on 10M decisions (about 3 minutes)
	$(BIN)/python bench/dashboard.py

bench-scale: $(VENV)/.dev ## a learn cycle on 50M decisions in the warm tier, DuckDB against Spark local[2] (long)
	$(BIN)/python bench/scale.py

bench-fuzz: $(VENV)/.dev ## Schemathesis, every check, on the HTTP API (about 2 minutes)
	$(BIN)/python bench/fuzz.py

# Arize Phoenix, for bench-serve's side-by-side OTLP intake: its own virtualenv.
PHOENIX := .venv-phoenix
$(PHOENIX)/.installed:
	$(PYTHON) -m venv $(PHOENIX)
	$(PHOENIX)/bin/python -m pip install --quiet --upgrade pip
	$(PHOENIX)/bin/python -m pip install --quiet 'arize-phoenix==20.26.1'
	@touch $@

bench-serve: $(VENV)/.dev $(PHOENIX)/.installed ## flywheel serve under load, beside Phoenix (about 4 minutes)
	$(BIN)/python bench/serve.py

clean:
	rm -rf $(VENV) $(PHOENIX) .venv-plain .flywheel .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
