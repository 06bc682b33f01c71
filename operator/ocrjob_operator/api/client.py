"""Placeholder: the typed Kubernetes errors (the full client lands from the `client` branch)."""

from __future__ import annotations


class KubeError(Exception):
    status = 0


class Forbidden(KubeError):
    status = 403


class QuotaExceeded(Forbidden):
    pass


class Invalid(KubeError):
    status = 422
