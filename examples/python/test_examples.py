"""End-to-end tests of the Python producers: notify.py and the Channels layer
publish into a real redis-server, a real notifybridge delivers, and a
WebSocket client checks what arrives.

Run with Debian's python3 (python3-redis, python3-django-channels):
    cd examples/python && /usr/bin/python3 -m unittest -v
"""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import redis  # noqa: E402

import bridgetest  # noqa: E402
import notify  # noqa: E402
import notifybridge_channels  # noqa: E402

redis_srv = bridge = None


def setUpModule():
    global redis_srv, bridge
    bin_path = bridgetest.binary()
    redis_srv = bridgetest.Redis()
    unittest.addModuleCleanup(redis_srv.kill)
    bridge = bridgetest.Bridge(bin_path, redis_srv.url)
    unittest.addModuleCleanup(bridge.kill)


class Base(unittest.TestCase):
    def connect(self, query):
        ws = bridgetest.WebSocket(bridge.port, query)
        self.addCleanup(ws.close)
        ws.until_caught_up()
        return ws


class NotifyTest(Base):
    def setUp(self):
        self.client = redis.Redis.from_url(redis_srv.url)
        self.addCleanup(self.client.close)

    def test_notification_handler_targets_recipients(self):
        alice = self.connect("user=alice&groups=ops")
        bob = self.connect("user=bob")
        data = {"fiber": "F-12", "km": 3.2, "site": "Grenoble – Échirolles"}
        first = notify.notification_handler(data, to="user:alice", type="alarm.fiber_break", client=self.client)
        second = notify.notification_handler('{"fiber":"F-7"}', to="group:ops", type="alarm.attenuation",
                                             client=self.client)
        for_bob = notify.notification_handler({"n": 1}, to="user:bob", client=self.client)
        self.assertTrue(bridgetest.is_id(first))

        got = alice.events(2)
        self.assertEqual([e["id"] for e in got], [first, second])
        self.assertEqual(got[0], {"id": first, "type": "alarm.fiber_break", "data": data})
        self.assertEqual(got[1]["data"], {"fiber": "F-7"})
        self.assertEqual(bob.events(1), [{"id": for_bob, "type": "notification", "data": {"n": 1}}])

    def test_disconnect_closes_with_4001_after_earlier_events(self):
        carol = self.connect("user=carol")
        first = notify.publish("user:carol", None, {"n": 1}, client=self.client)
        notify.disconnect("user:carol", "logged out", client=self.client)
        self.assertEqual([e["id"] for e in carol.events(1)], [first])
        with self.assertRaisesRegex(ConnectionError, "4001"):
            carol.events(1)
        self.assertTrue(self.client.hexists("notifications:revoked", "user:carol"))
        with self.assertRaises(ValueError):
            notify.disconnect("user:carol", "two\nlines", client=self.client)

    def test_current_cursor_closes_the_render_race(self):
        cursor = notify.current_cursor(client=self.client)
        self.assertTrue(bridgetest.is_id(cursor))
        missed = notify.publish("user:dave", None, {"alarm": 1}, client=self.client)
        dave = bridgetest.WebSocket(bridge.port, "user=dave&last_event_id=" + cursor)
        self.addCleanup(dave.close)
        self.assertEqual([e["id"] for e in dave.events(1)], [missed])
        self.assertEqual(notify.current_cursor(client=self.client, stream="never-written"), "0-0")

    def test_presence_counts_live_connections(self):
        self.connect("user=erin&groups=noc-north")
        bridgetest.wait_for("presence of erin", lambda: notify.presence(user="erin", client=self.client) == 1,
                            timeout=15)
        self.assertGreaterEqual(notify.presence(group="noc-north", client=self.client), 1)
        self.assertEqual(notify.presence(user="nobody", client=self.client), 0)
        with self.assertRaises(ValueError):
            notify.presence(user="a b", client=self.client)

    def test_default_is_the_old_broadcast(self):
        carol = self.connect("user=carol")
        entry = notify.notification_handler({"message": "hello"}, client=self.client)
        self.assertEqual(carol.events(1)[0]["id"], entry)

    def test_environment_configures_the_default_client(self):
        old = dict(os.environ)
        self.addCleanup(lambda: (os.environ.clear(), os.environ.update(old)))
        os.environ["NOTIFYBRIDGE_REDIS_URL"] = redis_srv.url
        notify._client = None
        self.addCleanup(lambda: setattr(notify, "_client", None))
        dave = self.connect("user=dave")
        entry = notify.notification_handler([1, 2, 3], to="user:dave", type="test.done")
        self.assertEqual(dave.events(1)[0], {"id": entry, "type": "test.done", "data": [1, 2, 3]})

    def test_mistakes_raise_before_anything_is_written(self):
        before = self.client.xlen("notifications")
        for kwargs in (
            dict(json_data={}, to="user:a b"),
            dict(json_data={}, to="user:a,,user:b"),
            dict(json_data={}, to="room:1"),
            dict(json_data={}, to=""),
            dict(json_data={}, to="*", type="bad type"),
            dict(json_data="{not json", to="*"),
            dict(json_data="x" * 70000, to="*"),
            dict(json_data=float("nan"), to="*"),
        ):
            with self.subTest(**{k: str(v)[:30] for k, v in kwargs.items()}):
                with self.assertRaises(ValueError):
                    notify.notification_handler(client=self.client, **kwargs)
        self.assertEqual(self.client.xlen("notifications"), before)


