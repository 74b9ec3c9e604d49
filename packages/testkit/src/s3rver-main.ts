// The s3rver process that startS3() runs: `node --openssl-legacy-provider s3rver-main.js <dir> <port> <bucket>`.
// Its own process so a test can kill it (an outage) while the test's process carries on; the
// legacy provider because s3rver's listing pages use an MD5 path that OpenSSL 3 refuses once a
// bucket holds more than 1,000 keys.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const S3rver = require('s3rver') as new (opts: Record<string, unknown>) => { run(): Promise<{ port: number }>; close(): Promise<void> };
const [directory, port, bucket] = process.argv.slice(2);
const server = new S3rver({
  address: '127.0.0.1',
  port: Number(port),
  directory,
  silent: true,
  // Path-style only: bucket.127.0.0.1 is no host name.
  vhostBuckets: false,
  configureBuckets: bucket ? [{ name: bucket }] : [],
});
const address = await server.run();
process.stdout.write(`listening ${address.port}\n`);
const stop = () => void server.close().finally(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
