// Checks a WebSocket echo server (ferry echo) with the `ws` client.
//
// Usage: node client_check.mjs URL [--no-deflate] [--expect-extensions VALUE|none]
//
// ws offers permessage-deflate ("permessage-deflate; client_max_window_bits") unless
// --no-deflate. With --expect-extensions, the server's Sec-WebSocket-Extensions answer must be
// exactly VALUE (`none`: no header) and ws must run the matching extension.
//
// Then: the echo matrix (text and binary at the RFC 6455 length boundaries up to 16 MiB - 1 KiB:
// UTF-8 text, JSON-like text and binary that compress well, random bytes that do not), each
// echo compared byte for byte and its bytes on the socket measured: with permessage-deflate a
// compressible message of 64 KiB or more must travel compressed both ways, and ferry must not
// send a random one back larger than it is (it sends what does not shrink uncompressed);
// without it, nothing is compressed. Then fragmented messages, pings with their pongs, and a
// closing handshake with 1000.
//
// Prints one "ok   ..." line per check and "FAIL ..." per failure. A failed echo does not stop
// the matrix (a new connection is opened if the server closed this one); any other failure
// ends the run. Exits 1 if anything failed. Run by tests/interop/node/run.sh.

import { WebSocket } from 'ws';

const MAX_SIZE = 16 * 1024 * 1024;
// Empty, the 7-bit length limit and the first 16-bit one, the 16-bit limit and the first 64-bit
// one, then large messages up to just under 16 MiB.
const SIZES = [0, 1, 125, 126, 127, 65535, 65536, 1 << 20, MAX_SIZE - 1024];
const REPLY_TIMEOUT_MS = 30_000;
// Messages this large are measured on the socket (smaller ones may go out uncompressed by
// either side's threshold).
const MEASURED = 65536;

class CheckFailed extends Error {}

let failures = 0;
const ok = (what) => console.log(`ok   ${what}`);
const fail = (what) => {
  failures += 1;
  console.log(`FAIL ${what}`);
};

// --- Payloads ---------------------------------------------------------------------------------

/** Text of exactly `size` UTF-8 bytes, full of 1-, 2-, 3- and 4-byte characters. */
function textOfSize(size) {
  const unit = 'aé€😀'; // 1 + 2 + 3 + 4 = 10 bytes
  return unit.repeat(Math.floor(size / 10)) + 'x'.repeat(size % 10);
}

/** JSON-like ASCII text of exactly `size` bytes: records that differ a little, so it compresses
 * well without being one repeated string (the same text as ferry's interop_client example). */
function jsonOfSize(size) {
  const parts = ['['];
  let length = 1;
  for (let id = 0; length < size; id++) {
    const part = `{"id":${id},"name":"user-${id}","active":${id % 3 === 0},"score":${(id * 7919) % 1000},"tags":["alpha","beta"]},`;
    parts.push(part);
    length += part.length;
  }
  return parts.join('').slice(0, size);
}

