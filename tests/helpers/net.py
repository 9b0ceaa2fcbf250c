"""Loopback networking for test processes: free ports and waiting until a server answers."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

LOOPBACK = "127.0.0.1"
# Loopback servers must never be reached through an http_proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on right now. Another process may still take it before use."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_tcp(
    host: str,
    port: int,
    timeout: float,
    *,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Block until `host:port` accepts a TCP connection.

    `alive` is polled between attempts so a crashed server fails fast instead of timing out.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as error:
            last_error = error
        _check_alive_and_deadline(alive, deadline, f"{host}:{port}", last_error, timeout)
        time.sleep(0.05)


def wait_for_http(
    url: str,
    timeout: float,
    *,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Block until `GET url` answers 2xx.

    `alive` is polled between attempts so a crashed server fails fast instead of timing out.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with _DIRECT.open(url, timeout=2.0) as response:
                if 200 <= response.status < 300:
                    return
                last_error: object = f"HTTP {response.status}"
        except (OSError, urllib.error.URLError) as error:
            last_error = error
        _check_alive_and_deadline(alive, deadline, url, last_error, timeout)
        time.sleep(0.1)


def _check_alive_and_deadline(
    alive: Callable[[], bool] | None,
    deadline: float,
    target: str,
    last_error: object,
    timeout: float,
) -> None:
    if alive is not None and not alive():
        raise RuntimeError(f"process exited while waiting for {target} (last error: {last_error})")
    if time.monotonic() >= deadline:
        raise TimeoutError(f"{target} not ready after {timeout:.0f} s (last error: {last_error})")
