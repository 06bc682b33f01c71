# The operator image: kopf + the shared planner/summary code from inference_pod; no Paddle, no CUDA.
# Build from the repository root:  docker build -f manifests/docker/operator.Dockerfile -t ocrjob-operator:0.1.0 .
# BASE_IMAGE: any image with python 3.11 and pip on PATH (tests build a stand-in: no registry there).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY inference_pod ./inference_pod
COPY operator ./operator
# pyproject.toml lists the ocrjob_cli package too: setuptools refuses to build without its folder.
COPY ocrjob_cli ./ocrjob_cli
# The base package plus the [operator] extra: no OCR stack (that is the [cpu]/[gpu]/[ocr] extras).
RUN pip install ".[operator]" \
 && rm -rf /src
WORKDIR /
# Numeric non-root user (runAsNonRoot can verify it); the root filesystem can be read-only.
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["python", "-m", "ocrjob_operator"]
CMD ["--all-namespaces"]
