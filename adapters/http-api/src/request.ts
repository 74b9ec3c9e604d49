// Reading a request's parts: its token and its validated params, query and body.
import { z } from 'zod';
import { RoostError } from '@roost/core';

/** The token of an `Authorization: Bearer <token>` header. */
export function bearerToken(header: string | undefined): string | undefined {
  return header?.startsWith('Bearer ') ? header.slice('Bearer '.length).trim() : undefined;
}

/** The value as the schema reads it, or VALIDATION_FAILED naming each problem. */
export function parse<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const result = schema.safeParse(value ?? {});
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => `${issue.path.join('.') || 'body'}: ${issue.message}`);
  throw new RoostError('VALIDATION_FAILED', `invalid request: ${problems.join('; ')}`);
}
