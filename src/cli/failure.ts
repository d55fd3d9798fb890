// How an admin command reports a failure: one line on stderr ("ratelimit: what happened; what to
// do", the stack only with DEBUG) and, for a command run with --json, one JSON error document on
// stdout, so a script reading stdout always gets exactly one document, success or not.
import { CommanderError } from 'commander';
import { describeFailure, type FailureKind } from '../core/errors.js';
import type { Io } from './context.js';

/** What `--json` prints on stdout when a command fails. */
export interface ErrorDocument {
  error: { code: FailureKind; message: string };
}

export function errorDocument(err: unknown): ErrorDocument {
  if (err instanceof CommanderError) {
    // commander's own words ("error: missing required argument 'phone'") without its prefix.
    return { error: { code: 'invalid_usage', message: err.message.replace(/^error: /, '') } };
  }
  return { error: describeFailure(err) };
}

/**
 * commander has already written its usage errors (and the pointer to the command's --help) to
 * stderr; everything else gets its one line here.
 */
export function reportFailure(io: Io, err: unknown, opts: { json: boolean }): void {
  if (!(err instanceof CommanderError)) {
    io.err(`ratelimit: ${describeFailure(err).message}`);
    if (io.env.DEBUG) debugTrace(io, err);
  }
  if (opts.json) io.out(JSON.stringify(errorDocument(err)));
}

/** With DEBUG: the stack, and the causes under it (the driver's own words live there). */
function debugTrace(io: Io, err: unknown): void {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    io.err(depth === 0 ? (e.stack ?? e.message) : `caused by: ${e.stack ?? e.message}`);
  }
}
