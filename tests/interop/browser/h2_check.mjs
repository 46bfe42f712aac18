// Checks that headless Chromium opens its WebSocket over HTTP/2 (RFC 8441) when the page came
// from `ferry serve` over https, and that the WebSocket then works.
//
// Usage: node h2_check.mjs https://127.0.0.1:PORT [--chromium PATH] [--expect-http 1.1|2]
//
// Loads ferry serve's own page (the test certificate's errors ignored), then in the page:
// the navigation's protocol (h2 expected over TLS); a WebSocket to wss://HOST/ws/echo that echoes
// a text and a 1 MiB binary message (SHA-256 compared) with permessage-deflate negotiated, and
// closes with 1000. Then proves which HTTP carried the WebSocket from the server's side:
// ferry_connections_total{http="2"} (or "1.1" with --expect-http 1.1, for `--http2 off`) must
// have grown by one, the other not at all.
//
// Prints one "ok   ..." line per check and "FAIL ..." per failure; exits 1 if anything failed.
// Run by tests/interop/browser/run.sh.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, fail, main, ok } from './chromium.mjs';

const check = (condition, what, why) => (condition ? ok(what) : fail(`${what}: ${why}`));

function parseArgs(argv) {
  const options = { url: null, chromium: '/usr/bin/chromium', http: '2' };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--chromium') options.chromium = argv[++i];
    else if (arg === '--expect-http') options.http = argv[++i];
    else if (!arg.startsWith('--') && options.url === null) options.url = arg;
    else throw new Error(`unexpected argument ${arg}`);
  }
  if (options.url === null) throw new Error('usage: node h2_check.mjs https://HOST:PORT [--chromium PATH] [--expect-http 1.1|2]');
  return options;
}

/** ferry_connections_total by its http label, read by the page over its own connection. */
async function connectionsByHttp(page) {
  const text = await page.evaluate(async () => (await fetch('/metrics', { cache: 'no-store' })).text());
  const counts = {};
  for (const match of text.matchAll(/^ferry_connections_total\{http="([^"]+)"\} (\d+)$/gm)) {
    counts[match[1]] = Number(match[2]);
  }
  return counts;
}

async function run(options) {
  const profile = mkdtempSync(join(tmpdir(), 'ferry-chromium-h2-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: options.chromium,
      headless: true,
      args: CHROMIUM_ARGS,
      ignoreHTTPSErrors: true,
    });
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (err) => console.log(`     page error: ${err.message}`));
    await page.goto(`${options.url}/`);
    const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0]?.nextHopProtocol);
    const expectedProtocol = options.http === '2' ? 'h2' : 'http/1.1';
    check(protocol === expectedProtocol, `Chromium ${context.browser()?.version() ?? ''} loaded the page over ${expectedProtocol}`.replace('  ', ' '), `nextHopProtocol ${protocol}`);

    const before = await connectionsByHttp(page);
    const wsUrl = `${options.url.replace(/^https:/, 'wss:')}/ws/echo`;
    const result = await page.evaluate(async (url) => {
      const hash = async (data) => {
        const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : new Uint8Array(data);
        return Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)), (b) => b.toString(16).padStart(2, '0')).join('');
      };
      const ws = new WebSocket(url);
      ws.binaryType = 'arraybuffer';
      const opened = await new Promise((resolve) => {
        ws.onopen = () => resolve(true);
        ws.onerror = () => resolve(false);
      });
      if (!opened) return { error: 'the WebSocket did not open' };
      const next = () => new Promise((resolve) => { ws.onmessage = (event) => resolve(event.data); });
      const text = 'héllo over HTTP/2 ✓';
      let reply = next();
      ws.send(text);
      const textBack = await reply;
      const binary = new Uint8Array(1 << 20);
      for (let i = 0; i < binary.length; i += 65536) crypto.getRandomValues(binary.subarray(i, i + 65536));
      reply = next();
      ws.send(binary);
      const binaryBack = await reply;
      const closed = new Promise((resolve) => { ws.onclose = (event) => resolve({ code: event.code, wasClean: event.wasClean }); });
      ws.close(1000, 'done');
      return {
        extensions: ws.extensions,
        textOk: textBack === text,
        binaryOk: binaryBack instanceof ArrayBuffer && (await hash(binaryBack)) === (await hash(binary)),
        closed: await closed,
      };
    }, wsUrl);
    if (result.error) {
      fail(`${wsUrl}: ${result.error}`);
      return;
    }
    ok(`opened ${wsUrl}`);
    check(result.extensions.startsWith('permessage-deflate'), `permessage-deflate negotiated (${result.extensions})`, `ws.extensions ${JSON.stringify(result.extensions)}`);
    check(result.textOk, 'a text message echoed', 'the echo differs');
    check(result.binaryOk, 'a 1 MiB binary message echoed (SHA-256 both ways)', 'the echo differs');
    check(result.closed.code === 1000 && result.closed.wasClean, 'close 1000, clean', JSON.stringify(result.closed));

    const after = await connectionsByHttp(page);
    const grew = (label) => (after[label] ?? 0) - (before[label] ?? 0);
    const other = options.http === '2' ? '1.1' : '2';
    check(grew(options.http) === 1 && grew(other) === 0,
      `the server counted the WebSocket as HTTP/${options.http} (ferry_connections_total{http="${options.http}"} +1)`,
      `before ${JSON.stringify(before)}, after ${JSON.stringify(after)}`);
  } finally {
    await context?.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
}

const options = parseArgs(process.argv.slice(2));
await main(() => run(options));
