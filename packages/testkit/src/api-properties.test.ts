// Property tests over the route table: whatever params, query, body and content type a client
// sends to any route, the answer is the route's success or a 4xx with the API's error body,
// never a 5xx, and a refused request leaves the store exactly as it was.
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { z } from 'zod';
import { errorCodes, isErrorCode, routes, type RouteSpec } from '@roost/contract';
import { startDaemon, type TestDaemon } from './start-daemon.js';

/** Runs per route: ~20 routes × 150, a few ms each, keep the file around 10 s; ROOST_PROPERTY_RUNS hunts longer. */
const runsPerRoute = Number(process.env.ROOST_PROPERTY_RUNS ?? 150);
const existingName = 'prop-box';

describe('every route, any input: a 4xx with an error code or the success, never a 5xx, never a partial write', () => {
  let daemon: TestDaemon;
  let db: Database.Database;

  before(async () => {
    // With workspaces (fakes), so their routes answer as they do on a real host.
    daemon = await startDaemon({ driver: 'fake', workspaces: 'fake' });
    db = new Database(join(daemon.dataDir, 'roost.db'), { readonly: true, fileMustExist: true });
    await daemon.sdk.sandboxes.create({ name: existingName });
  });

  after(async () => {
    db?.close();
    await daemon?.close();
  });

  /**
   * Every row of every table, but the migrations' bookkeeping and a token's last use (every
   * authenticated request records it: that is the token being used, not the request's effect).
   */
  const snapshot = (): string => {
    const tables = db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'kysely_%' ORDER BY name")
      .all() as { name: string }[];
    return JSON.stringify(
      tables.map(({ name }) => {
        const columns = (db.prepare(`PRAGMA table_info("${name}")`).all() as { name: string }[])
          .map((column) => column.name)
          .filter((column) => !(name === 'tokens' && column === 'last_used_at'));
        return [name, db.prepare(`SELECT ${columns.map((c) => `"${c}"`).join(', ')} FROM "${name}" ORDER BY rowid`).all()];
      }),
    );
  };

  /** After a request that succeeded: back to one running sandbox named prop-box, nothing else. */
  const restore = async () => {
    for (const sandbox of await daemon.sdk.sandboxes.list({ all: true })) {
      if (sandbox.name !== existingName || sandbox.status !== 'running') await daemon.sdk.sandboxes.remove(sandbox.id);
    }
    if (!(await daemon.sdk.sandboxes.list()).some((sandbox) => sandbox.name === existingName)) {
      await daemon.sdk.sandboxes.create({ name: existingName });
    }
    for (const workspace of await daemon.sdk.workspaces.list()) {
      if (workspace.name !== existingName) await daemon.sdk.workspaces.remove(workspace.id);
    }
  };

  for (const [name, route] of Object.entries(routes as Record<string, RouteSpec>)) {
    it(`${name}: ${route.method} ${route.path}`, async () => {
      let refusals = 0;
      await fc.assert(
        fc.asyncProperty(inputFor(route), async (input) => {
          // A valid exec or run would run the generated command on this host (the fake runtime).
          if (name === 'exec' || name === 'run') fc.pre(!route.body!.safeParse(input.json).success);
          const before = snapshot();
          const answer = await send(daemon.url, route.method, input.path, {
            authorization: `Bearer ${daemon.adminToken}`,
            ...(input.contentType && { 'content-type': input.contentType }),
            ...(input.accept !== undefined && { accept: input.accept }),
          }, input.body);
          const label = `${route.method} ${input.path} ${input.contentType ?? ''} ${input.body.subarray(0, 200).toString()}`;
          assert.ok(answer.status < 500, `${label}: ${answer.status} ${answer.text.slice(0, 300)}`);
          if (answer.status === route.success.status) {
            await restore();
            return;
          }
          refusals++;
          assert.ok(answer.status >= 400, `${label}: ${answer.status}`);
          assert.match(answer.contentType, /^application\/json/, label);
          const body = JSON.parse(answer.text) as { error?: { code?: string; message?: string } };
          assert.ok(body.error?.code && isErrorCode(body.error.code), `${label}: error code in ${answer.text.slice(0, 300)}`);
          assert.ok(body.error.message, 'a message');
          // A code keeps its status; only fastify's own rejections (415, 414…) pass theirs through.
          if (!['VALIDATION_FAILED', 'REQUEST_TOO_LARGE'].includes(body.error.code)) {
            assert.equal(answer.status, errorCodes[body.error.code].status, `${label}: ${body.error.code}`);
          }
          assert.equal(snapshot(), before, `${label}: a refused request changed the store`);
        }),
        { numRuns: runsPerRoute, seed: seedOf(name), includeErrorInReport: true },
      );
      if (route.params || route.query || route.body) assert.ok(refusals > 0, 'some inputs were refused (the property was exercised)');
    });
  }

  it('logged no internal error for any of it', async () => {
    const { readFile } = await import('node:fs/promises');
    const lines = (await readFile(daemon.logFile, 'utf8')).split('\n').filter(Boolean).map((line) => JSON.parse(line) as { level: number; msg: string });
    assert.deepEqual(lines.filter((line) => line.level >= 50).map((line) => line.msg), []);
  });
});

