from pgbridge import PostgresStreamBridge


async def test_a_bridge_publishes_and_replays(bridge: PostgresStreamBridge) -> None:
    event_id = await bridge.publish("run", "token", {"text": "hi"})
    assert event_id.endswith("-1")
