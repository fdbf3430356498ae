# Two entry points; everything else is set up on demand.
#   make lab    JupyterLab on the tutorials (store: notebooks/nb_sessions.db)
#   make test   the whole test suite (installs what it needs, chromium included)
PYTHON ?= python3
VENV   ?= .venv
# Jupyter refuses to run as root unless told; containers and CI machines often are root.
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)
# No news pop-up or update check over the tutorials (the machine may have no internet anyway).
LAB_QUIET = --LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate

.PHONY: lab test bench lint
lab:
	@bash scripts/bootstrap.sh
	cd notebooks && ../$(VENV)/bin/jupyter lab $(LAB_FLAGS) $(LAB_QUIET)

test:
	@bash scripts/test.sh $(ARGS)

bench:
	@bash scripts/bootstrap.sh
	$(VENV)/bin/python -m benchmarks $(ARGS)

lint:
	@bash scripts/bootstrap.sh
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy
