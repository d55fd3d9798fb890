// Errors that cross layers carry a stable `code` (their FailureKind) so the CLI and the daemon can map them to
// exit codes and protocol error codes in one place each, instead of matching on messages.

export type FailureKind =
  | 'invalid_phone_number'
  | 'invalid_config'
  | 'database_unreachable'
  | 'database_auth'
  | 'database_error'
  | 'migration_failed'
  | 'key_mismatch'
  | 'embedded_unavailable';

export class RateLimitError extends Error {
  readonly code: FailureKind;
  constructor(code: FailureKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RateLimitError';
    this.code = code;
  }
}

export class InvalidPhoneNumberError extends RateLimitError {
  constructor(message: string) {
    super('invalid_phone_number', message);
    this.name = 'InvalidPhoneNumberError';
  }
}

export class ConfigError extends RateLimitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('invalid_config', message, options);
    this.name = 'ConfigError';
  }
}
