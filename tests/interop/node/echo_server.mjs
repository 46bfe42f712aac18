// A `ws` echo server: every text and binary message goes back unchanged, as the same type.
//
// Usage: node echo_server.mjs PORT [--no-deflate] [--expect-extensions VALUE|none]
//
// Listens on 127.0.0.1:PORT, accepts messages up to 16 MiB, and runs until killed.
// tests/interop/node/run.sh points ferry's interop_client example at it.
//
// permessage-deflate: ws's server has it off unless asked, so it is turned on here with ws's
// default settings (`perMessageDeflate: true`), or left off with --no-deflate.
//
// For each connection it prints what the client offered and what the server answered, and:
// - with --expect-extensions, "ok   extensions ..." when the Sec-WebSocket-Extensions answer is
//   exactly VALUE (`none`: no header) and ws runs the matching extension, "FAIL ..." otherwise;
// - when the client has gone, after at least 1 MiB of messages each way, "ok   wire ..." when
//   the bytes on the socket fit what was negotiated: with permessage-deflate, both sides must
//   have compressed (the socket carried under 3/4 of the message bytes each way; ferry's
//   interop_client sends three compressible messages for every random one), without it they
//   cannot have (at least the message bytes).

import { WebSocketServer } from 'ws';

const MAX_SIZE = 16 * 1024 * 1024;

function parseArgs(argv) {
  const options = { port: null, deflate: true, expected: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--no-deflate') options.deflate = false;
    else if (arg === '--expect-extensions') options.expected = argv[++i];
    else if (/^\d+$/.test(arg) && options.port === null) options.port = Number(arg);
    else throw new Error(`unexpected argument ${arg}`);
  }
  if (options.port === null || options.expected === undefined) {
    throw new Error('usage: node echo_server.mjs PORT [--no-deflate] [--expect-extensions VALUE|none]');
  }
  return options;
}

const options = parseArgs(process.argv.slice(2));

const server = new WebSocketServer({
  host: '127.0.0.1',
  port: options.port,
  maxPayload: MAX_SIZE,
  perMessageDeflate: options.deflate,
});

// The response headers, as ws writes them, are only seen in this event: keep the extensions
// answer on the request so that the 'connection' handler finds it.
server.on('headers', (headers, request) => {
  const line = headers.find((h) => h.toLowerCase().startsWith('sec-websocket-extensions:'));
  request.extensionsAnswer = line ? line.slice(line.indexOf(':') + 1).trim() : 'none';
});

server.on('connection', (ws, request) => {
  const offered = request.headers['sec-websocket-extensions'] ?? '(nothing)';
  const answered = request.extensionsAnswer;
  console.log(`     client offered: ${offered}; answered: ${answered}; ws runs: ${ws.extensions || 'none'}`);
  if (options.expected !== null) {
    const runs = options.expected === 'none' ? '' : 'permessage-deflate';
    if (answered !== options.expected) {
      console.log(`FAIL extensions: expected to answer ${JSON.stringify(options.expected)}, answered ${JSON.stringify(answered)}`);
    } else if (ws.extensions !== runs) {
      console.log(`FAIL extensions: answered ${JSON.stringify(answered)} but ws runs ${JSON.stringify(ws.extensions)}`);
    } else {
      console.log(`ok   extensions: the server answered ${answered}, as expected`);
    }
  }

  const socket = request.socket;
  const start = { read: socket.bytesRead, written: socket.bytesWritten };
  let messageBytes = 0;
  let messages = 0;
  ws.on('message', (data, isBinary) => {
    messages += 1;
    messageBytes += data.length;
    ws.send(data, { binary: isBinary });
  });
  ws.on('error', (err) => console.error(`echo_server: connection error: ${err.message}`));
  ws.on('close', (code, reason) => {
    const read = socket.bytesRead - start.read;
    const written = socket.bytesWritten - start.written;
    const compressed = ws.extensions === 'permessage-deflate';
    console.log(
      `     closed ${code} ${JSON.stringify(reason.toString())} after ${messages} messages (${messageBytes} bytes each way); ` +
        `socket: ${read} bytes in, ${written} bytes out`,
    );
    if (messageBytes < 1 << 20) return;
    const ratios = `${(read / messageBytes).toFixed(3)} in, ${(written / messageBytes).toFixed(3)} out`;
    if (compressed && read < 0.75 * messageBytes && written < 0.75 * messageBytes) {
      console.log(`ok   wire: compressed both ways (socket bytes per message byte: ${ratios})`);
    } else if (!compressed && read >= messageBytes && written >= messageBytes) {
      console.log(`ok   wire: uncompressed both ways (socket bytes per message byte: ${ratios})`);
    } else {
      console.log(`FAIL wire: permessage-deflate ${compressed ? 'on' : 'off'}, but socket bytes per message byte: ${ratios}`);
    }
  });
});

server.on('listening', () => console.log(`node ws echo server listening on ws://127.0.0.1:${options.port}/ (permessage-deflate ${options.deflate ? 'on' : 'off'})`));
server.on('error', (err) => {
  console.error(`echo_server: ${err.message}`);
  process.exit(1);
});
process.on('SIGTERM', () => process.exit(0));
