"""A websockets echo server: every text and binary message goes back unchanged.

Usage: echo_server.py PORT [--keepalive SECONDS]

Listens on 127.0.0.1:PORT, accepts messages up to 16 MiB, and runs until killed.
tests/interop/run.sh points ferry's interop_client example at it.

With --keepalive, the server pings each client that often (websockets' keepalive) and, when
the client closes, prints whether the client answered: "ok   keepalive ..." or
"FAIL keepalive ...". Ferry does not show pongs to its application, so this is how the tests
see that a ferry client answers pings, even in the middle of a 16 MiB message.
"""

import argparse
import asyncio
import logging

from websockets.asyncio.server import serve

MAX_SIZE = 16 * 1024 * 1024


def make_handler(keepalive):
    async def echo(websocket):
        # Ends when the client closes; websockets answers its close frame itself.
        async for message in websocket:
            await websocket.send(message)
        if keepalive:
            # `latency` is measured from the server's own pings only: it stays 0 until the
            # client has answered one of them.
            if websocket.latency > 0:
                print(
                    f"ok   keepalive: the client answered the server's pings "
                    f"(every {keepalive} s; last round trip {websocket.latency * 1000:.1f} ms)",
                    flush=True,
                )
            else:
                print(f"FAIL keepalive: the client answered none of the server's pings (every {keepalive} s)", flush=True)

    return echo


async def main(port, keepalive):
    # ping_timeout stays long: a pong delayed by a busy event loop must not fail the run; an
    # unanswered ping shows up in the report above instead.
    async with serve(
        make_handler(keepalive),
        "127.0.0.1",
        port,
        max_size=MAX_SIZE,
        ping_interval=keepalive or 20,
        ping_timeout=20,
    ) as server:
        print(f"python echo server listening on ws://127.0.0.1:{port}/", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="websockets echo server for ferry's interop tests")
    parser.add_argument("port", type=int)
    parser.add_argument("--keepalive", type=float, metavar="SECONDS", help="ping every client this often")
    args = parser.parse_args()
    # Handler failures (a peer that broke the protocol, say) go to stderr.
    logging.basicConfig(level=logging.INFO, format="echo_server: %(levelname)s %(message)s")
    try:
        asyncio.run(main(args.port, args.keepalive))
    except KeyboardInterrupt:
        pass
