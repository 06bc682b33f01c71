# The operator image: kopf + the shared planner/summary code from inference_pod; no Paddle, no CUDA.
# Build from the repository root:  docker build -f manifests/docker/operator.Dockerfile -t ocrjob-operator:0.1.0 .
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY inference_pod ./inference_pod
COPY operator ./operator
# --no-deps: the package's own dependencies are the OCR stack; the operator needs only these.
RUN pip install --no-deps . \
 && pip install "kopf==1.45.2" "kubernetes==36.0.0" "prometheus-client==0.26.0" "boto3==1.44.5" "pyyaml>=6,<7" \
                "typer==0.29.1" "rich==15.0.0" \
 && rm -rf /src
WORKDIR /
# Numeric non-root user (runAsNonRoot can verify it); the root filesystem can be read-only.
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["python", "-m", "ocrjob_operator"]
CMD ["--all-namespaces"]
