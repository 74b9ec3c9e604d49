// The SSH gateway with the real OpenSSH client: keys, exec, stdin, exit status, refusals.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { connect, createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Roost } from '@roost/sdk';
import { FailureLimiter, loadOrCreateHostKeys, parseSshUsername, parseTunnelUsername } from '@roost/ssh-gateway';
import { cliPath, runCli } from './cli.js';
import { runProcess } from './process.js';
import { startDaemon, type TestDaemon } from './start-daemon.js';
import { freePort } from './wait.js';



describe('SSH gateway with OpenSSH', () => {
  let daemon: TestDaemon;
  const dir = mkdtempSync(join(tmpdir(), 'roost-ssh-'));
  const key = join(dir, 'id_ed25519');
  const otherKey = join(dir, 'other_ed25519');
  const knownHosts = join(dir, 'known_hosts');

  /** The options every client here uses: this key only, the pinned host key, no prompts. */
  const clientOptions = (identity = key) => ['-F', '/dev/null', '-i', identity, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'LogLevel=ERROR'];

  /** Runs the system ssh against the gateway, strict about the host key. */
  const ssh = (target: string, args: string[], opts: { input?: string; identity?: string; options?: string[]; env?: NodeJS.ProcessEnv } = {}) =>
    runProcess(
      'ssh',
      [...clientOptions(opts.identity), '-p', String(daemon.sshPort), ...(opts.options ?? []), `${target}@127.0.0.1`, ...args],
      { input: opts.input, env: opts.env },
    );

  /** Runs a script with Debian's python3 (python3-paramiko lives there, not in a pyenv one earlier in PATH). */
  const python = (script: string) => runProcess('/usr/bin/python3', ['-c', script]);
  const paramikoConnect = (user = 'sshbox') => [
    'import paramiko, time',
    'client = paramiko.SSHClient()',
    `client.load_host_keys("${knownHosts}")`,
    'client.set_missing_host_key_policy(paramiko.RejectPolicy())',
    `client.connect("127.0.0.1", port=${daemon.sshPort}, username="${user}", key_filename="${key}", look_for_keys=False, allow_agent=False)`,
  ];

  before(async () => {
    daemon = await startDaemon({ driver: 'oci' });
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', otherKey]);
    const hostKey = readFileSync(join(daemon.dataDir, 'ssh', 'ssh_host_ed25519_key.pub'), 'utf8').split(' ').slice(0, 2).join(' ');
    writeFileSync(knownHosts, `[127.0.0.1]:${daemon.sshPort} ${hostKey}\n`);
    await daemon.sdk.sshKeys.add(readFileSync(`${key}.pub`, 'utf8'));
    await daemon.sdk.sandboxes.create({ name: 'sshbox' });
  });
  after(async () => {
    await daemon?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs a command: output, stderr and exit code come back; the host key is the pinned one', async () => {
    const result = await ssh('sshbox', ['echo "hi from $(hostname) as $(id -un)"; echo oops >&2; exit 3']);
    assert.equal(result.stdout, 'hi from sshbox as root\n');
    assert.equal(result.stderr, 'oops\n');
    assert.equal(result.exitCode, 3);
  });

  it('takes the client\'s locale (SendEnv LANG, LC_*) and nothing else it sends', async () => {
    const result = await ssh('sshbox', ['echo "$LANG|$LC_TIME|${SECRET_TOKEN:-unset}"'], {
      options: ['-o', 'SendEnv=LANG LC_TIME SECRET_TOKEN'],
      env: { ...process.env, LANG: 'C.UTF-8', LC_TIME: 'en_GB.UTF-8', SECRET_TOKEN: 'from-the-client' },
    });
    assert.equal(result.stdout, 'C.UTF-8|en_GB.UTF-8|unset\n', result.stderr);
  });

  it('pipes stdin through, binary-safe, to EOF', async () => {
    const input = Array.from({ length: 2000 }, (_, i) => `line ${i}`).join('\n');
    const result = await ssh('sshbox', ['sha256sum; echo done'], { input });
    const expected = execFileSync('sha256sum', { input }).toString();
    assert.equal(result.stdout, `${expected}done\n`);
    assert.equal(result.exitCode, 0);
  });

  it('passes a process killed by a signal back as an exit signal', async () => {
    const result = await ssh('sshbox', ['kill -TERM $$']);
    // OpenSSH exits 255 when the remote command died of a signal.
    assert.equal(result.exitCode, 255);
  });

  it('roost ssh runs the system ssh with the pinned host key; roost ssh-key lists the key', async () => {
    const home = mkdtempSync(join(tmpdir(), 'roost-ssh-home-'));
    const env = { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken, HOME: home };
    try {
      const result = await runCli(['ssh', '-i', key, 'sshbox', '--', 'echo', 'via roost ssh; hostname'], { env });
      assert.equal(result.stdout, 'via roost ssh\nsshbox\n', result.stderr);
      assert.equal(result.exitCode, 0);
      assert.equal((await runCli(['ssh', '-i', key, 'sshbox', '--', 'exit 7'], { env })).exitCode, 7);
      assert.match(readFileSync(join(home, '.roost', 'known_hosts'), 'utf8'), new RegExp(`^\\[127\\.0\\.0\\.1\\]:${daemon.sshPort} ssh-ed25519 `, 'm'));
      const missing = await runCli(['ssh', 'no-such-box'], { env });
      assert.equal(missing.exitCode, 1);
      assert.match(missing.stderr, /SANDBOX_NOT_FOUND/);
      const keys = await runCli(['ssh-key', 'list'], { env });
      assert.match(keys.stdout, /ssh-ed25519\s+SHA256:/);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  describe('set up the way users do: a key in its own file, no agent, ~/.ssh/config', () => {
    const home = join(dir, 'home');
    const workKey = join(home, '.ssh', 'work');
    const userConfig = join(home, '.ssh', 'config');
    /** A user's environment: this HOME, no agent, logged in to the test daemon. */
    const userEnv = () => {
      const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken };
      delete env.SSH_AUTH_SOCK;
      return env;
    };
    const cli = (args: string[]) => runCli(args, { env: { HOME: home, ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken } });
    const theirs = 'Include ~/.ssh/config.d/*\n\nHost example.org\n\tUser bob   \n# the user\'s own, no final newline';

    before(() => {
      execFileSync('mkdir', ['-p', '-m', '0700', join(home, '.ssh')]);
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'work@laptop', '-f', workKey]);
      writeFileSync(userConfig, theirs, { mode: 0o640 });
    });

    it('ssh-key add twice: the second says the key is already registered, exit 0, and one key is listed', async () => {
      const fingerprint = execFileSync('ssh-keygen', ['-l', '-f', `${workKey}.pub`], { encoding: 'utf8' }).split(' ')[1]!;
      const first = await cli(['ssh-key', 'add', `${workKey}.pub`]);
      assert.equal(first.exitCode, 0, first.stderr);
      assert.match(first.stdout, /^Added ssh-ed25519 key SHA256:\S+ \(work@laptop\)/);
      const second = await cli(['ssh-key', 'add', `${workKey}.pub`]);
      assert.equal(second.exitCode, 0, second.stderr);
      assert.equal(second.stdout, `Already registered as work@laptop (${fingerprint}); nothing changed.\n`);
      const json = JSON.parse((await cli(['ssh-key', 'add', `${workKey}.pub`, '--json'])).stdout) as Record<string, unknown>;
      assert.equal(json.alreadyRegistered, true);
      assert.equal(json.fingerprint, fingerprint);
      assert.equal(json.identityFile, workKey);
      const listed = JSON.parse((await cli(['ssh-key', 'list', '--json'])).stdout) as { fingerprint: string }[];
      assert.equal(listed.filter((k) => k.fingerprint === fingerprint).length, 1);
      const config = JSON.parse(readFileSync(join(home, '.roost', 'config.json'), 'utf8')) as { sshIdentityFiles: Record<string, string> };
      assert.deepEqual(config.sshIdentityFiles, { [daemon.url]: workKey });
    });

    it('roost ssh logs in with that key (not a default name, no agent), and says so when the file is gone', async () => {
      const result = await runProcess(process.execPath, [cliPath, 'ssh', 'sshbox', '--', 'echo "with the work key"'], { env: userEnv() });
      assert.equal(result.stdout, 'with the work key\n', result.stderr);
      assert.equal(result.exitCode, 0);
      const moved = `${workKey}.moved`;
      execFileSync('mv', [workKey, moved]);
      try {
        const gone = await runProcess(process.execPath, [cliPath, 'ssh', 'sshbox', '--', 'true'], { env: userEnv() });
        assert.match(gone.stderr, new RegExp(`^roost: ${workKey}, the key \`roost ssh-key add\` read, is gone: going on with ssh's own keys`, 'm'));
        assert.equal(gone.stderr.split('\n').filter((line) => line.startsWith('roost:')).length, 1);
        assert.notEqual(gone.exitCode, 0, 'no key of the user\'s was offered');
      } finally {
        execFileSync('mv', [moved, workKey]);
      }
    });

    it('ssh-config --write twice: one block, first in the file, the rest of it untouched and its mode kept', async () => {
      for (let run = 0; run < 2; run++) {
        const written = await cli(['ssh-config', '--write']);
        assert.equal(written.exitCode, 0, written.stderr);
        assert.match(written.stdout, run === 0 ? /^Wrote the block of roost ssh-config \(Host roost-\*\) in .*Try: ssh roost-sshbox/ : /^Already up to date/);
      }
      const text = readFileSync(userConfig, 'utf8');
      assert.equal(text.split('# --- BEGIN roost ssh-config').length, 2, 'one block');
      assert.ok(text.endsWith(`---\n\n${theirs}`), text);
      assert.equal(statSync(userConfig).mode & 0o777, 0o640);
      // What ssh itself makes of it: the pattern covers a name no sandbox has yet.
      const parsed = execFileSync('ssh', ['-F', userConfig, '-G', 'roost-anything'], { env: userEnv(), encoding: 'utf8' });
      assert.match(parsed, new RegExp(`^proxycommand ${process.execPath} ${cliPath} proxy --host-prefix roost- %n$`, 'm'));
      assert.match(parsed, new RegExp(`^hostkeyalias \\[127\\.0\\.0\\.1\\]:${daemon.sshPort}$`, 'm'));
      assert.match(parsed, new RegExp(`^identityfile ${workKey}$`, 'm'));
      assert.match(parsed, /^stricthostkeychecking true$/m);
      // And for other hosts the user's own lines still count.
      assert.match(execFileSync('ssh', ['-F', userConfig, '-G', 'example.org'], { env: userEnv(), encoding: 'utf8' }), /^user bob$/m);
    });

    it('ssh roost-<name> reaches a sandbox made after the config was written: strict host key, no prompt', async () => {
      const later = await daemon.sdk.sandboxes.create({ name: 'made-later' });
      try {
        const result = await runProcess('ssh', ['-F', userConfig, '-o', 'BatchMode=yes', 'roost-made-later', 'echo "in $(hostname) as $(id -un)"'], { env: userEnv(), input: '' });
        assert.equal(result.stdout, 'in made-later as root\n', result.stderr);
        assert.equal(result.exitCode, 0);
        assert.doesNotMatch(result.stderr, /authenticity|Warning: Permanently added|IDENTIFICATION HAS CHANGED/);
        // +user in the user name picks the user inside, as on the gateway's port.
        const asNobody = await runProcess('ssh', ['-F', userConfig, '-o', 'BatchMode=yes', 'whoever+nobody@roost-made-later', 'id -un'], { env: userEnv() });
        assert.equal(asNobody.stdout, 'nobody\n', asNobody.stderr);
        // Stopped: the pattern still covers it, and the proxy says why there is no session.
        await later.stop();
        const stopped = await runProcess('ssh', ['-F', userConfig, '-o', 'BatchMode=yes', 'roost-made-later', 'true'], { env: userEnv(), input: '' });
        assert.equal(stopped.exitCode, 255);
        assert.match(stopped.stderr, /^roost: sandbox made-later is stopped.*\(SANDBOX_NOT_RUNNING\)$/m);
      } finally {
        await later.remove();
      }
    });

    it('a tunnel opened for your sandbox lets in no other user\'s key, whatever the user name says', async () => {
      const bobKey = join(dir, 'bob_tunnel');
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', bobKey]);
      const bobToken = await daemon.createUserToken('tunnel-bob');
      const bob = new Roost({ apiUrl: daemon.url, token: bobToken });
      await bob.sshKeys.add(readFileSync(`${bobKey}.pub`, 'utf8'));
      await bob.sandboxes.create({ name: 'bobs-box' });
      // The block with bob's key, and that key only (-i); the admin's token opens the tunnel.
      const bobConfig = join(dir, 'bob-config');
      writeFileSync(bobConfig, (await cli(['ssh-config', '-i', bobKey])).stdout);
      for (const user of ['sshbox', 'bobs-box', 'whoever']) {
        const result = await runProcess('ssh', ['-F', bobConfig, '-o', 'BatchMode=yes', `${user}@roost-sshbox`, 'hostname'], { env: userEnv() });
        assert.equal(result.exitCode, 255, `${user}: ${result.stdout}`);
        assert.match(result.stderr, /Permission denied \(publickey\)/, user);
      }
      // Positive control: the same config opens bob's own sandbox through his own tunnel.
      const own = await runProcess('ssh', ['-F', bobConfig, '-o', 'BatchMode=yes', 'roost-bobs-box', 'hostname'], { env: { ...userEnv(), ROOST_API_TOKEN: bobToken } });
      assert.equal(own.stdout, 'bobs-box\n', own.stderr);
    });

    it('ssh-config --print and --json: the same block, and every option in JSON', async () => {
      const printed = await cli(['ssh-config', '--print']);
      const plain = await cli(['ssh-config']);
      const json = JSON.parse((await cli(['ssh-config', '--json'])).stdout) as Record<string, unknown>;
      assert.equal(printed.stdout, plain.stdout);
      assert.equal(printed.stdout, json.block);
      assert.match(printed.stdout, /^# --- BEGIN roost ssh-config \(http:\/\/127\.0\.0\.1:\d+\) ---\n(#.*\n)*Host roost-\*\n( {2}\w+ .+\n)+#.*\nHost \*\n# --- END roost ssh-config ---\n$/);
      assert.deepEqual(Object.keys(json).sort(), ['block', 'file', 'host', 'knownHosts', 'knownHostsFile', 'options', 'sandboxes', 'written']);
      assert.equal(json.host, 'roost-*');
      assert.equal(json.file, userConfig);
      assert.equal(json.written, false);
      assert.deepEqual(Object.keys(json.options as object), ['ProxyCommand', 'HostKeyAlias', 'UserKnownHostsFile', 'StrictHostKeyChecking', 'IdentityFile']);
      assert.deepEqual((json.sandboxes as { host: string }[]).map((sandbox) => sandbox.host), ['roost-sshbox']);
      assert.match((json.knownHosts as string[])[0]!, new RegExp(`^\\[127\\.0\\.0\\.1\\]:${daemon.sshPort} ssh-ed25519 `));
      // -i: that key only.
      const explicit = JSON.parse((await cli(['ssh-config', '--json', '-i', key])).stdout) as { options: Record<string, string> };
      assert.equal(explicit.options.IdentityFile, key);
      assert.equal(explicit.options.IdentitiesOnly, 'yes');
    });

    it('roost proxy --help shows a command that works as written', async () => {
      const help = (await cli(['proxy', '--help'])).stdout;
      const example = help.split('\n').find((line) => line.trim().startsWith('ssh -o ProxyCommand='))!.trim();
      // `roost` on PATH, the test daemon's port for the default's, this suite's sandbox; the key
      // is named on the command line only because this user's key is not a default one.
      const bin = join(dir, 'bin');
      execFileSync('mkdir', ['-p', bin]);
      writeFileSync(join(bin, 'roost'), `#!/bin/sh\nexec ${process.execPath} ${cliPath} "$@"\n`, { mode: 0o755 });
      const command = example
        .replace(':2222', `:${daemon.sshPort}`)
        .replace(/ dev$/, ' sshbox hostname')
        .replace(/^ssh /, `ssh -F /dev/null -o BatchMode=yes -i ${workKey} `)
        // ssh's ~ is the passwd entry's home, which is not this test's HOME.
        .replace('~/.roost/', `${home}/.roost/`);
      const result = await runProcess('sh', ['-c', command], { env: { ...userEnv(), PATH: `${bin}:${process.env.PATH}` } });
      assert.equal(result.stdout, 'sshbox\n', `${command}\n${result.stderr}`);
    });
  });

  it('roost proxy carries SSH over the HTTP port as a ProxyCommand; refuses a sandbox that is not yours', async () => {
    const hostKey = readFileSync(join(daemon.dataDir, 'ssh', 'ssh_host_ed25519_key.pub'), 'utf8').split(' ').slice(0, 2).join(' ');
    writeFileSync(join(dir, 'known_hosts_proxy'), `roost-web ${hostKey}\n`);
    const viaProxy = (user: string) =>
      runProcess(
        'ssh',
        [
          '-F', '/dev/null', '-i', key, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes',
          '-o', `UserKnownHostsFile=${join(dir, 'known_hosts_proxy')}`, '-o', 'StrictHostKeyChecking=yes',
          '-o', `ProxyCommand=${process.execPath} ${cliPath} proxy %r`,
          `${user}@roost-web`, 'echo "over websocket from $(hostname)"',
        ],
        { env: { ...process.env, ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken } },
      );
    const ok = await viaProxy('sshbox');
    assert.equal(ok.stdout, 'over websocket from sshbox\n', ok.stderr);
    assert.equal(ok.exitCode, 0);
    const refused = await viaProxy('no-such-box');
    assert.equal(refused.exitCode, 255);
    assert.match(refused.stderr, /SANDBOX_NOT_FOUND/);
  });

  it('paramiko (an IDE-like client that is not OpenSSH) logs in, checks the host key and runs commands', async () => {
    const result = await python([
      ...paramikoConnect(),
      'stdin, stdout, stderr = client.exec_command("cat; echo; hostname; exit 4")',
      'stdin.write("from paramiko"); stdin.channel.shutdown_write()',
      'print(stdout.read().decode(), end="")',
      'print("status", stdout.channel.recv_exit_status())',
      'client.close()',
    ].join('\n'));
    assert.equal(result.stdout, 'from paramiko\nsshbox\nstatus 4\n', result.stderr);
  });

  it('answers keepalives, and serves 100 concurrent sessions each with its own output', async () => {
    const alive = await ssh('sshbox', ['sleep 3; echo still here'], { options: ['-o', 'ServerAliveInterval=1', '-o', 'ServerAliveCountMax=1'] });
    assert.equal(alive.stdout, 'still here\n', alive.stderr);
    assert.equal(alive.exitCode, 0);
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => ssh('sshbox', [`echo session-${i}`])));
    for (const [i, result] of results.entries()) {
      assert.equal(result.stdout, `session-${i}\n`, result.stderr);
      assert.equal(result.exitCode, 0);
    }
  });

  it('gives a shell a terminal: TERM, size, resize, Ctrl-C stops the foreground job and the shell goes on', async () => {
    const result = await python([
      ...paramikoConnect(),
      'chan = client.get_transport().open_session()',
      'chan.get_pty(term="xterm-256color", width=80, height=24)',
      'chan.invoke_shell()',
      'def until(marker, timeout=10):',
      '    out = b""; end = time.time() + timeout',
      '    while marker.encode() not in out and time.time() < end:',
      '        if chan.recv_ready(): out += chan.recv(65536)',
      '        else: time.sleep(0.02)',
      '    return out.decode(errors="replace")',
      // Markers are computed ($((1))), so the terminal's echo of the typed line never matches them.
      'chan.send("echo T=$TERM; tty; stty size; echo mark$((1))\\n"); print(until("mark1\\r\\n"), flush=True)',
      'chan.resize_pty(width=132, height=40); time.sleep(0.2)',
      'chan.send("stty size; echo mark$((2))\\n"); print(until("mark2\\r\\n"), flush=True)',
      'chan.send("sleep 100\\n"); time.sleep(0.5); chan.send("\\x03"); time.sleep(0.3)',
      'chan.send("echo after-$?-done; exit 5\\n"); print(until("-done\\r\\n"), flush=True)',
      'print("exit", chan.recv_exit_status())',
    ].join('\n'));
    assert.match(result.stdout, /T=xterm-256color/, result.stderr);
    assert.match(result.stdout, /\/dev\/pts\/\d+/);
    assert.match(result.stdout, /^24 80\r?$/m);
    assert.match(result.stdout, /^40 132\r?$/m);
    assert.match(result.stdout, /after-130/);
    assert.match(result.stdout, /exit 5/);
  });

  it('serves SFTP, scp (SFTP and legacy -O) and rsync, byte-exact', async () => {
    const payload = join(dir, 'payload.bin');
    execFileSync('dd', ['if=/dev/urandom', `of=${payload}`, 'bs=1M', 'count=8'], { stdio: 'ignore' });
    const sum = execFileSync('sha256sum', [payload]).toString().split(' ')[0];
    const opts = clientOptions();
    writeFileSync(join(dir, 'batch'), `put ${payload} /root/via-sftp.bin\nls -l /root/via-sftp.bin\nget /root/via-sftp.bin ${join(dir, 'back-sftp.bin')}\n`);
    const sftp = await runProcess('sftp', [...opts, '-P', String(daemon.sshPort), '-b', join(dir, 'batch'), 'sshbox@127.0.0.1']);
    assert.equal(sftp.exitCode, 0, sftp.stderr);
    const scp = await runProcess('scp', [...opts, '-P', String(daemon.sshPort), payload, 'sshbox@127.0.0.1:/root/via-scp.bin']);
    assert.equal(scp.exitCode, 0, scp.stderr);
    const legacy = await runProcess('scp', ['-O', ...opts, '-P', String(daemon.sshPort), payload, 'sshbox@127.0.0.1:/root/via-scp-O.bin']);
    assert.equal(legacy.exitCode, 0, legacy.stderr);
    const rsync = await runProcess('rsync', ['-a', '-e', `ssh ${opts.join(' ')} -p ${daemon.sshPort}`, payload, 'sshbox@127.0.0.1:/root/via-rsync.bin']);
    assert.equal(rsync.exitCode, 0, rsync.stderr);
    const sums = await ssh('sshbox', ['cd /root && sha256sum via-sftp.bin via-scp.bin via-scp-O.bin via-rsync.bin']);
    for (const name of ['via-sftp.bin', 'via-scp.bin', 'via-scp-O.bin', 'via-rsync.bin']) assert.match(sums.stdout, new RegExp(`^${sum}  ${name}$`, 'm'));
    assert.equal(execFileSync('sha256sum', [join(dir, 'back-sftp.bin')]).toString().split(' ')[0], sum);
  });

  it('forwards -W, -L, -D and -R inside the sandbox only', async () => {
    // A web server on the sandbox's own loopback.
    const server = spawn('ssh', [...clientOptions(), '-p', String(daemon.sshPort), 'sshbox@127.0.0.1', 'cd /tmp && echo inside-web > index.html && exec python3 -m http.server 8000 --bind 127.0.0.1'], { stdio: 'ignore' });
    try {
      let web = await ssh('sshbox', [], { options: ['-W', '127.0.0.1:8000'], input: 'GET /index.html HTTP/1.0\r\n\r\n' });
      for (let i = 0; i < 50 && !web.stdout.includes('inside-web'); i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        web = await ssh('sshbox', [], { options: ['-W', '127.0.0.1:8000'], input: 'GET /index.html HTTP/1.0\r\n\r\n' });
      }
      assert.match(web.stdout, /200 OK[\s\S]*inside-web/);
      const hostWeb = createServer((socket) => socket.end('HTTP/1.0 200 OK\r\n\r\nfrom-the-client-side\n'));
      await new Promise<void>((resolve) => hostWeb.listen(0, '127.0.0.1', resolve));
      const hostPort = (hostWeb.address() as AddressInfo).port;
      // The host's 127.0.0.1 has this port open; the sandbox's does not: refused.
      const refused = await ssh('sshbox', [], { options: ['-W', `127.0.0.1:${hostPort}`], input: 'GET / HTTP/1.0\r\n\r\n' });
      assert.notEqual(refused.exitCode, 0);
      assert.doesNotMatch(refused.stdout, /from-the-client-side/);
      const remote = await ssh('sshbox', ['curl -s --max-time 5 http://127.0.0.1:9000/'], { options: ['-R', `9000:127.0.0.1:${hostPort}`, '-o', 'ExitOnForwardFailure=yes'] });
      hostWeb.close();
      assert.equal(remote.stdout, 'from-the-client-side\n', remote.stderr);

      const localPort = await freePort();
      const socksPort = await freePort();
      const tunnel = spawn('ssh', [...clientOptions(), '-p', String(daemon.sshPort), '-o', 'ExitOnForwardFailure=yes', '-N', '-L', `${localPort}:127.0.0.1:8000`, '-D', String(socksPort), 'sshbox@127.0.0.1'], { stdio: 'ignore' });
      try {
        let viaL = '';
        for (let i = 0; i < 50 && !viaL.includes('inside-web'); i++) {
          await new Promise((resolve) => setTimeout(resolve, 100));
          viaL = await fetch(`http://127.0.0.1:${localPort}/index.html`).then((r) => r.text(), () => '');
        }
        assert.equal(viaL, 'inside-web\n');
        // Not execFileSync: the daemon answering through the tunnel runs in this very process.
        const viaD = await runProcess('curl', ['-s', '--max-time', '5', '--socks5-hostname', `127.0.0.1:${socksPort}`, 'http://localhost:8000/index.html']);
        assert.equal(viaD.stdout, 'inside-web\n');
      } finally {
        tunnel.kill('SIGTERM');
      }
    } finally {
      server.kill('SIGTERM');
    }
  });

  it('works the way VS Code Remote-SSH uses it: bash with a script on stdin, then -D to a port inside', async () => {
    // VS Code runs `ssh -T -D <port> host bash`, writes an install/start script to stdin, reads
    // the port its server listens on from the output, and talks to it through the SOCKS proxy.
    const socksPort = await freePort();
    const script = [
      'cd /tmp',
      'echo vscode-server-ok > vscode.txt',
      'python3 -u -m http.server 0 --bind 127.0.0.1 > server.log 2>&1 &',
      'echo $! > server.pid',
      'for i in $(seq 50); do grep -q "port" server.log && break; sleep 0.1; done',
      'echo "listeningOn==$(sed -n "s/.*port \\([0-9]*\\).*/\\1/p" server.log | head -1)=="',
      'cat > /dev/null',
    ].join('\n');
    const session = spawn('ssh', [...clientOptions(), '-p', String(daemon.sshPort), '-T', '-D', String(socksPort), 'sshbox@127.0.0.1', 'bash'], { stdio: ['pipe', 'pipe', 'pipe'] });
    try {
      session.stdin.write(`${script}\n`);
      let output = '';
      session.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      for (let i = 0; i < 100 && !/listeningOn==\d+==/.test(output); i++) await new Promise((resolve) => setTimeout(resolve, 100));
      const port = /listeningOn==(\d+)==/.exec(output)?.[1];
      assert.ok(port, `the script printed its port: ${output}`);
      const viaSocks = await runProcess('curl', ['-s', '--max-time', '5', '--socks5-hostname', `127.0.0.1:${socksPort}`, `http://127.0.0.1:${port}/vscode.txt`]);
      assert.equal(viaSocks.stdout, 'vscode-server-ok\n');
    } finally {
      session.stdin.end();
      session.kill('SIGTERM');
      await ssh('sshbox', ['kill "$(cat /tmp/server.pid)"']);
    }
  });

  it('forwards the agent only where the owner enabled it', async () => {
    const agentSocket = join(dir, 'agent.sock');
    const agent = spawn('ssh-agent', ['-D', '-a', agentSocket], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 50 && !existsSync(agentSocket); i++) await new Promise((resolve) => setTimeout(resolve, 50));
      execFileSync('ssh-add', [key], { env: { ...process.env, SSH_AUTH_SOCK: agentSocket }, stdio: 'ignore' });
      // Asks the agent behind $SSH_AUTH_SOCK how many keys it holds (SSH2_AGENTC_REQUEST_IDENTITIES).
      const countKeys = 'python3 -c \'import os, socket, struct\ns = socket.socket(socket.AF_UNIX); s.connect(os.environ["SSH_AUTH_SOCK"])\ns.sendall(struct.pack(">IB", 1, 11)); r = s.recv(65536)\nprint("keys", struct.unpack(">I", r[5:9])[0])\' 2>&1 || echo "no agent: ${SSH_AUTH_SOCK:-unset}"';
      const agentEnv = { ...process.env, SSH_AUTH_SOCK: agentSocket };
      const off = await ssh('sshbox', [countKeys], { options: ['-A'], env: agentEnv });
      assert.match(off.stdout, /no agent: unset/, off.stderr);
      await daemon.sdk.sandboxes.update('sshbox', { sshAgentForwarding: true });
      const on = await ssh('sshbox', [countKeys], { options: ['-A'], env: agentEnv });
      assert.equal(on.stdout, 'keys 1\n', on.stderr);
      await daemon.sdk.sandboxes.update('sshbox', { sshAgentForwarding: false });
      // The session's socket dir inside goes with the session.
      let left = '';
      for (let i = 0; i < 20 && left !== '0'; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        left = (await ssh('sshbox', ['ls -d /tmp/roost-agent-* 2>/dev/null | wc -l'])).stdout.trim();
      }
      assert.equal(left, '0');
    } finally {
      agent.kill('SIGTERM');
    }
  });

  it('forwards X11: DISPLAY and the cookie are set, and an X client reaches the client\'s display', async () => {
    // A stand-in X server on the client side: it records the connection set-up and answers.
    let received = Buffer.alloc(0);
    const xServer = createServer((socket) => {
      socket.on('data', (chunk: Buffer) => {
        received = Buffer.concat([received, chunk]);
        socket.end('X-SERVER-REPLY');
      });
    });
    let displayNumber = 50;
    for (; displayNumber < 90; displayNumber++) {
      const ok = await new Promise<boolean>((resolve) => {
        xServer.once('error', () => resolve(false));
        xServer.listen(6000 + displayNumber, '127.0.0.1', () => resolve(true));
      });
      if (ok) break;
    }
    try {
      // An X client inside: reads the cookie from $XAUTHORITY and sends a real X11 set-up.
      const xClient = [
        'import os, socket, struct',
        'display = os.environ["DISPLAY"]; print("DISPLAY", display)',
        'data = open(os.environ["XAUTHORITY"], "rb").read()',
        'def field(d, o): n = struct.unpack(">H", d[o:o+2])[0]; return d[o+2:o+2+n], o+2+n',
        'family = struct.unpack(">H", data[:2])[0]; addr, o = field(data, 2); num, o = field(data, o); name, o = field(data, o); cookie, o = field(data, o)',
        'print("entry", family, num.decode(), name.decode(), len(cookie))',
        'port = 6000 + int(display.split(":")[1].split(".")[0])',
        's = socket.create_connection(("127.0.0.1", port))',
        'pad = lambda b: b + b"\\0" * ((4 - len(b) % 4) % 4)',
        's.sendall(struct.pack("<cxHHHHxx", b"l", 11, 0, len(name), len(cookie)) + pad(name) + pad(cookie))',
        'print("reply", s.recv(100).decode())',
      ].join('\n');
      const result = await ssh('sshbox', [`python3 -c '${xClient}'`], {
        options: ['-X'],
        env: { ...process.env, DISPLAY: `127.0.0.1:${displayNumber}`, XAUTHORITY: join(dir, 'no-xauthority') },
      });
      assert.match(result.stdout, /^DISPLAY localhost:1\d\.0$/m, result.stderr);
      assert.match(result.stdout, /^entry 65535 1\d MIT-MAGIC-COOKIE-1 16$/m);
      assert.match(result.stdout, /^reply X-SERVER-REPLY$/m);
      assert.equal(received.subarray(0, 1).toString(), 'l', 'the X server got an X11 connection set-up');
    } finally {
      xServer.close();
    }
  });

  it('logs in as another user of the image with box+user or the sandbox\'s default user; an unknown user is told so', async () => {
    const nobody = await ssh('sshbox+nobody', ['id -un; echo "$HOME $USER"; pwd']);
    assert.equal(nobody.stdout, 'nobody\n/nonexistent nobody\n/\n', nobody.stderr);
    const missing = await ssh('sshbox+nosuchuser', ['true']);
    assert.equal(missing.exitCode, 1);
    assert.match(missing.stderr, /no user "nosuchuser"/);
    // The sandbox's default user answers plain `ssh box`.
    await daemon.sdk.sandboxes.update('sshbox', { defaultUser: 'nobody' });
    assert.equal((await ssh('sshbox', ['id -un'])).stdout, 'nobody\n');
    assert.equal((await ssh('sshbox+root', ['id -un'])).stdout, 'root\n');
    await daemon.sdk.sandboxes.update('sshbox', { defaultUser: 'root' });
  });

  it('refuses an unknown sandbox, a wrong key and another user\'s sandbox the same way', async () => {
    const bob = new Roost({ apiUrl: daemon.url, token: await daemon.createUserToken('ssh-bob') });
    await bob.sshKeys.add(readFileSync(`${otherKey}.pub`, 'utf8'));
    await bob.sandboxes.create({ name: 'bobs-box' });
    const attempts = [
      await ssh('no-such-box', ['true']),
      await ssh('sshbox', ['true'], { identity: otherKey }),
      await ssh('bobs-box', ['true']),
    ];
    for (const attempt of attempts) {
      assert.equal(attempt.exitCode, 255);
      assert.match(attempt.stderr, /Permission denied \(publickey\)/);
    }
    // The same time too: an unknown sandbox and a wrong key cost the same. Attempts alternate,
    // so load on the machine falls on both alike. The fastest of 6 is compared: OpenSSH's
    // client without a terminal leaves Nagle on, so any attempt may wait ~40 ms for a delayed
    // ACK, whichever case it is.
    const times = { unknownBox: [] as number[], wrongKey: [] as number[] };
    // (6 rounds: with the 3 refusals above that stays under the limit of 20 failures a minute.)
    for (let i = 0; i < 6; i++) {
      for (const [kind, target, identity] of [['unknownBox', 'no-such-box', undefined], ['wrongKey', 'sshbox', otherKey]] as const) {
        const started = performance.now();
        await ssh(target, ['true'], { identity });
        times[kind].push(performance.now() - started);
      }
    }
    const [unknownBox, wrongKey] = [Math.min(...times.unknownBox), Math.min(...times.wrongKey)];
    assert.ok(Math.abs(unknownBox - wrongKey) < 15, `unknown sandbox ${unknownBox.toFixed(0)} ms, wrong key ${wrongKey.toFixed(0)} ms`);
    const own = await ssh('bobs-box', ['hostname'], { identity: otherKey });
    assert.equal(own.stdout, 'bobs-box\n');
    await bob.sandboxes.remove('bobs-box');
  });
});

