# A stand-in for python:3.11-slim, built on the debootstrapped Debian base (no registry to pull from):
# bookworm's python3 is 3.11; a venv on PATH gives `python` and a `pip` that installs as root without
# PEP 668's externally-managed refusal, as pip does in the official image.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ENV LANG=C.UTF-8 PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && python3 -m venv /opt/venv
CMD ["python3"]
