"""Checks a WebSocket echo server (ferry echo) with the websockets client.

Usage:
  client_check.py echo URL [--no-compression] [--expect-extensions VALUE|none]
                                         echo matrix, pings, closing handshake
  client_check.py handshake URL          bad opening handshakes get the right HTTP refusal
  client_check.py oversize URL --limit N server started with --max-message-size N closes 1009

Prints one "ok   ..." line per check. On the first failure prints one "FAIL ..." line and
exits 1; except in the echo matrix, where a failed message is reported and the matrix goes on
(on a new connection if the server closed this one), so one bad case hides no other. Run by tests/interop/python/run.sh; see tests/interop/README.md.

websockets offers permessage-deflate unless --no-compression (compression=None). With
--expect-extensions, the server's Sec-WebSocket-Extensions answer must be exactly VALUE (`none`:
no header), and websockets must have activated the matching extension.
"""

import argparse
import asyncio
import random
import socket
import sys
import urllib.parse

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

MAX_SIZE = 16 * 1024 * 1024
# Empty, the 7-bit length limit and the first 16-bit one, the 16-bit limit and the first
# 64-bit one, then large messages up to just under 16 MiB.
SIZES = [0, 1, 125, 126, 127, 65535, 65536, 1 << 20, MAX_SIZE - 1024]
REPLY_TIMEOUT = 30.0


class CheckFailed(Exception):
    pass


def ok(what):
    print(f"ok   {what}", flush=True)


def text_of_size(size):
    """Text of exactly `size` UTF-8 bytes, full of 1-, 2-, 3- and 4-byte characters."""
    unit = "aé€😀"  # 1 + 2 + 3 + 4 = 10 bytes
    return unit * (size // 10) + "x" * (size % 10)


def json_of_size(size):
    """JSON-like ASCII text of exactly `size` bytes: records that differ a little, so it
    compresses well without being one repeated string (the same text as ferry's
    interop_client example)."""
    parts = ["["]
    length = 1
    record = 0
    while length < size:
        part = (
            f'{{"id":{record},"name":"user-{record}","active":{str(record % 3 == 0).lower()},'
            f'"score":{record * 7919 % 1000},"tags":["alpha","beta"]}},'
        )
        parts.append(part)
        length += len(part)
        record += 1
    return "".join(parts)[:size]


def bytes_of_size(size):
    """`size` pseudo-random bytes: every byte value shows up, so masking mistakes cannot hide."""
    return random.Random(size).randbytes(size)


def describe(message):
    kind = "text" if isinstance(message, str) else "binary"
    size = len(message.encode() if isinstance(message, str) else message)
    return f"{kind} {size} bytes"


def compare(label, sent, echo):
    """The echo must have the same type and the same bytes as what was sent."""
    if type(sent) is not type(echo):
        raise CheckFailed(f"{label}: sent {type(sent).__name__}, got {type(echo).__name__} back")
    sent_bytes = sent.encode() if isinstance(sent, str) else sent
    echo_bytes = echo.encode() if isinstance(echo, str) else echo
    if len(sent_bytes) != len(echo_bytes):
        raise CheckFailed(f"{label}: sent {len(sent_bytes)} bytes, got {len(echo_bytes)} back")
    if sent_bytes != echo_bytes:
        at = next(i for i, (a, b) in enumerate(zip(sent_bytes, echo_bytes)) if a != b)
        raise CheckFailed(
            f"{label}: echo differs at byte {at}: sent {sent_bytes[at]:#04x}, got {echo_bytes[at]:#04x}"
        )


async def recv_echo(ws, label):
    try:
        return await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)
    except TimeoutError:
        raise CheckFailed(f"{label}: no echo within {REPLY_TIMEOUT} s") from None
    except ConnectionClosed as exc:
        raise CheckFailed(f"{label}: connection closed instead of echoing: {exc}") from None


def matrix():
    """(what it is made of, message) at each size: UTF-8 text, JSON-like text and binary (these
    compress well), random binary (this does not); then a short text of assorted Unicode."""
    messages = []
    for size in SIZES:
        messages.append(("utf-8", text_of_size(size)))
        messages.append(("json", json_of_size(size)))
        messages.append(("json", json_of_size(size).encode()))
        messages.append(("random", bytes_of_size(size)))
    messages.append(("unicode", "ASCII, é ü ß, € ✓ 中文, 😀 🦀 𝄞, 👩‍💻 (a ZWJ sequence)"))
    return messages


