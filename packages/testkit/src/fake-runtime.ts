// A Runtime for unit tests of core logic: each exec is a plain host process in a temp dir.
// It isolates nothing; the conformance suite runs it with isolation checks off.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import type { ExecOpts, ExitStatus, ProcessHandle, Runtime, RuntimeInfo, SandboxSpec } from '@roost/core';

interface FakeSandbox {
  dir: string;
  env: Record<string, string>;
  /** Process groups of its execs, kept after they exit: background children live on in them. */
  pids: Set<number>;
}

export class FakeRuntime implements Runtime {
  readonly info: RuntimeInfo;

  constructor(info: Partial<RuntimeInfo> = {}) {
    this.info = { engine: 'fake', maxOpenFiles: 1_048_576, natAllowed: true, ...info };
  }
  private readonly sandboxes = new Map<string, FakeSandbox>();

  async create(spec: SandboxSpec): Promise<void> {
    const dir = mkdtempSync(join(tmpdir(), `roost-fake-${spec.id}-`));
    this.sandboxes.set(spec.id, { dir, env: { ...spec.env, HOSTNAME: spec.hostname }, pids: new Set() });
  }

  async configure(spec: SandboxSpec): Promise<void> {
    const sandbox = this.sandboxes.get(spec.id);
    if (!sandbox) throw Object.assign(new Error(`sandbox ${spec.id} is not running`), { code: 'SANDBOX_NOT_RUNNING' });
    sandbox.env = { ...spec.env, HOSTNAME: spec.hostname };
  }

  async exec(id: string, opts: ExecOpts): Promise<ProcessHandle> {
    const sandbox = this.sandboxes.get(id);
    if (!sandbox) throw Object.assign(new Error(`sandbox ${id} is not running`), { code: 'SANDBOX_NOT_RUNNING' });
    const [command, ...args] = opts.command;
    // Its own process group, so kill() reaches the children a script started.
    const child = spawn(command, args, {
      cwd: sandbox.dir,
      env: { PATH: process.env.PATH, HOME: sandbox.dir, ...sandbox.env, ...opts.env },
      stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const pid = child.pid;
    // Relayed, so they can be ended cleanly while a background child still holds the pipes.
    const stdout = child.stdout!.pipe(new PassThrough());
    const stderr = child.stderr!.pipe(new PassThrough());
    if (pid) sandbox.pids.add(pid);
    const exited = new Promise<ExitStatus>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code, signal) => {
        // Background children may hold the pipes open; the process's exit is the end.
        setTimeout(() => {
          for (const [pipe, relay] of [[child.stdout!, stdout], [child.stderr!, stderr]] as const) {
            pipe.unpipe(relay);
            pipe.destroy();
            relay.end();
          }
        }, 50);
        resolve(signal ? { exitCode: 128 + (constants.signals[signal] ?? 0), signal } : { exitCode: code ?? 255 });
      });
    });
    return {
      stdout,
      stderr,
      stdin: child.stdin ?? undefined,
      wait: () => exited,
      kill: (signal = 'SIGKILL') => killGroup(pid, signal),
    };
  }

  async destroy(id: string): Promise<void> {
    const sandbox = this.sandboxes.get(id);
    if (!sandbox) return;
    this.sandboxes.delete(id);
    for (const pid of sandbox.pids) killGroup(pid, 'SIGKILL');
    rmSync(sandbox.dir, { recursive: true, force: true });
  }

  /** Needs nothing from the host, and leaves nothing it does not hold. */
  async diagnose() {
    return { problems: [], leftovers: [] };
  }

  /** Host processes have no memory limit here: never OOM-killed. */
  async oomKillCount(): Promise<number> {
    return 0;
  }

  async list(): Promise<string[]> {
    return [...this.sandboxes.keys()];
  }

  async close(): Promise<void> {
    for (const id of [...this.sandboxes.keys()]) await this.destroy(id);
  }
}

function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}
