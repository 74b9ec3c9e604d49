// The SDK tells roostd's answers from anything else on the API URL, with the global fetch (what
// SDK users get) as with nodeHttpFetch (what the CLI uses; cli-errors.test runs that end to end).
import assert from 'node:assert/strict';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Server } from 'node:net';
import { after, describe, it } from 'node:test';
import { NotRoostdError, Roost, RoostApiError } from './index.js';

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('answers that are not roostd', () => {
  const servers: Server[] = [];
  after(() => servers.forEach((server) => server.close()));
  const serve = async (handler: (req: IncomingMessage, res: ServerResponse) => void) => {
    const server = createHttpServer(handler);
    servers.push(server);
    return new Roost({ apiUrl: await listen(server), token: 'roost_x' });
  };

  it("roostd's own error stays a RoostApiError with its code and hint (positive control)", async () => {
    const roost = await serve((_req, res) =>
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'SANDBOX_NOT_FOUND', message: 'no sandbox "x"', hint: 'Run `roost list`.' } })),
    );
    await assert.rejects(roost.sandboxes.get('x'), (error: RoostApiError) => error instanceof RoostApiError && error.code === 'SANDBOX_NOT_FOUND' && error.hint === 'Run `roost list`.');
  });

  it('a web page, plain text, a stream of another type and a body that is not JSON are NotRoostdError', async () => {
    const page = await serve((_req, res) => res.writeHead(404, { 'content-type': 'text/html' }).end('<h1>Not Found</h1>'));
    await assert.rejects(page.whoami(), (error: NotRoostdError) => error instanceof NotRoostdError && error.answered === 'HTTP 404 text/html: "<h1>Not Found</h1>"');
    const text = await serve((_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end('ok'));
    await assert.rejects(text.whoami(), NotRoostdError);
    await assert.rejects(text.run({ script: 'true' }).wait(), (error: NotRoostdError) => error instanceof NotRoostdError && /HTTP 200 text\/plain: "ok"/.test(error.message));
    const broken = await serve((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"user":'));
    await assert.rejects(broken.whoami(), (error: NotRoostdError) => error instanceof NotRoostdError && /JSON that does not parse/.test(error.message));
  });

  it('bytes that are not HTTP are NotRoostdError; nothing listening stays DaemonUnreachableError', async () => {
    const garbage = createTcpServer((socket) => {
      socket.on('error', () => {});
      socket.end('SSH-2.0-OpenSSH_9.2\r\n\r\n');
    });
    servers.push(garbage);
    const roost = new Roost({ apiUrl: await listen(garbage), token: 'roost_x' });
    await assert.rejects(roost.whoami(), (error: NotRoostdError) => error instanceof NotRoostdError && /not HTTP: HPE_/.test(error.answered));
    const closed = createTcpServer();
    const url = await listen(closed);
    await new Promise((resolve) => closed.close(resolve));
    await assert.rejects(new Roost({ apiUrl: url }).health(), (error: Error) => error.name === 'DaemonUnreachableError');
  });
});