def check_extensions(ws, expected):
    """Prints what was offered and answered; with `expected`, checks the answer is exactly that
    and that websockets runs the extension (or none). Returns whether it did."""
    offered = ws.request.headers.get("Sec-WebSocket-Extensions") or "(nothing)"
    answered = ws.response.headers.get("Sec-WebSocket-Extensions")
    active = ws.protocol.extensions
    print(f"     offered:         {offered}", flush=True)
    print(f"     server answered: {answered or '(none)'}", flush=True)
    print(f"     active:          {active or 'none'}", flush=True)
    names = [extension.name for extension in active]
    if expected is None:
        return True
    if (answered or "none") != expected:
        print(f"FAIL extensions: expected the server to answer {expected!r}, got {answered or 'none'!r}", flush=True)
        return False
    if names != ([] if expected == "none" else ["permessage-deflate"]):
        print(f"FAIL extensions: the server answered {expected!r} but websockets runs {active}", flush=True)
        return False
    ok(f"extensions: server answered {expected}, as expected")
    return True


async def check_echo(url, compression, expected_extensions):
    """Returns how many checks failed and went on (the extensions, matrix messages); any other
    failure raises CheckFailed."""
    failed = 0

    def open_connection():
        return connect(url, max_size=MAX_SIZE, open_timeout=10, close_timeout=10, compression=compression)

    ws = await open_connection()
    try:
        ok(f"connected to {url}")
        if not check_extensions(ws, expected_extensions):
            failed += 1

        for content, message in matrix():
            label = f"{describe(message)} ({content})"
            try:
                await ws.send(message)
                compare(label, message, await recv_echo(ws, label))
                ok(f"echo {label}")
            except (CheckFailed, ConnectionClosed) as exc:
                print(f"FAIL {exc}" if isinstance(exc, CheckFailed) else f"FAIL {label}: {exc}", flush=True)
                failed += 1
                if ws.state is not State.OPEN:
                    await ws.close()
                    ws = await open_connection()
                    print("     (reconnected to go on with the matrix)", flush=True)

        # Fragmented messages: websockets sends each item as its own frame.
        fragments = [text_of_size(1000), "😀 split here", text_of_size(70000), ""]
        await ws.send(fragments)
        compare("fragmented text", "".join(fragments), await recv_echo(ws, "fragmented text"))
        ok("echo fragmented text (4 frames) came back whole")
        chunks = [bytes_of_size(1), bytes_of_size(0), bytes_of_size(65536), bytes_of_size(300)]
        await ws.send(chunks)
        compare("fragmented binary", b"".join(chunks), await recv_echo(ws, "fragmented binary"))
        ok("echo fragmented binary (4 frames) came back whole")

        # Pings: each must get a pong carrying the same payload (websockets matches them).
        for payload in (b"ferry-interop", b"", bytes_of_size(125)):
            pong = await ws.ping(payload)
            try:
                latency = await asyncio.wait_for(pong, REPLY_TIMEOUT)
            except TimeoutError:
                raise CheckFailed(f"ping with {len(payload)} bytes: no pong within {REPLY_TIMEOUT} s") from None
            ok(f"ping with {len(payload)} bytes got its pong ({latency * 1000:.1f} ms)")

        # A ping in the middle of a fragmented message (control frames may interleave, §5.4).
        async def slow_fragments():
            yield "first half, "
            await asyncio.sleep(0.05)
            yield "second half"

        sending = asyncio.create_task(ws.send(slow_fragments()))
        await asyncio.sleep(0.01)
        pong = await ws.ping(b"mid-message")
        await sending
        compare("text with a ping inside", "first half, second half", await recv_echo(ws, "text with a ping inside"))
        await asyncio.wait_for(pong, REPLY_TIMEOUT)
        ok("ping between fragments got its pong and the message came back whole")

        await ws.close(1000, "interop done")
        if ws.close_code != 1000:
            raise CheckFailed(f"close: sent 1000, server answered {ws.close_code} {ws.close_reason!r}")
        if ws.protocol.close_rcvd_then_sent is not False:
            raise CheckFailed("close: the server's close frame was not an answer to ours")
        ok(f"close 1000 echoed by the server (reason {ws.close_reason!r})")
    finally:
        await ws.close()
    return failed


