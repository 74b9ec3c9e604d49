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
});
