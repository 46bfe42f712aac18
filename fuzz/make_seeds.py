#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/.

Each seed is small and meaningful (see the input formats in src/lib.rs). Run from anywhere:
    python3 fuzz/make_seeds.py
It rewrites only the named seed files; inputs a fuzzing run added are left alone.
"""

import base64
import hashlib
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
CLIENT_MASK = bytes([0xA1, 0xB2, 0xC3, 0xD4])  # on frames a client sends to the server


def frame(fin, opcode, payload, mask=None, rsv=0, form=None):
    out = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if mask else 0
    n = len(payload)
    if form == 64 or n > 0xFFFF:
        out += bytes([mask_bit | 127]) + struct.pack(">Q", n)
    elif form == 16 or n > 125:
        out += bytes([mask_bit | 126]) + struct.pack(">H", n)
    else:
        out += bytes([mask_bit | n])
    if mask:
        out += mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    else:
        out += payload
    return bytes(out)


def to_server(fin, opcode, payload, **kw):
    return frame(fin, opcode, payload, mask=CLIENT_MASK, **kw)


def to_client(fin, opcode, payload, **kw):
    return frame(fin, opcode, payload, **kw)


def close_payload(code, reason=b""):
    return struct.pack(">H", code) + reason


def write(target, name, data):
    folder = os.path.join(ROOT, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# frame_decoder: [ctl] stream. ctl bit 7 small limits, bit 6 EOF, bits 0-5 read-size seed.
FD = "frame_decoder"
write(FD, "rfc_masked_hello", b"\x00" + bytes.fromhex("818537fa213d7f9f4d5158"))
write(FD, "fragmented_text_with_ping", b"\x03" + to_server(False, 1, b"Hel")
      + to_server(True, 9, b"ping") + to_server(True, 0, b"lo"))
write(FD, "close_1000_bye", b"\x00" + to_server(True, 8, close_payload(1000, b"bye")))
write(FD, "close_invalid_code_1005", b"\x00" + to_server(True, 8, close_payload(1005)))
write(FD, "binary_16bit_length", b"\x07" + to_server(True, 2, bytes(range(126))))
write(FD, "binary_64bit_length", b"\x00" + to_server(True, 2, b"sixty-four", form=64))
write(FD, "text_invalid_utf8", b"\x01" + to_server(True, 1, b"ok \xed\xa0\x80"))
write(FD, "message_then_reserved_opcode", b"\x00" + to_server(True, 1, b"good") + to_server(True, 3, b""))
write(FD, "small_limits_frame_too_big", b"\x80" + to_server(True, 2, bytes(300)))
write(FD, "small_limits_empty_fragments", b"\x80" + to_server(False, 2, b"")
      + b"".join(to_server(False, 0, b"") for _ in range(8)) + to_server(True, 0, b""))
write(FD, "eof_mid_frame", b"\x40" + to_server(True, 2, bytes(50))[:20])

# message_assembly: a program; see message_assembly() in src/lib.rs.
MA = "message_assembly"
NO_KEEPALIVE, KEEPALIVE = b"\x00", b"\x01"
DELIVER_ALL = b"\x04\x00\x05\x00"  # deliver everything to the client, then to the server


def send(side, text, payload, frag=0):
    return bytes([side, 1 if text else 0]) + struct.pack("<H", len(payload)) + payload + bytes([frag])


def raw_to(side, b0, b1, payload):
    # b1 bits 0-1 clear: [n: u8] then the payload
    return bytes([2 + side, b0, b1, len(payload)]) + payload


write(MA, "prefix_only", NO_KEEPALIVE + DELIVER_ALL)
write(MA, "messages_both_ways", NO_KEEPALIVE + send(0, True, "héllo €".encode()) + send(1, False, bytes([1, 2, 3]), 1)
      + DELIVER_ALL)
write(MA, "fragmented_and_chunked", NO_KEEPALIVE + send(0, False, bytes(range(200)), 2)
      + b"\x05\x07" * 40 + send(1, True, b"x" * 300, 4) + b"\x04\x0b" * 40)
write(MA, "ping_then_close", NO_KEEPALIVE + b"\x06\x00\x04ping" + DELIVER_ALL
      + b"\x07\x01" + struct.pack("<H", 1000) + b"\x03bye" + DELIVER_ALL + DELIVER_ALL)
write(MA, "raw_valid_and_reserved", NO_KEEPALIVE + raw_to(1, 0x81, 0x00, b"raw") + b"\x05\x00"
      + raw_to(1, 0x83, 0x00, b"") + DELIVER_ALL)
write(MA, "raw_close_invalid_code", NO_KEEPALIVE + bytes([3, 0x88, 0x02]) + struct.pack("<H", 1005) + b"\x00"
      + DELIVER_ALL)
write(MA, "keepalive_timeout", KEEPALIVE + DELIVER_ALL + b"\x08\x0c\x08\x0a" + DELIVER_ALL)
write(MA, "keepalive_answered", KEEPALIVE + DELIVER_ALL + b"\x08\x0c" + DELIVER_ALL + b"\x08\x0c" + DELIVER_ALL)
# Found by fuzzing (a harness bug): the client closes after its own transport was closed.
write(MA, "close_after_own_transport_closed", NO_KEEPALIVE + b"\x09\x01" + b"\x07\x00"
      + struct.pack("<H", 4352) + b"\x00" + DELIVER_ALL)
write(MA, "eof_to_client", NO_KEEPALIVE + send(0, True, b"in flight") + b"\x09\x00" + DELIVER_ALL)

# server_handshake: [ctl] request. ctl bit 7 small limits, bits 0-6 read-size seed.
REQUEST = (b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")
SH = "server_handshake"
write(SH, "rfc_request", b"\x00" + REQUEST)
write(SH, "request_then_frame", b"\x05" + REQUEST + to_server(True, 1, b"Hello"))
write(SH, "bad_version", b"\x00" + REQUEST.replace(b"Version: 13", b"Version: 8"))
write(SH, "post_method", b"\x02" + REQUEST.replace(b"GET", b"POST"))
write(SH, "extensions_small_limits", b"\x80" + REQUEST.replace(
    b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"))

# client_handshake: [ctl] response, for the request with key "the sample nonce" offering
# "chat" and "superchat".
accept = base64.b64encode(hashlib.sha1(
    base64.b64encode(b"the sample nonce") + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
assert accept == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
RESPONSE = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n")
CH = "client_handshake"
write(CH, "ok_101", b"\x00" + RESPONSE + b"\r\n")
write(CH, "ok_101_protocol_then_frame", b"\x03" + RESPONSE + b"Sec-WebSocket-Protocol: chat\r\n\r\n"
      + to_client(True, 1, b"Hello"))
write(CH, "forbidden_403", b"\x00" + b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
write(CH, "wrong_accept", b"\x01" + RESPONSE.replace(b"s3pP", b"XXXX") + b"\r\n")
write(CH, "unoffered_extension", b"\x00" + RESPONSE + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")

# extended_connect: [ctl] lines: method, :protocol, :authority, :path, then "name: value"
# headers. ctl bit 0 deflate on, bits 1-2 the server speaks "chat" / "superchat".
EC = "extended_connect"
H2 = b"CONNECT\nwebsocket\nserver.example.com\n/chat\nsec-websocket-version: 13\n"
write(EC, "chromium_offer", b"\x07" + H2 + b"origin: https://example.com\n"
      b"sec-websocket-extensions: permessage-deflate; client_max_window_bits\n"
      b"sec-websocket-protocol: superchat, chat\n")
write(EC, "plain", b"\x00" + H2)
write(EC, "unknown_protocol_501", b"\x00" + H2.replace(b"websocket", b"webtransport"))
write(EC, "not_connect_400", b"\x00" + H2.replace(b"CONNECT", b"GET", 1))
write(EC, "no_authority_400", b"\x00" + H2.replace(b"server.example.com", b"-"))
write(EC, "version_8_426", b"\x01" + H2.replace(b"13", b"8"))
write(EC, "connection_header", b"\x03" + H2 + b"connection: upgrade\nupgrade: websocket\n")

# control_request: the text of one request on PREFIX/control (docs/control-protocol.md).
CR = "control_request"
write(CR, "subscribe", b'{"op":"subscribe","id":1,"topics":["news","chat.room-1"]}')
write(CR, "subscribe_since", b'{"op":"subscribe","id":"a","topics":["news"],'
      b'"since":{"news":{"offset":41,"epoch":"k3x9"}}}')
write(CR, "unsubscribe", b'{"op":"unsubscribe","topics":["news"]}')
write(CR, "publish_text", b'{"op":"publish","id":2,"topic":"news","data":"hello"}')
write(CR, "publish_binary", b'{"op":"publish","topic":"news","binary":"AAEC/w=="}')
write(CR, "refresh", b'{"op":"refresh","token":"a.b.c"}')
write(CR, "broken", b'{"op":"subscribe","topics":["news"')

# config_file: a --config file (docs/config.md).
CF = "config_file"
write(CF, "full", b'''listen = "0.0.0.0:9000"
ws_prefix = "/ws"
allow_origins = ["https://app.example.com:443", "*"]
grace = "5s"
trusted_proxies = ["10.0.0.0/8", "::1/128"]
[limits]
max_message_size = "64KiB"
idle_timeout = "5m"
max_connections = 100
[deflate]
enabled = true
[topics]
allowed = ["news", "chat"]
[[topics.rule]]
pattern = "chat.*"
subscribe = "token"
publish = "token"
history_size = 50
[broker]
urls = ["redis://:pw@127.0.0.1:6379/0"]
[auth]
audience = "ferry"
leeway = "30s"
[bridges.vnc]
to = "tcp://127.0.0.1:5900"
token = "s3cret"
[bridges.db]
to = "unix:/run/db.sock"
''')
write(CF, "minimal", b'listen = "127.0.0.1:8080"\n')
write(CF, "bad_duration", b'[limits]\nidle_timeout = "5 fortnights"\n')

# token_check: [mode] bytes. Mode bit 0 clear: a token as sent; set: claims the target signs
# with its own key (bit 1: HS512, else HS256).
TC = "token_check"
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
now = 1_900_000_000  # in 2030: valid while the seeds are young, expired later; both are useful
write(TC, "signed_full", b"\x01" + b'{"sub":"ada","exp":%d,"iat":1700000000,"aud":"ferry",'
      b'"iss":"issuer","ferry":{"subscribe":["chat.*","news"],"publish":["chat.ada"],'
      b'"bridges":["vnc"]}}' % now)
write(TC, "signed_hs512_no_aud", b"\x03" + b'{"sub":"bob","exp":%d,"iss":"issuer"}' % now)
write(TC, "signed_bad_pattern", b"\x01" + b'{"sub":"x","exp":%d,"aud":["ferry","b"],'
      b'"iss":"issuer","ferry":{"subscribe":["a*b"]}}' % now)
write(TC, "alg_none", b"\x00" + b64(b'{"alg":"none"}') + b"." + b64(b'{"sub":"x","exp":%d}' % now) + b".")
write(TC, "foreign_signature", b"\x00" + b64(b'{"alg":"HS256","typ":"JWT"}') + b"."
      + b64(b'{"sub":"x","exp":%d}' % now) + b".c2lnbmF0dXJl")
