import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { errorCodes } from './errors.js';
import { buildOpenApiDocument } from './openapi.js';
import { routes, type RouteSpec } from './routes.js';

describe('OpenAPI document', () => {
  const document = buildOpenApiDocument('1.2.3') as {
    openapi: string;
    info: { version: string };
    paths: Record<string, Record<string, { operationId: string; security?: unknown[]; responses: Record<string, unknown> }>>;
    components: { schemas: Record<string, unknown> };
  };

  it('has one operation per route, with bearer auth on every route the table does not mark public', () => {
    assert.equal(document.openapi, '3.1.0');
    assert.equal(document.info.version, '1.2.3');
    for (const [name, route] of Object.entries(routes)) {
      const operation = document.paths[route.path]?.[route.method.toLowerCase()];
      assert.ok(operation, `${name} is documented`);
      assert.equal(operation.operationId, name);
      const isPublic = (route as RouteSpec).public === true;
      assert.equal(Boolean(operation.security), !isPublic, `${name} auth`);
    }
    const publicRoutes = Object.values(routes as Record<string, RouteSpec>).filter((route) => route.public).map((route) => route.path);
    assert.deepEqual(publicRoutes.sort(), ['/api/openapi.json', '/healthz']);
  });

  it('names the shared schemas and every error code', () => {
    for (const id of ['Sandbox', 'CreateSandboxRequest', 'RunRequest', 'ExecRequest', 'Error']) {
      assert.ok(document.components.schemas[id], `${id} schema`);
    }
    const errorText = JSON.stringify(document.paths['/api/v1/sandboxes'].post.responses.default);
    for (const code of Object.keys(errorCodes)) assert.ok(errorText.includes(code), code);
  });

  it('resolves every $ref to a component of its own', () => {
    const refs = [...JSON.stringify(document).matchAll(/"\$ref":"([^"]+)"/g)].map((match) => match[1]);
    assert.ok(refs.length > 0);
    for (const ref of new Set(refs)) {
      assert.match(ref, /^#\/components\/schemas\/\w+$/, ref);
      assert.ok(document.components.schemas[ref.split('/').pop()!], `${ref} exists`);
    }
    for (const [id, schema] of Object.entries(document.components.schemas)) {
      assert.ok(!('$defs' in (schema as object)) && !('id' in (schema as object)), `${id} is a plain schema`);
    }
  });

  it('documents both answers of exec, run and logs: the framed stream and the JSON document', () => {
    type Content = Record<string, { schema: { $ref?: string } }>;
    const contentOf = (path: string, method: string) =>
      (document.paths[path][method].responses['200'] as { content: Content }).content;
    for (const [path, method, id] of [
      ['/api/v1/sandboxes/{ref}/exec', 'post', 'ExecResult'],
      ['/api/v1/sandboxes/{ref}/logs', 'get', 'ExecResult'],
      ['/api/v1/runs', 'post', 'RunResult'],
    ] as const) {
      const content = contentOf(path, method);
      assert.deepEqual(Object.keys(content).sort(), ['application/json', 'application/vnd.roost.stream'], path);
      assert.equal(content['application/json'].schema.$ref, `#/components/schemas/${id}`, path);
    }
    const runResult = document.components.schemas.RunResult as { properties: Record<string, { $ref?: string }>; required: string[] };
    assert.equal(runResult.properties.sandbox.$ref, '#/components/schemas/Sandbox');
    for (const field of ['exitCode', 'stdout', 'stderr', 'stdoutEncoding', 'stderrEncoding', 'truncated', 'sandbox']) {
      assert.ok(runResult.required.includes(field), field);
    }
  });
});
