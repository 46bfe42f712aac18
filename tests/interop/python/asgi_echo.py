"""A WebSocket echo as an ASGI app, for Hypercorn: Hypercorn speaks HTTP/1.1 and HTTP/2 (with
RFC 8441 WebSockets) itself, so ferry's HTTP/2 client meets a third-party HTTP/2 server.

    hypercorn --bind 127.0.0.1:PORT tests/interop/python/asgi_echo.py:app

Every WebSocket is accepted (with the first subprotocol offered, if any) and every message is
sent back as it came. The app's stdout gets one line per connection naming the HTTP version,
so the test can tell HTTP/2 from HTTP/1.1 by the server's word.
"""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"websocket only\n"})
        return
    print(f"websocket over HTTP/{scope['http_version']}", flush=True)
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
