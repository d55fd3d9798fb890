// Loaded with `node --import`: records every module URL the ESM loader resolves, so a test can
// see which packages an entry point pulls in. The same file is the loader hooks module (run
// off-thread by register()) and the main-thread side that collects what the hooks report.

import { register } from 'node:module';
import { MessageChannel, isMainThread } from 'node:worker_threads';

// Imported after the module under test: its resolution arriving means every earlier one has.
const SENTINEL = 'data:text/javascript,/*import-recorder-done*/export{}';

let hooksPort;

export function initialize(data) {
  hooksPort = data.port;
}

export async function resolve(specifier, context, nextResolve) {
  const result = await nextResolve(specifier, context);
  hooksPort?.postMessage(specifier === SENTINEL ? { done: true } : { url: result.url });
  return result;
}

if (isMainThread) {
  const { port1, port2 } = new MessageChannel();
  const seen = [];
  let onDone;
  port1.on('message', (m) => {
    if (m.done) onDone?.();
    else seen.push(m.url);
  });
  port1.unref();
  register(import.meta.url, { data: { port: port2 }, transferList: [port2] });

  /** Imports `specifier` (relative ones from this file's folder; pass absolute paths) and resolves with every module URL resolved up to then. */
  globalThis.importAndRecord = async (specifier) => {
    await import(specifier);
    const done = new Promise((r) => (onDone = r));
    // Held while waiting: an unref'd port lets node exit (code 13, unsettled top-level await)
    // when the hooks thread's last message is still on its way and nothing else is pending.
    port1.ref();
    await import(SENTINEL);
    await done;
    port1.unref();
    return [...seen];
  };
}
