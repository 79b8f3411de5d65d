# The course's commands. `make lab` opens the course, `make test` runs every test; each builds the
# environment (.venv, pinned by requirements/constraints.txt) first when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ENV_STAMP := $(VENV)/.installed
PORT   ?= 8888
# Root may only run JupyterLab with --allow-root; everyone else needs no flag.
LAB_ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: lab test env export docs docs-serve exercises
.DEFAULT_GOAL := test

# uv installs the pinned environment (requirements/constraints.txt) in half of pip's time or less (41 s -> 18 s on an
# empty cache here, 2 cores), most of what a fresh clone's `make test` spends before its first test. Where pip is told
# to look for packages (PIP_FIND_LINKS, PIP_EXTRA_INDEX_URL, as CI does for torch's CPU wheel), uv is told too: it
# reads its own settings, not pip's. Like pip with --no-compile, uv leaves compiling modules to bytecode to the first
# process that imports them, which keeps the result (so PYTHONDONTWRITEBYTECODE, which would make every process
# compile them again, is not passed on).
unexport PYTHONDONTWRITEBYTECODE
UV_LIKE_PIP := $(foreach l,$(PIP_FIND_LINKS),--find-links $(l)) \
	$(if $(PIP_EXTRA_INDEX_URL),$(foreach u,$(PIP_EXTRA_INDEX_URL),--extra-index-url $(u)) --index-strategy unsafe-best-match)
$(ENV_STAMP): settings.ini setup.py requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python $(UV_LIKE_PIP) -c requirements/constraints.txt -e ".[dev]"
	touch $@

env: $(ENV_STAMP)

# JupyterLab without its news and update prompts. The LabApp flags of `lab` stop the server fetching the news feed
# and asking PyPI for a newer release; the announcements plugin, which asks in the page whether to fetch news, is
# turned off in the environment's configuration (.venv/etc/jupyter), as binder/postBuild does on Binder.
LAB_CONFIG := $(VENV)/etc/jupyter/labconfig/page_config.json
$(LAB_CONFIG): $(ENV_STAMP)
	$(BIN)/jupyter labextension disable --level=sys_prefix "@jupyterlab/apputils-extension:announcements"

## Open the course in JupyterLab on 127.0.0.1, protected by a fresh random token.
lab: $(ENV_STAMP) $(LAB_CONFIG)
	$(BIN)/jupyter lab --ip=127.0.0.1 --port=$(PORT) --ServerApp.root_dir=nbs \
		--LabApp.default_url=/lab/tree/index.ipynb --LabApp.news_url=None \
		--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate $(LAB_ROOT_FLAG) $(LAB_FLAGS)

## Run the tests in tests/ (pytest), among them every lesson notebook executed once as nbdev_test runs it and
## compared with its committed outputs (tests/test_notebook_hygiene.py). TEST_WORKERS pytest-xdist workers share
## the work (tests that share a fixture stay on one: --dist loadgroup); the 25 slowest steps are listed at the end.
TEST_WORKERS ?= 2
test: $(ENV_STAMP)
	@# tests/test_browser.py drives Debian's chromium; install it if missing and we can (root with apt-get), else it skips
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
		echo "chromium is missing and cannot be installed here (needs root and apt-get): the browser test will skip"
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder --durations=25

## After editing notebooks: regenerate the library and the exercise notebooks, refresh every lesson's
## outputs, clean the notebooks and rebuild README.md. Commit notebooks and library together.
export: $(ENV_STAMP)
	$(BIN)/nbdev_export
	$(BIN)/python tools/make_exercises.py
	$(BIN)/python tools/execute_nbs.py $(NBS)
	$(BIN)/nbdev_clean
	$(BIN)/python tools/readme.py

## Regenerate the exercise notebooks in nbs/exercises/ from the lessons' `#| exercise` cells (tools/make_exercises.py).
exercises: $(ENV_STAMP)
	$(BIN)/python tools/make_exercises.py

## Build the docs site into _site/ from the notebooks' stored outputs: offline, no Quarto (tools/build_site.py).
docs: $(ENV_STAMP)
	$(BIN)/python tools/build_site.py

## Serve _site/ on http://127.0.0.1:8000/ (make docs-serve PORT=...).
docs-serve: PORT = 8000
docs-serve: docs
	$(BIN)/python -m http.server --bind 127.0.0.1 --directory _site $(PORT)
