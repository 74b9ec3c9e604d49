// The CLI's version, from its package.json (one small read at start-up, no JSON import attribute).
import { readFileSync } from 'node:fs';

export const cliVersion = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
