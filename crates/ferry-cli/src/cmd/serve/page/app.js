// The page `ferry serve` shows at `/`: connect to a route (echo, a topic, a bridge), send text
// or a file, watch each message arrive whole, and read live server stats from /metrics.
//
// Plain JavaScript with no build step: the server embeds this file as it is. Everything that
// comes from the network is put on the page with textContent, never as HTML.
'use strict';

/** The WebSocket routes' prefix; the server writes its configured one into the meta tag. */
const WS_PREFIX = readPrefix();
/** Received messages kept on the page; older ones are removed so a long session stays fast. */
const LOG_LIMIT = 500;
/** Characters of a message shown; the size shown is always the whole message's. */
const PREVIEW_CHARS = 2000;
/** Bytes of a binary message shown as hex when it is not readable text. */
const PREVIEW_HEX_BYTES = 64;
/** Sent messages remembered to time their echo; a topic may drop some under load. */
const PENDING_LIMIT = 1000;
const TOPIC_NAME = /^[A-Za-z0-9._-]{1,64}$/;
const LESSON_COUNT = 20;
const LESSON_MAX_SIZE = 5000;
const LESSON_TIMEOUT_MS = 15000;

/** What RFC 6455 §7.4.1 close codes mean to someone watching the page. */
const CLOSE_MEANINGS = {
  1000: 'normal closure',
  1001: 'the server is going away',
  1002: 'protocol error',
  1003: 'unsupported data',
  1006: 'the connection dropped without a closing handshake',
  1007: 'invalid data (text that is not UTF-8)',
  1008: 'refused by policy',
  1009: 'message too big for the server',
  1011: 'the server hit an error',
  1012: 'the server is restarting',
  1013: 'the server is overloaded; try again later',
  1014: 'the bridge target is unreachable',
  4001: 'the token expired',
  4010: "the topic's history was lost; reconnect",
};

const $ = (id) => document.getElementById(id);

/** The connection of the Connection panel; `id` tells a stale socket's events from current ones. */
const conn = {
  id: 0,
  ws: null,
  route: null,
  opened: false,
  closedByUser: false,
  // Messages this page sent and has not seen come back yet, oldest first.
  pending: [],
  sentMessages: 0,
  sentBytes: 0,
};

// ---------------------------------------------------------------------------------------------
// Routes and URLs

function readPrefix() {
  const meta = document.querySelector('meta[name="ferry-ws-prefix"]');
  if (!meta) return '/ws';
  let prefix = meta.content.trim();
  if (prefix === '' || prefix === '/') return '';
  if (!prefix.startsWith('/')) prefix = `/${prefix}`;
  return prefix.replace(/\/+$/, '');
}

/** The route the form describes: { kind, name, path }, or { error } if a name is missing. */
function chosenRoute() {
  const kind = $('target').value;
  if (kind === 'topic') {
    const name = $('topic-name').value.trim();
    if (!name) return { error: 'Name a topic to join.' };
    // The server's rule; checking it here gives a clear message instead of a failed handshake.
    if (!TOPIC_NAME.test(name)) return { error: "Topic names are 1 to 64 letters, digits, '.', '_' or '-'." };
    return { kind, name, path: `${WS_PREFIX}/topics/${encodeURIComponent(name)}` };
  }
  if (kind === 'bridge') {
    const name = $('bridge-name').value.trim();
    if (!name) return { error: "Name a bridge from the server's config." };
    return { kind, name, path: `${WS_PREFIX}/bridge/${encodeURIComponent(name)}` };
  }
  return { kind: 'echo', name: '', path: `${WS_PREFIX}/echo` };
}

function wsUrl(path) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${path}`;
}

/** The path with the token field as `?token=`, if there is one. */
function withToken(path) {
  const token = $('token').value.trim();
  return token ? `${path}?token=${encodeURIComponent(token)}` : path;
}

/** The URL as shown on the page: the token itself is not repeated there. */
function shownUrl(path) {
  return $('token').value.trim() ? `${wsUrl(path)}?token=…` : wsUrl(path);
}

/** Shows only the fields of the chosen route, and the URL it will connect to. */
function showRouteFields() {
  const kind = $('target').value;
  for (const el of document.querySelectorAll('[data-for]')) {
    el.hidden = el.dataset.for !== kind;
  }
  const route = chosenRoute();
  $('url').textContent = route.error ? route.error : shownUrl(route.path);
  const topic = $('topic-name').value.trim() || 'lobby';
  $('topic-tab').href = `#topic=${encodeURIComponent(topic)}`;
}

