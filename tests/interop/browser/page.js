// The in-browser half of the browser interop test: Chromium's own WebSocket against `ferry echo`.
// browser_check.mjs serves this file from http://127.0.0.1 (a secure context, so that
// crypto.subtle is there) and drives it through `window.ferryInterop`.
//
// Payloads are made here, in the page, sent, and compared with their echo by length and by
// SHA-256 (crypto.subtle.digest); only those summaries go back to Node.

'use strict';

const REPLY_TIMEOUT_MS = 30000;

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

/** `size` random bytes (getRandomValues fills at most 64 KiB a call). */
function randomBytes(size) {
  const bytes = new Uint8Array(size);
  for (let at = 0; at < size; at += 65536) {
    crypto.getRandomValues(bytes.subarray(at, Math.min(at + 65536, size)));
  }
  return bytes;
}

/** Random text of exactly `size` UTF-8 bytes: random code points of 1 to 4 bytes (no
 * surrogates), so it hardly compresses. */
function randomText(size) {
  const bytes = randomBytes(size);
  const chars = [];
  let left = size;
  for (let i = 0; left > 0; i++) {
    const r = bytes[i % size];
    const length = Math.min(left, 1 + (r & 3));
    let codePoint;
    const pick = (bytes[(i * 7 + 3) % size] << 16) | (bytes[(i * 13 + 5) % size] << 8) | bytes[(i * 31 + 7) % size];
    if (length === 1) codePoint = 0x20 + (pick % 0x5f);
    else if (length === 2) codePoint = 0x80 + (pick % 0x780);
    else if (length === 3) codePoint = 0x800 + (pick % 0xd000); // U+0800..U+D7FF: no surrogates
    else codePoint = 0x10000 + (pick % 0x100000);
    chars.push(String.fromCodePoint(codePoint));
    left -= length;
  }
  return chars.join('');
}

/** The message to send: a string for text, an ArrayBuffer for binary. */
function payload(content, binary, size) {
  if (binary) {
    if (content === 'json') return new TextEncoder().encode(jsonOfSize(size)).buffer;
    if (content === 'random') return randomBytes(size).buffer;
  } else {
    if (content === 'utf-8') return textOfSize(size);
    if (content === 'json') return jsonOfSize(size);
    if (content === 'random') return randomText(size);
  }
  throw new Error(`no ${binary ? 'binary' : 'text'} payload of kind ${content}`);
}

const asBytes = (data) => (typeof data === 'string' ? new TextEncoder().encode(data) : new Uint8Array(data));

async function sha256(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Resolves with the first of `promise` and a timeout ({ timeout: true }). */
function withTimeout(promise, ms) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve({ timeout: true }), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

let socket = null;
let inbox = [];
let waiter = null;
let closed = null;

function deliver(item) {
  if (waiter) {
    const resolve = waiter;
    waiter = null;
    resolve(item);
  } else {
    inbox.push(item);
  }
}

function nextItem() {
  if (inbox.length) return Promise.resolve(inbox.shift());
  return new Promise((resolve) => {
    waiter = resolve;
  });
}

window.ferryInterop = {
  /** Opens the connection; resolves with what the browser negotiated. */
  async open(url) {
    inbox = [];
    waiter = null;
    closed = null;
    socket = new WebSocket(url);
    socket.binaryType = 'arraybuffer';
    socket.onmessage = (event) => deliver({ data: event.data });
    socket.onclose = (event) => {
      closed = { code: event.code, reason: event.reason, wasClean: event.wasClean };
      deliver({ closed });
    };
    const opened = new Promise((resolve) => {
      socket.onopen = () => resolve({ open: true });
    });
    const result = await withTimeout(Promise.race([opened, nextItem()]), 10000);
    if (result.timeout) return { error: 'no open event within 10 s' };
    if (result.closed) return { error: `closed before opening: code ${result.closed.code}` };
    return { extensions: socket.extensions, protocol: socket.protocol };
  },

  /** Sends one message and compares its echo; resolves with a summary. */
  async echo(content, binary, size) {
    const message = payload(content, binary, size);
    const sent = asBytes(message);
    const started = performance.now();
    socket.send(message);
    const item = await withTimeout(nextItem(), REPLY_TIMEOUT_MS);
    const ms = Math.round(performance.now() - started);
    if (item.timeout) return { error: `no echo within ${REPLY_TIMEOUT_MS / 1000} s`, closed };
    if (item.closed) return { error: 'connection closed instead of echoing', closed: item.closed };
    const echoBinary = typeof item.data !== 'string';
    const received = asBytes(item.data);
    const summary = {
      ms,
      sentBytes: sent.length,
      receivedBytes: received.length,
      sentType: binary ? 'binary' : 'text',
      receivedType: echoBinary ? 'binary' : 'text',
      sentHash: await sha256(sent),
      receivedHash: await sha256(received),
    };
    if (summary.sentHash !== summary.receivedHash) {
      let at = 0;
      while (at < sent.length && sent[at] === received[at]) at++;
      summary.firstDifference = at;
    }
    return summary;
  },

  /** Closes with 1000; resolves with the close event's code, reason and wasClean. */
  async close() {
    socket.close(1000, 'interop done');
    const item = await withTimeout(closed ? Promise.resolve({ closed }) : nextItem(), REPLY_TIMEOUT_MS);
    if (item.timeout) return { error: `no close event within ${REPLY_TIMEOUT_MS / 1000} s` };
    if (!item.closed) return { error: 'a message came instead of the close' };
    return item.closed;
  },

  isClosed: () => closed !== null || socket === null || socket.readyState >= WebSocket.CLOSING,
};
