// SSH benchmark: `ssh box true` through the gateway, beside OpenSSH's sshd on the host (started
// here on a free loopback port, logging in as root with the same key) in the same run; then scp
// of a large file both ways round, for throughput.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon } from '@roost/testkit';

const rounds = Number(process.env.ROOST_BENCH_ROUNDS ?? 30);
const scpMb = Number(process.env.ROOST_BENCH_SCP_MB ?? 1024);

function percentile(samples, p) {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}: ${stderr.trim()}`))));
  });
}

async function measure(fn) {
  const samples = [];
  for (let i = 0; i < rounds + 3; i++) {
    const started = process.hrtime.bigint();
    await fn();
    if (i >= 3) samples.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  return { p50: percentile(samples, 50), p90: percentile(samples, 90) };
}

const freePort = () =>
  new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });

const row = (label, value, note = '') => console.log(`${label.padEnd(46)} ${value.padStart(22)}   ${note}`);
const dir = mkdtempSync(join(tmpdir(), 'roost-bench-ssh-'));
const key = join(dir, 'id_ed25519');
execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
const common = ['-F', '/dev/null', '-i', key, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', `UserKnownHostsFile=/dev/null`, '-o', 'LogLevel=ERROR'];

// OpenSSH's sshd on the host, for comparison (Debian: apt-get install openssh-server; not started as a service).
let sshd;
let sshdPort;
const sshdBin = '/usr/sbin/sshd';
if (existsSync(sshdBin)) {
  sshdPort = await freePort();
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')]);
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(`${key}.pub`));
  writeFileSync(
    join(dir, 'sshd_config'),
    [
      `Port ${sshdPort}`, 'ListenAddress 127.0.0.1', `HostKey ${join(dir, 'host_key')}`, `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PermitRootLogin prohibit-password', 'PasswordAuthentication no', 'UsePAM no', 'StrictModes no', `PidFile ${join(dir, 'sshd.pid')}`,
      'Subsystem sftp /usr/lib/openssh/sftp-server',
    ].join('\n') + '\n',
  );
  execFileSync('mkdir', ['-p', '/run/sshd']);
  sshd = spawn(sshdBin, ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: 'ignore' });
  await new Promise((resolve) => setTimeout(resolve, 300));
}

const daemon = await startDaemon({ driver: 'oci' });
try {
  await daemon.sdk.sshKeys.add(readFileSync(`${key}.pub`, 'utf8'));
  await daemon.sdk.sandboxes.create({ name: 'bench-ssh' });
  console.log(`Roost SSH benchmark — ${rounds} rounds, ${(await daemon.sdk.health()).runtime}, ${execFileSync('ssh', ['-V'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim() || 'OpenSSH'}\n`);

  const gateway = await measure(() => run('ssh', [...common, '-p', String(daemon.sshPort), 'bench-ssh@127.0.0.1', 'true']));
  row('`ssh box true` through the gateway', `p50 ${gateway.p50.toFixed(1)} ms  p90 ${gateway.p90.toFixed(1)} ms`, 'target ≤ 80 ms');
  if (sshd) {
    const host = await measure(() => run('ssh', [...common, '-p', String(sshdPort), 'root@127.0.0.1', 'true']));
    row('`ssh root@host true` to sshd on the host', `p50 ${host.p50.toFixed(1)} ms  p90 ${host.p90.toFixed(1)} ms`, 'OpenSSH 9.2 sshd, same run');
  } else row('sshd on the host', 'skipped', 'apt-get install openssh-server to compare');
  console.log(`${''.padEnd(46)} ${''.padStart(22)}   anchor: sshd inside a sandbox ~220 ms (ARCHITECTURE.md)`);

  // scp throughput: a file of scpMb MiB, sent to /root (the sandbox's overlay) and to sshd's /tmp.
  if (scpMb <= 0) throw Object.assign(new Error('scp skipped'), { skip: true });
  const file = join(dir, 'payload');
  execFileSync('dd', ['if=/dev/urandom', `of=${file}`, 'bs=1M', `count=${scpMb}`], { stdio: 'ignore' });
  const time = async (args) => {
    const started = process.hrtime.bigint();
    await run('scp', [...common, ...args]);
    return Number(process.hrtime.bigint() - started) / 1e9;
  };
  const viaGateway = await time(['-P', String(daemon.sshPort), file, 'bench-ssh@127.0.0.1:/root/payload']);
  row(`scp ${scpMb} MiB into the sandbox (gateway)`, `${(scpMb / viaGateway).toFixed(0)} MB/s`, `${viaGateway.toFixed(1)} s`);
  if (sshd) {
    const viaSshd = await time(['-P', String(sshdPort), file, `root@127.0.0.1:${join(dir, 'received')}`]);
    row(`scp ${scpMb} MiB to sshd on the host`, `${(scpMb / viaSshd).toFixed(0)} MB/s`, `${viaSshd.toFixed(1)} s`);
    row('gateway throughput / sshd throughput', `${((viaSshd / viaGateway) * 100).toFixed(0)} %`, 'target ≥ 50 %');
  }
} catch (error) {
  if (!error.skip) throw error;
} finally {
  await daemon.close();
  sshd?.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