/** `#topic=NAME`, `#bridge=NAME` or `#echo` in the address picks the route, for shared links. */
function applyHash() {
  const match = /^#(echo|topic|bridge)(?:=(.*))?$/.exec(location.hash);
  if (!match) return;
  $('target').value = match[1];
  let name = '';
  try {
    name = decodeURIComponent(match[2] || '');
  } catch {
    // A malformed escape in a hand-typed address: keep the default name.
  }
  if (name && match[1] === 'topic') $('topic-name').value = name;
  if (name && match[1] === 'bridge') $('bridge-name').value = name;
}

// ---------------------------------------------------------------------------------------------
// Connecting

function connect() {
  const route = chosenRoute();
  if (route.error) {
    setState('closed', route.error);
    return;
  }
  if (conn.ws) closeSocket();

  conn.id += 1;
  const id = conn.id;
  let ws;
  try {
    ws = new WebSocket(wsUrl(withToken(route.path)));
  } catch (err) {
    setState('failed', `Could not open ${shownUrl(route.path)}: ${err.message}`);
    return;
  }
  // ArrayBuffer, not Blob: sizes and previews are then synchronous.
  ws.binaryType = 'arraybuffer';
  Object.assign(conn, { ws, route, opened: false, closedByUser: false, pending: [] });
  setFacts(null, null);
  setState('connecting', `Opening ${route.path}`);
  setControls();

  ws.onopen = () => {
    if (id !== conn.id) return;
    conn.opened = true;
    setFacts(ws.extensions, ws.protocol);
    setState('open', openDetail(route));
    addNote(`Connected to ${route.path}`);
    setControls();
    if (route.kind !== 'bridge') $('message').focus();
  };
  ws.onmessage = (event) => {
    if (id === conn.id) onMessage(event.data);
  };
  ws.onclose = (event) => {
    if (id === conn.id) onClose(event);
  };
  // An error is always followed by a close event, which says what happened.
  ws.onerror = () => {};
}

function openDetail(route) {
  if (route.kind === 'topic') return `Joined topic "${route.name}" as ${nick()}.`;
  if (route.kind === 'bridge') return `Bridged to "${route.name}": bytes from the target arrive as binary messages.`;
  return 'Everything you send comes back.';
}

/** Closes the current socket on the user's behalf; its close event still updates the state. */
function closeSocket() {
  const ws = conn.ws;
  if (!ws) return;
  conn.closedByUser = true;
  if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) {
    ws.close(1000);
  }
}

function onClose(event) {
  const { route, opened, closedByUser } = conn;
  conn.ws = null;
  conn.pending = [];
  setControls();
  watchBuffered();

  const label = `closed ${event.code}`;
  const meaning = CLOSE_MEANINGS[event.code] || 'closed';
  const reason = event.reason ? `: ${event.reason}` : '';
  if (closedByUser) {
    setState('closed', 'You closed the connection.', label);
  } else if (opened) {
    setState(event.code === 1000 ? 'closed' : 'failed', `The server closed the connection (${meaning}${reason}).`, label);
  } else {
    setState('failed', `Could not connect to ${route.path} (${meaning}${reason}).`, label);
    explainRefusal(route, conn.id);
  }
  addNote(`Closed ${event.code}${reason}`);
}

/**
 * A browser hides the HTTP status of a refused WebSocket handshake, so ask the route with a plain
 * GET: 426 means it exists (the upgrade was refused for another reason), 404 that it does not.
 */