class ChannelLayerTest(Base):
    def test_original_notification_handler_works_unchanged(self):
        from django.conf import settings

        if not settings.configured:
            settings.configure(CHANNEL_LAYERS={"default": {
                "BACKEND": "notifybridge_channels.NotifyBridgeChannelLayer",
                "CONFIG": {"url": redis_srv.url},
            }})
        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer

        # The Channels-era code of the monitoring system, verbatim.
        def notification_handler(json_data):
            channel_layer = get_channel_layer()
            async_to_sync(channel_layer.group_send)(
                "notifications", {"type": "send_notification", "message": json_data})

        browser = self.connect("user=eve&groups=notifications")
        outsider = self.connect("user=frank&groups=other")
        notification_handler(json.dumps({"fiber": "F-12", "status": "break"}))
        notification_handler({"fiber": "F-13", "status": "ok"})

        got = browser.events(2)
        self.assertEqual([e["type"] for e in got], ["send_notification"] * 2)
        self.assertEqual(got[0]["data"], {"message": json.dumps({"fiber": "F-12", "status": "break"})})
        self.assertEqual(got[1]["data"], {"message": {"fiber": "F-13", "status": "ok"}})
        # frank is not in the group: the next thing he gets is his own event.
        mine = notify.notification_handler({"n": 1}, to="user:frank", client=redis.Redis.from_url(redis_srv.url))
        self.assertEqual(outsider.events(1)[0]["id"], mine)

        layer = get_channel_layer()
        self.assertIsInstance(layer, notifybridge_channels.NotifyBridgeChannelLayer)
        for method, args in ((layer.receive, ("x",)), (layer.new_channel, ()),
                             (layer.group_add, ("notifications", "x")), (layer.send, ("x", {"type": "t"}))):
            with self.subTest(method=method.__name__):
                with self.assertRaisesRegex(notifybridge_channels.BridgeDelivers, "notifybridge delivers"):
                    async_to_sync(method)(*args)

    def test_entry_mapping(self):
        entry = notifybridge_channels.NotifyBridgeChannelLayer.entry
        self.assertEqual(entry("ops", {"type": "alarm.fiber_break", "fiber": "F-1", "km": 1.5}),
                         {"to": "group:ops", "type": "alarm.fiber_break", "data": '{"fiber":"F-1","km":1.5}'})
        self.assertEqual(entry("ops", {"x": 1}), {"to": "group:ops", "data": '{"x":1}'})
        for group, message in (("a,b", {"type": "t"}), ("", {"type": "t"}), ("ops", {"type": "a b"})):
            with self.subTest(group=group, message=message), self.assertRaises(ValueError):
                entry(group, message)


if __name__ == "__main__":
    unittest.main()