/** `size` pseudo-random bytes (xorshift32): every byte value shows up, nothing compresses. */
function bytesOfSize(size) {
  const out = Buffer.allocUnsafe(size);
  let x = (0x9e3779b9 ^ size) >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** [content, isBinary, Buffer] at each size, then a short text of assorted Unicode. */
function matrix() {
  const messages = [];
  for (const size of SIZES) {
    messages.push(['utf-8', false, Buffer.from(textOfSize(size))]);
    messages.push(['json', false, Buffer.from(jsonOfSize(size))]);
    messages.push(['json', true, Buffer.from(jsonOfSize(size))]);
    messages.push(['random', true, bytesOfSize(size)]);
  }
  messages.push(['unicode', false, Buffer.from('ASCII, é ü ß, € ✓ 中文, 😀 🦀 𝄞, 👩‍💻 (a ZWJ sequence)')]);
  return messages;
}

// --- A connection with a queue of incoming messages ------------------------------------------

class Connection {
  static open(url, deflate) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: deflate, maxPayload: MAX_SIZE, handshakeTimeout: 10_000 });
      const connection = new Connection(ws);
      // ws keeps its HTTP request in `_req` until the upgrade: the only place to see its offer.
      connection.offered = ws._req?.getHeader('sec-websocket-extensions') ?? '(nothing)';
      ws.once('upgrade', (response) => {
        connection.answered = response.headers['sec-websocket-extensions'] ?? 'none';
        connection.socket = response.socket;
      });
      ws.once('open', () => resolve(connection));
      ws.once('error', (err) => reject(new CheckFailed(`connect to ${url}: ${err.message}`)));
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiter = null;
    this.closed = null;
    ws.on('message', (data, isBinary) => this.push({ data, isBinary }));
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.push({ closed: this.closed });
    });
    ws.on('error', () => {}); // the close that follows says enough
  }

  push(item) {
    if (this.waiter) {
      const resolve = this.waiter;
      this.waiter = null;
      resolve(item);
    } else {
      this.queue.push(item);
    }
  }

  /** The next message; throws CheckFailed on a timeout or a close. */
  next(label) {
    const item = this.queue.shift();
    const got = item
      ? Promise.resolve(item)
      : new Promise((resolve) => {
          this.waiter = resolve;
        });
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve({ timeout: true }), REPLY_TIMEOUT_MS);
    });
    return Promise.race([got, timeout]).then((result) => {
      clearTimeout(timer);
      if (result.timeout) {
        this.waiter = null;
        throw new CheckFailed(`${label}: no echo within ${REPLY_TIMEOUT_MS / 1000} s`);
      }
      if (result.closed) {
        this.queue.unshift(result); // later calls see the close too
        throw new CheckFailed(
          `${label}: connection closed instead of echoing: code ${result.closed.code} reason ${JSON.stringify(result.closed.reason)}`,
        );
      }
      return result;
    });
  }

  send(label, data, options) {
    return new Promise((resolve, reject) =>
      this.ws.send(data, options, (err) => (err ? reject(new CheckFailed(`${label}: send failed: ${err.message}`)) : resolve())),
    );
  }

  /** Resolves with the close once the connection has closed, or with null after `ms`. */
  async whenClosed(ms) {
    const deadline = Date.now() + ms;
    while (!this.closed && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    return this.closed;
  }

  /** Bytes read from and written to the socket so far. */
  counters() {
    return { read: this.socket.bytesRead, written: this.socket.bytesWritten };
  }
}

// --- Checks ------------------------------------------------------------------------------------

function compare(label, sentBinary, sent, echo) {
  if (sentBinary !== echo.isBinary) {
    throw new CheckFailed(`${label}: sent ${sentBinary ? 'binary' : 'text'}, got ${echo.isBinary ? 'binary' : 'text'} back`);
  }
  if (sent.length !== echo.data.length) {
    throw new CheckFailed(`${label}: sent ${sent.length} bytes, got ${echo.data.length} back`);
  }
  if (!sent.equals(echo.data)) {
    let at = 0;
    while (sent[at] === echo.data[at]) at++;
    throw new CheckFailed(`${label}: echo differs at byte ${at}: sent 0x${sent[at].toString(16)}, got 0x${echo.data[at].toString(16)}`);
  }
}

function checkExtensions(connection, expected) {
  const { offered, answered, ws } = connection;
  console.log(`     offered:         ${offered}`);
  console.log(`     server answered: ${answered}`);
  console.log(`     ws runs:         ${ws.extensions || 'none'}`);
  if (expected === null) return;
  const runs = expected === 'none' ? '' : 'permessage-deflate';
  if (answered !== expected) {
    fail(`extensions: expected the server to answer ${JSON.stringify(expected)}, got ${JSON.stringify(answered)}`);
  } else if (ws.extensions !== runs) {
    fail(`extensions: the server answered ${JSON.stringify(answered)} but ws runs ${JSON.stringify(ws.extensions)}`);
  } else {
    ok(`extensions: server answered ${expected}, as expected`);
  }
}

/** What the socket carried for one large message must fit what was negotiated. */
function checkWire(label, content, size, wire, compressed) {
  const shown = `${wire.out} bytes out, ${wire.in} in`;
  if (size < MEASURED) return shown;
  if (!compressed) {
    if (wire.out < size || wire.in < size) throw new CheckFailed(`${label}: no permessage-deflate, yet only ${shown}`);
  } else if (content === 'random') {
    // ferry sends a message that does not shrink uncompressed: the payload and a 14-byte header.
    if (wire.in > size + 14) throw new CheckFailed(`${label}: ferry's echo took ${wire.in} bytes, more than the message and a frame header`);
  } else if (wire.out >= size / 2 || wire.in >= size / 2) {
    throw new CheckFailed(`${label}: compressible, yet ${shown}`);
  }
  return shown;
}