async function explainRefusal(route, id) {
  let status;
  let body = '';
  try {
    const response = await fetch(withToken(route.path), { cache: 'no-store' });
    status = response.status;
    if (status === 401 || status === 403 || status === 429) body = (await response.text()).trim();
  } catch {
    status = 0;
  }
  if (id !== conn.id) return; // the user has moved on to another connection
  let text;
  if (status === 0) {
    text = 'The server is not reachable.';
  } else if (status === 404 && route.kind === 'bridge') {
    text = `No bridge named "${route.name}" here (HTTP 404). Bridges are named in the server's config; this server may have none yet.`;
  } else if (status === 404) {
    text = `Nothing at ${route.path} (HTTP 404). Is the WebSocket prefix "${WS_PREFIX}" right?`;
  } else if (status === 401) {
    text = `The server wants a valid token (HTTP 401): ${body}.`;
  } else if (status === 403 && body.includes('token')) {
    text = `The token does not allow this (HTTP 403): ${body}.`;
  } else if (status === 403) {
    text = "The server refused this page's origin (HTTP 403).";
  } else if (status === 429) {
    text = `Too many connection attempts (HTTP 429): ${body}.`;
  } else if (status === 426) {
    text = 'The route exists, but the server turned the handshake down: it may be at its connection limit, or want a token.';
  } else {
    text = `A plain GET on ${route.path} answers HTTP ${status}.`;
  }
  $('state-detail').textContent = text;
}

function setState(state, detail, label) {
  const el = $('state');
  el.dataset.state = state;
  el.textContent = label || (state === 'failed' ? 'closed' : state);
  $('state-detail').textContent = detail || '';
}

/** Shows what the handshake negotiated; null before there is a handshake to report. */
function setFacts(extensions, protocol) {
  const show = (id, value) => {
    $(id).dataset.value = value || '';
    $(id).textContent = value === null ? '–' : value || 'none';
  };
  show('extensions', extensions);
  show('protocol', protocol);
}

/** Enables what makes sense in the current state. */
function setControls() {
  const ws = conn.ws;
  const open = ws !== null && ws.readyState === WebSocket.OPEN;
  $('disconnect').disabled = ws === null;
  $('send').disabled = !open;
  $('message').disabled = !open;
  $('file').disabled = !open;
  $('message').placeholder = open ? messagePlaceholder() : 'Connect first';
}

function messagePlaceholder() {
  if (conn.route.kind === 'topic') return `Say something to "${conn.route.name}"`;
  if (conn.route.kind === 'bridge') return 'Text to write to the target';
  return 'Text to echo';
}

// ---------------------------------------------------------------------------------------------
// Sending

function nick() {
  return $('nick').value.trim() || 'anonymous';
}

function sendText() {
  const ws = conn.ws;
  const text = $('message').value;
  if (!ws || ws.readyState !== WebSocket.OPEN || text === '') return;
  // On a topic, a message carries its author so other tabs can render it as a chat line.
  const data = conn.route.kind === 'topic' ? JSON.stringify({ nick: nick(), text }) : text;
  send(data, utf8Length(data));
  $('message').value = '';
}

async function sendFile(file) {
  const ws = conn.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const bytes = await file.arrayBuffer();
  if (ws !== conn.ws || ws.readyState !== WebSocket.OPEN) return; // closed while reading
  addNote(`Sending ${file.name} (${formatBytes(bytes.byteLength)}) as one binary message`);
  send(bytes, bytes.byteLength);
}

function send(data, size) {
  const ws = conn.ws;
  const entry = { data, size, binary: typeof data !== 'string', at: performance.now() };
  // Only echoes and topics send our messages back; a bridge's target answers what it likes.
  if (conn.route.kind !== 'bridge') {
    conn.pending.push(entry);
    if (conn.pending.length > PENDING_LIMIT) conn.pending.shift();
  }
  ws.send(data);
  conn.sentMessages += 1;
  conn.sentBytes += size;
  $('send-stats').textContent =
    `Sent ${count(conn.sentMessages, 'message')}, ${formatBytes(conn.sentBytes)}.`;
  watchBuffered();
}

// ---------------------------------------------------------------------------------------------
// bufferedAmount gauge

const gauge = { running: false, peak: 0 };

/**
 * Redraws the gauge every animation frame while the socket has bytes queued, then once more at
 * zero. Sends are synchronous, so this is the only way to watch a big message drain.
 */
function watchBuffered() {
  if (gauge.running) return;
  gauge.running = true;
  gauge.peak = 0;
  const frame = () => {
    const amount = conn.ws ? conn.ws.bufferedAmount : 0;
    gauge.peak = Math.max(gauge.peak, amount);
    $('buffered').textContent = String(amount);
    $('buffered-peak').textContent = gauge.peak.toLocaleString('en-US');
    const share = gauge.peak > 0 ? amount / gauge.peak : 0;
    $('buffered-bar').style.width = `${(share * 100).toFixed(1)}%`;
    if (amount > 0) {
      requestAnimationFrame(frame);
    } else {
      gauge.running = false;
    }
  };
  requestAnimationFrame(frame);
}