def raw_handshake(url, request_lines, *, refused=True):
    """Sends a hand-written opening handshake; returns the reply's status and headers.

    A refusal must come with the server closing the connection, so for `refused` the reply is
    read to the end; otherwise only up to the end of the response head.
    """
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=REPLY_TIMEOUT) as sock:
        sock.sendall(("\r\n".join(request_lines) + "\r\n\r\n").encode())
        reply = b""
        while refused or b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    lines = reply.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    try:
        version, status, *_ = lines[0].split(" ", 2)
        status = int(status)
    except ValueError:
        raise CheckFailed(f"not an HTTP response: {reply[:200]!r}") from None
    if version != "HTTP/1.1":
        raise CheckFailed(f"status line {lines[0]!r} is not HTTP/1.1")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def check_handshake(url):
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc
    good = [
        f"GET {parts.path or '/'} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]

    # §4.4: a version the server does not speak gets 426 naming the versions it does.
    status, headers = raw_handshake(url, [line.replace("Version: 13", "Version: 8") for line in good])
    if status != 426:
        raise CheckFailed(f"Sec-WebSocket-Version: 8: expected HTTP 426, got {status}")
    if headers.get("sec-websocket-version") != "13":
        raise CheckFailed(
            f"Sec-WebSocket-Version: 8: 426 without 'Sec-WebSocket-Version: 13' (got {headers.get('sec-websocket-version')!r})"
        )
    ok("Sec-WebSocket-Version: 8 refused with 426 and Sec-WebSocket-Version: 13")

    # A plain HTTP request (no Upgrade) to the WebSocket endpoint.
    status, headers = raw_handshake(url, [line for line in good if not line.startswith("Upgrade:")])
    if status != 426:
        raise CheckFailed(f"request without Upgrade: expected HTTP 426, got {status}")
    ok("request without Upgrade: websocket refused with 426")

    # The same request, well formed, is accepted: the refusals above were about the version.
    status, headers = raw_handshake(url, good, refused=False)
    if status != 101:
        raise CheckFailed(f"well-formed request: expected HTTP 101, got {status}")
    if headers.get("sec-websocket-accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=":
        raise CheckFailed(f"101 with Sec-WebSocket-Accept {headers.get('sec-websocket-accept')!r}")
    ok("the same request with version 13 gets 101 and the RFC 6455 example accept key")


async def expect_1009(url, label, send):
    """Opens a connection, runs `send`, and expects the server to close it with 1009."""
    async with connect(url, max_size=MAX_SIZE, open_timeout=10, close_timeout=10) as ws:
        await send(ws)
        try:
            echo = await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)
        except TimeoutError:
            raise CheckFailed(f"{label}: no close within {REPLY_TIMEOUT} s") from None
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            if code != 1009:
                raise CheckFailed(f"{label}: expected close 1009, got {exc}") from None
            ok(f"{label}: server closed with 1009 ({exc.rcvd.reason!r})")
            return
        raise CheckFailed(f"{label}: expected close 1009, got an echo of {describe(echo)}")


async def check_oversize(url, limit):
    # At the limit: still echoed.
    async with connect(url, max_size=MAX_SIZE, open_timeout=10, close_timeout=10) as ws:
        for message in (bytes_of_size(limit), text_of_size(limit)):
            label = f"{describe(message)} (at the limit)"
            await ws.send(message)
            compare(label, message, await recv_echo(ws, label))
            ok(f"echo {label}")

    async def one_frame_over(ws):
        await ws.send(bytes_of_size(limit + 1))

    async def text_over(ws):
        await ws.send(text_of_size(limit + 10))

    async def fragments_over(ws):
        # Each frame is under the limit; the message they make is over it.
        await ws.send([bytes_of_size(limit // 2 + 1), bytes_of_size(limit // 2 + 1)])

    await expect_1009(url, f"binary {limit + 1} bytes", one_frame_over)
    await expect_1009(url, f"text {limit + 10} bytes", text_over)
    await expect_1009(url, f"2 fragments of {limit // 2 + 1} bytes", fragments_over)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["echo", "handshake", "oversize"])
    parser.add_argument("url", help="ws://127.0.0.1:PORT/")
    parser.add_argument("--limit", type=int, default=1024, help="the server's --max-message-size (oversize)")
    parser.add_argument("--no-compression", action="store_true", help="offer no permessage-deflate (echo)")
    parser.add_argument(
        "--expect-extensions",
        metavar="VALUE",
        help="the Sec-WebSocket-Extensions answer the server must give, or 'none' (echo)",
    )
    args = parser.parse_args()
    try:
        if args.mode == "echo":
            compression = None if args.no_compression else "deflate"
            if asyncio.run(check_echo(args.url, compression, args.expect_extensions)):
                sys.exit(1)
        elif args.mode == "handshake":
            check_handshake(args.url)
        else:
            asyncio.run(check_oversize(args.url, args.limit))
    except CheckFailed as exc:
        print(f"FAIL {exc}", flush=True)
        sys.exit(1)
    except (OSError, ConnectionClosed) as exc:
        print(f"FAIL {args.mode}: {type(exc).__name__}: {exc}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
