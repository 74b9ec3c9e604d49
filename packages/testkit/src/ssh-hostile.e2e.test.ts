// The SSH gateway against clients that do not play by the rules: connections that never log
// in, floods of them, key probes, and logged-in clients that misbehave mid-session. After each,
// roostd is still up and a well-behaved client still gets in.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Duplex } from 'node:stream';
import ssh2 from 'ssh2';
import type { Client as SshClient, ClientChannel } from 'ssh2';
import { Roost } from '@roost/sdk';
import { runProcess } from './process.js';
import { startDaemon, type TestDaemon } from './start-daemon.js';

const loginTimeoutMs = 1500;
const limits = {
  loginTimeoutMs,
  maxUnauthenticatedPerSource: 4,
  maxUnauthenticated: 6,
  maxAuthTries: 3,
  maxChannelsPerConnection: 24,
  maxRemoteForwards: 4,
  maxEnvPerSession: 8,
};

/** Resolves when `predicate` holds, checking every 50 ms; fails after `timeoutMs`. */
async function waitFor(what: string, predicate: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A raw TCP connection to the gateway from `localAddress`, recording what it receives and when it closes. */
function rawConnection(port: number, localAddress = '127.0.0.1') {
  const socket = connect({ host: '127.0.0.1', port, localAddress });
  const state = { received: '', closed: false, closedAt: 0 };
  socket.on('data', (chunk: Buffer) => (state.received += chunk.toString('latin1')));
  socket.on('error', () => {});
  socket.on('close', () => {
    state.closed = true;
    state.closedAt = Date.now();
  });
  return { socket, state };
}

describe('SSH gateway against hostile clients', () => {
  let daemon: TestDaemon;
  const dir = mkdtempSync(join(tmpdir(), 'roost-ssh-hostile-'));
  const key = join(dir, 'id_ed25519');
  const bobKey = join(dir, 'bob_ed25519');
  const knownHosts = join(dir, 'known_hosts');
  const sockets: Socket[] = [];

  const ssh = (target: string, args: string[], opts: { identity?: string; options?: string[] } = {}) =>
    runProcess('ssh', [
      '-F', '/dev/null', '-i', opts.identity ?? key, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes',
      '-o', `UserKnownHostsFile=${knownHosts}`, '-p', String(daemon.sshPort), ...(opts.options ?? []), `${target}@127.0.0.1`, ...args,
    ]);

  /** A logged-in ssh2 client (the library the gateway itself uses, as a client). */
  const client = (username = 'hostile') =>
    new Promise<SshClient>((resolve, reject) => {
      const conn = new ssh2.Client();
      conn.once('ready', () => resolve(conn));
      conn.once('error', reject);
      conn.connect({ host: '127.0.0.1', port: daemon.sshPort, username, privateKey: readFileSync(key), hostVerifier: () => true });
    });

  const healthy = async () => {
    const health = await fetch(`${daemon.url}/healthz`);
    assert.equal(health.status, 200);
    const result = await ssh('hostile', ['echo still-in']);
    assert.equal(result.stdout, 'still-in\n', result.stderr);
  };

  const roostRelays = async () => (await ssh('hostile', ['pgrep -c roost-relay || true'])).stdout.trim();

  before(async () => {
    daemon = await startDaemon({ driver: 'oci', config: { ssh: limits } });
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', bobKey]);
    const hostKey = readFileSync(join(daemon.dataDir, 'ssh', 'ssh_host_ed25519_key.pub'), 'utf8').split(' ').slice(0, 2).join(' ');
    writeFileSync(knownHosts, `[127.0.0.1]:${daemon.sshPort} ${hostKey}\n`);
    await daemon.sdk.sshKeys.add(readFileSync(`${key}.pub`, 'utf8'));
    await daemon.sdk.sandboxes.create({ name: 'hostile' });
  });
  after(async () => {
    for (const socket of sockets) socket.destroy();
    await daemon?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('cuts connections that do not log in within the deadline, silent or stalled after the version line; a logged-in one stays', async () => {
    const started = Date.now();
    const silent = rawConnection(daemon.sshPort);
    const stalled = rawConnection(daemon.sshPort);
    sockets.push(silent.socket, stalled.socket);
    stalled.socket.write('SSH-2.0-Stalled_1.0\r\n');
    // Positive control: a session that logs in and outlives the deadline is not cut.
    const longSession = ssh('hostile', [`sleep ${(2 * loginTimeoutMs) / 1000}; echo outlived`]);
    await waitFor('both idle connections to be cut', () => silent.state.closed && stalled.state.closed, 4 * loginTimeoutMs);
    for (const { state } of [silent, stalled]) {
      assert.ok(state.closedAt - started >= loginTimeoutMs - 100, `cut after ${state.closedAt - started} ms, before the deadline`);
    }
    assert.match(stalled.state.received, /^SSH-2\.0-Roost/, 'the gateway spoke SSH to it before the deadline');
    assert.equal((await longSession).stdout, 'outlived\n');
    assert.match(await readFile(daemon.logFile, 'utf8'), /no login within the deadline/);
  });

  it('caps connections not logged in per source and in all: past a cap a new one is closed at once, with one log line', async () => {
    const open = (localAddress: string) => {
      const conn = rawConnection(daemon.sshPort, localAddress);
      sockets.push(conn.socket);
      return conn;
    };
    const banner = (conn: ReturnType<typeof rawConnection>) => waitFor('the version line', () => conn.state.received.startsWith('SSH-2.0-Roost'));
    const fromFirst = Array.from({ length: limits.maxUnauthenticatedPerSource }, () => open('127.0.0.2'));
    await Promise.all(fromFirst.map(banner));
    const overSource = Array.from({ length: 3 }, () => open('127.0.0.2'));
    await waitFor('connections past the per-source cap to be closed', () => overSource.every((c) => c.state.closed), 3000);
    assert.ok(overSource.every((c) => c.state.received === ''), 'refused before any SSH byte');
    // Another source still gets in, up to the total cap.
    const fromSecond = Array.from({ length: limits.maxUnauthenticated - limits.maxUnauthenticatedPerSource }, () => open('127.0.0.3'));
    await Promise.all(fromSecond.map(banner));
    const overTotal = open('127.0.0.4');
    await waitFor('a connection past the total cap to be closed', () => overTotal.state.closed, 3000);
    assert.equal(overTotal.state.received, '');
    const log = await readFile(daemon.logFile, 'utf8');
    assert.equal(log.match(/too many connections not logged in yet/g)?.length, 1, 'four refusals, one log line');
    // Once they go, a client gets in again.
    for (const conn of [...fromFirst, ...fromSecond]) conn.socket.destroy();
    await waitFor('a login to work again', async () => (await ssh('hostile', ['echo in'])).stdout === 'in\n');
  });

  it('answers "would this key do?" the same for any key and any sandbox; only the signed attempt decides', async () => {
    const bob = new Roost({ apiUrl: daemon.url, token: await daemon.createUserToken('hostile-bob') });
    await bob.sshKeys.add(readFileSync(`${bobKey}.pub`, 'utf8'));
    await bob.sandboxes.create({ name: 'bobs-secret-box' });
    try {
      // OpenSSH given only a public key offers it (the query without a signature), logs whether
      // the server accepts it, and then cannot sign: the probe an outsider with a public key has.
      const publicOnly = join(dir, 'probe');
      const probe = async (target: string, publicKey: string) => {
        copyFileSync(publicKey, `${publicOnly}.pub`);
        rmSync(publicOnly, { force: true });
        const result = await runProcess('ssh', ['-v', '-F', '/dev/null', '-i', `${publicOnly}.pub`, '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none', '-o', 'BatchMode=yes',
          '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'StrictHostKeyChecking=yes', '-p', String(daemon.sshPort), `${target}@127.0.0.1`, 'true']);
        assert.match(result.stderr, /Offering public key/, 'the probe was made');
        return { accepted: /Server accepts key/.test(result.stderr), exitCode: result.exitCode };
      };
      const unregistered = join(dir, 'stranger');
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', unregistered]);
      const answers = {
        ownSandbox: await probe('hostile', `${key}.pub`),
        unknownSandbox: await probe('no-such-sandbox', `${key}.pub`),
        othersSandbox: await probe('bobs-secret-box', `${key}.pub`),
        othersKeyOwnSandbox: await probe('bobs-secret-box', `${bobKey}.pub`),
        unregisteredKey: await probe('hostile', `${unregistered}.pub`),
      };
      for (const [kind, answer] of Object.entries(answers)) assert.deepEqual(answer, { accepted: true, exitCode: 255 }, kind);
      // The signed attempts decide: own key and sandbox get in, the rest do not.
      assert.equal((await ssh('hostile', ['echo mine'])).stdout, 'mine\n');
      for (const [target, identity] of [['no-such-sandbox', key], ['bobs-secret-box', key], ['hostile', unregistered]] as const) {
        const refused = await ssh(target, ['true'], { identity });
        assert.equal(refused.exitCode, 255);
        assert.match(refused.stderr, /Permission denied \(publickey\)/);
      }
    } finally {
      await bob.sandboxes.remove('bobs-secret-box');
    }
  });

  it('closes a connection after too many refused attempts on it', async () => {
    const stranger = join(dir, 'stranger');
    const outcome = await new Promise<{ end: string; tries: number }>((resolve) => {
      const conn = new ssh2.Client();
      let tries = 0;
      conn.on('error', () => {});
      conn.on('close', () => resolve({ end: 'closed', tries }));
      conn.on('ready', () => resolve({ end: 'logged in', tries }));
      conn.connect({
        host: '127.0.0.1', port: daemon.sshPort, username: 'hostile', hostVerifier: () => true,
        // Offers the same unregistered key again and again, as a guessing client would.
        authHandler: (_methods, _partial, next) => {
          tries++;
          if (tries > 20) return next(false as never);
          next({ type: 'publickey', username: 'hostile', key: readFileSync(stranger) } as never);
        },
      });
    });
    // The client may have sent one more attempt before the server's close reached it.
    assert.equal(outcome.end, 'closed');
    assert.ok(outcome.tries >= limits.maxAuthTries && outcome.tries <= limits.maxAuthTries + 1, `closed after ${outcome.tries} attempts`);
    await healthy();
  });

  it('refuses channels past the per-connection limit and keeps serving the ones it opened', async () => {
    const conn = await client();
    try {
      const opened = await Promise.allSettled(
        Array.from({ length: 300 }, () => new Promise<ClientChannel>((resolve, reject) => conn.exec('sleep 5', (error, channel) => (error ? reject(error) : resolve(channel))))),
      );
      const ok = opened.filter((r) => r.status === 'fulfilled').length;
      assert.equal(ok, limits.maxChannelsPerConnection, `${ok} channels opened`);
      for (const result of opened) if (result.status === 'fulfilled') result.value.close();
      // The places come back when channels close.
      await waitFor('a channel to open again', () =>
        new Promise<boolean>((resolve) => conn.exec('echo again', (error, channel) => {
          if (error) return resolve(false);
          let out = '';
          channel.on('data', (chunk: Buffer) => (out += chunk.toString()));
          channel.on('close', () => resolve(out === 'again\n'));
        })));
    } finally {
      conn.end();
    }
    await healthy();
  });

  it('keeps at most the limit of env variables and -R listeners per connection', async () => {
    const conn = await client();
    try {
      const env = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`LC_X${String.fromCharCode(65 + (i % 26))}${String.fromCharCode(65 + Math.floor(i / 26))}`, 'v']));
      const out = await new Promise<string>((resolve, reject) =>
        conn.exec('env | grep -c ^LC_X', { env }, (error, channel) => {
          if (error) return reject(error);
          let text = '';
          channel.on('data', (chunk: Buffer) => (text += chunk.toString()));
          channel.on('close', () => resolve(text.trim()));
        }));
      assert.equal(out, String(limits.maxEnvPerSession));
      const forwards = await Promise.allSettled(
        Array.from({ length: 10 }, () => new Promise<number>((resolve, reject) => conn.forwardIn('127.0.0.1', 0, (error, port) => (error ? reject(error) : resolve(port))))),
      );
      assert.equal(forwards.filter((r) => r.status === 'fulfilled').length, limits.maxRemoteForwards);
    } finally {
      conn.end();
    }
    await waitFor('the listeners of the ended connection to go', async () => (await roostRelays()) === '0');
    await healthy();
  });

  it('survives a session whose agent set-up fails while no process is ever asked for, and leaves nothing of sessions that close during it', async () => {
    await daemon.sdk.sandboxes.update('hostile', { sshAgentForwarding: true });
    try {
      // paramiko sends the agent request alone; as a user the image lacks, its set-up fails
      // with no exec waiting on it (once an unhandled rejection that ended roostd).
      const result = await runProcess('/usr/bin/python3', ['-c', [
        'import paramiko, time',
        'client = paramiko.SSHClient()',
        'client.set_missing_host_key_policy(paramiko.AutoAddPolicy())',
        `client.connect("127.0.0.1", port=${daemon.sshPort}, username="hostile+nosuchuser", key_filename="${key}", look_for_keys=False, allow_agent=False)`,
        'chan = client.get_transport().open_session()',
        'print("agent request accepted:", chan.request_forward_agent(lambda c: None), flush=True)',
        'time.sleep(1)',
        'client.close()',
      ].join('\n')]);
      assert.match(result.stdout, /agent request accepted: True/, result.stderr);
      await healthy();
      // Sessions that ask for the agent and close at once, before its socket is set up: the
      // socket's relay, made after the session ended, must not stay behind in the sandbox.
      const hasty = await runProcess('/usr/bin/python3', ['-c', [
        'import paramiko',
        'client = paramiko.SSHClient()',
        'client.set_missing_host_key_policy(paramiko.AutoAddPolicy())',
        `client.connect("127.0.0.1", port=${daemon.sshPort}, username="hostile", key_filename="${key}", look_for_keys=False, allow_agent=False)`,
        'for _ in range(5):',
        '    chan = client.get_transport().open_session(); chan.request_forward_agent(lambda c: None); chan.close()',
        'print("done", flush=True)',
        'chan = client.get_transport().open_session(); chan.exec_command("sleep 2"); chan.recv_exit_status()',
        'client.close()',
      ].join('\n')]);
      assert.equal(hasty.stdout, 'done\n', hasty.stderr);
      await waitFor('no agent relay left', async () => (await roostRelays()) === '0');
      assert.equal((await ssh('hostile', ['ls -d /tmp/roost-agent-* 2>/dev/null | wc -l'])).stdout, '0\n');
    } finally {
      await daemon.sdk.sandboxes.update('hostile', { sshAgentForwarding: false });
    }
  });

  it('survives garbage after the handshake, and resets in the middle of a forward, a remote forward and a stream of output', async () => {
    // Garbage where encrypted packets belong.
    const garbage = await client();
    const garbageClosed = new Promise<void>((resolve) => garbage.once('close', () => resolve()));
    garbage.on('error', () => {});
    ((garbage as unknown as { _sock: Duplex })._sock).write(randomBytes(64 * 1024));
    await garbageClosed;

    // A server inside the sandbox that streams without end.
    const server = await client();
    const serverChannel = await new Promise<ClientChannel>((resolve, reject) =>
      server.exec('python3 -c "import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\'127.0.0.1\', 7777)); s.listen()\nwhile True:\n    c,_=s.accept()\n    try:\n        while True: c.sendall(b\'x\' * 65536)\n    except Exception: c.close()"', (e, ch) => (e ? reject(e) : resolve(ch))));
    serverChannel.on('data', () => {});
    try {
      const resetDuring = async (what: string, act: (conn: SshClient) => Promise<void>) => {
        const conn = await client();
        conn.on('error', () => {});
        await act(conn);
        ((conn as unknown as { _sock: Socket })._sock).resetAndDestroy();
        await healthy();
        return what;
      };
      // -L: bytes are flowing from inside when the client resets.
      await resetDuring('forward', async (conn) => {
        let received = 0;
        await waitFor('the forward to carry data', () =>
          new Promise<boolean>((resolve) => conn.forwardOut('127.0.0.1', 0, '127.0.0.1', 7777, (error, channel) => {
            if (error) return resolve(false);
            channel.on('data', (chunk: Buffer) => (received += chunk.length));
            setTimeout(() => resolve(received > 0), 200);
          })));
      });
      // -R: a process inside sends into the forward while the client resets.
      await resetDuring('remote forward', async (conn) => {
        const port = await new Promise<number>((resolve, reject) => conn.forwardIn('127.0.0.1', 0, (error, p) => (error ? reject(error) : resolve(p))));
        const arrived = new Promise<void>((resolve) => conn.on('tcp connection', (_info, accept) => {
          const channel = accept();
          channel.once('data', () => resolve());
        }));
        conn.exec(`yes | head -c 100000000 > /dev/tcp/127.0.0.1/${port}`, () => {});
        await arrived;
      });
      // Output streaming when the client resets.
      await resetDuring('output', async (conn) => {
        await new Promise<void>((resolve, reject) => conn.exec('yes', (error, channel) => {
          if (error) return reject(error);
          channel.once('data', () => resolve());
        }));
      });
      // Nothing is left running for the reset connections: their relays are gone.
      await waitFor('the relays of the reset connections to end', async () => (await roostRelays()) === '0');
      assert.equal((await ssh('hostile', ['pgrep -c "^yes" || true'])).stdout.trim(), '0');
    } finally {
      server.end();
    }
    await healthy();
  });
});

describe('SSH forwarding runs as the session\'s unix user', () => {
  let daemon: TestDaemon;
  const dir = mkdtempSync(join(tmpdir(), 'roost-ssh-user-'));
  const key = join(dir, 'id_ed25519');
  const options = () => ['-F', '/dev/null', '-i', key, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-p', String(daemon.sshPort)];
  const rootOnly = '/run/roost-root-only.sock';
  let rootServer: ReturnType<typeof spawn> | undefined;

  before(async () => {
    daemon = await startDaemon({ driver: 'oci' });
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    await daemon.sdk.sshKeys.add(readFileSync(`${key}.pub`, 'utf8'));
    await daemon.sdk.sandboxes.create({ name: 'userbox' });
    // A unix socket only root may open (root's, 0600), served by root inside the sandbox.
    rootServer = spawn('ssh', [...options(), 'userbox+root@127.0.0.1',
      `exec python3 -c 'import os, socket\ns = socket.socket(socket.AF_UNIX); s.bind("${rootOnly}"); os.chmod("${rootOnly}", 0o600); s.listen()\nwhile True:\n    c, _ = s.accept(); c.sendall(b"root-only\\n"); c.close()'`], { stdio: 'ignore' });
    await waitFor('the root-only socket', async () => (await runProcess('ssh', [...options(), 'userbox@127.0.0.1', `test -S ${rootOnly} && echo up`])).stdout === 'up\n');
  });
  after(async () => {
    rootServer?.kill('SIGTERM');
    await daemon?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('-R on a port below 1024: works as root, refused as an unprivileged user of the image', async () => {
    const web = createServer((socket) => socket.end('HTTP/1.0 200 OK\r\n\r\nfrom-the-client\n'));
    await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
    const webPort = (web.address() as AddressInfo).port;
    try {
      const remote = (user: string) =>
        runProcess('ssh', [...options(), '-o', 'ExitOnForwardFailure=yes', '-R', `80:127.0.0.1:${webPort}`, `userbox+${user}@127.0.0.1`, 'curl -s --max-time 5 http://127.0.0.1:80/']);
      const asRoot = await remote('root');
      assert.equal(asRoot.stdout, 'from-the-client\n', asRoot.stderr);
      const asNobody = await remote('nobody');
      assert.equal(asNobody.exitCode, 255);
      assert.match(asNobody.stderr, /remote port forwarding failed for listen port 80/);
      // The same user may listen above 1024: the refusal was the port, not the user.
      const high = await runProcess('ssh', [...options(), '-o', 'ExitOnForwardFailure=yes', '-R', `8080:127.0.0.1:${webPort}`, 'userbox+nobody@127.0.0.1', 'curl -s --max-time 5 http://127.0.0.1:8080/']);
      assert.equal(high.stdout, 'from-the-client\n', high.stderr);
    } finally {
      web.close();
    }
  });

  it("-L to root's 0600 unix socket: works as root, refused as an unprivileged user of the image", async () => {
    const through = async (user: string) => {
      const localPort = await new Promise<number>((resolve) => {
        const probe = createServer().listen(0, '127.0.0.1', () => {
          const { port } = probe.address() as AddressInfo;
          probe.close(() => resolve(port));
        });
      });
      const tunnel = spawn('ssh', [...options(), '-N', '-o', 'ExitOnForwardFailure=yes', '-L', `${localPort}:${rootOnly}`, `userbox+${user}@127.0.0.1`], { stdio: 'ignore' });
      try {
        let answer: string | undefined;
        await waitFor('the tunnel to answer or close', async () => {
          answer = await new Promise<string | undefined>((resolve) => {
            let text = '';
            const socket = connect(localPort, '127.0.0.1');
            socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
            // Refused by the local port (tunnel not up yet): try again.
            socket.on('error', () => resolve(undefined));
            socket.on('close', () => resolve(text));
          });
          return answer !== undefined;
        });
        return answer;
      } finally {
        tunnel.kill('SIGTERM');
      }
    };
    assert.equal(await through('root'), 'root-only\n');
    assert.equal(await through('nobody'), '', 'the channel was refused: nothing came back');
  });
});
