"""The protobuf exposition format's negotiation: whether a scraper's ``Accept``
header asks for it, and with which name escaping.

The core encodes the messages (``io.prometheus.client.MetricFamily``, each
prefixed by its length): the middleware's own families, and a registry's other
collectors' from the families ``prometheus_client`` collects
(``_core.encode_collected``).
"""

from __future__ import annotations

from gateway_metrics._core import PROTOBUF_CONTENT_TYPE as CONTENT_TYPE

__all__ = ["ALLOW_UTF8", "CONTENT_TYPE", "accepts_protobuf"]

#: The ``escaping`` a scraper names to take UTF-8 names as they are.
ALLOW_UTF8 = "allow-utf-8"


def accepts_protobuf(accept_header: str) -> str | None:
    """The ``escaping`` parameter of the delimited protobuf range (``""`` when
    absent) if the scraper prefers that format to the text formats, else None.

    Each media range's ``q`` (1 when absent) decides; a tie goes to the range
    listed first, as Prometheus lists its preferred format first.
    """
    best: tuple[float, int, str | None] | None = None
    for position, part in enumerate(accept_header.split(",")):
        pieces = [piece.strip() for piece in part.split(";")]
        media = pieces[0].lower()
        params = {
            name.strip().lower(): value.strip()
            for name, _, value in (piece.partition("=") for piece in pieces[1:])
        }
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 0.0
        if media == "application/vnd.google.protobuf":
            ours = (
                params.get("proto") == "io.prometheus.client.MetricFamily"
                and params.get("encoding") == "delimited"
            )
            if not ours:
                continue
            protobuf: str | None = params.get("escaping", "")
        elif media in ("text/plain", "application/openmetrics-text", "*/*", "text/*"):
            protobuf = None
        else:
            continue
        if q > 0 and (best is None or q > best[0]):
            best = (q, position, protobuf)
    return None if best is None else best[2]
