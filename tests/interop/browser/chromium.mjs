// What the browser checks share: how Chromium is launched, and how checks are counted.

// Chromium runs as root in a container: no sandbox, and nothing that reaches out on its own.
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let failures = 0;

/** Prints a passed check. */
export const ok = (what) => console.log(`ok   ${what}`);

/** Prints a failed check and counts it. */
export const fail = (what) => {
  failures += 1;
  console.log(`FAIL ${what}`);
};

/** Runs `run`, counts an exception as a failure, and exits 1 if any check failed. */
export async function main(run) {
  try {
    await run();
  } catch (err) {
    fail(`${err.name}: ${err.message.split('\n')[0]}`);
  }
  process.exit(failures ? 1 : 0);
}
