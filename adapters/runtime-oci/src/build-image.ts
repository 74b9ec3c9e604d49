#!/usr/bin/env node
// Builds (or confirms) the default image: `node adapters/runtime-oci/dist/build-image.js [--cache-dir D]`.
import type { Logger } from '@roost/core';
import { createImageStore, DEFAULT_IMAGE_CACHE } from './images.js';

const argv = process.argv.slice(2);
const i = argv.indexOf('--cache-dir');
const cacheDir = i >= 0 ? argv[i + 1] : DEFAULT_IMAGE_CACHE;
if (i >= 0 && !cacheDir) {
  process.stderr.write('usage: build-image [--cache-dir DIR]\n');
  process.exit(2);
}

const quiet: Logger = { info() {}, debug() {}, warn: (f, m) => process.stderr.write(`${m} ${JSON.stringify(f)}\n`), error: (f, m) => process.stderr.write(`${m} ${JSON.stringify(f)}\n`) };
const tty = process.stderr.isTTY;
const t0 = Date.now();
let phase = 'starting';
// mmdebstrap's "I: ..." lines name its phases; other lines (warnings, our own steps) are shown as they are.
const onProgress = (line: string) => {
  const m = /^I: (.*?)(\.\.\.)?$/.exec(line);
  phase = m ? m[1] : line;
  if (tty) draw();
  else process.stderr.write(`[image] ${line}\n`);
};
const draw = () => process.stderr.write(`\r\x1b[2K[image] ${phase}… ${Math.round((Date.now() - t0) / 1000)} s`);
const timer = tty ? setInterval(draw, 1000) : undefined;

try {
  const store = createImageStore({ cacheDir, logger: quiet });
  const r = await store.ensureDefaultImage({ onProgress });
  if (timer) clearInterval(timer);
  if (tty && r.built) process.stderr.write('\r\x1b[2K');
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  process.stdout.write(`default image ready: ${r.rootfs} (${r.built ? `built in ${secs} s` : 'cached'})\n`);
} catch (e) {
  if (timer) clearInterval(timer);
  if (tty) process.stderr.write('\n');
  process.stderr.write(`image build failed: ${(e as Error).message}\n`);
  process.exit(1);
}