// ---------------------------------------------------------------------------------------------
// Receiving

function onMessage(data) {
  const now = performance.now();
  const binary = typeof data !== 'string';
  const size = binary ? data.byteLength : utf8Length(data);
  const echo = takePending(data, binary, size);
  addMessage({
    data,
    binary,
    size,
    arrived: new Date(),
    rtt: echo && echo.same ? now - echo.entry.at : null,
    mine: echo !== null && echo.same,
    differs: echo !== null && !echo.same,
  });
}

/**
 * Finds the sent message that `data` answers and removes it from the pending list: { entry,
 * same }, or null. An echo route answers in order, so its answer is to the oldest pending
 * message, and `same` says whether it came back unchanged. A topic interleaves other people's
 * messages, so there ours is the first pending message with the same content.
 */
function takePending(data, binary, size) {
  const pending = conn.pending;
  const same = (entry) => entry.binary === binary && entry.size === size && sameData(entry.data, data);
  if (conn.route.kind === 'echo') {
    const entry = pending.shift();
    return entry ? { entry, same: same(entry) } : null;
  }
  const index = pending.findIndex(same);
  return index < 0 ? null : { entry: pending.splice(index, 1)[0], same: true };
}

function sameData(a, b) {
  if (typeof a === 'string') return a === b;
  const x = new Uint8Array(a);
  const y = new Uint8Array(b);
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) {
    if (x[i] !== y[i]) return false;
  }
  return true;
}

/** Appends a received message to the log, as a chat line when it is one. */
function addMessage(message) {
  const item = document.createElement('li');
  item.className = 'msg';
  item.dataset.type = message.binary ? 'binary' : 'text';
  item.dataset.size = String(message.size);
  if (message.mine) item.classList.add('mine');

  const chat = message.binary ? null : parseChat(message.data);
  if (chat) {
    item.classList.add('chat');
    const who = el('span', 'nick', chat.nick);
    who.style.setProperty('--hue', String(hue(chat.nick)));
    const line = el('p', 'chat-line');
    line.append(who, ' ', el('span', 'chat-text', truncate(chat.text)));
    item.append(line, meta(message));
  } else {
    item.append(meta(message), body(message));
  }
  appendToLog(item);
}

/** The line above a message: type, size, round trip, arrival. */
function meta(message) {
  const row = el('div', 'meta');
  row.append(el('span', `badge ${message.binary ? 'binary' : 'text'}`, message.binary ? 'binary' : 'text'));
  row.append(el('span', 'num', formatBytes(message.size)));
  if (message.rtt !== null) {
    const rtt = el('span', 'num rtt', `rtt ${formatMs(message.rtt)}`);
    rtt.title = 'From this page sending it to the server sending it back';
    row.append(rtt);
  }
  if (message.differs) row.append(el('span', 'differs', 'not what was sent'));
  const time = el('time', 'num', formatClock(message.arrived));
  time.dateTime = message.arrived.toISOString();
  row.append(time);
  return row;
}

/** The message itself, cut to PREVIEW_CHARS; binary as text when it decodes, else as hex. */
function body(message) {
  const pre = el('pre', 'body');
  if (!message.binary) {
    pre.textContent = truncate(message.data);
    return pre;
  }
  const bytes = new Uint8Array(message.data);
  const text = decodeText(bytes.subarray(0, PREVIEW_CHARS * 4));
  if (text !== null) {
    pre.textContent = truncate(text);
    pre.classList.add('decoded');
    pre.title = 'Binary message shown as UTF-8 text';
  } else {
    pre.textContent = hex(bytes.subarray(0, PREVIEW_HEX_BYTES)) +
      (bytes.length > PREVIEW_HEX_BYTES ? ` … (${(bytes.length - PREVIEW_HEX_BYTES).toLocaleString('en-US')} more bytes)` : '');
    pre.classList.add('hex');
  }
  return pre;
}

