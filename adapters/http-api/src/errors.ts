// Turning anything thrown in a handler into the one error body of the API.
import { errorCodes, isErrorCode, type ErrorBody, type ErrorCode } from '@roost/contract';
import { isRoostError } from '@roost/core';

export interface HttpError {
  status: number;
  body: ErrorBody;
  /** A bug or a fault of the host, worth an error line in the log (not a user mistake). */
  internal: boolean;
}

export function toHttpError(error: unknown, requestId: string): HttpError {
  if (isRoostError(error) && isErrorCode(error.code)) return make(error.code, error.message, requestId, error.code === 'RUNTIME_FAILED');
  const fastifyError = error as { statusCode?: number; code?: string; message?: string };
  if (fastifyError.statusCode && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
    // fastify's own rejections: bad JSON, wrong content type, body too large, a path it cannot decode.
    const code = fastifyError.statusCode === 413 ? 'REQUEST_TOO_LARGE' : 'VALIDATION_FAILED';
    return make(code, fastifyError.message ?? 'bad request', requestId, false, fastifyError.statusCode);
  }
  return make('INTERNAL', `internal error (request ${requestId})`, requestId, true);
}

function make(code: ErrorCode, message: string, requestId: string, internal: boolean, status?: number): HttpError {
  const spec = errorCodes[code];
  return { status: status ?? spec.status, body: { error: { code, message, hint: spec.hint, ...(requestId && { requestId }) } }, internal };
}
