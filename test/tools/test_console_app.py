"""The console's web side alone (aiohttp's test client): the bind rule, the token rule, the pushes."""
from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("aiohttp")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from clip_vla.tools.console.app import TOKEN_HEADER, ConsoleApp, ConsoleError, ConsoleServer, check_bind  # noqa: E402


def run(coro):
    return asyncio.run(coro)


async def with_client(app: ConsoleApp, body):
    client = TestClient(TestServer(app.web_app()))
    await client.start_server()
    try:
        return await body(client)
    finally:
        await client.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.5"])
def test_loopback_binds_need_no_token(host):
    check_bind(host, 8765, "")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "robot.local"])
def test_a_non_loopback_bind_without_a_token_is_refused(host):
    with pytest.raises(ConsoleError, match="set a token"):
        check_bind(host, 8765, "")
    check_bind(host, 8765, "s3cret")


def test_the_server_refuses_a_public_bind_before_listening():
    with pytest.raises(ConsoleError):
        ConsoleServer(ConsoleApp(print, print), "0.0.0.0", 0, "")
    with pytest.raises(ConsoleError, match="port"):
        check_bind("127.0.0.1", 70000, "")


def test_without_a_token_the_page_and_state_are_served():
    async def body(client):
        page = await client.get("/")
        state = await client.get("/state")
        return page.status, await page.text(), state.status

    status, text, state = run(with_client(ConsoleApp(print, print), body))
    assert status == 200 and "clip_vla console" in text and state == 200
    assert "http://" not in text.replace("http://www.w3.org", "")  # nothing fetched from the internet


def test_with_a_token_every_request_and_the_websocket_need_it():
    app = ConsoleApp(print, print, token="s3cret")

    async def body(client):
        codes = {}
        for path in ("/", "/state", "/ws"):
            codes[path] = (await client.get(path)).status
        codes["wrong"] = (await client.get("/?token=nope")).status
        codes["query"] = (await client.get("/?token=s3cret")).status
        codes["header"] = (await client.get("/state", headers={TOKEN_HEADER: "s3cret"})).status
        ws = await client.ws_connect("/ws?token=s3cret")
        first = json.loads((await ws.receive()).data)
        await ws.close()
        return codes, first

    codes, first = run(with_client(app, body))
    assert codes == {"/": 401, "/state": 401, "/ws": 401, "wrong": 401, "query": 200, "header": 200}
    assert first["type"] == "snapshot"


def test_commands_from_the_page_reach_the_bridge_and_events_reach_the_page():
    sent, suggested = [], []
    app = ConsoleApp(sent.append, lambda: suggested.append(True))

    async def body(client):
        ws = await client.ws_connect("/ws")
        assert json.loads((await ws.receive()).data)["type"] == "snapshot"
        await ws.send_str(json.dumps({"type": "command", "text": "option 1"}))
        assert json.loads((await ws.receive()).data) == {"type": "sent", "data": {"command": "option 1"}}
        await ws.send_str(json.dumps({"type": "suggest"}))
        await ws.send_str(json.dumps({"type": "teleport"}))
        error = json.loads((await ws.receive()).data)
        app.event("status", {"command_id": 1, "status": "accepted"})
        status = json.loads((await ws.receive()).data)
        app.image(b"\xff\xd8jpeg")
        image = await ws.receive()
        await ws.close()
        return error, status, image.data

    error, status, image = run(with_client(app, body))
    assert sent == ["option 1"] and suggested == [True]
    assert error["type"] == "error" and "teleport" in error["data"]["message"]
    assert status == {"type": "status", "data": {"command_id": 1, "status": "accepted"}}
    assert image == b"\xff\xd8jpeg"
    assert [h["type"] for h in app.snapshot()["history"]] == ["sent", "status"]


def test_unknown_event_kinds_are_a_programming_error():
    with pytest.raises(ValueError, match="unknown console event"):
        ConsoleApp(print, print).event("weather", {})
