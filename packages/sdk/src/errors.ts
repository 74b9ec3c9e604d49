// Subpath imports keep zod (and its ~50 ms of loading) out of the CLI's start-up.
import { errorCodes, isErrorCode, type ErrorCode } from '@roost/contract/errors';

/**
 * An error the Roost API answered with. `code` is stable (see the table in @roost/contract);
 * `hint` says what to do next.
 *
 * @example
 * try { await roost.sandboxes.get('nope') }
 * catch (error) { if (error instanceof RoostApiError && error.code === 'SANDBOX_NOT_FOUND') … }
 */
export class RoostApiError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly status: number,
    readonly hint: string,
    readonly requestId?: string,
  ) {
    super(message);
    this.name = 'RoostApiError';
  }

  /** Whether a body has the shape of roostd's errors (`{error: {code, message}}`). */
  static isErrorBody(body: unknown): boolean {
    const error = (body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
    return typeof error?.code === 'string' && typeof error.message === 'string';
  }

  static fromBody(status: number, body: unknown): RoostApiError {
    const error = (body as { error?: { code?: string; message?: string; hint?: string; requestId?: string } })?.error;
    const code: ErrorCode = error?.code && isErrorCode(error.code) ? error.code : 'INTERNAL';
    return new RoostApiError(
      code,
      error?.message ?? `the daemon answered HTTP ${status}`,
      status,
      error?.hint ?? errorCodes[code].hint,
      error?.requestId,
    );
  }
}

/**
 * The daemon could not be reached at all (not running, wrong URL).
 *
 * @example
 * catch (error) { if (error instanceof DaemonUnreachableError) console.error(error.message) }
 */
export class DaemonUnreachableError extends Error {
  constructor(readonly apiUrl: string, cause: unknown) {
    super(`cannot reach roostd at ${apiUrl}`, { cause });
    this.name = 'DaemonUnreachableError';
  }
}

/**
 * Something answered at the API URL, but not as roostd does (another web server, a service on
 * the wrong port, a program that does not speak HTTP). `answered` says what came back.
 *
 * @example
 * catch (error) { if (error instanceof NotRoostdError) console.error(`${error.apiUrl}: ${error.answered}`) }
 */
export class NotRoostdError extends Error {
  constructor(
    readonly apiUrl: string,
    readonly answered: string,
  ) {
    super(`the server at ${apiUrl} is not roostd (it answered ${answered})`);
    this.name = 'NotRoostdError';
  }
}
