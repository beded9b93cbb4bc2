"""Publish notifications to notifybridge from Python.

A drop-in for the Channels-era helper of the OTDR monitoring system::

    # before: every browser got every message
    def notification_handler(json_data):
        async_to_sync(get_channel_layer().group_send)(
            "notifications", {"type": "send_notification", "message": json_data})

    # after: one XADD; the bridge delivers to exactly the recipients named
    from notify import notification_handler
    notification_handler(json_data, to="user:42,group:ops", type="alarm.fiber_break")

Only redis-py is needed (Debian: python3-redis). Settings come from the
environment so Django settings need not change: NOTIFYBRIDGE_REDIS_URL
(default redis://127.0.0.1:6379/0; unix:///run/redis/redis.sock works too) and
NOTIFYBRIDGE_STREAM (default notifications).

The checks below restate the contract's rules (docs/contract.md §1) so that a
mistake raises ValueError in the view that made it, instead of the entry
being dead-lettered by the bridge where nobody is looking.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from typing import Any, Optional

import redis

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_STREAM = "notifications"
MAX_EVENT_BYTES = 65536  # the bridge's default max_event_bytes
MAX_RECIPIENTS = 1000  # the bridge's default max_recipients

_TYPE_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_NAME_BAD = re.compile(r"[,\s\x00-\x1f\x7f]")

_client: Optional[redis.Redis] = None
_client_lock = threading.Lock()


def get_client() -> redis.Redis:
    """The process-wide Redis client (redis-py pools connections, so one is right)."""
    global _client
    with _client_lock:
        if _client is None:
            _client = redis.Redis.from_url(os.environ.get("NOTIFYBRIDGE_REDIS_URL", DEFAULT_URL))
        return _client


def check_recipients(to: str) -> None:
    """Raise ValueError unless `to` is a valid comma-separated recipient list."""
    if not isinstance(to, str) or not to:
        raise ValueError("to: must be a non-empty string such as 'user:42,group:ops' or '*'")
    items = to.split(",")
    if len(items) > MAX_RECIPIENTS:
        raise ValueError(f"to: {len(items)} recipients, at most {MAX_RECIPIENTS} allowed")
    for item in items:
        if item == "*":
            continue
        for prefix in ("user:", "group:"):
            if item.startswith(prefix):
                name = item[len(prefix):]
                if not name or len(name.encode()) > 256 or _NAME_BAD.search(name):
                    raise ValueError(f"to: bad {prefix[:-1]} name in {item!r} (1-256 bytes, no comma, whitespace or control character)")
                break
        else:
            raise ValueError(f"to: {item!r} is not user:<id>, group:<name> or *")


def encode_data(data: Any) -> str:
    """The event's JSON text: a str is taken as JSON already, anything else is serialised."""
    if isinstance(data, (bytes, bytearray)):
        data = data.decode("utf-8")
    if isinstance(data, str):
        text = data.strip()
        try:
            json.loads(text)
        except ValueError as e:
            raise ValueError(f"data: not valid JSON ({e}); pass a dict to have it encoded") from None
    else:
        # Compact and UTF-8: what the bridge forwards byte for byte.
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    size = len(text.encode("utf-8"))
    if size > MAX_EVENT_BYTES:
        raise ValueError(f"data: {size} bytes, at most {MAX_EVENT_BYTES} allowed")
    return text


def publish(to: str, type: Optional[str], data: Any, *, client: Optional[redis.Redis] = None,
            stream: Optional[str] = None) -> str:
    """Append one event for the bridge; return its stream id.

    `type` None means the bridge's default, ``notification``.
    """
    check_recipients(to)
    fields = {"to": to, "data": encode_data(data)}
    if type is not None:
        if not _TYPE_RE.fullmatch(type):
            raise ValueError(f"type: {type!r} must be 1-128 bytes of [A-Za-z0-9._:-]")
        fields["type"] = type
    c = client or get_client()
    entry_id = c.xadd(stream or os.environ.get("NOTIFYBRIDGE_STREAM", DEFAULT_STREAM), fields)
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def _stream(stream: Optional[str]) -> str:
    return stream or os.environ.get("NOTIFYBRIDGE_STREAM", DEFAULT_STREAM)


def disconnect(to: str, reason: str = "", *, client: Optional[redis.Redis] = None,
               stream: Optional[str] = None) -> str:
    """Close the connections of `to` on every bridge node (code 4001, "revoked: <reason>").

    Like ``notifybridge disconnect``: the revocation is recorded first in
    ``<stream>:revoked`` (each item of `to` -> now in unix seconds), so tokens
    issued before it are refused at the next handshake; then a control entry
    is appended, which every node applies after the events before it.
    Returns the entry id.
    """
    check_recipients(to)
    if len(reason.encode("utf-8")) > 200 or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in reason):
        raise ValueError("reason: one line of at most 200 bytes")
    c = client or get_client()
    name = _stream(stream)
    now = str(int(time.time()))
    c.hset(name + ":revoked", mapping={item: now for item in to.split(",")})
    fields = {"to": to, "control": "disconnect"}
    if reason:
        fields["reason"] = reason
    entry_id = c.xadd(name, fields)
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def current_cursor(*, client: Optional[redis.Redis] = None, stream: Optional[str] = None) -> str:
    """The stream's last generated id ("0-0" when it was never written).

    Read it while rendering a page and hand it to the SDK (``lastEventId``):
    anything appended after the render is then delivered on connect.
    """
    c = client or get_client()
    try:
        info = c.xinfo_stream(_stream(stream))
    except redis.ResponseError as e:
        if "no such key" in str(e).lower():
            return "0-0"
        raise
    last = info["last-generated-id"]
    return last.decode() if isinstance(last, bytes) else last


def presence(*, user: Optional[str] = None, group: Optional[str] = None,
             client: Optional[redis.Redis] = None, stream: Optional[str] = None) -> int:
    """Connections of one user or group on all live bridge nodes (at most ~5 s stale).

    Sums ``<stream>:presence:<node>`` over the nodes whose entry in
    ``<stream>:presence:nodes`` has not expired, as the bridge's
    ``GET /v1/presence`` does.
    """
    if (user is None) == (group is None):
        raise ValueError("give exactly one of user= and group=")
    item = f"user:{user}" if user is not None else f"group:{group}"
    check_recipients(item)
    c = client or get_client()
    name = _stream(stream)
    now_ms = int(time.time() * 1000)
    total = 0
    for node in c.zrangebyscore(name + ":presence:nodes", now_ms, "+inf"):
        node = node.decode() if isinstance(node, bytes) else node
        v = c.hget(f"{name}:presence:{node}", item)
        if v is not None:
            total += int(v)
    return total


def notification_handler(json_data: Any, to: str = "*", type: str = "notification", **kwargs: Any) -> str:
    """Drop-in replacement for the Channels-era ``notification_handler(json_data)``.

    Without `to` it keeps the old behaviour (everyone gets it); name the
    recipients to stop broadcasting, e.g. ``to="user:42,group:ops"``.
    """
    return publish(to, type, json_data, **kwargs)