describe('SSH gateway keepalive', () => {
  it('drops a client that stops answering, and its processes get the hang-up', async () => {
    const daemon = await startDaemon({ driver: 'oci', config: { ssh: { keepaliveIntervalMs: 200, keepaliveCountMax: 3 } } });
    const dir = mkdtempSync(join(tmpdir(), 'roost-ssh-ka-'));
    // A TCP relay between client and gateway that can go silent, like a laptop whose network vanished.
    const relays = new Set<import('node:net').Socket>();
    const relay = createServer((client) => {
      const upstream = connect(daemon.sshPort, '127.0.0.1');
      client.pipe(upstream);
      upstream.pipe(client);
      relays.add(client).add(upstream);
    });
    try {
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'key')]);
      await daemon.sdk.sshKeys.add(readFileSync(join(dir, 'key.pub'), 'utf8'));
      const box = await daemon.sdk.sandboxes.create({ name: 'kabox' });
      await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
      const session = spawn('ssh', ['-F', '/dev/null', '-i', join(dir, 'key'), '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
        '-p', String((relay.address() as AddressInfo).port), 'kabox@127.0.0.1', 'sleep 60.25'], { stdio: 'ignore' });
      const sleepers = async () => {
        const handle = box.exec(['bash', '-c', 'pgrep -fc "^sleep 60.25" || true']);
        let out = '';
        for await (const chunk of handle.output()) out += Buffer.from(chunk.data).toString();
        return out.trim();
      };
      let count = '';
      for (let i = 0; i < 50 && count !== '1'; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        count = await sleepers();
      }
      assert.equal(count, '1', 'the remote command runs');
      for (const socket of relays) {
        socket.unpipe();
        socket.pause();
      }
      for (let i = 0; i < 50 && count !== '0'; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        count = await sleepers();
      }
      assert.equal(count, '0', 'the silent client was dropped and its process hung up');
      session.kill('SIGKILL');
    } finally {
      for (const socket of relays) socket.destroy();
      relay.close();
      await daemon.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('SSH gateway rate limit', () => {
  it('refuses a source after 20 failures in a minute, even with the right key', async () => {
    const daemon = await startDaemon({ driver: 'oci' });
    const dir = mkdtempSync(join(tmpdir(), 'roost-ssh-limit-'));
    try {
      for (const name of ['good', 'bad']) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, name)]);
      await daemon.sdk.sshKeys.add(readFileSync(join(dir, 'good.pub'), 'utf8'));
      await daemon.sdk.sandboxes.create({ name: 'limited' });
      const attempt = (identity: string) =>
        runProcess('ssh', ['-F', '/dev/null', '-i', join(dir, identity), '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-p', String(daemon.sshPort), 'limited@127.0.0.1', 'echo in']);
      assert.equal((await attempt('good')).stdout, 'in\n');
      for (let i = 0; i < 20; i++) assert.equal((await attempt('bad')).exitCode, 255);
      const blocked = await attempt('good');
      assert.equal(blocked.exitCode, 255);
      assert.match(blocked.stderr, /Permission denied/);
      assert.match(await readFile(daemon.logFile, 'utf8'), /too many failures from this address/);
    } finally {
      await daemon.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('SSH gateway parts', () => {
  it('keeps its host keys across restarts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'roost-hostkeys-'));
    const silent = { info() {}, warn() {}, error() {}, debug() {} };
    try {
      const first = await loadOrCreateHostKeys(dir, silent);
      const second = await loadOrCreateHostKeys(dir, silent);
      assert.deepEqual(second.map((k) => k.publicKey), first.map((k) => k.publicKey));
      assert.deepEqual(first.map((k) => k.type), ['ssh-ed25519', 'ssh-rsa']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads box and box+user', () => {
    assert.deepEqual(parseSshUsername('dev'), { sandbox: 'dev' });
    assert.deepEqual(parseSshUsername('dev+alice'), { sandbox: 'dev', unixUser: 'alice' });
    assert.equal(parseSshUsername('dev+'), undefined);
    assert.equal(parseSshUsername('dev+a b'), undefined);
  });

  it('on a roost proxy tunnel, takes the tunnel\'s sandbox and only +user from the name', () => {
    assert.deepEqual(parseTunnelUsername('yan', 'sb_1'), { sandbox: 'sb_1' });
    assert.deepEqual(parseTunnelUsername('other-box', 'sb_1'), { sandbox: 'sb_1' });
    assert.deepEqual(parseTunnelUsername('x+alice', 'sb_1'), { sandbox: 'sb_1', unixUser: 'alice' });
    assert.equal(parseTunnelUsername('x+a b', 'sb_1'), undefined);
    assert.equal(parseTunnelUsername('+alice', 'sb_1'), undefined);
  });

  it('limits failures per source within a window', () => {
    let now = 0;
    const limiter = new FailureLimiter({ maxFailures: 3, windowMs: 1000, now: () => now });
    for (let i = 0; i < 3; i++) limiter.fail('10.0.0.1');
    assert.equal(limiter.blocked('10.0.0.1'), true);
    assert.equal(limiter.blocked('10.0.0.2'), false);
    // Counted for a window plus the bucket filling (a tenth of it), then forgotten.
    now = 1100;
    assert.equal(limiter.blocked('10.0.0.1'), false);
  });
});
