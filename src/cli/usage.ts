// Input the operator can fix by retyping the command (a missing file, an invalid policy file, a
// bad duration, two targets at once): exit 2, as docs/protocol.md's command table asks, never 1.
import { RateLimitError } from '../core/errors.js';

export class UsageError extends RateLimitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('invalid_usage', message, options);
    this.name = 'UsageError';
  }
}
