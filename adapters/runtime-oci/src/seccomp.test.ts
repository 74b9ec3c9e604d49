// The seccomp profile inside a real sandbox (real engine): native/roost-seccomp-probe calls every
// syscall the profile refuses and a few it allows, and says what each returned.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { Logger, Runtime } from '@roost/core';
import { createOciRuntime } from './driver.js';
import { createImageStore } from './images.js';
import { EPERM_SYSCALLS } from './seccomp.js';
import { DEFAULT_TOOLS_DIR, TOOLS_MOUNT } from './tools.js';

const silent: Logger = { info() {}, warn() {}, error() {}, debug() {} };
const PROBE = 'bin/roost-seccomp-probe';

/** Calls the probe makes that must succeed: without them a broken filter or probe would look like "all refused". */
const POSITIVE_CONTROLS = ['getpid', 'openat', 'clone', 'socket', 'personality_query', 'personality_linux', 'uname', 'fchmodat2'];
/** Refused by argument rather than by name (clone with CLONE_NEWUSER, socket(AF_VSOCK)). */
const EPERM_BY_ARGUMENT = ['clone_newuser', 'socket_vsock'];
/**
 * Not allowed and not named: the default, ENOSYS. clone3 (flags out of seccomp's reach),
 * personality(ADDR_NO_RANDOMIZE), calls newer than Docker's list, a number no kernel assigned.
 */
const ENOSYS_BY_DEFAULT = [
  'clone3', 'personality', 'cachestat', 'statmount', 'listmount', 'lsm_get_self_attr', 'lsm_set_self_attr', 'lsm_list_modules',
  'mseal', 'setxattrat', 'getxattrat', 'listxattrat', 'removexattrat', 'unassigned_1000',
];

async function readAll(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString();
}

// Both engines: each turns the same profile into a filter with its own code (runc also patches it).
for (const engine of ['crun', 'runc'] as const) describe(`seccomp profile (${engine}, roost-seccomp-probe inside a sandbox)`, () => {
  let stateDir: string;
  let runtime: Runtime;
  let box: string;

  before(async () => {
    stateDir = await fs.mkdtemp(path.join(tmpdir(), 'roost-seccomp-'));
    // runc mounts the rootfs as the sandbox's root: mkdtemp's 0700 would stop it at the door.
    await fs.chmod(stateDir, 0o711);
    const images = createImageStore({ logger: silent });
    await images.ensureDefaultImage();
    runtime = await createOciRuntime({ stateDir, images, logger: silent, engine });
    box = `sb_seccomp${randomBytes(6).toString('hex')}`;
    await runtime.create({ id: box, hostname: 'seccomp', image: 'debian', limits: { cpus: 1, memoryMb: 256, pids: 64, openFiles: 1024 }, network: 'none', idRange: 0, env: {} });
  });
  after(async () => {
    await runtime?.destroy(box);
    await runtime?.close();
    await fs.rm(stateDir, { recursive: true, force: true });
  });

  const probe = async () => {
    const proc = await runtime.exec(box, { command: [`${TOOLS_MOUNT}/${PROBE}`] });
    const [stdout, stderr, status] = await Promise.all([readAll(proc.stdout), readAll(proc.stderr), proc.wait()]);
    return { stdout, stderr, status };
  };

  it('the probe is built (a missing probe fails here, it is never read as "all refused")', () => {
    assert.ok(existsSync(path.join(DEFAULT_TOOLS_DIR, PROBE)), `build it: make -C adapters/runtime-oci/native (missing ${PROBE})`);
  });

  it('refuses each syscall Docker and Podman refuse (EPERM), answers ENOSYS for the rest, and allows the positive controls', async () => {
    const { stdout, stderr, status } = await probe();
    // A crash or a missing binary (exit 127) ends here, not in a list of "refusals".
    assert.equal(status.exitCode, 0, `probe exit ${status.exitCode}: ${stderr}`);
    const lines = stdout.trim().split('\n');
    const done = /^done (\d+)$/.exec(lines.pop() ?? '');
    assert.ok(done, `the probe ran to the end:\n${stdout}`);
    assert.equal(Number(done[1]), lines.length);
    const results = new Map(lines.map((line) => line.split(' ') as [string, string]));
    assert.equal(results.size, lines.length, 'each call reported once');

    const expected = new Map<string, string>([
      ...POSITIVE_CONTROLS.map((name) => [name, 'ok'] as const),
      ...EPERM_SYSCALLS.map((name) => [name, 'EPERM'] as const),
      ...EPERM_BY_ARGUMENT.map((name) => [name, 'EPERM'] as const),
      ...ENOSYS_BY_DEFAULT.map((name) => [name, 'ENOSYS'] as const),
    ]);
    // Both ways: every refused syscall of the profile is probed, and the probe calls nothing unaccounted for.
    assert.deepEqual([...results.keys()].sort(), [...expected.keys()].sort());
    const wrong = [...expected].filter(([name, want]) => results.get(name) !== want).map(([name, want]) => `${name}: ${results.get(name)} (want ${want})`);
    assert.deepEqual(wrong, []);
  });

  it('keeps what the profile allows working for real programs: bash, python, node, apt', async () => {
    const script = [
      'set -e',
      'python3 -c "import os, socket, subprocess; socket.socket(); print(subprocess.check_output([\\"true\\"]) == b\\"\\", os.getpid() > 0)"',
      'node -e "require(\\"fs\\").readdirSync(\\"/\\"); console.log(\\"node ok\\")"',
      'apt-get --version | head -1',
      // Unprivileged user namespaces are what the EPERM list is for: unshare(1) must fail.
      'if unshare -U true 2>/dev/null; then echo userns-allowed; else echo userns-refused; fi',
    ].join('\n');
    const proc = await runtime.exec(box, { command: ['bash', '-c', script] });
    const [stdout, stderr, status] = await Promise.all([readAll(proc.stdout), readAll(proc.stderr), proc.wait()]);
    assert.equal(status.exitCode, 0, stderr);
    const lines = stdout.trim().split('\n');
    assert.equal(lines[0], 'True True');
    assert.equal(lines[1], 'node ok');
    assert.match(lines[2], /^apt /);
    assert.equal(lines[3], 'userns-refused');
  });
});
