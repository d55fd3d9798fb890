// The error codes of docs/protocol.md with the HTTP status each one answers with, side by side in
// one table so a new code cannot be added without its status. Zod-free: the client reads it too.

export const PROTOCOL_ERRORS = {
  invalid_json: { httpStatus: 400, description: 'the frame or body is not valid JSON' },
  invalid_message: { httpStatus: 400, description: 'valid JSON, but not a valid request' },
  unknown_type: { httpStatus: 400, description: '"type" is not one of the request types' },
  invalid_phone_number: { httpStatus: 400, description: 'the phone number cannot be parsed' },
  unauthorized: { httpStatus: 401, description: 'no valid token' },
  forbidden: { httpStatus: 403, description: 'not allowed for this client (role or origin)' },
  too_many_requests: { httpStatus: 429, description: 'this connection or address sent too much' },
  unknown_decision: { httpStatus: 404, description: 'the decisionId is not one this service issued, or it has expired' },
  internal_error: { httpStatus: 500, description: 'the daemon could not decide; retry' },
} as const satisfies Record<string, { httpStatus: number; description: string }>;

export type ProtocolErrorCode = keyof typeof PROTOCOL_ERRORS;
