// End to end: a real roostd with the real OCI driver, driven through the real `roost` binary.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cliPath, readInstance, runCli, startDaemon, waitFor, type TestDaemon } from '@roost/testkit';

describe('roost CLI against a real daemon', () => {
  let daemon: TestDaemon;
  let env: Record<string, string>;
  const roost = (args: string[], opts: Parameters<typeof runCli>[1] = {}) => runCli(args, { ...opts, env: { ...env, ...opts.env } });

  before(async () => {
    daemon = await startDaemon({ driver: 'oci' });
    env = { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken };
  });
  after(async () => {
    await daemon?.close();
  });

  it('runs a script in a fresh sandbox, stdout and stderr apart, and exits with its code', async () => {
    const result = await roost(['run', 'echo Hello World; echo oops >&2; exit 3']);
    assert.equal(result.stdout, 'Hello World\n');
    assert.equal(result.exitCode, 3);
    // After the script's own stderr, one line names the sandbox, so its logs can be found.
    const [own, named, ...rest] = result.stderr.split('\n');
    assert.equal(own, 'oops');
    assert.deepEqual(rest, ['']);
    const name = /^roost: the script exited with code 3 in sandbox ([a-z0-9-]+): `roost logs \1` shows its output/.exec(named!)?.[1];
    assert.ok(name, named);
    const logs = await roost(['logs', name]);
    assert.equal(logs.exitCode, 0, logs.stderr);
    assert.equal(logs.stdout, 'Hello World\n');
    assert.equal(logs.stderr, 'oops\n');
    const status = await roost(['status', name]);
    assert.match(status.stdout, /exit code\s+3/);
  });

  it('a one-shot run that succeeds adds nothing to its output', async () => {
    const result = await roost(['run', 'echo fine']);
    assert.deepEqual({ exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr }, { exitCode: 0, stdout: 'fine\n', stderr: '' });
  });

  it('exec of a command that is not there exits 127, one that cannot start 126, as shells and docker exec do', async () => {
    assert.equal((await roost(['new', 'exec-codes'])).exitCode, 0);
    const missing = await roost(['exec', 'exec-codes', '--', 'nosuchcmd', '--flag']);
    assert.equal(missing.exitCode, 127, missing.stderr);
    assert.match(missing.stderr, /nosuchcmd.* not found/);
    assert.equal(missing.stderr.trimEnd().split('\n').length, 1, 'one line says why');
    const script = await roost(['exec', 'exec-codes', 'nosuchcmd']);
    assert.equal(script.exitCode, 127, 'the same through bash -c');
    const notExecutable = await roost(['exec', 'exec-codes', '/etc/passwd', 'x']);
    assert.equal(notExecutable.exitCode, 126, notExecutable.stderr);
    assert.match(notExecutable.stderr, /Permission denied/);
    for (const dir of ['/nope', '/etc/passwd']) {
      const badDir = await roost(['exec', '-w', dir, 'exec-codes', 'ls', '/']);
      assert.equal(badDir.exitCode, 126, badDir.stderr);
      assert.match(badDir.stderr, new RegExp(`${dir}.*(No such file or directory|Not a directory)`));
      assert.equal(badDir.stdout, '');
    }
    // Positive controls: the command's own 255 stays 255, and a good -w works.
    assert.equal((await roost(['exec', 'exec-codes', '--', 'bash', '-c', 'exit 255'])).exitCode, 255);
    const goodDir = await roost(['exec', '-w', '/tmp', 'exec-codes', 'pwd']);
    assert.equal(goodDir.stdout, '/tmp\n');
    assert.equal((await roost(['rm', 'exec-codes'])).exitCode, 0);
  });

  it('runs as root inside, with the sandbox name as hostname, in /root, with -e variables', async () => {
    const result = await roost(['run', '--name', 'hello-box', '-e', 'GREETING=hi there', 'echo "$(id -u) $(hostname) $PWD $GREETING"']);
    assert.equal(result.exitCode, 0, result.stderr);
    assert.equal(result.stdout, '0 hello-box /root hi there\n');
  });

  it('removes a one-shot sandbox when its script ends but keeps its record and logs', async () => {
    const result = await roost(['run', '--json', '--name', 'one-shot', 'echo logged']);
    const output = JSON.parse(result.stdout) as { sandbox: { id: string }; exitCode: number; stdout: string };
    assert.equal(output.exitCode, 0);
    assert.equal(output.stdout, 'logged\n');
    const status = JSON.parse((await roost(['status', '--json', output.sandbox.id])).stdout) as { status: string; exitCode: number };
    assert.equal(status.status, 'completed');
    assert.equal(status.exitCode, 0);
    const logs = await roost(['logs', output.sandbox.id]);
    assert.equal(logs.stdout, 'logged\n');
    const live = JSON.parse((await roost(['ls', '--json'])).stdout) as { id: string }[];
    assert.ok(!live.some((sandbox) => sandbox.id === output.sandbox.id), 'an ended run is not listed as live');
  });

  it('keeps a sandbox with -p; exec, ls, status, stop and rm work on it by name', async () => {
    const run = await roost(['run', '-p', '--name', 'keeper', 'echo state > /root/file']);
    assert.equal(run.exitCode, 0, run.stderr);
    assert.match(run.stderr, /keeper .* kept/);
    const exec = await roost(['exec', 'keeper', 'cat /root/file; hostname']);
    assert.equal(exec.stdout, 'state\nkeeper\n');
    const argv = await roost(['exec', 'keeper', '--', 'ls', '-d', '/root']);
    assert.equal(argv.stdout, '/root\n');
    assert.equal((await roost(['exec', 'keeper', 'exit 5'])).exitCode, 5);
    const listed = await roost(['ls']);
    assert.match(listed.stdout, /^NAME\s+ID\s+STATUS/);
    assert.match(listed.stdout, /keeper\s+sb_\S+\s+running/);
    const status = await roost(['status', 'keeper']);
    assert.match(status.stdout, /status\s+running/);
    assert.equal((await roost(['stop', 'keeper'])).exitCode, 0);
    const afterStop = await roost(['exec', 'keeper', 'true']);
    assert.equal(afterStop.exitCode, 1);
    assert.match(afterStop.stderr, /SANDBOX_NOT_RUNNING/);
    assert.equal((await roost(['rm', 'keeper'])).exitCode, 0);
    const gone = await roost(['status', 'keeper']);
    assert.equal(gone.exitCode, 1);
  });

  it('new takes --pids, --open-files, --memory and --network; status shows them; bad values are refused', async () => {
    const created = await roost(['new', 'limited', '--pids', '50', '--open-files', '2048', '--memory', '200']);
    assert.equal(created.exitCode, 0, created.stderr);
    const inside = await roost(['exec', 'limited', 'ulimit -n; cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max']);
    assert.equal(inside.stdout, '2048\n50\n');
    const status = await roost(['status', 'limited']);
    assert.match(status.stdout, /limits\s+1 cpu, 200 MB memory, 50 processes, 2048 open files/);
    assert.match(status.stdout, /network\s+none \(no way out\)/);
    assert.equal((await roost(['rm', 'limited'])).exitCode, 0);
    const badNetwork = await roost(['run', '--network', 'open', 'true']);
    assert.equal(badNetwork.exitCode, 2);
    assert.match(badNetwork.stderr, /--network expects none or nat, got "open"/);
    const tooMany = await roost(['new', 'too-many', '--open-files', '2000000']);
    assert.equal(tooMany.exitCode, 2, 'beyond what the API takes: the CLI says so');
    assert.match(tooMany.stderr, /--open-files expects a whole number from 64 to 1048576, got "2000000"/);
  });

  it('new creates a running sandbox; a taken name and an invalid name are refused clearly', async () => {
    const created = await roost(['new', 'dev-box', '--json']);
    assert.equal(created.exitCode, 0, created.stderr);
    assert.equal((JSON.parse(created.stdout) as { status: string }).status, 'running');
    const again = await roost(['new', 'dev-box']);
    assert.equal(again.exitCode, 1);
    assert.match(again.stderr, /SANDBOX_NAME_TAKEN/);
    const invalid = await roost(['new', 'Bad_Name']);
    assert.equal(invalid.exitCode, 2, 'a usage error, caught by the CLI');
    assert.match(invalid.stderr, /^roost: "Bad_Name" is not a sandbox name: use 1-63 lowercase letters, digits/);
    assert.equal((await roost(['rm', 'dev-box'])).exitCode, 0);
  });

  it("one user can never see, exec into or remove another user's sandbox", async () => {
    assert.equal((await roost(['new', 'admins-box'])).exitCode, 0);
    const eve = { ROOST_API_TOKEN: await daemon.createUserToken('eve') };
    // Positive control: the owner sees it, and eve's token works for her own commands.
    assert.match((await roost(['ls', '--json'])).stdout, /"admins-box"/);
    assert.equal((await roost(['whoami'], { env: eve })).exitCode, 0);
    const listed = await roost(['ls', '--all', '--json'], { env: eve });
    assert.deepEqual(JSON.parse(listed.stdout), []);
    for (const args of [['exec', 'admins-box', 'true'], ['status', 'admins-box'], ['rm', 'admins-box'], ['stop', 'admins-box'], ['logs', 'admins-box']]) {
      const result = await roost(args, { env: eve });
      assert.equal(result.exitCode, 1, args.join(' '));
      assert.match(result.stderr, /SANDBOX_NOT_FOUND/, args.join(' '));
    }
    const status = await roost(['status', '--json', 'admins-box']);
    assert.equal((JSON.parse(status.stdout) as { status: string }).status, 'running');
    assert.equal((await roost(['rm', 'admins-box'])).exitCode, 0);
  });

  it('says SANDBOX_NOT_FOUND with a hint for an unknown sandbox', async () => {
    const result = await roost(['exec', 'no-such-box', 'true']);
    assert.equal(result.exitCode, 1);
    assert.match(result.stderr, /SANDBOX_NOT_FOUND/);
    assert.match(result.stderr, /roost list/);
  });

  it('ends a script that leaves background children running', async () => {
    const started = Date.now();
    const result = await roost(['run', 'sleep 30 & sleep 30 & echo done']);
    assert.equal(result.stdout, 'done\n');
    assert.equal(result.exitCode, 0);
    assert.ok(Date.now() - started < 15_000, 'run returned without waiting for the children');
  });

  it('passes binary output through byte-exact', async () => {
    const result = await runRaw(['run', 'head -c 3000000 /dev/urandom | tee /tmp/blob >/dev/null; sha256sum /tmp/blob | cut -c1-64 >&2; cat /tmp/blob']);
    assert.equal(result.code, 0);
    assert.equal(result.stdout.length, 3_000_000);
    assert.equal(createHash('sha256').update(result.stdout).digest('hex'), result.stderr.toString().trim());
  });

  it('kills the script after --timeout and says so', async () => {
    const result = await roost(['run', '--timeout', '1', 'echo start; sleep 20']);
    assert.equal(result.exitCode, 124);
    assert.equal(result.stdout, 'start\n');
    assert.match(result.stderr, /timed out after 1 s/);
  });

  it('ends a memory hog with OOM_KILLED in its exit message and status', async () => {
    const result = await roost(['run', '--json', '--memory', '64', 'python3 -c "x = bytearray(512 * 1024 * 1024)"']);
    const output = JSON.parse(result.stdout) as { exitCode: number; reason?: string; sandbox: { id: string } };
    assert.equal(output.exitCode, 137);
    assert.match(output.reason ?? '', /^OOM_KILLED: .*limit 64 MB/);
    const status = await roost(['status', output.sandbox.id]);
    assert.match(status.stdout, /status\s+error \(OOM_KILLED/);
    assert.match(status.stdout, /exit code\s+137/);
  });

  it('survives a fork bomb: the bomb hits the pids limit and the next run works', async () => {
    // Waits with shell builtins only (a fork may fail now) until the cgroup counts the limit's worth of tasks.
    const watch =
      'f=/sys/fs/cgroup/pids/pids.current; [ -r $f ] || f=/sys/fs/cgroup/pids.current; ' +
      'while ((SECONDS < 15)); do read n < $f; ((n >= 1000)) && { echo "at the limit"; break; }; done; echo survived';
    const bomb = await roost(['run', '--timeout', '20', '--pids', '1024', `bomb() { bomb | bomb & }; bomb; ${watch}`]);
    assert.match(bomb.stdout, /^at the limit\nsurvived\n$/, `the bomb reached the pids limit and the script went on: ${bomb.stderr.slice(0, 300)}`);
    assert.match(bomb.stderr, /fork: .*Resource temporarily unavailable/, 'the pids limit stopped the bomb');
    const next = await roost(['run', 'echo still fine']);
    assert.equal(next.stdout, 'still fine\n');
  });

  it('Ctrl-C on run kills the script in the sandbox and removes the sandbox', async () => {
    let child: import('node:child_process').ChildProcess | undefined;
    let scriptStarted!: () => void;
    const started = new Promise<void>((resolve) => (scriptStarted = resolve));
    const pending = roost(['run', '--name', 'interrupted', 'echo ready; sleep 60'], {
      onSpawn: (c) => {
        child = c;
        c.stdout!.on('data', (chunk: Buffer) => chunk.toString().includes('ready') && scriptStarted());
      },
    });
    // The script's own output says it runs: SIGINT now reaches a live remote command.
    await started;
    child!.kill('SIGINT');
    const result = await pending;
    assert.equal(result.exitCode, 130);
    await waitFor(async () => {
      const status = JSON.parse((await roost(['status', '--json', 'interrupted'])).stdout) as { status: string };
      return status.status === 'error';
    }, 'the interrupted run is marked error');
  });

  it('streams 1 GiB of output through with the daemon memory flat', async () => {
    const rssBefore = process.memoryUsage().rss;
    const result = await runRaw(['run', 'yes | head -c 1073741824'], { countOnly: true });
    assert.equal(result.code, 0);
    assert.equal(result.bytes, 1073741824);
    const grownMb = (process.memoryUsage().rss - rssBefore) / 1024 / 1024;
    assert.ok(grownMb < 150, `daemon RSS grew by ${grownMb.toFixed(0)} MB`);
  });

  it('login finds the admin token by itself on the daemon host; whoami and logout work', async () => {
    const homeDir = mkdtempSync(join(tmpdir(), 'roost-login-'));
    const home = { HOME: homeDir, ROOST_API_URL: daemon.url, ROOST_API_TOKEN: undefined };
    const login = await runCli(['login'], { env: home });
    assert.equal(login.exitCode, 0, login.stderr);
    assert.match(login.stdout, /Logged in .* as admin/);
    const started = Date.now();
    const whoami = await runCli(['whoami', '--json'], { env: home });
    // An idle keep-alive socket once kept every command alive for the server's 72 s timeout.
    assert.ok(Date.now() - started < 20_000, 'the CLI exits once it has its answer');
    assert.equal((JSON.parse(whoami.stdout) as { user: { name: string } }).user.name, 'admin');
    assert.equal((await runCli(['logout'], { env: home })).exitCode, 0);
    const loggedOut = await runCli(['whoami'], { env: home });
    rmSync(homeDir, { recursive: true, force: true });
    assert.equal(loggedOut.exitCode, 2);
    assert.match(loggedOut.stderr, /roost login/);
  });

  it('doctor finds the host healthy and no residue, and is for admins only', async () => {
    const report = await roost(['doctor', '--json']);
    assert.equal(report.exitCode, 0, report.stdout);
    const parsed = JSON.parse(report.stdout) as { healthy: boolean; problems: unknown[]; leftovers: unknown[] };
    assert.deepEqual({ healthy: parsed.healthy, problems: parsed.problems, leftovers: parsed.leftovers }, { healthy: true, problems: [], leftovers: [] });
    const human = await roost(['doctor']);
    assert.match(human.stdout, /host\s+ok/);
    assert.match(human.stdout, /residue\s+none/);
    // Residue as a crash would leave it: a cgroup of a sandbox nobody holds, under this daemon's own parent.
    const parent = readInstance(join(daemon.dataDir, 'runtime')).cgroupParent;
    const strayCgroup = `/sys/fs/cgroup/pids/${parent}/sb_stray0doctor0test`;
    mkdirSync(strayCgroup, { recursive: true });
    try {
      const found = await roost(['doctor']);
      assert.equal(found.exitCode, 1);
      assert.match(found.stdout, /residue\s+1 item/);
      assert.match(found.stdout, new RegExp(`sb_stray0doctor0test: cgroup /sys/fs/cgroup/pids/${parent}/sb_stray0doctor0test`));
    } finally {
      rmdirSync(strayCgroup);
    }
    const userToken = await daemon.createUserToken('not-an-admin');
    const refused = await roost(['doctor'], { env: { ROOST_API_TOKEN: userToken } });
    assert.equal(refused.exitCode, 1);
    assert.match(refused.stderr, /FORBIDDEN/);
  });

  it('tells how to start the daemon when it is not running', async () => {
    const result = await runCli(['ls'], { env: { ROOST_API_URL: 'http://127.0.0.1:9', ROOST_API_TOKEN: 'x' } });
    assert.equal(result.exitCode, 1);
    assert.match(result.stderr, /^roost: cannot reach roostd at http:\/\/127\.0\.0\.1:9 \(connection refused\): is it running\?.*npm start/);
  });

  it('exits 2 on a usage error and prints help with --help', async () => {
    const usage = await roost(['run']);
    assert.equal(usage.exitCode, 2);
    assert.match(usage.stderr, /missing required argument/);
    const help = await roost(['run', '--help']);
    assert.equal(help.exitCode, 0);
    assert.match(help.stdout, /--timeout <seconds>/);
  });

  /** Runs the CLI keeping stdout as bytes (or only counting them). */
  function runRaw(args: string[], opts: { countOnly?: boolean } = {}) {
    return new Promise<{ code: number | null; stdout: Buffer; stderr: Buffer; bytes: number }>((resolve) => {
      const child = spawn(process.execPath, [cliPath, ...args], { env: { PATH: process.env.PATH, HOME: '/tmp', ...env } });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let bytes = 0;
      child.stdout.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (!opts.countOnly) out.push(chunk);
      });
      child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
      child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err), bytes }));
    });
  }
});
