// A tar stream from a sandbox as the response body, with backpressure: the next chunk is read
// from the sandbox's tar only once the socket took the one before. tar failing midway (after
// the 200 went out) destroys the connection, so the client sees a cut-off transfer, never an
// archive that looks whole.
import type { ServerResponse } from 'node:http';
import type { FastifyBaseLogger } from 'fastify';
import type { ArchiveStream } from '@roost/core';

export async function serveArchive(raw: ServerResponse, archive: ArchiveStream, log: FastifyBaseLogger): Promise<void> {
  let gone = false;
  raw.on('close', () => {
    if (raw.writableFinished) return;
    gone = true;
    try {
      archive.cancel();
    } catch (error) {
      log.warn({ err: error }, 'stopping tar after the client went away failed');
    }
  });
  raw.on('error', () => {
    gone = true;
  });
  raw.writeHead(200, { 'content-type': 'application/x-tar', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
  try {
    for await (const chunk of archive.chunks) {
      if (gone) break;
      if (!raw.write(chunk)) await drained(raw);
    }
    if (!gone) raw.end();
  } catch (error) {
    log.warn({ err: (error as Error).message }, 'copy out failed midway; the connection is cut');
    raw.destroy();
  }
}

function drained(raw: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      raw.off('drain', done);
      raw.off('close', done);
      resolve();
    };
    raw.on('drain', done);
    raw.on('close', done);
  });
}
