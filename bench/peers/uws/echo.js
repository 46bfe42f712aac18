// uWebSockets.js echo server for bench/run.sh: the C++ uWebSockets under Node, where each
// message crosses into JavaScript (the `message` callback) and back (`ws.send`).
//
//   node bench/peers/uws/echo.js --listen 127.0.0.1:9105
//
// The native addon is loaded by its file name, not through the package's `main`: that entry
// point silently falls back to a pure-JavaScript server (built on `ws`) when the binary does not
// load, which would measure the wrong thing.
'use strict';

const path = require('path');

function listenArg() {
  const args = process.argv.slice(2);
  let listen = '127.0.0.1:9001';
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--listen' && i + 1 < args.length) {
      listen = args[++i];
    } else {
      console.error(`usage: node echo.js [--listen HOST:PORT]; unknown argument ${args[i]}`);
      process.exit(2);
    }
  }
  const at = listen.lastIndexOf(':');
  return { host: listen.slice(0, at), port: Number(listen.slice(at + 1)) };
}

function loadNative() {
  const pkg = path.dirname(require.resolve('@trufflesuite/uws-js-unofficial/package.json'));
  const file = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
  try {
    return require(path.join(pkg, 'binaries', file));
  } catch (e) {
    console.error(`uWebSockets.js: the native binary ${file} does not load: ${e.message}`);
    process.exit(1);
  }
}

const uWS = loadNative();
const { host, port } = listenArg();

uWS.App()
  .ws('/*', {
    // Echo text as text and binary as binary.
    message: (ws, message, isBinary) => {
      ws.send(message, isBinary);
    },
    compression: uWS.DISABLED,
    maxPayloadLength: 64 * 1024 * 1024,
    // Never drop an echo for backpressure (the default, 64 KiB, would drop pipelined bulk
    // messages), and never time a connection out: the idle test holds them.
    maxBackpressure: 1024 * 1024 * 1024,
    idleTimeout: 0,
  })
  .listen(host, port, (token) => {
    if (!token) {
      console.error(`uWebSockets.js: cannot listen on ${host}:${port}`);
      process.exit(1);
    }
    console.error(`uWebSockets.js listening on ws://${host}:${port}/`);
  });
