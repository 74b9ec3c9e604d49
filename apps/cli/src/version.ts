// The CLI's version (from its package.json: one small read at start-up), and `roost version`,
// which adds the daemon's.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { connect, withJson, type JsonOpt } from './connection.js';
import { loadCredentials, type CliEnv } from './credentials.js';
import { printJson, printLine } from './output.js';

export const cliVersion = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export function addVersionCommand(program: Command, cli: CliEnv): void {
  withJson(program.command('version').description("this CLI's version and the daemon's (--version: the CLI's alone)")).action(
    async (opts: JsonOpt) => {
      // /healthz needs no token: this works before `roost login`.
      const { apiUrl } = await loadCredentials(cli);
      const health = await connect({ apiUrl }).health();
      if (opts.json) printJson({ cli: cliVersion, daemon: { apiUrl, version: health.version, runtime: health.runtime } });
      else printLine(`roost  ${cliVersion}\nroostd ${health.version} at ${apiUrl} (${health.runtime})`);
    },
  );
}
