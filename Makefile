# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both build .venv in the repo (once) with every dependency, then run offline.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1

.PHONY: venv demo test bench cards clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision come from this machine's local disk at these exact versions
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[all]"
	# animal-mnist declares tensorflow, which it does not need
	$(PY) -m pip install -q --no-deps animal-mnist==0.4
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/imagenet_bank.py

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bank_io.py

# Hub repo folders (filters, config, card) of the banks we publish, built by the publishing command
cards: $(STAMP)
	$(VENV)/bin/masterkey publish imagenet-lite0 --out hub_cards/tf_efficientnet_lite0-imagenet-dw --dry-run

clean:
	rm -rf $(VENV) .pytest_cache