/** `{"nick": ..., "text": ...}` as a chat message, or null for anything else. */
function parseChat(text) {
  if (text.length > 1 << 20 || !text.startsWith('{')) return null;
  try {
    const value = JSON.parse(text);
    if (value && typeof value.text === 'string') {
      const name = typeof value.nick === 'string' && value.nick.trim() ? value.nick.trim() : 'anonymous';
      return { nick: name.slice(0, 40), text: value.text };
    }
  } catch {
    // Not JSON: shown as raw text.
  }
  return null;
}

/** Bytes as text if they are UTF-8 without control characters (a cut at the end is allowed). */
function decodeText(bytes) {
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes, { stream: true });
  } catch {
    return null;
  }
  return /[\u0000-\u0008\u000e-\u001f\u007f]/.test(text) ? null : text;
}

function appendToLog(item) {
  const scroll = $('log-scroll');
  // Follow new messages only when the reader is already at the bottom.
  const atBottom = scroll.scrollHeight - scroll.scrollTop - scroll.clientHeight < 40;
  const log = $('log');
  log.append(item);
  while (log.children.length > LOG_LIMIT) log.firstElementChild.remove();
  $('log-empty').hidden = true;
  updateLogCount();
  if (atBottom) scroll.scrollTop = scroll.scrollHeight;
}

/** A line in the log about the connection itself; not a message, so not a `.msg`. */
function addNote(text) {
  const item = el('li', 'note', text);
  const time = el('time', 'num', formatClock(new Date()));
  item.prepend(time, ' ');
  appendToLog(item);
}

function updateLogCount() {
  const n = $('log').querySelectorAll('.msg').length;
  $('log-count').textContent = count(n, 'message');
}

function clearLog() {
  $('log').replaceChildren();
  $('log-empty').hidden = false;
  updateLogCount();
}

// ---------------------------------------------------------------------------------------------
// Server stats from /metrics

const stats = { last: null, rates: [] };

/** Polls /metrics once a second; each poll waits for the previous one, so none pile up. */
async function pollMetrics() {
  try {
    const response = await fetch('metrics', { cache: 'no-store' });
    if (!response.ok) throw new Error(`/metrics answered HTTP ${response.status}`);
    showStats(parseMetrics(await response.text()));
  } catch (err) {
    stats.last = null;
    $('stat-status').textContent = `Stats unavailable: ${err.message}`;
    $('stat-status').dataset.state = 'failed';
  }
  setTimeout(pollMetrics, 1000);
}

/** Prometheus text format to { name: sum of its series }; labels are summed over. */
function parseMetrics(text) {
  const sums = {};
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const value = Number(match[2]);
    if (Number.isFinite(value)) sums[match[1]] = (sums[match[1]] || 0) + value;
  }
  return sums;
}

function showStats(sums) {
  const now = performance.now();
  const messages = (sums.ferry_messages_received_total || 0) + (sums.ferry_messages_sent_total || 0);
  $('stat-open').textContent = formatCount(sums.ferry_connections_open);
  $('stat-total').textContent = formatCount(sums.ferry_connections_total);

  // The raw total, for tests and the curious: it only grows while the server runs.
  $('stat-rate').dataset.messages = String(messages);
  const last = stats.last;
  stats.last = { at: now, messages };
  // A rate needs two samples; a counter that went down means the server restarted.
  if (last && messages >= last.messages && now > last.at) {
    const rate = (messages - last.messages) / ((now - last.at) / 1000);
    $('stat-rate').textContent = rate < 10 ? rate.toFixed(1) : Math.round(rate).toLocaleString('en-US');
    stats.rates.push(rate);
    if (stats.rates.length > 31) stats.rates.shift();
    drawSpark();
  }
  $('stat-status').textContent = 'live from /metrics, every second';
  $('stat-status').dataset.state = 'open';
}

/** The last 30 seconds of messages/s as a line, scaled to its own peak. */
function drawSpark() {
  const rates = stats.rates;
  const peak = Math.max(1, ...rates);
  const points = rates.map((rate, i) => {
    const x = 60 - (rates.length - 1 - i) * 2;
    const y = 19 - (rate / peak) * 18;
    return `${x},${y.toFixed(1)}`;
  });
  $('stat-spark').querySelector('polyline').setAttribute('points', points.join(' '));
}

