"""A websockets echo server: every text and binary message goes back unchanged.

Usage: echo_server.py PORT [--keepalive SECONDS] [--no-deflate] [--expect-extensions VALUE|none]

Listens on 127.0.0.1:PORT, accepts messages up to 16 MiB, and runs until killed.
tests/interop/python/run.sh points ferry's interop_client example at it.

permessage-deflate is accepted with websockets' defaults unless --no-deflate (compression=None).
With --expect-extensions, each connection prints "ok   extensions ..." when the server's
Sec-WebSocket-Extensions answer is exactly VALUE (`none`: no header) and websockets runs the
matching extension, "FAIL extensions ..." otherwise.

With --keepalive, the server pings each client that often (websockets' keepalive) and, when
the connection ends, prints whether the client answered: "ok   keepalive ..." or
"FAIL keepalive ...". Ferry does not show pongs to its application, so this is how the tests
see that a ferry client answers pings, even in the middle of a 16 MiB message.
"""

import argparse
import asyncio
import logging

from websockets.asyncio.server import serve

MAX_SIZE = 16 * 1024 * 1024


def report_extensions(websocket, expected):
    offered = websocket.request.headers.get("Sec-WebSocket-Extensions") or "(nothing)"
    answered = websocket.response.headers.get("Sec-WebSocket-Extensions") or "none"
    active = websocket.protocol.extensions
    print(f"     client offered: {offered}; answered: {answered}; active: {active or 'none'}", flush=True)
    if expected is None:
        return
    names = [extension.name for extension in active]
    if answered != expected:
        print(f"FAIL extensions: expected to answer {expected!r}, answered {answered!r}", flush=True)
    elif names != ([] if expected == "none" else ["permessage-deflate"]):
        print(f"FAIL extensions: answered {answered!r} but websockets runs {active}", flush=True)
    else:
        print(f"ok   extensions: the server answered {answered}, as expected", flush=True)


def report_keepalive(websocket, keepalive):
    # `latency` is measured from the server's own pings only: it stays 0 until the client has
    # answered one of them.
    if websocket.latency > 0:
        print(
            f"ok   keepalive: the client answered the server's pings "
            f"(every {keepalive} s; last round trip {websocket.latency * 1000:.1f} ms)",
            flush=True,
        )
    else:
        print(f"FAIL keepalive: the client answered none of the server's pings (every {keepalive} s)", flush=True)


def make_handler(keepalive, expected_extensions):
    async def echo(websocket):
        report_extensions(websocket, expected_extensions)
        # Ends when the client closes; websockets answers its close frame itself. The keepalive
        # verdict is printed however the connection ended: a failed echo is the client
        # check's to report, not a reason to hide whether pings were answered.
        try:
            async for message in websocket:
                await websocket.send(message)
        finally:
            if keepalive:
                report_keepalive(websocket, keepalive)

    return echo


async def main(port, keepalive, compression, expected_extensions):
    # ping_timeout stays long: a pong delayed by a busy event loop must not fail the run; an
    # unanswered ping shows up in the report above instead.
    async with serve(
        make_handler(keepalive, expected_extensions),
        "127.0.0.1",
        port,
        max_size=MAX_SIZE,
        ping_interval=keepalive or 20,
        ping_timeout=20,
        compression=compression,
    ) as server:
        print(f"python echo server listening on ws://127.0.0.1:{port}/", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="websockets echo server for ferry's interop tests")
    parser.add_argument("port", type=int)
    parser.add_argument("--keepalive", type=float, metavar="SECONDS", help="ping every client this often")
    parser.add_argument("--no-deflate", action="store_true", help="refuse permessage-deflate (compression=None)")
    parser.add_argument(
        "--expect-extensions",
        metavar="VALUE",
        help="the Sec-WebSocket-Extensions answer each connection must get, or 'none'",
    )
    args = parser.parse_args()
    # Handler failures (a peer that broke the protocol, say) go to stderr.
    logging.basicConfig(level=logging.INFO, format="echo_server: %(levelname)s %(message)s")
    try:
        compression = None if args.no_deflate else "deflate"
        asyncio.run(main(args.port, args.keepalive, compression, args.expect_extensions))
    except KeyboardInterrupt:
        pass
