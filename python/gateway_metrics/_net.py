"""What the exporter and the remote writer share about sockets and their deadlines."""

from __future__ import annotations

import contextlib
import math
import socket

#: The longest timeout or interval taken, in seconds (a week): sockets,
#: timers and waits overflow their C types not far above it, and a wait longer
#: than a week is a misconfiguration (milliseconds given as seconds, say).
MAX_SECONDS = 7 * 24 * 3600.0


def positive_seconds(value: object, name: str) -> float:
    """``value`` as a positive number of seconds of at most ``MAX_SECONDS``, or
    a ``TypeError`` or ``ValueError`` naming the argument ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and above zero, got {value!r}")
    if value > MAX_SECONDS:
        raise ValueError(
            f"{name} must be at most {MAX_SECONDS:.0f} seconds (a week), got {value!r}"
        )
    return float(value)


def cut(sock: socket.socket) -> None:
    """Ends a connection now: a read or write blocked on it in another thread fails.

    ``socket.socket.shutdown`` on the descriptor itself, even for a TLS
    socket: ``SSLSocket.shutdown`` would also drop TLS state under a thread
    that may be using it.
    """
    with contextlib.suppress(OSError):  # closed already, or never connected
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
