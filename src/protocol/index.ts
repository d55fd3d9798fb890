// The whole protocol for the daemon. The client must not import this file (it re-exports
// schema.ts, which loads zod); it imports wire.ts, errors.ts and replies.ts directly.

export * from './wire.js';
export * from './errors.js';
export * from './replies.js';
export * from './schema.js';
