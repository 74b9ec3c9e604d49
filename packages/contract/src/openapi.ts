// Generates the OpenAPI 3.1 document from the route table and its zod schemas.
import { z } from 'zod';
import { errorCodes } from './errors.js';
import { routes, type RouteSpec } from './routes.js';
import { errorBodySchema } from './schemas.js';
import { streamMediaType } from './stream.js';

type JsonObject = Record<string, unknown>;

export function buildOpenApiDocument(version: string): JsonObject {
  const components: Record<string, unknown> = {};
  const schemaOf = (schema: z.ZodType): unknown => {
    // zod puts a named schema nested in another (Sandbox in RunResult) under the outer one's
    // $defs and refers to it as #/$defs/Name, which resolves against the document's root in
    // OpenAPI: every named schema becomes a component and every ref points there.
    const generated = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' }) as JsonObject;
    const { $schema: _, $defs, ...json } = JSON.parse(JSON.stringify(generated).replaceAll('"#/$defs/', '"#/components/schemas/')) as JsonObject;
    Object.assign(components, $defs as JsonObject | undefined);
    const id = z.globalRegistry.get(schema)?.id;
    if (typeof id !== 'string') return json;
    delete json.id;
    if (json.$ref === `#/components/schemas/${id}`) return json;
    components[id] = json;
    return { $ref: `#/components/schemas/${id}` };
  };
  const errorRef = schemaOf(errorBodySchema);

  const paths: Record<string, Record<string, unknown>> = {};
  for (const [operationId, route] of Object.entries(routes) as [string, RouteSpec][]) {
    const parameters = [
      ...objectParameters(route.params, 'path'),
      ...objectParameters(route.query, 'query'),
    ];
    const responses: Record<string, unknown> = {
      [route.success.status]: {
        description: route.success.stream
          ? `${streamMediaType} unless the Accept header prefers application/json (no Accept, or */*, gets the stream)`
          : 'Success',
        ...((route.success.schema || route.success.stream || route.success.rawMediaType) && {
          content: {
            ...(route.success.stream && {
              [streamMediaType]: {
                schema: { type: 'string', format: 'binary' },
                description: 'Frames: 1-byte kind (1 stdout, 2 stderr, 3 exit JSON, 4 error JSON, 5 sandbox JSON), 4-byte big-endian length, payload',
              },
            }),
            ...(route.success.schema && { 'application/json': { schema: schemaOf(route.success.schema) } }),
            ...(route.success.rawMediaType && { [route.success.rawMediaType]: { schema: { type: 'string', format: 'binary' } } }),
          },
        }),
      },
      default: {
        description: `Error; codes: ${Object.keys(errorCodes).join(', ')}`,
        content: { 'application/json': { schema: errorRef } },
      },
    };
    paths[route.path] ??= {};
    paths[route.path][route.method.toLowerCase()] = {
      operationId,
      summary: route.summary,
      ...(!route.public && { security: [{ bearer: [] }] }),
      ...(parameters.length > 0 && { parameters }),
      ...(route.body && {
        requestBody: { required: true, content: { 'application/json': { schema: schemaOf(route.body) } } },
      }),
      ...(route.rawBody && {
        requestBody: {
          required: true,
          description: route.rawBody.description,
          content: { [route.rawBody.mediaType]: { schema: { type: 'string', format: 'binary' } } },
        },
      }),
      responses,
      ...(route.webSocket?.firstMessage && { 'x-websocket-first-message': schemaOf(route.webSocket.firstMessage) }),
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Roost API', version },
    paths,
    components: {
      schemas: components,
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
    },
  };
}

function objectParameters(schema: z.ZodObject | undefined, where: 'path' | 'query'): unknown[] {
  if (!schema) return [];
  return Object.entries(schema.shape).map(([name, field]) => {
    const json = z.toJSONSchema(field as z.ZodType, { io: 'input' }) as JsonObject;
    delete json.$schema;
    return {
      name,
      in: where,
      required: where === 'path' || !(field as z.ZodType).safeParse(undefined).success,
      ...(typeof json.description === 'string' && { description: json.description }),
      schema: json,
    };
  });
}
