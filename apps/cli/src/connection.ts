// How a command reaches the daemon: the SDK on node:http with the saved credentials.
import type { Command } from 'commander';
import { Roost, type RoostOpts } from '@roost/sdk';
import { nodeHttpFetch } from '@roost/sdk/node';
import { loadCredentials, type CliEnv } from './credentials.js';
import { UsageError } from './output.js';

export interface JsonOpt {
  json?: boolean;
}

/** The SDK client, on node:http: the global fetch costs ~100 ms at a CLI's first request. */
export function connect(opts: RoostOpts): Roost {
  return new Roost({ fetch: nodeHttpFetch, ...opts });
}

export async function client(cli: CliEnv): Promise<Roost> {
  const credentials = await loadCredentials(cli);
  if (!credentials.token) {
    throw new UsageError('you are not logged in: run `roost login` (on the daemon host it finds the admin token by itself)');
  }
  return connect(credentials);
}

export function withJson(command: Command): Command {
  return command.option('--json', 'print machine-readable JSON on stdout (nothing else goes to stdout)');
}
