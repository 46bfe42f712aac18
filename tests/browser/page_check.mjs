// Headless Chromium drives the page `ferry serve` serves at `/`, as a person would: through its
// form fields and buttons, asserting what the page then shows.
//
// Usage: node page_check.mjs URL --screenshots DIR [--bridge NAME] [--docs-image PATH]
//                            [--chromium PATH]
//
// Steps, each ending with a screenshot DIR/NN-step.png:
//   echo-text     connect to the echo route, send a text message; it comes back whole, with its
//                 size in bytes and a round-trip time
//   echo-binary   send a 100,000-byte file as one binary message; it comes back as one message
//                 of exactly that size, unchanged; bufferedAmount drains to 0
//   chat          two pages join one topic with different nicknames and talk; each sees the
//                 other's line with the right nickname
//   bridge        (with --bridge NAME) connect to PREFIX/bridge/NAME, whose target is a TCP echo:
//                 the text sent comes back as binary. Without --bridge the step is skipped.
//   stats         the stats panel reads /metrics: open connections counted, and the message
//                 total grows while messages flow
//   lesson        the lesson panel: 20 WebSocket messages arrive as exactly 20, whole; the
//                 server's 20 TCP writes are reported with the reads that carried them
//   tokens        (with --tokens URL WRITER READER) a second server that wants signed tokens:
//                 a page opened with ?token=WRITER joins a topic, a page with READER (which
//                 may only subscribe) hears it and is closed (1008) when it sends; a page with
//                 no token, or with READER on a topic it does not cover, is refused and says
//                 why (HTTP 401, 403)
// With --docs-image, a screenshot of the whole page after the steps is also written to PATH.
//
// Prints one "ok   ..." line per check and "FAIL ..." per failure; exits 1 if anything failed.
// Chromium is the one at --chromium (/usr/bin/chromium); Playwright never downloads one.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS } from '../interop/browser/chromium.mjs';

/** How long the page may take to show what a step waits for. */
const WAIT_MS = 15000;

let failures = 0;
const ok = (what) => console.log(`ok   ${what}`);
const fail = (what) => {
  failures += 1;
  console.log(`FAIL ${what}`);
};
/** A check: passes or fails with the details. */
const check = (condition, what, details = '') => (condition ? ok(what) : fail(`${what}${details ? `: ${details}` : ''}`));

function parseArgs(argv) {
  const options = { url: null, screenshots: null, bridge: null, docsImage: null, chromium: '/usr/bin/chromium', tokens: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--screenshots') options.screenshots = argv[++i];
    else if (arg === '--bridge') options.bridge = argv[++i];
    else if (arg === '--docs-image') options.docsImage = argv[++i];
    else if (arg === '--chromium') options.chromium = argv[++i];
    else if (arg === '--tokens') options.tokens = { url: argv[++i], writer: argv[++i], reader: argv[++i] };
    else if (!arg.startsWith('--') && options.url === null) options.url = arg;
    else throw new Error(`unexpected argument ${arg}`);
  }
  if (!options.url || !options.screenshots) {
    throw new Error('usage: node page_check.mjs URL --screenshots DIR [--bridge NAME] [--docs-image PATH] [--chromium PATH]');
  }
  return options;
}

