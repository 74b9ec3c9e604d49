// The workspace store's settings come from ROOST_S3_* and AWS_* at the edge (loadConfig).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeStore } from '@roost/workspaces-s3';
import { loadConfig } from './config.js';

const noFile = { ROOST_CONFIG_FILE: undefined };

describe('workspace store config', () => {
  it('is off without ROOST_S3_URL and ROOST_S3_BUCKET', () => {
    assert.equal(loadConfig({ ...noFile }).workspaceStore, null);
  });

  it('reads the S3 endpoint, bucket, credentials, path style and prefix; the description never shows the keys', () => {
    const config = loadConfig({
      ...noFile,
      ROOST_S3_URL: 'http://minio.internal:9000',
      ROOST_S3_BUCKET: 'roost-workspaces',
      ROOST_S3_PREFIX: 'host-a',
      AWS_ACCESS_KEY_ID: 'AKIAEXAMPLEKEY',
      AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI-secret',
      AWS_REGION: 'eu-west-1',
    });
    const store = config.workspaceStore!;
    assert.equal(store.url, 'http://minio.internal:9000');
    assert.equal(store.bucket, 'roost-workspaces');
    assert.equal(store.prefix, 'host-a/');
    assert.equal(store.region, 'eu-west-1');
    assert.equal(store.forcePathStyle, true, 'path style by default for a custom endpoint');
    assert.equal(store.secretAccessKey, 'wJalrXUtnFEMI-secret');
    const described = describeStore(store);
    assert.match(described, /roost-workspaces/);
    assert.ok(!described.includes('secret') && !described.includes('AKIA'), described);

    const virtualHosted = loadConfig({ ...noFile, ROOST_S3_URL: 'https://s3.example.com', ROOST_S3_BUCKET: 'b', ROOST_S3_PATH_STYLE: 'false' });
    assert.equal(virtualHosted.workspaceStore!.forcePathStyle, false);
  });

  it('refuses a URL without a bucket', () => {
    assert.throws(() => loadConfig({ ...noFile, ROOST_S3_URL: 'http://127.0.0.1:9000' }), /ROOST_S3_BUCKET/);
  });
});
