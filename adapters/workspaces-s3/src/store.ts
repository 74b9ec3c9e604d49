// The object store under the sync engine: one bucket (and key prefix) of any S3 (AWS, MinIO, R2,
// Ceph, s3rver), reached with @aws-sdk/client-s3. Every failure leaves here as a RoostError with
// a stable code; messages name the endpoint and bucket, never the credentials.
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
  DeleteObjectCommand,
} from '@aws-sdk/client-s3';
import { RoostError } from '@roost/core';
import type { Readable } from 'node:stream';

export interface S3StoreConfig {
  /** Endpoint URL (`ROOST_S3_URL`); absent: AWS's own endpoint for the region. */
  url: string | null;
  bucket: string;
  region: string;
  /** Absent: the SDK's default chain (env, profile, instance role). */
  accessKeyId: string | null;
  secretAccessKey: string | null;
  /** `https://host/bucket/key` instead of `https://bucket.host/key` (MinIO, Ceph, s3rver). */
  forcePathStyle: boolean;
  /** Key prefix inside the bucket ('' or ending in '/'), so several Roost installs can share one. */
  prefix: string;
  /** Tries per request (the SDK's standard retry mode: exponential backoff with jitter). */
  maxAttempts: number;
}

/**
 * The store config from the environment (read once at the edge: roostd's config and the
 * benchmark call this). Null when `ROOST_S3_URL` and `ROOST_S3_BUCKET` are both unset.
 */