// ---------------------------------------------------------------------------------------------
// Messages, not a byte stream: N WebSocket messages arrive as N, while N TCP writes arrive as
// however many reads

async function runLesson() {
  const button = $('lesson-run');
  const result = $('lesson-result');
  const list = $('lesson-sizes');
  button.disabled = true;
  list.replaceChildren();
  result.dataset.state = '';
  result.textContent = `Sending ${LESSON_COUNT} messages to ${WS_PREFIX}/echo…`;

  // ASCII only, so each message's length in characters is its size in bytes.
  const sent = Array.from({ length: LESSON_COUNT }, () => randomText(1 + randomInt(LESSON_MAX_SIZE)));
  const outcome = await echoAll(sent);
  const received = outcome.messages;

  let whole = 0;
  sent.forEach((message, i) => {
    const back = received[i];
    const ok = back === message;
    if (ok) whole += 1;
    const chip = el('li', ok ? 'ok' : 'bad');
    chip.dataset.sent = String(message.length);
    chip.dataset.received = back === undefined ? '' : String(utf8Length(back));
    chip.textContent = `${message.length} → ${back === undefined ? 'missing' : utf8Length(back)}`;
    list.append(chip);
  });

  const total = sent.reduce((sum, message) => sum + message.length, 0);
  const problem = outcome.error ? ` ${outcome.error}.` : '';
  result.textContent = `Sent ${LESSON_COUNT} messages, ${formatBytes(total)} in all; ` +
    `${count(received.length, 'message')} came back.${problem} ${whole} of ${LESSON_COUNT} messages arrived whole`;
  result.dataset.state = whole === LESSON_COUNT && received.length === LESSON_COUNT ? 'ok' : 'bad';
  result.dataset.sent = String(LESSON_COUNT);
  result.dataset.received = String(received.length);
  result.dataset.whole = String(whole);
  button.disabled = false;
  loadTcpChunks();
}

/**
 * Sends `messages` over a fresh connection to the echo route, kept apart from the Connection
 * panel's, and resolves with what came back once all have, or on a close or time-out.
 */
function echoAll(messages) {
  return new Promise((resolve) => {
    const received = [];
    let done = false;
    const finish = (error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (ws.readyState === WebSocket.OPEN) ws.close(1000);
      resolve({ messages: received, error });
    };
    const ws = new WebSocket(wsUrl(`${WS_PREFIX}/echo`));
    const timer = setTimeout(() => finish(`Gave up after ${LESSON_TIMEOUT_MS / 1000} s`), LESSON_TIMEOUT_MS);
    ws.onopen = () => messages.forEach((message) => ws.send(message));
    ws.onmessage = (event) => {
      received.push(typeof event.data === 'string' ? event.data : '');
      if (received.length === messages.length) finish('');
    };
    ws.onclose = (event) => finish(`The echo connection closed (${event.code})`);
  });
}

/** Shows the server's TCP side of the lesson, when this server has it. */
async function loadTcpChunks() {
  const box = $('tcp-chunks');
  let report;
  try {
    const response = await fetch(`demo/tcp-chunks?n=${LESSON_COUNT}`, { cache: 'no-store' });
    if (!response.ok) {
      box.textContent = response.status === 404
        ? 'TCP read sizes: not available'
        : `TCP read sizes: not available (HTTP ${response.status})`;
      return;
    }
    report = await response.json();
  } catch {
    box.textContent = 'TCP read sizes: not available';
    return;
  }
  const sizes = (list) => (Array.isArray(list) ? list.filter((n) => Number.isFinite(n)) : []);
  const writes = sizes(report.writes);
  const reads = sizes(report.reads);
  const sum = (list) => list.reduce((a, b) => a + b, 0);

  const read = sum(reads) === sum(writes) ? '' : `, ${formatBytes(sum(reads))} in all`;
  const summary = el('p', 'tcp-summary',
    `${count(writes.length, 'write')}, ${formatBytes(sum(writes))} in all, arrived as ` +
    `${count(reads.length, 'read')}${read}.`);
  summary.id = 'tcp-summary';
  summary.dataset.writes = String(writes.length);
  summary.dataset.reads = String(reads.length);
  box.replaceChildren(summary, sizeList('Write sizes', writes, 'tcp-writes'), sizeList('Read sizes', reads, 'tcp-reads'));
}

