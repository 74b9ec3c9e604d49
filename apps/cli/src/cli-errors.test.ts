// What the CLI says when something is wrong before or instead of roostd answering: usage errors
// (exit 2, before any request), URLs, and servers on the API URL that are not roostd (exit 1, one
// line saying so). Against small servers made here; the real daemon's paths are in cli.e2e.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createSandboxRequestSchema, maxTimeoutSec } from '@roost/contract';
import { runCli } from '@roost/testkit';
import { cliLimits, shellQuote } from './arguments.js';
import { runOutcome } from './output.js';
import { helpCommands } from './golden.js';
import { normalizedApiUrl } from './credentials.js';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

async function listen(server: Server | ReturnType<typeof createTcpServer>): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('roost CLI: usage errors, URLs and servers that are not roostd', () => {
  const requests: string[] = [];
  let handler: Handler = (_req, res) => res.end();
  const recorder = createHttpServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    handler(req, res);
  });
  let address: string;
  const servers: { close(): unknown }[] = [recorder];
  before(async () => {
    address = await listen(recorder);
  });
  after(() => {
    for (const server of servers) server.close();
  });
  const roost = (args: string[], env: Record<string, string | undefined> = {}) =>
    runCli(args, { env: { ROOST_API_URL: `http://${address}`, ROOST_API_TOKEN: 'roost_test', ...env } });

  it('--version and -V print the version and nothing else', async () => {
    const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const result = await roost([flag]);
      assert.deepEqual({ exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr }, { exitCode: 0, stdout: `${version}\n`, stderr: '' });
    }
  });

  it("roost version adds the daemon's version, without a token", async () => {
    const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    handler = (req, res) =>
      req.url === '/healthz' && !req.headers.authorization
        ? res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'ok', version: '9.9.9', runtime: 'crun 1.8.1' }))
        : res.writeHead(401).end();
    const result = await roost(['version'], { ROOST_API_TOKEN: undefined });
    assert.equal(result.exitCode, 0, result.stderr);
    assert.equal(result.stdout, `roost  ${version}\nroostd 9.9.9 at http://${address} (crun 1.8.1)\n`);
    const json = await roost(['version', '--json']);
    assert.deepEqual(JSON.parse(json.stdout), { cli: version, daemon: { apiUrl: `http://${address}`, version: '9.9.9', runtime: 'crun 1.8.1' } });
  });

  const usageErrors: [string[], RegExp][] = [
    [['run', 'echo', 'hello', 'world'], /^roost: run takes the script as one argument: quote it, as in roost run 'echo hello world'\n$/],
    [['run', '--memory', '1.5', 'true'], /--memory expects a whole number of MB from 16 to 1048576, got "1\.5"/],
    [['new', 'box', '--memory', '512MB'], /--memory expects a whole number/],
    [['run', '--pids', '4.2', 'true'], /--pids expects a whole number from 8 to/],
    [['run', '--open-files', '1e5', 'true'], /--open-files expects a whole number from 64 to/],
    [['run', '--cpus', 'two', 'true'], /--cpus expects a number above 0 and at most 256, got "two"/],
    [['run', '--cpus', '0', 'true'], /--cpus expects a number above 0/],
    [['new', 'Bad_Name'], /^roost: "Bad_Name" is not a sandbox name: use 1-63 lowercase letters, digits and "-"/],
    [['run', '--name', '-dash', 'true'], /"-dash" is not a sandbox name \(--name\)/],
    [['status', 'Bad_Name'], /"Bad_Name" is not a sandbox name .* or id \(sb_…\)/],
    [['exec', 'UPPER', 'true'], /"UPPER" is not a sandbox name/],
    [['rm', 'fine', 'not fine'], /"not fine" is not a sandbox name/],
    [['ssh', 'a_b+alice'], /"a_b" is not a sandbox name/],
    [['nosuchcommand'], /unknown command 'nosuchcommand'/],
    [['exec'], /missing required argument 'sandbox'/],
    [['run', '--no-such-option', 'true'], /unknown option '--no-such-option'/],
    [['ssh-key'], /Usage: roost ssh-key/],
    [['quota', 'set'], /missing required argument 'user'/],
    [['ssh-key', 'rm'], /missing required argument 'key'/],
    [['quota', 'set', 'bob', '--bogus'], /unknown option '--bogus'/],
    [['run', '--timeout', '99999999', 'true'], /--timeout expects a number above 0 and at most 2147483/],
    [[], /Usage: roost/],
  ];
  for (const [args, message] of usageErrors) {
    it(`roost ${args.join(' ')}: exit 2, in the CLI's own words, before any request`, async () => {
      requests.length = 0;
      const result = await roost(args);
      assert.equal(result.exitCode, 2, result.stderr);
      assert.match(result.stderr, message);
      assert.equal(result.stdout, '');
      assert.deepEqual(requests, [], 'nothing was sent');
    });
  }

  it('every command of the tree exits 2 on an unknown option, before any request', async () => {
    const commands = helpCommands().filter(Boolean);
    assert.ok(commands.length >= 20, `found ${commands.length} commands`);
    requests.length = 0;
    const wrong: string[] = [];
    for (const command of commands) {
      const result = await roost([...command.split(' '), '--no-such-option']);
      if (result.exitCode !== 2 || !/unknown option '--no-such-option'/.test(result.stderr)) wrong.push(`${command}: exit ${result.exitCode} ${result.stderr}`);
    }
    assert.deepEqual(wrong, []);
    assert.deepEqual(requests, []);
  });

  it("the CLI's limits are the API's (a value the CLI takes, the daemon takes)", () => {
    const shape = createSandboxRequestSchema.shape;
    const bounds = (schema: { unwrap(): { minValue: number | null; maxValue: number | null } }) => {
      const number = schema.unwrap();
      return { min: number.minValue, max: number.maxValue };
    };
    assert.deepEqual(bounds(shape.memoryMb), cliLimits.memoryMb);
    assert.deepEqual(bounds(shape.pids), cliLimits.pids);
    assert.deepEqual(bounds(shape.openFiles), cliLimits.openFiles);
    assert.equal(bounds(shape.cpus).max, cliLimits.cpus.max);
    assert.ok(shape.memoryMb.unwrap().isInt && shape.pids.unwrap().isInt && shape.openFiles.unwrap().isInt);
    assert.equal(cliLimits.timeoutSec.max, maxTimeoutSec);
  });

  it('a URL without a scheme is http://; another scheme or no URL is a usage error naming the right form', async () => {
    assert.equal(normalizedApiUrl('127.0.0.1:7070', 'x'), 'http://127.0.0.1:7070');
    assert.equal(normalizedApiUrl('localhost:7070/', 'x'), 'http://localhost:7070');
    assert.equal(normalizedApiUrl(' https://roost.example.com ', 'x'), 'https://roost.example.com');
    assert.equal(normalizedApiUrl('http://[::1]:7070', 'x'), 'http://[::1]:7070');
    for (const bad of ['ftp://host', 'http://a b', 'http://user:pw@host', '']) assert.throws(() => normalizedApiUrl(bad, 'x'), /give http:\/\/HOST:PORT/);

    handler = (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify([]));
    requests.length = 0;
    const bare = await roost(['ls', '--json'], { ROOST_API_URL: address });
    assert.equal(bare.exitCode, 0, bare.stderr);
    assert.deepEqual(requests, ['GET /api/v1/sandboxes']);

    const ftp = await roost(['ls'], { ROOST_API_URL: 'ftp://127.0.0.1:7070' });
    assert.equal(ftp.exitCode, 2);
    assert.equal(ftp.stderr, 'roost: ROOST_API_URL "ftp://127.0.0.1:7070" is not a daemon URL: give http://HOST:PORT (e.g. http://127.0.0.1:7070)\n');

    handler = (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ user: { id: 'u1', name: 'admin', isAdmin: true } }));
    const login = await roost(['login', '--url', address, '--token', 'roost_test', '--json'], { ROOST_API_URL: undefined });
    assert.equal(login.exitCode, 0, login.stderr);
    assert.equal((JSON.parse(login.stdout) as { apiUrl: string }).apiUrl, `http://${address}`, 'login saved the URL with its scheme');
  });

  const strangers: [string, Handler | 'garbage', RegExp][] = [
    ['an HTML 404', (_req, res) => res.writeHead(404, { 'content-type': 'text/html' }).end('<!DOCTYPE html><html><body>Not Found</body></html>'), /it answered HTTP 404 text\/html: "<!DOCTYPE html><html><body>Not Found/],
    ['a 200 in plain text', (_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end('hello'), /it answered HTTP 200 text\/plain: "hello"/],
    ['JSON that is not an error of roostd', (_req, res) => res.writeHead(500, { 'content-type': 'application/json' }).end('{"message":"oops"}'), /it answered HTTP 500 application\/json: "\{\\"message\\":\\"oops\\"\}"/],
    ['an endless error page', (_req, res) => {
      res.writeHead(502, { 'content-type': 'text/html' });
      const chunk = 'x'.repeat(64 * 1024);
      const pump = () => {
        while (res.write(chunk));
        res.once('drain', pump);
      };
      pump();
      res.on('error', () => {});
    }, /it answered HTTP 502 text\/html: "xxxx/],
    ['a TCP server that does not speak HTTP', 'garbage', /it answered something that is not HTTP: HPE_/],
  ];
  for (const [what, answer, said] of strangers) {
    it(`calls ${what} on the API URL "not roostd", in one line, exit 1`, async () => {
      let url = `http://${address}`;
      if (answer === 'garbage') {
        const garbage = createTcpServer((socket) => {
          socket.on('error', () => {});
          socket.end('SSH-2.0-OpenSSH_9.2\r\nnonsense\r\n\r\n');
        });
        servers.push(garbage);
        url = `http://${await listen(garbage)}`;
      } else {
        handler = answer;
      }
      for (const args of [['ls'], ['run', 'true'], ['login', '--token', 'roost_test']]) {
        const result = await roost(args, { ROOST_API_URL: url });
        assert.equal(result.exitCode, 1, `${args.join(' ')}: ${result.stderr}`);
        assert.doesNotMatch(result.stderr, /INTERNAL|bug/);
        assert.match(result.stderr, new RegExp(`^roost: the server at ${url.replaceAll('.', '\\.')} is not roostd \\(`));
        assert.match(result.stderr, said);
        assert.equal(result.stderr.trimEnd().split('\n').length, 1, 'one line');
        assert.equal(result.stdout, '');
      }
    });
  }

  it("run's last words: the sandbox's name when the run failed or is kept, nothing after a success", () => {
    const sandbox = { name: 'brave-otter', id: 'sb_1' } as Parameters<typeof runOutcome>[1];
    assert.equal(runOutcome({ exitCode: 0 }, sandbox, false), '');
    assert.equal(
      runOutcome({ exitCode: 3 }, sandbox, false),
      'roost: the script exited with code 3 in sandbox brave-otter: `roost logs brave-otter` shows its output, `roost status brave-otter` how it ended\n',
    );
    assert.match(runOutcome({ exitCode: 124, reason: 'timed out after 5 s' }, sandbox, false), /^roost: timed out after 5 s in sandbox brave-otter: `roost logs brave-otter`/);
    assert.equal(runOutcome({ exitCode: 0 }, sandbox, true), 'sandbox brave-otter (sb_1) kept: roost exec brave-otter <command>, roost rm brave-otter\n');
    assert.equal(runOutcome({ exitCode: 1, reason: 'the script could not be started' }, undefined, false), 'roost: the script could not be started\n');
    assert.equal(shellQuote("it's"), `'it'\\''s'`);
  });
});
