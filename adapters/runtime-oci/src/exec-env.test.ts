// Environment values (`roost new/run/exec -e`) never show in the host's process list: the
// engine gets them in a 0600 process file, not as `--env` arguments. Real engines, crun and runc.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fs, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { Logger, ProcessHandle, Runtime } from '@roost/core';
import { createOciRuntime } from './driver.js';
import { createImageStore } from './images.js';

const silent: Logger = { info() {}, warn() {}, error() {}, debug() {} };

/** Host pids whose command line contains `text` (every process on the host, as `ps -eo args` sees them). */
function pidsWithArgument(text: string): number[] {
  const found: number[] = [];
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`).includes(text)) found.push(Number(pid));
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

/** The first line a stream prints. */
function firstLine(stream: Readable): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    stream.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      const nl = text.indexOf('\n');
      if (nl >= 0) resolve(text.slice(0, nl).replace(/\r$/, ''));
    });
    stream.once('end', () => reject(new Error(`ended before a line: ${JSON.stringify(text)}`)));
  });
}

// Both engines are in setup's package list: the runc fallback gets the same process file.
for (const engine of ['crun', 'runc'] as const) {
  describe(`secret env values stay out of the host's process list (${engine})`, () => {
    let stateDir: string;
    let runtime: Runtime;
    const id = `sb_env${randomBytes(6).toString('hex')}`;
    const fromSpec = `spec-${randomBytes(12).toString('hex')}`;

    before(async () => {
      stateDir = await fs.mkdtemp(path.join(tmpdir(), 'roost-env-'));
      // runc mounts the rootfs as the sandbox's root: mkdtemp's 0700 would stop it at the door.
      await fs.chmod(stateDir, 0o711);
      const images = createImageStore({ logger: silent });
      await images.ensureDefaultImage();
      runtime = await createOciRuntime({ stateDir, images, logger: silent, engine });
      await runtime.create({
        id, hostname: 'env', image: 'debian', limits: { cpus: 1, memoryMb: 256, pids: 64, openFiles: 1024 }, network: 'none', idRange: 0,
        env: { SECRET_NEW: fromSpec },
      });
    });
    after(async () => {
      await runtime?.destroy(id);
      await runtime?.close();
      await fs.rm(stateDir, { recursive: true, force: true });
    });

    for (const tty of [false, true]) {
      it(`a running command sees -e values, and no host process has them in its arguments${tty ? ' (with a terminal)' : ''}`, async () => {
        const fromExec = `exec-${randomBytes(12).toString('hex')}`;
        const proc: ProcessHandle = await runtime.exec(id, {
          command: ['bash', '-c', 'echo "seen $SECRET_NEW $SECRET_EXEC"; exec sleep 60'],
          env: { SECRET_EXEC: fromExec },
          ...(tty ? { tty: { term: 'xterm', cols: 80, rows: 24 } } : {}),
        });
        try {
          // Positive control: the values reached the command.
          assert.equal(await firstLine(proc.stdout), `seen ${fromSpec} ${fromExec}`);
          // The engine and the command are running now (sleep is exec'd in place of bash).
          assert.deepEqual(pidsWithArgument(fromExec), [], 'the exec value is in some process arguments');
          assert.deepEqual(pidsWithArgument(fromSpec), [], 'the sandbox value is in some process arguments');
          // And no file of the bundle keeps the exec's value: the process file goes once the
          // engine wrote the pid file, which may come just after the command's first output.
          const bundle = path.join(stateDir, 'sandboxes', id);
          const holding = async () => {
            const found: string[] = [];
            for (const name of await fs.readdir(bundle)) {
              const content = await fs.readFile(path.join(bundle, name)).catch(() => undefined); // a dir, or removed meanwhile
              if (content?.includes(fromExec)) found.push(name);
            }
            return found;
          };
          const deadline = Date.now() + 5000;
          let files = await holding();
          while (files.length && Date.now() < deadline) {
            await new Promise((resolve) => setTimeout(resolve, 10));
            files = await holding();
          }
          assert.deepEqual(files, [], "files of the bundle hold the exec's env");
          // Files that do hold the sandbox's env are for root only.
          for (const name of ['config.json', 'exec.json']) {
            assert.equal((await fs.stat(path.join(bundle, name))).mode & 0o077, 0, `${name} is readable by others`);
          }
        } finally {
          proc.kill('SIGKILL');
          await proc.wait();
        }
      });
    }
  });
}
