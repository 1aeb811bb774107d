# Edge pipeline: train -> export -> verify -> bundle. `make help` lists the targets.
# Each stage's targets are the real files it writes, so make redoes only what changed.

SHELL := /bin/bash
.DEFAULT_GOAL := all
# Two jobs: the loss plot (matplotlib, ~0.5 s) draws on the second core while export runs.
# No --output-sync: it would hold back long recipes (bench, test) until they end; each
# stage prints whole lines with one write, so the two jobs never mix mid-line.
MAKEFLAGS += --jobs=2

PYTHON ?= python3
VENV   ?= .venv
PRESET ?= default
CONFIG ?= configs/$(PRESET).toml
BUILD  ?= build
DIST   ?= dist
# The bundle's signing key (private, OpenSSH; `make keys KEY=path` writes one), also read from
# the environment; empty: an unsigned bundle. docs/signing.md.
SIGNING_KEY ?=
export SIGNING_KEY  # the bundle stage reads it (python -m pipeline's --signing-key defaults to it)

PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
PIPELINE := $(PY) -m pipeline --config $(BUILD)/config.toml --build $(BUILD) --dist $(DIST)

MODEL_KERAS := $(BUILD)/model.keras
HISTORY     := $(BUILD)/train/history.json
LOSS_PNG    := $(BUILD)/train/loss.png
TRAIN_OUT   := $(MODEL_KERAS) $(HISTORY)
EXPORT_OUT  := $(BUILD)/model.onnx $(BUILD)/model.tflite $(BUILD)/reference.npz $(BUILD)/variants/index.json
REPORT      := $(BUILD)/verify/report.json
VERIFY_OUT  := $(REPORT) $(BUILD)/verify/report.md $(BUILD)/verify/plots.npz
VERIFY_PNG  := $(BUILD)/verify/validation.png $(BUILD)/verify/accuracy-vs-size.png
TARBALL     := $(DIST)/bundle.tar.gz
SIGNING     := $(BUILD)/signing.txt
# A make value as one shell word, single-quoted (a path with spaces or quotes stays one path).
sq           = '$(subst ','\'',$(1))'
# A shell test: every file of $(1) exists and is newer than every file of $(2) (run in a subshell).
newer        = for t in $(1); do for p in $(2); do [ "$$t" -nt "$$p" ] || exit 1; done; done
SSH_KEYGEN  := $${EDGE_SSH_KEYGEN:-ssh-keygen}

