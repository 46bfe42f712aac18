// Checks a WebSocket echo server (ferry echo) with headless Chromium's own WebSocket.
//
// Usage: node browser_check.mjs URL [--expect-extensions VALUE|none] [--chromium PATH]
//
// Launches Chromium (/usr/bin/chromium; never a browser Playwright downloads) through
// playwright-core with a fresh profile, serves page.js from a loopback HTTP server (so the page
// is a secure context and has crypto.subtle), and has the page open URL. Then:
//
// - extensions: Chromium's offer and the server's Sec-WebSocket-Extensions answer are read from
//   the DevTools protocol and printed; with --expect-extensions, the page's `ws.extensions`
//   must be exactly VALUE (`none`: empty);
// - the echo matrix: text and binary messages at the RFC 6455 length boundaries up to
//   16 MiB - 1 KiB (UTF-8 and JSON-like text, random Unicode text, JSON-like and random
//   binary), made in the page, each echo compared by type, length and SHA-256. A failed echo
//   does not stop the matrix (the page reconnects if the server closed the connection);
// - the closing handshake: the page closes with 1000 and must see a clean close with 1000.
//
// Prints one "ok   ..." line per check and "FAIL ..." per failure; exits 1 if anything failed.
// Run by tests/interop/browser/run.sh.

import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, fail, main, ok } from './chromium.mjs';

const MAX_SIZE = 16 * 1024 * 1024;
const SIZES = [0, 1, 125, 126, 127, 65535, 65536, 1 << 20, MAX_SIZE - 1024];
// [content, binary]: what each size is sent as.
const KINDS = [
  ['utf-8', false],
  ['json', false],
  ['random', false],
  ['json', true],
  ['random', true],
];

function parseArgs(argv) {
  const options = { url: null, expected: null, chromium: '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--expect-extensions') options.expected = argv[++i] ?? null;
    else if (arg === '--chromium') options.chromium = argv[++i];
    else if (!arg.startsWith('--') && options.url === null) options.url = arg;
    else throw new Error(`unexpected argument ${arg}`);
  }
  if (options.url === null) {
    throw new Error('usage: node browser_check.mjs URL [--expect-extensions VALUE|none] [--chromium PATH]');
  }
  return options;
}

/** Serves the test page on 127.0.0.1; resolves with the server and the page's URL. */
function servePage() {
  const script = readFileSync(new URL('./page.js', import.meta.url));
  const html = '<!doctype html><meta charset="utf-8"><title>ferry interop</title><script src="/page.js"></script>';
  const server = createServer((request, response) => {
    if (request.url === '/page.js') {
      response.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' }).end(script);
    } else if (request.url === '/') {
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(html);
    } else {
      response.writeHead(404).end();
    }
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${server.address().port}/` }));
  });
}

const header = (headers, name) =>
  Object.entries(headers ?? {}).find(([key]) => key.toLowerCase() === name.toLowerCase())?.[1];

/** Opens the page's WebSocket; returns what was offered, answered and negotiated. */
async function open(page, cdp, url) {
  // The handshake headers, as Chromium sent and received them. The Network domain is on only
  // for the handshake: with it on, every frame's payload would also be copied to this process.
  const handshake = {};
  const onRequest = (event) => {
    handshake.offered = header(event.request.headers, 'Sec-WebSocket-Extensions');
  };
  const onResponse = (event) => {
    handshake.status = event.response.status;
    handshake.answered = header(event.response.headers, 'Sec-WebSocket-Extensions');
  };
  cdp.on('Network.webSocketWillSendHandshakeRequest', onRequest);
  cdp.on('Network.webSocketHandshakeResponseReceived', onResponse);
  await cdp.send('Network.enable');
  const result = await page.evaluate((target) => window.ferryInterop.open(target), url);
  await cdp.send('Network.disable');
  cdp.off('Network.webSocketWillSendHandshakeRequest', onRequest);
  cdp.off('Network.webSocketHandshakeResponseReceived', onResponse);
  if (result.error) throw new Error(`connect to ${url}: ${result.error}`);
  return { ...handshake, ...result };
}

async function run(options) {
  const { server, url: pageUrl } = await servePage();
  const profile = mkdtempSync(join(tmpdir(), 'ferry-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: options.chromium,
      headless: true,
      args: CHROMIUM_ARGS,
    });
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (err) => console.log(`     page error: ${err.message}`));
    await page.goto(pageUrl);
    const cdp = await context.newCDPSession(page);
    ok(`Chromium ${context.browser()?.version() ?? ''} loaded ${pageUrl}`.replace('  ', ' '));

    const opened = await open(page, cdp, options.url);
    ok(`connected to ${options.url} (HTTP ${opened.status ?? '?'})`);
    console.log(`     Chromium offered:   ${opened.offered ?? '(nothing)'}`);
    console.log(`     server answered:    ${opened.answered ?? '(none)'}`);
    console.log(`     ws.extensions:      ${JSON.stringify(opened.extensions)}`);
    if (options.expected !== null) {
      const expected = options.expected === 'none' ? '' : options.expected;
      if (opened.extensions === expected) ok(`extensions: ws.extensions is ${JSON.stringify(expected)}, as expected`);
      else fail(`extensions: expected ws.extensions ${JSON.stringify(expected)}, got ${JSON.stringify(opened.extensions)}`);
    }

    for (const size of SIZES) {
      for (const [content, binary] of KINDS) {
        const label = `${binary ? 'binary' : 'text'} ${size} bytes (${content})`;
        const echo = await page.evaluate(([c, b, s]) => window.ferryInterop.echo(c, b, s), [content, binary, size]);
        if (echo.error) {
          const how = echo.closed ? `: code ${echo.closed.code} clean=${echo.closed.wasClean} reason ${JSON.stringify(echo.closed.reason)}` : '';
          fail(`${label}: ${echo.error}${how}`);
        } else if (echo.sentType !== echo.receivedType) {
          fail(`${label}: sent ${echo.sentType}, got ${echo.receivedType} back`);
        } else if (echo.sentBytes !== echo.receivedBytes) {
          fail(`${label}: sent ${echo.sentBytes} bytes, got ${echo.receivedBytes} back`);
        } else if (echo.sentHash !== echo.receivedHash) {
          fail(`${label}: echo differs at byte ${echo.firstDifference} (SHA-256 ${echo.sentHash.slice(0, 16)}… sent, ${echo.receivedHash.slice(0, 16)}… back)`);
        } else {
          ok(`echo ${label}: SHA-256 ${echo.sentHash.slice(0, 16)}… both ways (${echo.ms} ms)`);
        }
        if (await page.evaluate(() => window.ferryInterop.isClosed())) {
          await open(page, cdp, options.url);
          console.log('     (reconnected to go on with the matrix)');
        }
      }
    }

    const closed = await page.evaluate(() => window.ferryInterop.close());
    if (closed.error) fail(`close: ${closed.error}`);
    else if (closed.code !== 1000 || !closed.wasClean) {
      fail(`close: sent 1000, got code ${closed.code} clean=${closed.wasClean} reason ${JSON.stringify(closed.reason)}`);
    } else ok(`close 1000 echoed by the server, clean (reason ${JSON.stringify(closed.reason)})`);
  } finally {
    await context?.close().catch(() => {});
    server.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

const options = parseArgs(process.argv.slice(2));
await main(() => run(options));