export function s3ConfigFromEnv(env: NodeJS.ProcessEnv): S3StoreConfig | null {
  const url = env.ROOST_S3_URL?.trim() || null;
  const bucket = env.ROOST_S3_BUCKET?.trim() || null;
  if (!url && !bucket) return null;
  if (!bucket) throw new RoostError('VALIDATION_FAILED', 'ROOST_S3_URL is set but ROOST_S3_BUCKET is not: name the bucket workspaces go to');
  if (url && !/^https?:\/\//.test(url)) throw new RoostError('VALIDATION_FAILED', `ROOST_S3_URL must start with http:// or https:// (got ${url})`);
  const pathStyle = env.ROOST_S3_PATH_STYLE?.trim().toLowerCase();
  let prefix = env.ROOST_S3_PREFIX?.trim().replace(/^\/+/, '') ?? '';
  if (prefix && !prefix.endsWith('/')) prefix += '/';
  return {
    url,
    bucket,
    region: env.AWS_REGION?.trim() || env.AWS_DEFAULT_REGION?.trim() || 'us-east-1',
    accessKeyId: env.AWS_ACCESS_KEY_ID || null,
    secretAccessKey: env.AWS_SECRET_ACCESS_KEY || null,
    // Path style by default for a custom endpoint: MinIO, Ceph and s3rver need it; AWS does not.
    forcePathStyle: pathStyle ? ['1', 'true', 'yes'].includes(pathStyle) : url !== null,
    prefix,
    maxAttempts: Number(env.ROOST_S3_MAX_ATTEMPTS ?? 5),
  };
}

/** What may be logged about a store: never the keys. */
export function describeStore(config: S3StoreConfig): string {
  return `s3 bucket "${config.bucket}"${config.prefix ? ` prefix "${config.prefix}"` : ''} at ${config.url ?? `AWS ${config.region}`}`;
}

export interface ObjectInfo {
  key: string;
  size: number;
  lastModified: Date;
}

const networkCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN']);

export function isNotFound(error: unknown): boolean {
  const e = error as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
}

export class ObjectStore {
  readonly client: S3Client;
  readonly prefix: string;

  constructor(readonly config: S3StoreConfig) {
    const clientConfig: S3ClientConfig = {
      region: config.region,
      forcePathStyle: config.forcePathStyle,
      maxAttempts: config.maxAttempts,
      retryMode: 'standard',
      // The SDK's default since 2025 adds CRC32 trailers (aws-chunked uploads) that s3rver and
      // older MinIO/Ceph reject; our chunks carry their own sha256 in their key and are verified.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    };
    if (config.url) clientConfig.endpoint = config.url;
    if (config.accessKeyId && config.secretAccessKey) {
      clientConfig.credentials = { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey };
    }
    this.client = new S3Client(clientConfig);
    this.prefix = config.prefix;
  }

  /** Turns an SDK failure into a RoostError saying what to do; 404s are the caller's business. */
  fail(error: unknown, doing: string): never {
    if (error instanceof RoostError) throw error;
    const e = error as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number; attempts?: number } };
    const code = e.code ?? (e as { errno?: string }).errno;
    const where = describeStore(this.config);
    if ((code && networkCodes.has(String(code))) || e.name === 'TimeoutError' || /ECONNREFUSED|socket hang up|EHOSTUNREACH/.test(e.message ?? '')) {
      throw new RoostError(
        'WORKSPACE_SYNC_FAILED',
        `the workspace store (${where}) is unreachable while ${doing}: ${code ?? e.name} after ${e.$metadata?.attempts ?? this.config.maxAttempts} tries`,
        { reason: String(code ?? e.name) },
      );
    }
    const status = e.$metadata?.httpStatusCode;
    throw new RoostError(
      'WORKSPACE_SYNC_FAILED',
      `the workspace store (${where}) refused ${doing}: ${e.name ?? 'error'}${status ? ` (HTTP ${status})` : ''}${e.message && e.message !== e.name ? `: ${e.message}` : ''}`,
      { reason: e.name ?? 'error', status },
    );
  }

  async put(key: string, body: Buffer | Readable, opts: { contentLength?: number; metadata?: Record<string, string>; contentType?: string } = {}): Promise<void> {
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.config.bucket,
          Key: this.prefix + key,
          Body: body,
          ContentLength: opts.contentLength ?? (Buffer.isBuffer(body) ? body.length : undefined),
          Metadata: opts.metadata,
          ContentType: opts.contentType,
        }),
      );
    } catch (error) {
      this.fail(error, `writing ${key}`);
    }
  }

  /** The object's body as a stream, or null when it does not exist. */
  async getStream(key: string): Promise<{ body: Readable; metadata: Record<string, string>; size: number } | null> {
    try {
      const answer = await this.client.send(new GetObjectCommand({ Bucket: this.config.bucket, Key: this.prefix + key }));
      return { body: answer.Body as Readable, metadata: answer.Metadata ?? {}, size: answer.ContentLength ?? 0 };
    } catch (error) {
      if (isNotFound(error)) return null;
      this.fail(error, `reading ${key}`);
    }
  }

  /** The whole object (callers only ask for bounded ones: chunks, pointers), or null. */
  async get(key: string, maxBytes: number): Promise<Buffer | null> {
    const found = await this.getStream(key);
    if (!found) return null;
    const parts: Buffer[] = [];
    let length = 0;
    try {
      for await (const part of found.body) {
        length += (part as Buffer).length;
        if (length > maxBytes) {
          found.body.destroy();
          throw new RoostError('WORKSPACE_UNREADABLE', `${key} is larger than it can be (${maxBytes} bytes): it is not what Roost wrote`);
        }
        parts.push(part as Buffer);
      }
    } catch (error) {
      this.fail(error, `reading ${key}`);
    }
    return Buffer.concat(parts, length);
  }

  /** Reads the object into `buffer` (restore reuses a few buffers instead of allocating one per
   *  chunk: measured, allocation and GC were a tenth of a restore's CPU). Returns its length, or
   *  null when it does not exist; an object larger than the buffer is not what Roost wrote. */
  async getInto(key: string, buffer: Buffer): Promise<number | null> {
    const found = await this.getStream(key);
    if (!found) return null;
    let length = 0;
    try {
      for await (const part of found.body) {
        const piece = part as Buffer;
        if (length + piece.length > buffer.length) {
          found.body.destroy();
          throw new RoostError('WORKSPACE_UNREADABLE', `${key} is larger than it can be (${buffer.length} bytes): it is not what Roost wrote`);
        }
        piece.copy(buffer, length);
        length += piece.length;
      }
    } catch (error) {
      if (error instanceof RoostError) return buffer.length + 1;
      this.fail(error, `reading ${key}`);
    }
    return length;
  }

  async head(key: string): Promise<{ size: number; lastModified: Date; metadata: Record<string, string> } | null> {
    try {
      const answer = await this.client.send(new HeadObjectCommand({ Bucket: this.config.bucket, Key: this.prefix + key }));
      return { size: answer.ContentLength ?? 0, lastModified: answer.LastModified ?? new Date(0), metadata: answer.Metadata ?? {} };
    } catch (error) {
      if (isNotFound(error)) return null;
      this.fail(error, `checking ${key}`);
    }
  }

  /** Every key under `under` (relative to the prefix), page by page: memory stays one page. */
  async *list(under: string): AsyncGenerator<ObjectInfo> {
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.config.bucket, Prefix: this.prefix + under, ContinuationToken: token }),
        );
      } catch (error) {
        this.fail(error, `listing ${under}`);
      }
      for (const object of page.Contents ?? []) {
        if (!object.Key) continue;
        yield { key: object.Key.slice(this.prefix.length), size: object.Size ?? 0, lastModified: object.LastModified ?? new Date(0) };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.config.bucket, Key: this.prefix + key }));
    } catch (error) {
      if (isNotFound(error)) return;
      this.fail(error, `deleting ${key}`);
    }
  }

  /** Deletes up to 1,000 keys in one request. */
  async deleteMany(keys: string[]): Promise<void> {
    if (keys.length === 0) return;
    try {
      const answer = await this.client.send(
        new DeleteObjectsCommand({
          Bucket: this.config.bucket,
          Delete: { Objects: keys.map((key) => ({ Key: this.prefix + key })), Quiet: true },
        }),
      );
      const failed = answer.Errors?.filter((e) => e.Code !== 'NoSuchKey') ?? [];
      if (failed.length > 0) throw new RoostError('WORKSPACE_SYNC_FAILED', `the store refused to delete ${failed.length} objects: ${failed[0]?.Code} ${failed[0]?.Message ?? ''}`);
    } catch (error) {
      this.fail(error, `deleting ${keys.length} objects`);
    }
  }

  close(): void {
    this.client.destroy();
  }
}
