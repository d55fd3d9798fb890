// SIGTERM/SIGINT for the long-running commands (serve, top), in one place. The first signal
// asks for a graceful stop; a second, while that is under way, exits at once.
//
// Not close-with-grace: it calls process.exit(0) itself once the close resolves (the CLI must
// choose the exit code: serve exits 1 when its stop was not clean, top 0), also takes over
// uncaughtException, unhandledRejection and beforeExit, and its own deadline would duplicate
// serve's (startServe already bounds its stop by RATELIMIT_SHUTDOWN_TIMEOUT).
import { EXIT } from './context.js';

const SIGNALS: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT'];

export interface SignalHandlers {
  /** The first signal: begin a graceful stop (the caller bounds how long it takes). */
  graceful: (signal: NodeJS.Signals) => void;
  /** A second signal, just before the process exits at once: leave the terminal or log as needed. */
  beforeImmediateExit?: (signal: NodeJS.Signals) => void;
}

/** Installs the handlers; returns a function that removes them (call it once the stop is done). */
export function onStopSignals(handlers: SignalHandlers): () => void {
  let received = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    received++;
    if (received > 1) {
      handlers.beforeImmediateExit?.(signal);
      process.exit(EXIT.FAILURE);
    }
    handlers.graceful(signal);
  };
  for (const s of SIGNALS) process.on(s, onSignal);
  return () => {
    for (const s of SIGNALS) process.off(s, onSignal);
  };
}

/**
 * The last resort for a bug: an exception nothing caught, or a rejection nothing handled.
 * Without a handler Node exits at once (sockets dropped, decisions made from memory neither
 * written nor spooled); with one that only logs, the process may limp on in a state nobody
 * designed, or hang. So `fatal` is called once, to log with the stack and drain through the one
 * shutdown path; the caller then exits non-zero and a supervisor restarts the daemon. A second
 * error while draining is only logged (`again`): the drain already under way is the way out.
 */
export function onLastResort(handlers: {
  fatal: (err: unknown, origin: 'uncaughtException' | 'unhandledRejection') => void;
  again: (err: unknown) => void;
}): () => void {
  let fired = false;
  const onError = (origin: 'uncaughtException' | 'unhandledRejection') => (err: unknown) => {
    if (fired) return handlers.again(err);
    fired = true;
    handlers.fatal(err, origin);
  };
  const onException = onError('uncaughtException');
  const onRejection = onError('unhandledRejection');
  process.on('uncaughtException', onException);
  process.on('unhandledRejection', onRejection);
  return () => {
    process.off('uncaughtException', onException);
    process.off('unhandledRejection', onRejection);
  };
}
