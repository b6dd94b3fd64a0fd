"""Where the work runs: a Ray cluster joined, or a local one started on 127.0.0.1.

``address`` as ``camvideo annotate --ray [ADDRESS]`` takes it:

* None: the cluster ``RAY_ADDRESS`` names, else a new local cluster on this machine;
* ``"local"``: a new local cluster, whatever ``RAY_ADDRESS`` says;
* ``"auto"``: the running cluster this machine belongs to (``ray start`` was run here);
* ``"ray://host:10001"``: a remote cluster through Ray Client;
* ``"host:6379"``: a cluster's head (its GCS address).

The local cluster listens on the loopback interface only and starts no dashboard unless
asked: annotating videos must not open a port to the network. Ray resolves
``127.0.0.1`` to the machine's outward address unless its cluster mode is off
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when ray is imported), so that switch is
set for the local cluster's processes, which inherit it.

Authentication is Ray's: Ray 2.60 (the version tested) starts a new local cluster with
token authentication unless ``RAY_AUTH_MODE`` says otherwise (a random token it keeps in
``~/.ray/auth_token``, written with the user's umask; a client without it is refused).
Older Ray has none, and then the loopback binding is the only protection. Ray marks this
process ``RAY_AUTH_MODE=token`` for the cluster; the old value is put back after it, so a
later connection to another cluster is not asked for this one's token.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import CamvideoError

LOOPBACK = "127.0.0.1"
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_AUTH_MODE = "RAY_AUTH_MODE"  # Ray sets it to "token" in this process when it starts a local cluster


class ClusterError(CamvideoError):
    """Ray is missing, or the cluster cannot be reached or started."""


@dataclass
class ClusterInfo:
    """The cluster a run uses."""

    address: str  # what was asked ("local" for a cluster started here)
    started_here: bool
    cpus: float
    gpus: float
    nodes: int
    startup: float  # seconds ray.init took


def import_ray():
    """``ray``, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs Ray: pip install ray (in camvideo's clone: pip install '.[ray]')") from None
    return ray


def _set_cluster_switch(value: str | None) -> str | None:
    """Set Ray's cluster mode switch (None: unset); returns what it was.

    "0" makes Ray keep 127.0.0.1 as the node address (see the module's docstring). Ray reads
    the variable when it is imported; if it was imported before, its constant is set too.
    """
    before = os.environ.get(_CLUSTER_SWITCH)
    if value is None:
        os.environ.pop(_CLUSTER_SWITCH, None)
    else:
        os.environ[_CLUSTER_SWITCH] = value
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = value != "0" if value is not None else sys.platform not in ("darwin", "win32")
    return before


def _check_reachable(address: str) -> None:
    """Fail at once, in one line, when a ``HOST:PORT`` or ``ray://HOST:PORT`` does not answer.

    Ray itself retries a GCS that is not there for minutes before it gives up.
    """
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return  # "auto" and friends: Ray finds the address itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as err:
        raise ClusterError(f"no Ray cluster answers at {address} ({err.strerror or err})") from None


@contextlib.contextmanager
def ray_cluster(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    dashboard: bool = False,
    on_start: Callable[[str], None] | None = None,
) -> Iterator[ClusterInfo]:
    """Join or start a Ray cluster for the block; a cluster started here is shut down after.

    When Ray is already initialised in this process (a test's fixture, a notebook), that
    connection is used as it is and left open. ``on_start(what)`` is called just before a
    start or a connection (seconds), with what it is in words, for a status line.
    """
    if address is None:
        address = os.environ.get("RAY_ADDRESS") or "local"
    local = address == "local"
    switch_before = _set_cluster_switch("0") if local else None
    auth_before = os.environ.get(_AUTH_MODE)
    ray = import_ray()
    own = not ray.is_initialized()
    if own and on_start is not None:
        on_start(
            "starting a local Ray cluster on 127.0.0.1" if local else f"connecting to the Ray cluster at {address}"
        )
    if own and not local:
        _check_reachable(address)
    started = time.monotonic()
    if own:
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
        try:
            if local:
                ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=dashboard, dashboard_host=LOOPBACK,
                         _node_ip_address=LOOPBACK, **quiet)  # fmt: skip
            elif address.startswith("ray://"):
                ray.init(address=address)  # Ray Client: the server side's settings apply
            else:
                ray.init(address=address, **quiet)
        except BaseException as err:
            ray.shutdown()
            if local:
                _set_cluster_switch(switch_before)
                _put_back(_AUTH_MODE, auth_before)
            if not isinstance(err, Exception):  # Ctrl-C while starting
                raise
            what = "start a local Ray cluster" if local else f"connect to the Ray cluster at {address}"
            raise ClusterError(f"cannot {what} ({' '.join(str(err).split())[:300]})") from err
    try:
        resources = ray.cluster_resources()
        info = ClusterInfo(address, own and local, float(resources.get("CPU", 0)), float(resources.get("GPU", 0)),
                           len([n for n in ray.nodes() if n.get("Alive")]), time.monotonic() - started)  # fmt: skip
        yield info
    finally:
        if own:
            ray.shutdown()
        if local:  # a later connection from this process to a real cluster needs its outward address
            _set_cluster_switch(switch_before)
            if own:
                _put_back(_AUTH_MODE, auth_before)


def _put_back(name: str, value: str | None) -> None:
    """Set the environment variable ``name`` to ``value`` again (None: unset)."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
