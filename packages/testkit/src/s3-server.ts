// A real S3 server for tests and the benchmark: s3rver 3.7.1 in a process of its own, on a
// free loopback port, keeping its objects in a temp dir that stop() removes.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './wait.js';

export interface TestS3 {
  /** http://127.0.0.1:<port>, for ROOST_S3_URL (path-style). */
  url: string;
  bucket: string;
  port: number;
  /** Where s3rver keeps the bucket's objects on disk (to corrupt or remove them). */
  dir: string;
  /** The environment a client needs (s3rver takes any key pair; S3RVER is its default). */
  env: Record<string, string>;
  /** The file that holds an object's bytes. */
  objectFile(key: string): string;
  /** Stops the server, keeping its objects (an outage); start() brings it back on the same port. */
  pause(): Promise<void>;
  start(): Promise<void>;
  /** Stops it and removes its directory. Idempotent. */
  stop(): Promise<void>;
}

const mainPath = fileURLToPath(new URL('./s3rver-main.js', import.meta.url));

export async function startS3(opts: { bucket?: string } = {}): Promise<TestS3> {
  const bucket = opts.bucket ?? 'roost-test';
  const dir = mkdtempSync(join(tmpdir(), 'roost-s3rver-'));
  const port = await freePort();
  let child: ChildProcess | null = null;

  const start = async () => {
    if (child) return;
    const proc = spawn(process.execPath, ['--openssl-legacy-provider', mainPath, dir, String(port), bucket], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    let output = '';
    await new Promise<void>((resolve, reject) => {
      const onData = (data: Buffer) => {
        output = (output + data.toString()).slice(-4096);
        if (output.includes('listening ')) resolve();
      };
      proc.stdout!.on('data', onData);
      proc.stderr!.on('data', (data: Buffer) => (output = (output + data.toString()).slice(-4096)));
      proc.once('exit', (code) => reject(new Error(`s3rver exited (${code}) before listening: ${output}`)));
      proc.once('error', reject);
    }).catch((error: unknown) => {
      child = null;
      throw error;
    });
    proc.stdout!.resume();
    proc.stderr!.resume();
  };
  const pause = async () => {
    const proc = child;
    if (!proc) return;
    child = null;
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill('SIGKILL');
    await exited;
  };
  await start();
  const encodeKey = (key: string) => {
    const parts = key.split('/');
    const last = parts.pop()!;
    return join(dir, bucket, ...parts, `${last}._S3rver_object`);
  };
  return {
    url: `http://127.0.0.1:${port}`,
    bucket,
    port,
    dir,
    env: {
      ROOST_S3_URL: `http://127.0.0.1:${port}`,
      ROOST_S3_BUCKET: bucket,
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
      AWS_REGION: 'us-east-1',
    },
    objectFile: encodeKey,
    pause,
    start,
    stop: async () => {
      await pause();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