let shot = 0;
async function screenshot(page, dir, name) {
  shot += 1;
  const path = join(dir, `${String(shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`     screenshot ${path}`);
}

/** Connects the page to a route (echo, topic NAME or bridge NAME), as `nick` on a topic. */
async function connect(page, kind, name = '', nick = '') {
  await page.selectOption('#target', kind);
  if (kind === 'topic') await page.fill('#topic-name', name);
  if (nick) {
    await page.fill('#nick', nick);
    await page.dispatchEvent('#nick', 'change');
  }
  if (kind === 'bridge') await page.fill('#bridge-name', name);
  await page.click('#connect');
  await page.waitForSelector('#state[data-state="open"]', { timeout: WAIT_MS });
}

async function sendText(page, text) {
  await page.fill('#message', text);
  await page.click('#send');
}

/** Waits for the log to hold `n` messages and returns what the last one shows. */
async function nthMessage(page, n) {
  const item = page.locator('#log li.msg').nth(n - 1);
  await item.waitFor({ timeout: WAIT_MS });
  return {
    type: await item.getAttribute('data-type'),
    size: Number(await item.getAttribute('data-size')),
    text: await item.innerText(),
    rtt: await item.locator('.rtt').count(),
    differs: await item.locator('.differs').count(),
    mine: (await item.getAttribute('class')).split(' ').includes('mine'),
  };
}

const messageCount = (page) => page.locator('#log li.msg').count();

async function echoText(page) {
  const text = 'hello, ferry: ünïcödé ✓';
  const bytes = Buffer.byteLength(text);
  await connect(page, 'echo');
  ok('echo: connected to the echo route');
  await sendText(page, text);
  const back = await nthMessage(page, 1);
  check(back.type === 'text', 'echo text: arrives as a text message', back.type);
  check(back.size === bytes, `echo text: shown with its size in bytes (${bytes})`, String(back.size));
  check(back.text.includes(text), 'echo text: the whole text is shown', back.text);
  check(back.rtt === 1 && back.mine && back.differs === 0, 'echo text: recognised as our own, with its round-trip time');
}

async function echoBinary(page) {
  const size = 100000;
  await page.setInputFiles('#file', { name: 'random.bin', mimeType: 'application/octet-stream', buffer: randomBytes(size) });
  const back = await nthMessage(page, 2);
  check(back.type === 'binary', 'echo binary: the file comes back as a binary message', back.type);
  check(back.size === size, `echo binary: one message of exactly ${size} bytes`, String(back.size));
  check(back.differs === 0 && back.mine && back.rtt === 1, 'echo binary: unchanged, with its round-trip time');
  check(await messageCount(page) === 2, 'echo binary: no extra messages: each arrives whole');
  await page.waitForFunction(() => document.getElementById('buffered').textContent === '0', null, { timeout: WAIT_MS });
  const peak = await page.textContent('#buffered-peak');
  ok(`echo binary: bufferedAmount drained to 0 (peak ${peak} bytes)`);
}

/** Sends `text` and waits until this page receives it back: then its subscription exists. */
async function sayAndHear(page, text) {
  await sendText(page, text);
  const own = page.locator('#log li.msg.mine', { hasText: text });
  await own.waitFor({ timeout: WAIT_MS });
  return (await own.count()) === 1;
}

async function chat(alice, bob) {
  const topic = `browser-chat-${process.pid}`;
  for (const [page, nick] of [[alice, 'alice'], [bob, 'bob']]) {
    await page.click('#clear-log');
    await connect(page, 'topic', topic, nick);
  }
  // Each hears itself first: from then on both are subscribed, with no sleeping on a guess.
  check(await sayAndHear(alice, 'alice is here'), 'chat: alice joined the topic');
  check(await sayAndHear(bob, 'bob is here'), 'chat: bob joined the topic');
  check(await sayAndHear(alice, 'hi bob, from the first tab'), 'chat: alice sees her own line');
  const aliceCount = await messageCount(alice);
  const atBob = bob.locator('#log li.msg.chat', { hasText: 'hi bob, from the first tab' });
  await atBob.waitFor({ timeout: WAIT_MS });
  check((await atBob.locator('.nick').innerText()) === 'alice', "chat: bob's page shows alice's line under her nickname");
  await sendText(bob, 'hello alice, from the second tab');
  const atAlice = alice.locator('#log li.msg.chat', { hasText: 'hello alice, from the second tab' });
  await atAlice.waitFor({ timeout: WAIT_MS });
  check((await atAlice.locator('.nick').innerText()) === 'bob', "chat: alice's page shows bob's reply under his nickname");
  check(await messageCount(alice) === aliceCount + 1, 'chat: alice got exactly the one new line');
}

async function bridge(page, name) {
  await page.click('#clear-log');
  await connect(page, 'bridge', name);
  ok(`bridge: connected to the bridge "${name}"`);
  const text = 'through the bridge to a TCP echo and back';
  await sendText(page, text);
  // TCP may cut the echo into several reads, so several binary messages: wait for all of it.
  await page.waitForFunction((want) => {
    const items = [...document.querySelectorAll('#log li.msg')];
    return items.map((i) => i.querySelector('.body')?.textContent ?? '').join('').includes(want);
  }, text, { timeout: WAIT_MS });
  const first = await nthMessage(page, 1);
  check(first.type === 'binary', 'bridge: bytes from the target arrive as binary messages', first.type);
  ok('bridge: the TCP echo answered with every byte');
}

/** Connects and waits for the page to settle on open or failed; returns which. */
async function tryConnect(page, kind, name) {
  await page.selectOption('#target', kind);
  if (kind === 'topic') await page.fill('#topic-name', name);
  await page.click('#connect');
  await page.waitForSelector('#state:is([data-state="open"], [data-state="failed"])', { timeout: WAIT_MS });
  return page.getAttribute('#state', 'data-state');
}

async function tokens(context, options, dir) {
  const { url, writer, reader } = options.tokens;
  const open = async (token) => {
    const page = await context.newPage();
    await page.goto(token ? `${url}?token=${encodeURIComponent(token)}` : url);
    return page;
  };
  const carol = await open(writer);
  const dave = await open(reader);
  check((await carol.inputValue('#token')) === writer, 'tokens: ?token= in the address fills the token field');
  check(!(await carol.textContent('#url')).includes(writer), 'tokens: the URL shown does not repeat the token');
  const topic = 'chat.browser';
  check((await tryConnect(carol, 'topic', topic)) === 'open', 'tokens: the writer joins chat.browser with its token');
  check((await tryConnect(dave, 'topic', topic)) === 'open', 'tokens: the reader joins chat.browser too');
  await sendText(carol, 'from the writer');
  await dave.locator('#log li.msg', { hasText: 'from the writer' }).waitFor({ timeout: WAIT_MS });
  ok("tokens: the reader hears the writer's message");
  await sendText(dave, 'the reader tries to write');
  await dave.waitForSelector('#state[data-state="failed"]', { timeout: WAIT_MS });
  const closed = await dave.textContent('#state-detail');
  check(closed.includes('may not publish'), 'tokens: the reader is closed when it publishes, and the page says why', closed);
  await screenshot(dave, dir, 'tokens-reader');
  const nobody = await open(null);
  check((await tryConnect(nobody, 'topic', topic)) === 'failed', 'tokens: a page without a token is refused');
  await nobody.waitForFunction(() => document.getElementById('state-detail').textContent.includes('HTTP 401'), null, { timeout: WAIT_MS });
  const why = await nobody.textContent('#state-detail');
  check(why.includes('a token is needed'), 'tokens: the page shows why (HTTP 401, a token is needed)', why);
  await screenshot(nobody, dir, 'tokens-refused');
  const outside = await open(reader);
  check((await tryConnect(outside, 'topic', 'secret.room')) === 'failed', 'tokens: the reader is refused a topic its token does not cover');
  await outside.waitForFunction(() => document.getElementById('state-detail').textContent.includes('HTTP 403'), null, { timeout: WAIT_MS });
  ok(`tokens: the page says the token does not allow it (${await outside.textContent('#state-detail')})`);
  for (const page of [carol, dave, nobody, outside]) await page.close();
}

async function stats(page, other) {
  await page.waitForSelector('#stat-status[data-state="open"]', { timeout: WAIT_MS });
  ok('stats: the page reads /metrics');
  // Both pages hold a connection now.
  await page.waitForFunction(() => Number(document.getElementById('stat-open').textContent) >= 2, null, { timeout: WAIT_MS });
  ok(`stats: open connections shown (${await page.textContent('#stat-open')})`);
  const total = Number((await page.textContent('#stat-total')).replace(/,/g, ''));
  check(total >= 3, 'stats: connections so far counts every connection made', String(total));
  const before = Number(await page.getAttribute('#stat-rate', 'data-messages'));
  for (let i = 0; i < 5; i++) await sendText(other, `stats tick ${i}`);
  await page.waitForFunction((b) => Number(document.getElementById('stat-rate').dataset.messages) >= b + 10, before, { timeout: WAIT_MS });
  const after = Number(await page.getAttribute('#stat-rate', 'data-messages'));
  ok(`stats: the message count moved from ${before} to ${after} while messages flowed`);
  const rate = await page.textContent('#stat-rate');
  check(rate !== '–' && Number.isFinite(Number(rate.replace(/,/g, ''))), `stats: messages/s shown (${rate})`);
}

async function lesson(page) {
  await page.click('#lesson-run');
  await page.waitForSelector('#lesson-result[data-state="ok"], #lesson-result[data-state="bad"]', { timeout: WAIT_MS });
  const result = page.locator('#lesson-result');
  const [state, sent, received, whole] = await Promise.all(
    ['data-state', 'data-sent', 'data-received', 'data-whole'].map((a) => result.getAttribute(a)),
  );
  check(state === 'ok', 'lesson: the panel reports success', await result.innerText());
  check(sent === '20' && received === '20' && whole === '20', `lesson: 20 WebSocket messages sent, ${received} received, ${whole} whole`);
  const chips = await page.locator('#lesson-sizes li.ok').count();
  check(chips === 20, 'lesson: every message shown with its sent and received size, all equal', String(chips));
  await page.waitForSelector('#tcp-summary', { timeout: WAIT_MS });
  const writes = await page.getAttribute('#tcp-summary', 'data-writes');
  const reads = Number(await page.getAttribute('#tcp-summary', 'data-reads'));
  const sum = async (id) => (await page.locator(`#${id} li`).allInnerTexts()).reduce((a, b) => a + Number(b), 0);
  const [wrote, read] = [await sum('tcp-writes'), await sum('tcp-reads')];
  check(writes === '20' && reads > 0, `lesson: the server's 20 TCP writes arrived as ${reads} reads`, `writes ${writes}`);
  check(wrote === read && wrote > 0, `lesson: the reads carry every written byte (${wrote})`, `${wrote} written, ${read} read`);
  console.log(`     ${await page.textContent('#tcp-summary')}`);
}

async function run(options) {
  mkdirSync(options.screenshots, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'ferry-page-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: options.chromium,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 900 },
    });
    const errors = [];
    const open = async () => {
      const page = await context.newPage();
      page.on('pageerror', (err) => errors.push(err.message));
      await page.goto(options.url);
      return page;
    };
    const alice = await open();
    const bob = await open();
    ok(`Chromium ${context.browser()?.version() ?? ''} loaded ${options.url} in two tabs`.replace('  ', ' '));
    const dir = options.screenshots;

    const steps = [
      ['echo-text', alice, () => echoText(alice)],
      ['echo-binary', alice, () => echoBinary(alice)],
      ['chat-alice', alice, () => chat(alice, bob)],
      ['stats', alice, () => stats(alice, bob)],
      ['lesson', alice, () => lesson(alice)],
    ];
    for (const [name, page, step] of steps) {
      try {
        await step();
      } catch (err) {
        fail(`${name}: ${err.message.split('\n')[0]}`);
      }
      await screenshot(page, dir, name);
      if (name === 'chat-alice') await screenshot(bob, dir, 'chat-bob');
    }
    if (options.docsImage) {
      await alice.screenshot({ path: options.docsImage, fullPage: true });
      console.log(`     docs image ${options.docsImage}`);
    }
    if (options.bridge) {
      try {
        await bridge(bob, options.bridge);
      } catch (err) {
        fail(`bridge: ${err.message.split('\n')[0]}`);
      }
      await screenshot(bob, dir, 'bridge');
    } else {
      console.log('skipped: bridge (no --bridge NAME given)');
    }
    if (options.tokens) {
      try {
        await tokens(context, options, dir);
      } catch (err) {
        fail(`tokens: ${err.message.split('\n')[0]}`);
      }
    } else {
      console.log('skipped: tokens (no --tokens URL WRITER READER given)');
    }
    check(errors.length === 0, 'no JavaScript errors on the page', errors.join('; '));
  } finally {
    await context?.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
}

const options = parseArgs(process.argv.slice(2));
try {
  await run(options);
} catch (err) {
  fail(`${err.name}: ${err.message.split('\n')[0]}`);
}
process.exit(failures ? 1 : 0);