COMMON_SRC  := pipeline/__main__.py pipeline/config.py pipeline/checks.py pipeline/errors.py pipeline/fsutil.py pipeline/quiet.py pipeline/lock.py pipeline/layout.py pipeline/dataset.py pipeline/tensor_data.py pipeline/probes.py pipeline/userfile.py export/errors.py export/formats.py
TRAIN_SRC   := $(COMMON_SRC) pipeline/train.py pipeline/keras_model.py export/tfenv.py export/recurrent.py
EXPORT_SRC  := $(COMMON_SRC) pipeline/export_stage.py pipeline/tflite_worker.py pipeline/keras_model.py pipeline/reference.py $(wildcard export/*.py) runtime/manifest.py runtime/errors.py
VERIFY_SRC  := $(COMMON_SRC) pipeline/verify.py pipeline/verify_tensors.py pipeline/engine.py pipeline/reference.py pipeline/numerics.py pipeline/runners.py pipeline/report.py pipeline/bundle_model.py export/variants.py export/tfenv.py runtime/manifest.py runtime/errors.py
BUNDLE_SRC  := $(COMMON_SRC) pipeline/bundle.py pipeline/signing.py pipeline/bundle_model.py pipeline/reference.py export/onnx_export.py export/onnx_fuse.py export/keras3_savedmodel.py export/tfenv.py $(wildcard runtime/*.py runtime/systemd/edge-model.*) runtime/requirements.txt

.PHONY: all venv config train export verify bundle keys lint test test-fast runtime-check bench bench-quick pi-check deploy fleet-status rollback publish clean distclean help

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

all: $(TARBALL) $(LOSS_PNG) $(VERIFY_PNG) ## Train, export, verify and bundle (PRESET=default|tutorial, or CONFIG=file; SIGNING_KEY=path signs)
	@echo "all: done; report $(BUILD)/verify/report.md, bundle $(TARBALL) ($$(sha256sum $(TARBALL) | cut -c1-16)...)"

venv: $(STAMP) ## Create .venv with the pinned requirements

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

# The config in force, copied only when its content (or the folder its relative paths start
# from, BUILD/config.origin) changes, so switching presets (or editing the file) retrains, and
# re-running with the same one does nothing (not even start Python: an unchanged file was
# validated when it was copied). The copy also writes BUILD/inputs.mk: INPUT_FILES, the files
# the config reads (its data, builder, oracle, trained model), so that editing one retrains.
-include $(BUILD)/inputs.mk
$(BUILD)/config.toml: FORCE | $(STAMP) $(SIGNING)
	@cmp -s $(CONFIG) $@ 2>/dev/null && [ "$$(cat $(BUILD)/config.origin 2>/dev/null)" = "$(abspath $(dir $(CONFIG)))" ] \
	  || $(PY) -m pipeline --build $(BUILD) config --config $(CONFIG) --out $@

config: $(BUILD)/config.toml ## Validate CONFIG and make it the config in force

# Training also exports, in the same process (one TensorFlow start, 2-4 s saved): the export
# outputs it writes are then newer than model.keras, so make does not export again. Export
# still runs on its own when only its inputs changed.
$(TRAIN_OUT) &: $(BUILD)/config.toml $(TRAIN_SRC) $(INPUT_FILES)
	$(PIPELINE) train --no-plot --export

$(LOSS_PNG): $(HISTORY) pipeline/plots.py
	$(PIPELINE) plot --only loss

$(VERIFY_PNG) &: $(BUILD)/verify/plots.npz pipeline/plots.py
	$(PIPELINE) plot --only verify

# Export's outputs may already be newer than all of its inputs: train's recipe wrote them. make
# decided before that recipe ran that they were missing or stale, so the recipe looks again.
$(EXPORT_OUT) &: $(MODEL_KERAS) $(BUILD)/config.toml $(EXPORT_SRC)
	@( $(call newer,$(EXPORT_OUT),$^) ) || { echo '$(PIPELINE) export'; $(PIPELINE) export; }

$(VERIFY_OUT) &: $(BUILD)/model.onnx $(BUILD)/model.tflite $(BUILD)/reference.npz $(BUILD)/variants/index.json $(BUILD)/config.toml $(VERIFY_SRC)
	$(PIPELINE) verify

# How the bundle is signed, rewritten only when that changes (as config.toml is), so a new
# SIGNING_KEY (set, unset, another key, a new key at the same path) re-bundles and the same
# one does nothing, without starting Python: "unsigned", or the fingerprint of the public key
# ssh-keygen derives from the private one (`-y`, no passphrase). A key not recorded there yet
# is first checked as the bundle stage will check it (pipeline/signing.py): one that cannot
# sign stops make with one line, and before it trains (config.toml waits for this record).
$(SIGNING): FORCE | $(STAMP)
	@k=$(call sq,$(SIGNING_KEY)); \
	if [ -z "$$k" ]; then [ "$$(cat $@ 2>/dev/null)" = unsigned ] || { mkdir -p $(@D) && echo unsigned > $@; }; \
	else s=$$($(SSH_KEYGEN) -y -P '' -f "$$k" 2>/dev/null </dev/null | $(SSH_KEYGEN) -l -f - 2>/dev/null | cut -d' ' -f2); \
	  case "$$s" in SHA256:*) [ "$$(cat $@ 2>/dev/null)" = "$$s" ];; *) false;; esac || $(PY) -m pipeline.signing $(@D) "$$k"; fi

$(TARBALL): $(SIGNING) $(REPORT) $(BUILD)/config.toml $(BUNDLE_SRC)
	$(PIPELINE) bundle

train: $(MODEL_KERAS) $(LOSS_PNG) ## Train the model (build/model.keras, build/train/)
export: $(BUILD)/model.onnx ## Export ONNX and TFLite (build/model.onnx, build/model.tflite)
verify: $(REPORT) ## Verify parity and accuracy (build/verify/report.md)
bundle: $(TARBALL) ## Make the device bundle (dist/bundle/, dist/bundle.tar.gz), signed with SIGNING_KEY=path if set

# A signing key for the bundles: KEY (private, mode 0600) and KEY.pub, in a folder made (0700)
# if missing. Refuses to overwrite either; prints the public key's file and fingerprint,
# never the private key.
keys: ## Write a new signing key: KEY=path (private, 0600) and path.pub (not part of all)
	@k=$(call sq,$(KEY)); \
	if [ -z "$$k" ]; then echo "error: make keys needs KEY=path: where to write the private signing key (keep it outside the repository); its public key goes to path.pub" >&2; exit 2; fi; \
	for f in "$$k" "$$k.pub"; do if [ -e "$$f" ] || [ -L "$$f" ]; then echo "error: make keys: $$f exists; refusing to overwrite a key (choose another KEY=path)" >&2; exit 2; fi; done; \
	d=$$(dirname -- "$$k"); [ -d "$$d" ] || mkdir -p -m 700 -- "$$d" || { echo "error: make keys: cannot make the folder $$d (KEY=$$k)" >&2; exit 2; }; \
	command -v $(SSH_KEYGEN) >/dev/null || { echo "error: make keys: $(SSH_KEYGEN) not found: it needs OpenSSH's ssh-keygen 8.1 or newer (Debian package openssh-client)" >&2; exit 2; }; \
	err=$$($(SSH_KEYGEN) -q -t ed25519 -N '' -C "edge-bundle signing key $$(id -un)@$$(uname -n) $$(date -u +%Y-%m-%d)" -f "$$k" </dev/null 2>&1 >/dev/null) \
	  || { echo "error: make keys: ssh-keygen could not write $$k: $$(echo $$err)" >&2; exit 2; }; \
	echo "keys: wrote $$k (private, mode 0600: keep it secret; sign with SIGNING_KEY=$$k) and $$k.pub ($$($(SSH_KEYGEN) -l -f "$$k.pub" | cut -d' ' -f2)); add the line in $$k.pub to the devices' trusted keys: the inventory variable edge_trusted_keys, or a trusted-keys file named by EDGE_TRUSTED_KEYS"

# The linters, then pytest. test-fast, for the edit-test loop, leaves out what needs QEMU,
# SSH test hosts or root, and the slow tests (markers in pyproject.toml); CI runs `make test`.
FAST := not qemu and not ssh and not root and not slow

lint: | $(STAMP) ## ruff, and the layers' import contract (import-linter; both configured in pyproject.toml)
	$(VENV)/bin/ruff check --quiet --output-format concise .
	$(VENV)/bin/lint-imports --no-cache --no-logo

# TEST_WORKERS: pytest-xdist's worker processes (0: none, the tests in this process). A file's
# tests share a worker, in order (--dist loadfile); what tests/conftest.py builds once is shared
# by all workers.
TEST_WORKERS ?= 3
XDIST = $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder,-p no:xdist)

test: lint ## Run the whole test suite, linters first (sets up .venv first); TEST_WORKERS=N processes
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: lint ## The quick tests: no QEMU, SSH hosts or root, none of the slow ones
	$(PY) -m pytest -m "$(FAST)" $(XDIST) $(PYTEST_ARGS)

# The device's situation: a venv with nothing but the bundle's requirements.txt (plus
# pytest to run the tests), running the runtime tests against dist/bundle.tar.gz, under
# every supported Python found here (PYTHON, pyenv's, python3.X), each with its own venv.
RT_VENV  ?= .cache/runtime-venv

runtime-check: $(TARBALL) ## Runtime tests in venvs made from the bundle's requirements.txt alone, per Python found
	$(PYTHON) -m deploy.devicecheck.runtime_check --tarball $(TARBALL) --python $(PYTHON) --cache $(RT_VENV)

bench: $(TARBALL) ## Benchmarks: pipeline and runner beside their peers (build/bench/results.md)
	$(PYTHON) -m deploy.devicecheck.runtime_check --venv-only --python $(PY) --cache $(RT_VENV) >/dev/null
	$(PY) -m bench --build $(BUILD) --dist $(DIST)

bench-quick: $(TARBALL) ## The same, fewer runs and smaller batches (for CI)
	$(PYTHON) -m deploy.devicecheck.runtime_check --venv-only --python $(PY) --cache $(RT_VENV) >/dev/null
	$(PY) -m bench --quick --build $(BUILD) --dist $(DIST)

pi-check: $(TARBALL) ## The bundle under emulated arm64 (QEMU Cortex-A72 = Pi 4, A76 = Pi 5) against x86
	$(PY) -m deploy.devicecheck.picheck --tarball $(TARBALL) --cache .cache/pi --out $(BUILD)/pi-check

# The fleet (deploy/, Ansible): INVENTORY lists the devices (copy deploy/inventory.example.ini);
# ANSIBLE_ARGS go to ansible-playbook as they are, e.g. ANSIBLE_ARGS="--limit pi-kitchen --check".
INVENTORY    ?= deploy/inventory.ini
ANSIBLE_ARGS ?=

deploy: $(TARBALL) ## Deploy the bundle to INVENTORY's devices: canary first, gated, rolled back on failure
	$(PY) -m deploy deploy --inventory $(INVENTORY) --bundle $(TARBALL) --report $(BUILD)/deploy/deploy.json $(ANSIBLE_ARGS)

fleet-status: | $(STAMP) ## What each of INVENTORY's devices runs, and whether it is healthy
	$(PY) -m deploy status --inventory $(INVENTORY) --report $(BUILD)/deploy/status.json $(ANSIBLE_ARGS)

rollback: | $(STAMP) ## Every device in INVENTORY back to its previous release
	$(PY) -m deploy rollback --inventory $(INVENTORY) --report $(BUILD)/deploy/rollback.json $(ANSIBLE_ARGS)

# Pull mode (docs/deploy.md, "Pull mode"): PULL_REPO, the Git repository devices pull;
# PULL_TARGETS, their platforms (<arch>:<python X.Y>:<glibc X.Y>; bookworm 64-bit: aarch64:3.11:2.36).
PULL_REPO    ?=
PULL_TARGETS ?= aarch64:3.11:2.36

publish: $(TARBALL) ## Commit the bundle, the playbook and PULL_TARGETS' wheels to PULL_REPO, for devices in pull mode
	@test -n "$(PULL_REPO)" || { echo "error: publish: PULL_REPO is not set; give the Git repository devices pull, e.g. make publish PULL_REPO=/srv/git/edge-pull.git" >&2; exit 2; }
	$(PY) -m deploy.publish --repo $(PULL_REPO) --bundle $(TARBALL) $(addprefix --target ,$(PULL_TARGETS))

clean: ## Remove build/ and dist/
	rm -rf $(BUILD) $(DIST)

distclean: clean ## Also remove .venv and .cache/
	rm -rf $(VENV) .cache

FORCE:
