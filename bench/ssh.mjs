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

/**
 * The "sshd in every container" way, for comparison: the host's sshd (same Debian release as the
 * image) and the libraries the image lacks copied into a sandbox with NAT (so the host can reach
 * its address over the bridge), then started there on port 22.
 */
async function sshdInSandbox(daemon) {
  const box = await daemon.sdk.sandboxes.create({ name: 'bench-sshd', network: 'nat' });
  const sh = async (script, input) => {
    const handle = box.exec(['bash', '-c', script], {});
    const chunks = [];
    for await (const chunk of handle.output()) chunks.push(Buffer.from(chunk.data));
    const { exitCode } = await handle.wait();
    if (exitCode !== 0) throw new Error(`in the sandbox, \`${script}\` exited ${exitCode}: ${Buffer.concat(chunks)}`);
    return Buffer.concat(chunks).toString();
  };
  // Copied through the gateway itself; files the image has already are left alone.
  const files = [sshdBin, ...execFileSync('ldd', [sshdBin], { encoding: 'utf8' }).split('\n').map((line) => /=> (\/\S+)/.exec(line)?.[1]).filter(Boolean)];
  const ssh = ['ssh', ...common, '-p', String(daemon.sshPort), 'bench-sshd@127.0.0.1'].join(' ');
  await run('sh', ['-c', `tar -chf - ${files.join(' ')} 2>/dev/null | ${ssh} 'tar -xf - -C / --skip-old-files'`]);
  const hostKey = readFileSync(join(dir, 'host_key'), 'utf8');
  await sh([
    'mkdir -p /run/sshd /etc/ssh/bench /root/.ssh && chmod 700 /root/.ssh',
    'grep -q "^sshd:" /etc/passwd || echo "sshd:x:101:65534::/run/sshd:/usr/sbin/nologin" >> /etc/passwd',
    `printf '%s' '${hostKey}' > /etc/ssh/bench/host_key && chmod 600 /etc/ssh/bench/host_key`,
    `echo '${readFileSync(`${key}.pub`, 'utf8').trim()}' > /root/.ssh/authorized_keys`,
    "printf 'Port 22\\nHostKey /etc/ssh/bench/host_key\\nPermitRootLogin prohibit-password\\nPasswordAuthentication no\\nUsePAM no\\n' > /etc/ssh/bench/sshd_config",
  ].join('\n'));
  const process = box.exec(['/usr/sbin/sshd', '-D', '-e', '-f', '/etc/ssh/bench/sshd_config']);
  const ip = (await sh('hostname -i')).trim().split(' ')[0];
  for (let i = 0; i < 50; i++) {
    if ((await sh('cat /proc/net/tcp | grep -c ":0016 " || true')).trim() !== '0') break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { ip, process };
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
  const inSandbox = sshd ? await sshdInSandbox(daemon).catch((error) => ({ skipped: error.message })) : { skipped: 'no /usr/sbin/sshd' };
  if ('ip' in inSandbox) {
    const boxed = await measure(() => run('ssh', [...common, '-p', '22', `root@${inSandbox.ip}`, 'true']));
    row('`ssh root@sandbox true` to sshd inside a sandbox', `p50 ${boxed.p50.toFixed(1)} ms  p90 ${boxed.p90.toFixed(1)} ms`, 'the host\'s sshd binary run in a NAT sandbox; ARCHITECTURE.md: ~220 ms');
    inSandbox.process.kill();
  } else row('sshd inside a sandbox', 'skipped', `${inSandbox.skipped}; ARCHITECTURE.md measured ~220 ms`);

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
