// The client of native/roost-fsmeta: xattrs, mknod and nanosecond mtimes, which Node's fs lacks.
// One helper process per push or restore; requests are pipelined (answers come back in order),
// so a tree costs one process and no per-file round trip waits on the one before it.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const defaultFsmetaPath = fileURLToPath(new URL('../native/build/roost-fsmeta', import.meta.url));

/** An xattr as stored: name (always text: the kernel's names are NUL-free strings) and raw value. */
export type Xattr = [name: string, value: Buffer];

export class FsMetaError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}

const hex = (data: Buffer | string) => (typeof data === 'string' ? Buffer.from(data) : data).toString('hex');

export class FsMeta {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly waiting: { resolve: (line: string) => void; reject: (error: Error) => void }[] = [];
  private partial = '';
  private dead: Error | null = null;

  constructor(helperPath = defaultFsmetaPath) {
    if (!existsSync(helperPath)) {
      throw new Error(`${helperPath} is missing: run the setup (npm start or npm test builds it with make -C adapters/workspaces-s3/native)`);
    }
    this.child = spawn(helperPath, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (data: string) => {
      const lines = (this.partial + data).split('\n');
      this.partial = lines.pop() ?? '';
      for (const line of lines) this.waiting.shift()?.resolve(line);
    });
    this.child.stderr.resume();
    const die = (error: Error) => {
      this.dead ??= error;
      for (const waiter of this.waiting.splice(0)) waiter.reject(this.dead);
    };
    this.child.on('error', die);
    this.child.on('exit', (code, signal) => die(new Error(`roost-fsmeta exited (${signal ?? code})`)));
    this.child.stdin.on('error', (error) => die(error));
  }

  private request(line: string): Promise<string> {
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.child.stdin.write(line + '\n');
    }).then((answer) => {
      const text = answer as string;
      if (text.startsWith('ok')) return text;
      const [, errno, ...message] = text.split(' ');
      throw new FsMetaError(Number(errno), message.join(' '));
    });
  }

  async listXattrs(path: Buffer): Promise<Xattr[]> {
    const fields = (await this.request(`L ${hex(path)}`)).split(' ').slice(1);
    const xattrs: Xattr[] = [];
    for (let i = 0; i + 1 < fields.length; i += 2) {
      xattrs.push([Buffer.from(fields[i]!, 'hex').toString(), fields[i + 1] === '-' ? Buffer.alloc(0) : Buffer.from(fields[i + 1]!, 'hex')]);
    }
    return xattrs;
  }

  async setXattr(path: Buffer, name: string, value: Buffer): Promise<void> {
    await this.request(`X ${hex(path)} ${hex(name)} ${value.length === 0 ? '-' : hex(value)}`);
  }

  /** `mode` includes the file type bits (S_IFCHR …). */
  async mknod(path: Buffer, mode: number, rdev: number): Promise<void> {
    await this.request(`M ${hex(path)} ${mode.toString(8)} ${rdev}`);
  }

  /** Sets atime and mtime to `mtimeNs` without following a symlink. */
  async setTimes(path: Buffer, mtimeNs: bigint): Promise<void> {
    let sec = mtimeNs / 1_000_000_000n;
    let nsec = mtimeNs % 1_000_000_000n;
    if (nsec < 0n) (sec -= 1n), (nsec += 1_000_000_000n); // before 1970: BigInt division truncates
    await this.request(`T ${hex(path)} ${sec} ${nsec}`);
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin.end();
    await exited;
  }
}
