# Two commands set everything up on a fresh machine: `make reproduce` and `make test`.
# Both create .venv if missing and install the package with its dev extras into it.
# TORCH names the torch wheel installed when the venv has none (CPU build here; on a CUDA machine pass
# e.g. TORCH=torch, or install your own build into .venv first: it is kept).
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
PRESET ?= mini
# rounds of different methods run at once, the CPU cores shared out (2 suits this 2-core machine; 1 on a single GPU)
JOBS ?= 2
ARGS ?=

.PHONY: install reproduce test docs lab readme clean costs

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml settings.ini setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

reproduce: install
	$(VENV)/bin/selfsynth -v reproduce --preset $(PRESET) --jobs $(JOBS) $(ARGS)

# pytest (includes: library in sync with the notebooks, notebooks clean, docs render), then every notebook's demos.
test: install
	$(PY) -m pytest tests -q
	$(VENV)/bin/nbdev-test --n-workers 2

# After a new GPU result in benchmarks/results/: rewrite the cost table on the paper-scale cost page.
costs: install
	$(PY) -c "from selfsynth.costs import publish_costs; print(publish_costs())"

docs: install
	$(PY) -c "from selfsynth.site import build_site; print(build_site('_docs'))"

readme: install
	$(VENV)/bin/jupyter nbconvert --to markdown nbs/index.ipynb --output-dir . --output README --log-level WARN

# JupyterLab refuses to run as root without --allow-root (containers and CI machines run as root)
lab: install
	$(VENV)/bin/jupyter lab nbs $$([ "$$(id -u)" = 0 ] && echo --allow-root)

clean:
	rm -rf _docs _proc runs/quick