interface Input {
  path: string;
  contentType?: string;
  body: Buffer;
  /** The body as JSON, when it is JSON (for the exec/run precondition). */
  json?: unknown;
  /** exec, run and logs answer JSON or the stream by it. */
  accept?: string;
}

/** A path segment: any text percent-encoded, or raw escapes that may not decode, or the existing sandbox. */
const segmentArb = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 80 }).map(encodeURIComponent),
  fc.stringMatching(/^(%[0-9A-Fa-f]{0,2}|[a-zA-Z0-9._~!$&'()*+,;=:@-]){0,40}$/),
  fc.constant(existingName),
  fc.constant('x'.repeat(150)),
);

const queryArb = fc.oneof(
  fc.constant(''),
  fc.dictionary(fc.string({ maxLength: 10 }), fc.string({ maxLength: 20 })).map((entries) => `?${new URLSearchParams(entries)}`),
  fc.constantFrom('?all=true', '?all=maybe', '?follow=true', '?follow=', '?%zz=1', '?all=%E0%A4%A', '?all=true&all=false', '?__proto__[x]=1'),
);

function inputFor(route: RouteSpec): fc.Arbitrary<Input> {
  const params = route.path.match(/\{\w+\}/g) ?? [];
  const pathArb = fc.tuple(...params.map(() => segmentArb)).map((values) => {
    let index = 0;
    return route.path.replace(/\{\w+\}/g, () => values[index++]!);
  });
  const jsonArb = fc.oneof({ weight: 2, arbitrary: shapedObjectArb(route.body) }, { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) });
  const bodyArb: fc.Arbitrary<{ contentType?: string; body: Buffer; json?: unknown }> = fc.oneof(
    { weight: 4, arbitrary: jsonArb.map((json) => ({ contentType: 'application/json', body: Buffer.from(JSON.stringify(json) ?? 'null'), json })) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((bytes) => ({ contentType: 'application/json', body: Buffer.from(bytes) })) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.constantFrom(undefined, 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json; charset=utf-16', '*/*'), fc.string({ maxLength: 100 }))
        .map(([contentType, text]) => ({ contentType, body: Buffer.from(text) })),
    },
  );
  const acceptArb = fc.option(
    fc.oneof(
      fc.constantFrom('application/json', '*/*', 'application/json;q=0, */*', 'application/vnd.roost.stream;q=0.1, application/json', 'text/html', ';q=2', ',,,', 'application/json;q=abc'),
      fc.stringMatching(/^[\t\x20-\x7e]{0,60}$/),
    ),
    { nil: undefined },
  );
  return fc
    .tuple(pathArb, route.query ? queryArb : fc.oneof(fc.constant(''), queryArb), bodyArb, acceptArb)
    .map(([path, query, body, accept]) => ({ path: `${path}${query}`, ...body, accept }));
}

/** Objects with the schema's own keys (so validation is reached past "unknown field"), each with any JSON value, or a near miss. */
function shapedObjectArb(schema: z.ZodType | undefined): fc.Arbitrary<unknown> {
  const shape = schema instanceof z.ZodObject ? (schema.shape as Record<string, unknown>) : {};
  const keys = Object.keys(shape);
  if (keys.length === 0) return fc.jsonValue({ maxDepth: 2 });
  const valueArb = fc.oneof(
    fc.jsonValue({ maxDepth: 2 }),
    fc.constantFrom(-1, 0, 1e308, -1e308, 2 ** 53, 0.5, '', ' ', 'a'.repeat(10_000), '../../etc/passwd', 'Not Valid', '\u0000', [], {}, [''], null, true),
  );
  return fc.dictionary(fc.constantFrom(...keys), valueArb, { maxKeys: keys.length });
}

function seedOf(name: string): number {
  const fixed = process.env.ROOST_PROPERTY_SEED;
  if (fixed) return Number(fixed);
  return [...name].reduce((hash, char) => (hash * 31 + char.charCodeAt(0)) | 0, Date.now() | 0);
}

function send(base: string, method: string, path: string, headers: Record<string, string>, body: Buffer): Promise<{ status: number; contentType: string; text: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL(base);
    const request = httpRequest(
      { host: url.hostname, port: url.port, method, path, headers: { ...headers, 'content-length': String(body.length) }, agent: false },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, contentType: response.headers['content-type'] ?? '', text: Buffer.concat(chunks).toString('utf8') }));
        response.on('error', reject);
      },
    );
    request.on('error', reject);
    request.end(body);
  });
}
