"""Before a stage asks Ray for actors or workers: can this cluster ever host them?

Ray queues a request no node can satisfy and waits for one forever: an actor asking for a GPU on
a CPU-only machine, or 16 training workers on a 4-CPU Ray, hang the run without a word. The
embedded local Ray never gains nodes, so there such a request stops the run with one line; on a
joined cluster an autoscaler may still add the node, so it only warns.
"""

from __future__ import annotations

import logging

from delift_ray.distributed.session import embedded
from delift_ray.errors import DeliftError

log = logging.getLogger(__name__)


def check_fits(what: str, cpus: float, gpus: float, count: int, hint: str) -> None:
    """Stop (embedded Ray) or warn (joined cluster) unless `count` units of `cpus` CPUs and `gpus`
    GPUs, each unit on one node, fit the cluster's alive nodes at once."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    one = any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes)
    cpu_total = sum(r.get("CPU", 0) for r in nodes)
    gpu_total = sum(r.get("GPU", 0) for r in nodes)
    if one and cpu_total >= count * cpus and gpu_total >= count * gpus:
        return
    have = ", ".join(f"{r.get('CPU', 0):g} CPUs / {r.get('GPU', 0):g} GPUs" for r in nodes)
    unit = f"{cpus:g} CPUs and {gpus:g} GPUs" + (" each, all at once" if count > 1 else "")
    message = (
        f"{what} needs {unit}, more than this Ray cluster has (nodes: {have or 'none'}); {hint}"
    )
    if embedded():
        raise DeliftError(message)
    log.warning("%s; waiting in case an autoscaler adds nodes", message)
