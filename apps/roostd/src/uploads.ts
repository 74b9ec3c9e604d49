// Uploaded files for runs (`roost run -f`, the Mags uploadFiles): kept in <dataDir>/uploads as
// <id> (the bytes) and <id>.json (owner, name, size, expiry), written to <id>.part first and
// renamed once whole, so a cut-off upload never becomes a file a run could use. Expired files
// are swept at start and on every upload.
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import { RoostError, type FileUploads, type Logger, type UploadedFileRecord } from '@roost/core';

export interface DiskUploadsOpts {
  dir: string;
  maxUploadBytes: number;
  maxStoredBytesPerUser: number;
  retentionSec: number;
  now(): Date;
  logger: Logger;
}

interface StoredMeta {
  id: string;
  ownerId: string;
  name: string;
  sizeBytes: number;
  createdAt: string;
  expiresAt: string;
}

export class DiskUploads implements FileUploads {
  private constructor(private readonly opts: DiskUploadsOpts) {}

  static async open(opts: DiskUploadsOpts): Promise<DiskUploads> {
    await mkdir(opts.dir, { recursive: true, mode: 0o700 });
    const uploads = new DiskUploads(opts);
    // An upload a crash cut off is never a file: nothing names it.
    for (const name of await readdir(opts.dir)) if (name.endsWith('.part')) await rm(join(opts.dir, name), { force: true });
    await uploads.sweep();
    return uploads;
  }

  async save(ownerId: string, name: string, source: AsyncIterable<Uint8Array>): Promise<UploadedFileRecord> {
    await this.sweep();
    const stored = (await this.all()).filter((meta) => meta.ownerId === ownerId).reduce((sum, meta) => sum + meta.sizeBytes, 0);
    const room = Math.min(this.opts.maxUploadBytes, this.opts.maxStoredBytesPerUser - stored);
    const id = `file_${randomBytes(8).toString('hex')}`;
    const part = join(this.opts.dir, `${id}.part`);
    const out = createWriteStream(part, { mode: 0o600 });
    let sizeBytes = 0;
    try {
      for await (const chunk of source) {
        sizeBytes += chunk.length;
        if (sizeBytes > room) {
          throw new RoostError(
            'UPLOAD_TOO_LARGE',
            room < this.opts.maxUploadBytes
              ? `you have ${stored} bytes of uploads stored; ${this.opts.maxStoredBytesPerUser} is the most (files.maxStoredBytesPerUser): wait for old ones to expire`
              : `the file is larger than ${this.opts.maxUploadBytes} bytes, the most this daemon takes (files.maxUploadBytes)`,
          );
        }
        if (!out.write(chunk)) await once(out, 'drain');
      }
      out.end();
      await once(out, 'close');
    } catch (error) {
      out.destroy();
      await rm(part, { force: true });
      throw error;
    }
    const now = this.opts.now();
    const meta: StoredMeta = {
      id,
      ownerId,
      name,
      sizeBytes,
      createdAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + this.opts.retentionSec * 1000).toISOString(),
    };
    await rename(part, join(this.opts.dir, id));
    await writeFile(join(this.opts.dir, `${id}.json`), JSON.stringify(meta), { mode: 0o600 });
    return recordOf(meta);
  }

  async get(ownerId: string, id: string): Promise<UploadedFileRecord> {
    const meta = /^file_[0-9a-f]{16}$/.test(id) ? await this.read(id) : undefined;
    if (!meta || meta.ownerId !== ownerId || new Date(meta.expiresAt) <= this.opts.now()) {
      throw new RoostError('FILE_NOT_FOUND', `no uploaded file ${id}`);
    }
    return recordOf(meta);
  }

  content(file: UploadedFileRecord): AsyncIterable<Uint8Array> {
    return createReadStream(join(this.opts.dir, file.id));
  }

  private async read(id: string): Promise<StoredMeta | undefined> {
    try {
      return JSON.parse(await readFile(join(this.opts.dir, `${id}.json`), 'utf8')) as StoredMeta;
    } catch {
      return undefined;
    }
  }

  private async all(): Promise<StoredMeta[]> {
    const names = (await readdir(this.opts.dir)).filter((name) => name.endsWith('.json'));
    const metas = await Promise.all(names.map((name) => this.read(name.slice(0, -'.json'.length))));
    return metas.filter((meta): meta is StoredMeta => meta !== undefined);
  }

  /** Removes expired files (and .part files a crash left). */
  private async sweep(): Promise<void> {
    const now = this.opts.now();
    for (const meta of await this.all()) {
      if (new Date(meta.expiresAt) > now) continue;
      await rm(join(this.opts.dir, meta.id), { force: true });
      await rm(join(this.opts.dir, `${meta.id}.json`), { force: true });
      this.opts.logger.info({ fileId: meta.id }, 'uploaded file expired');
    }
  }
}

function recordOf(meta: StoredMeta): UploadedFileRecord {
  return { ...meta, createdAt: new Date(meta.createdAt), expiresAt: new Date(meta.expiresAt) };
}
