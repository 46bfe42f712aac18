"""Checks `ferry serve --jwt-hmac-secret-file` with tokens a Python backend mints (PyJWT) and
the websockets client: a token's permissions let it subscribe and publish on the control
connection and nothing else; no token, an expired one, or one signed with another secret get
HTTP 401 before the upgrade; a topic the token does not cover gets 403.

Usage:
  token_check.py URL SECRET_FILE     URL is ws://127.0.0.1:PORT (no path)

Prints one "ok   ..." line per check; on the first failure one "FAIL ..." line, exit 1. Run by
tests/interop/python/run.sh.
"""

import asyncio
import json
import sys
import time

import jwt
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus


class CheckFailed(Exception):
    pass


def ok(what):
    print(f"ok   {what}", flush=True)


def check(condition, what, details=""):
    if not condition:
        raise CheckFailed(f"{what}: {details}" if details else what)
    ok(what)


def token(secret, **claims):
    now = int(time.time())
    body = {"sub": "py-user", "iat": now, "exp": now + 600}
    body.update(claims)
    return jwt.encode(body, secret, algorithm="HS256")


async def request(ws, body):
    await ws.send(json.dumps(body))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if reply.get("type") != "message":
            return reply


async def refused(url, headers, status, what):
    try:
        async with connect(url, additional_headers=headers):
            pass
    except InvalidStatus as err:
        got = err.response.status_code
        body = err.response.body.decode(errors="replace")
        check(got == status, f"{what}: HTTP {status} ({body.strip()})", f"HTTP {got}")
        return
    raise CheckFailed(f"{what}: the handshake succeeded")


async def main(base, secret_file):
    with open(secret_file, "rb") as f:
        secret = f.read().rstrip(b"\n")
    good = token(secret, ferry={"subscribe": ["chat.*"], "publish": ["chat.lobby"]})
    auth = {"Authorization": f"Bearer {good}"}
    async with connect(f"{base}/ws/control", additional_headers=auth) as ws:
        ok("a PyJWT token opens the control connection")
        ack = await request(ws, {"op": "subscribe", "topics": ["chat.lobby"], "id": 1})
        check(ack.get("type") == "ack", "it may subscribe to chat.lobby", ack)
        ack = await request(ws, {"op": "publish", "topic": "chat.lobby", "data": "hi", "id": 2})
        check(ack.get("type") == "ack" and ack.get("offset") == 1, "it may publish to chat.lobby", ack)
        no = await request(ws, {"op": "publish", "topic": "chat.other", "data": "x", "id": 3})
        check(no.get("code") == "forbidden", "publishing outside its patterns is forbidden", no)
        no = await request(ws, {"op": "subscribe", "topics": ["admin"], "id": 4})
        check(no.get("code") == "forbidden", "subscribing outside its patterns is forbidden", no)
    await refused(f"{base}/ws/control", {}, 401, "no token")
    expired = token(secret, exp=int(time.time()) - 60)
    await refused(f"{base}/ws/control", {"Authorization": f"Bearer {expired}"}, 401, "an expired token")
    forged = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, b"not-the-secret-" * 4, algorithm="HS256")
    await refused(f"{base}/ws/control", {"Authorization": f"Bearer {forged}"}, 401, "another secret's token")
    await refused(f"{base}/ws/topics/admin", auth, 403, "a topic the token does not cover")


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2]))
    except CheckFailed as err:
        print(f"FAIL {err}", flush=True)
        sys.exit(1)
