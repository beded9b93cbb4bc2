"""A Django Channels channel layer that hands group messages to notifybridge.

Point CHANNEL_LAYERS at it and code that calls ``group_send`` keeps working
unchanged, while the browsers connect to the bridge instead of to Channels
consumers::

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "notifybridge_channels.NotifyBridgeChannelLayer",
            "CONFIG": {"url": "unix:///run/redis/redis.sock", "stream": "notifications"},
        }
    }

    # unchanged application code
    async_to_sync(get_channel_layer().group_send)(
        "notifications", {"type": "send_notification", "message": json_data})

becomes the stream entry ``to=group:notifications type=send_notification
data={"message":...}``; every browser whose identity lists the group
``notifications`` receives ``{"id":...,"type":"send_notification","data":{"message":...}}``.

Only sending to groups makes sense here: the bridge, not Django, holds the
WebSocket connections, so the receiving half of the layer API (receive,
new_channel, group_add, ...) raises an error that says so.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Dict, Optional

import redis

try:  # Subclass Channels' base when it is installed, for isinstance checks and extensions.
    from channels.layers import BaseChannelLayer as _Base
except ImportError:  # pragma: no cover - the layer works without Channels too
    _Base = object

_TYPE_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_GROUP_BAD = re.compile(r"[,\s\x00-\x1f\x7f]")


class BridgeDelivers(NotImplementedError):
    """Raised by the receiving methods: notifybridge delivers to browsers itself."""


def _delivers(what: str) -> BridgeDelivers:
    return BridgeDelivers(
        f"NotifyBridgeChannelLayer.{what}() is not available: notifybridge delivers messages to "
        "browsers itself, so there are no Channels consumers to receive them. Connect the browser to "
        "the bridge's /ws (see docs/migrating-from-channels.md) and keep only group_send in Django."
    )


class NotifyBridgeChannelLayer(_Base):
    """Channel layer whose group_send appends to the notifybridge stream."""

    extensions = ["groups"]

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", stream: str = "notifications",
                 expiry: int = 60, capacity: int = 100, channel_capacity: Optional[Dict[str, int]] = None,
                 **kwargs: Any) -> None:
        # expiry and capacity belong to the Channels API; they have no meaning here.
        if _Base is not object:
            super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.url = url
        self.stream = stream
        # The synchronous client, called from an executor thread: its pool
        # is not tied to an event loop, and async_to_sync in a plain Django
        # view runs each call on a loop of its own, which would leave an
        # asyncio client's connections behind on every call.
        self._redis = redis.Redis.from_url(url)

    @staticmethod
    def entry(group: str, message: Dict[str, Any]) -> Dict[str, str]:
        """The stream fields for one group_send, checked against the contract."""
        if not isinstance(group, str) or not group or len(group.encode()) > 256 or _GROUP_BAD.search(group):
            raise ValueError(f"group {group!r}: 1-256 bytes, no comma, whitespace or control character")
        if not isinstance(message, dict):
            raise TypeError("message must be a dict")
        rest = dict(message)
        typ = rest.pop("type", None)
        fields = {
            "to": f"group:{group}",
            "data": json.dumps(rest, separators=(",", ":"), ensure_ascii=False, allow_nan=False),
        }
        if typ is not None:
            if not isinstance(typ, str) or not _TYPE_RE.fullmatch(typ):
                raise ValueError(f"message type {typ!r}: must be 1-128 bytes of [A-Za-z0-9._:-]")
            fields["type"] = typ
        return fields

    async def group_send(self, group: str, message: Dict[str, Any]) -> None:
        fields = self.entry(group, message)
        await asyncio.get_running_loop().run_in_executor(None, self._redis.xadd, self.stream, fields)

    async def flush(self) -> None:
        # Nothing is buffered: every group_send is in Redis when it returns.
        pass

    async def close(self) -> None:
        self._redis.close()

    # The receiving half of the channel layer API.

    async def send(self, channel: str, message: Dict[str, Any]) -> None:
        raise _delivers("send")

    async def receive(self, channel: str) -> Dict[str, Any]:
        raise _delivers("receive")

    async def new_channel(self, prefix: str = "specific.") -> str:
        raise _delivers("new_channel")

    async def group_add(self, group: str, channel: str) -> None:
        raise _delivers("group_add")

    async def group_discard(self, group: str, channel: str) -> None:
        raise _delivers("group_discard")
