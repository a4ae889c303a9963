"""Joining a Ray cluster, or starting an embedded local one, with safe local defaults; and the
one session a whole run shares.

Which Ray, in order: the one this process already runs; RAY_ADDRESS; a head started on this
machine with `ray start` (the one plain `ray.init()` would join: the address it recorded in the
default Ray temp dir, if something still answers there); else an embedded local Ray.

A run (select, refresh, compare, train, eval) enters `run_scope()` once at its top. Ray starts
only when a stage first asks for it (`using_ray()`), every later stage reuses that session, and
it stops when the run's outermost scope exits; a run that never needs Ray never starts it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from delift_ray.errors import DeliftError
from delift_ray.logs import third_party_level
from delift_ray.models.offline import use_offline_hub

log = logging.getLogger(__name__)

LOCAL_ONLY_ENV = {
    "RAY_AUTH_MODE": "disabled",  # loopback-only embedded cluster; token auth breaks `ray job`
    "RAY_USAGE_STATS_ENABLED": "0",
}


@contextmanager
def ray_session(min_logical_cpus: int = 4) -> Iterator[str]:
    """Use the running Ray (RAY_ADDRESS, a local `ray start` head, or already initialised) or
    start a local one.

    Yields "cluster" or "local". A local Ray gets at least `min_logical_cpus` logical CPUs so an
    actor pool never starves Ray Data's read tasks on a 2-core machine, binds its dashboard to
    127.0.0.1, and is shut down on exit; a joined cluster is left running.
    """
    import ray

    offline = use_offline_hub()
    if ray.is_initialized():
        yield "cluster"
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
        log.info("ray: joining the Ray cluster at RAY_ADDRESS=%s", address)
        ray.init(address=address, log_to_driver=True, logging_level=third_party_level())
    elif (head := local_head()) is not None:
        log.info("ray: joining the Ray head started on this machine at %s (`ray start`)", head)
        # No address: ray.init() finds that head itself, with its auth, as a plain `ray.init()`.
        ray.init(
            log_to_driver=True, runtime_env={"env_vars": offline}, logging_level=third_party_level()
        )
    else:
        with _embedded_ray(min_logical_cpus, offline):
            yield "local"
        return
    try:
        yield "cluster"
    finally:
        ray.shutdown()


def local_head() -> str | None:
    """The address of the head that a plain `ray.init()` would join (the last `ray start` on this
    machine, recorded in the default Ray temp dir) if something answers there, else None."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        address = canonicalize_bootstrap_address(None)  # type: ignore[arg-type]  # as ray.init()
    except (ValueError, ConnectionError) as e:  # an unreadable record: start a local Ray
        log.debug("ray: ignoring the recorded Ray address (%s)", e)
        return None
    if address is None:
        return None
    try:
        check_reachable(address, timeout_s=2.0)
    except DeliftError:
        log.debug("ray: the Ray head recorded at %s does not answer; starting a local Ray", address)
        return None
    return address


@contextmanager
def _embedded_ray(min_logical_cpus: int, offline: dict[str, str]) -> Iterator[None]:
    """An embedded local Ray for the duration: loopback only, shut down on exit."""
    import ray

    for key, value in LOCAL_ONLY_ENV.items():
        os.environ.setdefault(key, value)
    global _embedded
    cpus = max(min_logical_cpus, os.cpu_count() or 1)
    log.info("ray: starting an embedded local Ray (%d logical CPUs)", cpus)
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        dashboard_host="127.0.0.1",
        log_to_driver=False,
        runtime_env={"env_vars": offline},
        logging_level=third_party_level(),
    )
    _embedded = True
    try:
        yield
    finally:
        _embedded = False
        ray.shutdown()


_embedded = False  # whether the running Ray is the embedded local one ray_session started


@dataclass
class _Run:
    """The open run scope: where its Ray session is closed, and the session once started."""

    exits: ExitStack
    ray: str | None = None  # what ray_session yielded, once a stage needed Ray


_run: _Run | None = None


@contextmanager
def run_scope() -> Iterator[None]:
    """A whole run: Ray starts when a stage first needs it and stops when this scope exits.

    A scope entered inside another one is part of the outer run (nothing starts or stops).
    Also a decorator: `@run_scope()` makes each call of a function one run.
    """
    global _run
    if _run is not None:
        yield
        return
    with ExitStack() as exits:
        _run = _Run(exits)
        try:
            yield
        finally:
            _run = None


@contextmanager
def using_ray() -> Iterator[str]:
    """Ray for one stage, yielding what ray_session yields: inside a run, the run's session
    (started now if no stage needed it yet); outside one, a session for this stage alone."""
    if _run is None:
        with ray_session() as kind:
            yield kind
        return
    if _run.ray is None:
        _run.ray = _run.exits.enter_context(ray_session())
    yield _run.ray


def embedded() -> bool:
    """True while the Ray in use is the embedded local one (it never gains nodes)."""
    return _embedded


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """DeliftError unless something accepts a TCP connection at a host:port RAY_ADDRESS (Ray
    itself retries an unreachable address for minutes). "auto" and other forms are left to Ray."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise DeliftError(
            f"ray: nothing answers at RAY_ADDRESS={address} ({e}); start the head there "
            "(`ray start --head`) or unset RAY_ADDRESS to run on an embedded local Ray"
        ) from None
