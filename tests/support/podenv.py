"""Container environment the way the kubelet builds it: envFrom, env, valueFrom, $(VAR) expansion.

Works on raw pod dicts (camelCase, as the API sends them). Failures raise `EnvError`, which the process
node reports like the kubelet does: container waiting with reason CreateContainerConfigError.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_LABEL_REF = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


class EnvError(Exception):
    """The container cannot be configured yet (missing Secret/ConfigMap/key, unsupported field)."""


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes $(VAR) expansion: defined names are replaced, `$$` escapes, unknown refs stay as they are."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "$" and i + 1 < len(value):
            nxt = value[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            end = value.find(")", i + 2)
            if nxt == "(" and end != -1:
                name = value[i + 2:end]
                out.append(env.get(name, f"$({name})"))
                i = end + 1
                continue
        out.append(value[i])
        i += 1
    return "".join(out)


class EnvResolver:
    """Reads the Secrets/ConfigMaps a container references (one API read per object per resolution)."""

    def __init__(self, core: kubernetes.client.CoreV1Api, pod: dict[str, Any], node_allocatable: Mapping[str, str]):
        self.core = core
        self.pod = pod
        self.namespace: str = pod["metadata"]["namespace"]
        self.allocatable = node_allocatable
        self._cache: dict[tuple[str, str], dict[str, str] | None] = {}

    def container_env(self, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            kind, ref = ("Secret", source["secretRef"]) if "secretRef" in source else (
                "ConfigMap", source["configMapRef"])
            data = self._data(kind, ref["name"], optional=bool(ref.get("optional")))
            for key, val in (data or {}).items():
                if _ENV_NAME.match(prefix + key):  # the kubelet skips invalid names (with an event)
                    env[prefix + key] = val
        for var in container.get("env") or []:
            name = var["name"]
            if "valueFrom" in var:
                resolved = self._value_from(var["valueFrom"], container)
                if resolved is not None:
                    env[name] = resolved
            else:
                env[name] = expand(var.get("value", ""), env)
        return env

    def _value_from(self, src: dict[str, Any], container: dict[str, Any]) -> str | None:
        if "secretKeyRef" in src or "configMapKeyRef" in src:
            kind, ref = ("Secret", src["secretKeyRef"]) if "secretKeyRef" in src else (
                "ConfigMap", src["configMapKeyRef"])
            optional = bool(ref.get("optional"))
            data = self._data(kind, ref["name"], optional=optional)
            if data is None or ref["key"] not in data:
                if optional:
                    return None
                raise EnvError(f"couldn't find key {ref['key']} in {kind} {self.namespace}/{ref['name']}")
            return data[ref["key"]]
        if "fieldRef" in src:
            return self._field(src["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in src:
            return self._resource(src["resourceFieldRef"], container)
        raise EnvError(f"unsupported valueFrom {sorted(src)}")

    def _data(self, kind: str, name: str, *, optional: bool) -> dict[str, str] | None:
        if (kind, name) not in self._cache:
            try:
                if kind == "Secret":
                    obj = self.core.read_namespaced_secret(name, self.namespace)
                    self._cache[kind, name] = {k: base64.b64decode(v).decode(errors="replace")
                                               for k, v in (obj.data or {}).items()}
                else:
                    obj = self.core.read_namespaced_config_map(name, self.namespace)
                    self._cache[kind, name] = dict(obj.data or {})
            except ApiException as exc:
                if exc.status != 404:
                    raise
                self._cache[kind, name] = None
        data = self._cache[kind, name]
        if data is None and not optional:
            raise EnvError(f'{kind.lower()} "{name}" not found')
        return data

    def _field(self, path: str) -> str:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        simple = {
            "metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
            "spec.nodeName": spec.get("nodeName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
            # Processes share the host network: pod and host IP are both loopback.
            "status.podIP": "127.0.0.1", "status.podIPs": "127.0.0.1",
            "status.hostIP": "127.0.0.1", "status.hostIPs": "127.0.0.1",
        }
        if path in simple:
            return simple[path]
        match = _LABEL_REF.match(path)
        if match:
            return (meta.get(match.group(1)) or {}).get(match.group(2), "")
        if path in ("metadata.labels", "metadata.annotations"):
            items = sorted((meta.get(path.split(".")[1]) or {}).items())
            return "\n".join(f'{k}="{v}"' for k, v in items)
        raise EnvError(f"unsupported fieldRef {path!r}")

    def _resource(self, ref: dict[str, Any], container: dict[str, Any]) -> str:
        kind, _, resource = ref["resource"].partition(".")  # limits.cpu -> ("limits", "cpu")
        resources = container.get("resources") or {}
        value = (resources.get(kind) or {}).get(resource)
        if value is None and kind == "requests":
            value = (resources.get("limits") or {}).get(resource)
        if value is None:  # no limit: the kubelet reports node allocatable
            value = self.allocatable.get(resource, "0")
        divisor = parse_quantity(ref.get("divisor", "1"))
        return str(math.ceil(parse_quantity(value) / divisor))
