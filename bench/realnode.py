"""Real node start-up and pod latency: containerd + kubelet start -> node Ready (with its fake GPUs), and
pod created -> Running (base image, already imported) as the median of --pods sequential pods.

Run as root: `python bench/realnode.py [--pods 5]`; prints one JSON object (figures go to BENCHMARKS.md by hand).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import kubernetes

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.cluster import LocalCluster  # noqa: E402
from tests.support.realnode import real_gpu_node_spec  # noqa: E402


def pod_running_seconds(core: kubernetes.client.CoreV1Api, image: str, name: str) -> float:
    body = {"metadata": {"name": name}, "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never",
                            "command": ["bash", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]}]}}
    began = time.monotonic()
    core.create_namespaced_pod("default", body)
    while core.read_namespaced_pod(name, "default").status.phase != "Running":
        if time.monotonic() - began > 120:
            raise TimeoutError(f"pod {name} not Running after 120 s")
        time.sleep(0.05)
    took = time.monotonic() - began
    core.delete_namespaced_pod(name, "default", grace_period_seconds=1)
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ocrjob-bench-realnode-") as tmp:
        cluster = LocalCluster(Path(tmp), real_node=real_gpu_node_spec())
        try:
            cluster.start()
            node = cluster.real_node
            assert node is not None
            core = kubernetes.client.CoreV1Api(cluster.api_client())
            image = cluster.real_node_image("base")
            latencies = [pod_running_seconds(core, image, f"bench-{i}") for i in range(args.pods)]
        finally:
            cluster.stop()
    print(json.dumps({"node_ready_s": round(node.ready_seconds, 2),
                      "pod_running_median_s": round(statistics.median(latencies), 2),
                      "pod_running_s": [round(x, 2) for x in latencies]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