function sizeList(title, list, id) {
  const wrap = el('div', 'tcp-list');
  const heading = el('p', 'label', `${title} (${list.length})`);
  heading.id = `${id}-title`;
  const items = el('ol', 'chips plain');
  items.id = id;
  items.setAttribute('aria-labelledby', heading.id);
  for (const n of list) items.append(el('li', '', String(n)));
  wrap.append(heading, items);
  return wrap;
}

function randomInt(below) {
  const value = new Uint32Array(1);
  crypto.getRandomValues(value);
  return value[0] % below;
}

function randomText(length) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  const bytes = new Uint8Array(length);
  crypto.getRandomValues(bytes);
  let text = '';
  for (const byte of bytes) text += alphabet[byte % alphabet.length];
  return text;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** UTF-8 size of a string without encoding it (a lone surrogate goes out as U+FFFD, 3 bytes). */
function utf8Length(text) {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) {
      n += 1;
    } else if (c < 0x800) {
      n += 2;
    } else if (c >= 0xd800 && c <= 0xdbff && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i += 1;
    } else {
      n += 3;
    }
  }
  return n;
}

function truncate(text) {
  if (text.length <= PREVIEW_CHARS) return text;
  return `${text.slice(0, PREVIEW_CHARS)} … (first ${PREVIEW_CHARS.toLocaleString('en-US')} characters shown)`;
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ');
}

function hue(name) {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) % 360;
  return h;
}

function formatBytes(n) {
  const exact = `${n.toLocaleString('en-US')} ${n === 1 ? 'byte' : 'bytes'}`;
  if (n < 1024) return exact;
  const units = ['KiB', 'MiB', 'GiB'];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${exact} (${value.toFixed(1)} ${units[unit]})`;
}

function formatCount(value) {
  return value === undefined ? '–' : Math.round(value).toLocaleString('en-US');
}

function formatMs(ms) {
  return ms < 10 ? `${ms.toFixed(2)} ms` : `${Math.round(ms).toLocaleString('en-US')} ms`;
}

function formatClock(date) {
  const pad = (n, width = 2) => String(n).padStart(width, '0');
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

function count(n, noun) {
  return `${n.toLocaleString('en-US')} ${noun}${n === 1 ? '' : 's'}`;
}

// ---------------------------------------------------------------------------------------------
// Start

/** A nickname per tab (sessionStorage), so two tabs chatting are told apart. */
function initNick() {
  const input = $('nick');
  let saved = null;
  try {
    saved = sessionStorage.getItem('ferry-nick');
  } catch {
    // Storage can be off; a fresh name each load is fine.
  }
  input.value = saved || `guest-${1000 + randomInt(9000)}`;
  input.addEventListener('change', () => {
    try {
      sessionStorage.setItem('ferry-nick', input.value.trim());
    } catch {
      // As above.
    }
  });
}

function init() {
  initNick();
  applyHash();
  // ?token=... in the page's own address fills the token field (a link an application hands out).
  const token = new URLSearchParams(location.search).get('token');
  if (token) $('token').value = token;
  showRouteFields();
  $('routes').textContent =
    `${WS_PREFIX}/echo · ${WS_PREFIX}/topics/{name} · ${WS_PREFIX}/control · ${WS_PREFIX}/bridge/{name}`;

  for (const id of ['target', 'topic-name', 'bridge-name', 'token']) {
    $(id).addEventListener('input', showRouteFields);
  }
  $('connect-form').addEventListener('submit', (event) => {
    event.preventDefault();
    connect();
  });
  $('disconnect').addEventListener('click', closeSocket);

  $('send-form').addEventListener('submit', (event) => {
    event.preventDefault();
    sendText();
  });
  $('message').addEventListener('keydown', (event) => {
    // Enter sends; Shift+Enter is a newline; an IME composition's Enter is left alone.
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendText();
    }
  });
  $('file').addEventListener('change', () => {
    const file = $('file').files[0];
    // Reset, so that picking the same file again sends it again.
    $('file').value = '';
    if (file) sendFile(file);
  });
  $('clear-log').addEventListener('click', clearLog);
  $('lesson-run').addEventListener('click', runLesson);

  setControls();
  pollMetrics();
  loadTcpChunks();
}

init();
