/**
 * An error core raises on purpose. `code` is one of the stable codes in @roost/contract's table;
 * adapters translate it to an HTTP status and a hint. Anything else thrown is a bug (INTERNAL).
 */
export class RoostError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'RoostError';
  }
}

export function isRoostError(error: unknown): error is RoostError {
  return error instanceof RoostError;
}
