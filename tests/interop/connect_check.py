"""Runs `ferry connect` in line mode against an echo server and checks what comes back.

Usage: connect_check.py [--no-empty] FERRY_BIN URL [FLAGS...]

Standard library only. Sends 1,000 lines through `ferry connect --quiet [FLAGS...] URL`: ASCII,
unicode in several scripts, empty lines, and one line of 100 KB. Reads stdout until as many
lines came back, then closes stdin (which starts the close handshake: closing earlier could cut
off echoes still in flight, since an echo server stops answering once it has the close frame).

Prints one line per check, "ok   ..." or "FAIL ...":
- every line came back, identical and in order;
- ferry exited 0 (the close handshake completed) and printed nothing on stderr (--quiet).
It runs with --no-proxy: the traffic is loopback whatever the proxy variables say.

--no-empty replaces the empty lines with "-": websocat 1.x reads an empty message as the end
of the stream and closes.
"""

import subprocess
import sys
import threading


def lines(empty):
    out = []
    for i in range(1000):
        kind = i % 5
        if kind == 0:
            out.append(f"line {i}")
        elif kind == 1:
            out.append(f"ünïcödé {i}: 日本語 ✓ 🚀")
        elif kind == 2:
            out.append(f"{i} Ελληνικά — עברית — हिन्दी")
        elif kind == 3:
            out.append("" if empty else "-")
        else:
            out.append(f"{i} " + "tab\tand spaces  " * (i % 17))
    out[500] = "0123456789" * 10_000
    return out


def main():
    args = sys.argv[1:]
    empty = True
    if args[:1] == ["--no-empty"]:
        empty = False
        args = args[1:]
    if len(args) < 2:
        print("usage: connect_check.py [--no-empty] FERRY_BIN URL [FLAGS...]", file=sys.stderr)
        return 2
    ferry, url, flags = args[0], args[1], args[2:]
    sent = lines(empty)
    label = " ".join(["ferry connect", *flags, url])
    child = subprocess.Popen(
        [ferry, "connect", "--quiet", "--no-proxy", *flags, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stderr_chunks = []
    reader = threading.Thread(target=lambda: stderr_chunks.append(child.stderr.read()))
    reader.start()

    def write():
        try:
            for line in sent:
                child.stdin.write(line.encode() + b"\n")
            child.stdin.flush()
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=write)
    writer.start()
    received = []
    for _ in sent:
        raw = child.stdout.readline()
        if not raw:
            break
        received.append(raw.decode("utf-8", "replace").removesuffix("\n"))
    writer.join()
    child.stdin.close()
    try:
        status = child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        status = "killed after 30 s"
    reader.join()
    errors = b"".join(stderr_chunks).decode("utf-8", "replace").strip()

    if received == sent:
        kinds = "unicode, empty, one of 100 KB" if empty else "unicode, one of 100 KB"
        print(f"ok   lines: {len(sent)} lines ({kinds}) came back identical: {label}")
    else:
        first = next((i for i, (a, b) in enumerate(zip(received, sent)) if a != b), min(len(received), len(sent)))
        print(f"FAIL lines: {len(received)} of {len(sent)} lines came back; first difference at line {first}: {label}")
    if status == 0 and not errors:
        print(f"ok   exit: status 0 after the close handshake, nothing on stderr: {label}")
    else:
        print(f"FAIL exit: status {status}, stderr {errors[:300]!r}: {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