async function checkEcho(url, deflate, expected) {
  let connection = await Connection.open(url, deflate);
  ok(`connected to ${url}`);
  checkExtensions(connection, expected);
  const compressed = () => connection.ws.extensions === 'permessage-deflate';

  for (const [content, binary, message] of matrix()) {
    const label = `${binary ? 'binary' : 'text'} ${message.length} bytes (${content})`;
    try {
      const before = connection.counters();
      await connection.send(label, message, { binary });
      const echo = await connection.next(label);
      const after = connection.counters();
      compare(label, binary, message, echo);
      const wire = { out: after.written - before.written, in: after.read - before.read };
      ok(`echo ${label}: ${checkWire(label, content, message.length, wire, compressed())}`);
    } catch (err) {
      if (!(err instanceof CheckFailed)) throw err;
      fail(err.message);
      if (connection.ws.readyState !== WebSocket.OPEN) {
        const closed = await connection.whenClosed(5000);
        const how = closed ? `closed with ${closed.code} ${JSON.stringify(closed.reason)}` : 'closing';
        connection.ws.terminate();
        connection = await Connection.open(url, deflate);
        console.log(`     (the connection was ${how}; reconnected to go on with the matrix)`);
      }
    }
  }

  // Fragmented messages: ws sends each part as a frame (`fin: false` until the last); with
  // permessage-deflate the whole message is one compressed stream across the frames.
  const textParts = [textOfSize(1000), '😀 split here', jsonOfSize(70000), ''].map((p) => Buffer.from(p));
  const binaryParts = [bytesOfSize(1), Buffer.alloc(0), Buffer.from(jsonOfSize(65536)), bytesOfSize(300)];
  for (const [name, binary, parts] of [
    ['text', false, textParts],
    ['binary', true, binaryParts],
  ]) {
    const label = `fragmented ${name}`;
    for (const [i, part] of parts.entries()) {
      await connection.send(label, part, { binary, fin: i === parts.length - 1 });
    }
    compare(label, binary, Buffer.concat(parts), await connection.next(label));
    ok(`echo ${label} (${parts.length} frames) came back whole`);
  }

  // Pings: each must get a pong carrying the same payload.
  for (const payload of [Buffer.from('ferry-interop'), Buffer.alloc(0), bytesOfSize(125)]) {
    const pong = new Promise((resolve) => connection.ws.once('pong', resolve));
    const started = process.hrtime.bigint();
    connection.ws.ping(payload);
    let timer;
    const data = await Promise.race([
      pong,
      new Promise((resolve) => {
        timer = setTimeout(() => resolve(null), REPLY_TIMEOUT_MS);
      }),
    ]);
    clearTimeout(timer);
    if (data === null) throw new CheckFailed(`ping with ${payload.length} bytes: no pong within ${REPLY_TIMEOUT_MS / 1000} s`);
    if (!data.equals(payload)) throw new CheckFailed(`ping with ${payload.length} bytes: the pong carried ${data.length} other bytes`);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    ok(`ping with ${payload.length} bytes got its pong (${ms.toFixed(1)} ms)`);
  }

  // The closing handshake: we close with 1000; the server must answer with 1000.
  connection.ws.close(1000, 'interop done');
  let closed;
  try {
    await connection.next('close');
    throw new CheckFailed('close: got a message instead of the close');
  } catch (err) {
    if (!(err instanceof CheckFailed) || !connection.closed) throw err;
    closed = connection.closed;
  }
  if (closed.code !== 1000) throw new CheckFailed(`close: sent 1000, the server answered ${closed.code} ${JSON.stringify(closed.reason)}`);
  ok(`close 1000 echoed by the server (reason ${JSON.stringify(closed.reason)})`);
}

function parseArgs(argv) {
  const options = { url: null, deflate: true, expected: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--no-deflate') options.deflate = false;
    else if (arg === '--expect-extensions') options.expected = argv[++i] ?? null;
    else if (!arg.startsWith('--') && options.url === null) options.url = arg;
    else throw new Error(`unexpected argument ${arg}`);
  }
  if (options.url === null) {
    throw new Error('usage: node client_check.mjs URL [--no-deflate] [--expect-extensions VALUE|none]');
  }
  return options;
}

const options = parseArgs(process.argv.slice(2));
try {
  await checkEcho(options.url, options.deflate, options.expected);
} catch (err) {
  fail(err instanceof CheckFailed ? err.message : `${err.name}: ${err.message}`);
}
process.exit(failures ? 1 : 0);
