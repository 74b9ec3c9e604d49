// Where the CLI keeps its API URL and token: ~/.roost/config.json (0600), overridden by
// ROOST_API_URL and ROOST_API_TOKEN. Read once at start-up.
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { UsageError } from './output.js';

export const defaultApiUrl = 'http://127.0.0.1:7070';

export interface Credentials {
  apiUrl: string;
  token?: string;
}

export interface CliEnv {
  /** The user's home (for ~/.ssh). */
  home: string;
  configFile: string;
  envApiUrl?: string;
  envToken?: string;
}

export function cliEnv(env: NodeJS.ProcessEnv): CliEnv {
  return {
    home: env.HOME || homedir(),
    configFile: join(env.HOME || homedir(), '.roost', 'config.json'),
    envApiUrl: env.ROOST_API_URL || undefined,
    envToken: env.ROOST_API_TOKEN || undefined,
  };
}

export async function loadCredentials(cli: CliEnv): Promise<Credentials> {
  const saved = await readSaved(cli.configFile);
  const apiUrl = cli.envApiUrl !== undefined ? normalizedApiUrl(cli.envApiUrl, 'ROOST_API_URL') : saved.apiUrl !== undefined ? normalizedApiUrl(saved.apiUrl, cli.configFile) : defaultApiUrl;
  return { apiUrl, token: cli.envToken ?? saved.token };
}

/**
 * The daemon's URL from what a user typed. Without a scheme (`127.0.0.1:7070`, `localhost:7070`)
 * it is http://, as curl assumes: roostd serves plain HTTP. Any other scheme, or something that
 * is no URL, is a usage error naming the right form.
 */
export function normalizedApiUrl(text: string, source: string): string {
  const trimmed = text.trim();
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) ? trimmed : `http://${trimmed}`;
  let url: URL | undefined;
  try {
    url = new URL(withScheme);
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || !url.hostname || url.username || url.password || url.search || url.hash) {
    throw new UsageError(`${source} "${text}" is not a daemon URL: give http://HOST:PORT (e.g. ${defaultApiUrl})`);
  }
  return `${url.origin}${url.pathname}`.replace(/\/+$/, '');
}

export async function saveCredentials(cli: CliEnv, credentials: Credentials): Promise<void> {
  const { sshIdentityFiles } = await readSaved(cli.configFile);
  await writeSaved(cli.configFile, { ...credentials, ...(sshIdentityFiles && { sshIdentityFiles }) });
}

/**
 * The private key `roost ssh-key add` registered from a file, per API URL: `roost ssh` and
 * `roost ssh-config` name it, so a key outside ssh's defaults and agent still opens sessions.
 */
export async function sshIdentityFile(cli: CliEnv, apiUrl: string): Promise<string | undefined> {
  const file = (await readSaved(cli.configFile)).sshIdentityFiles?.[apiUrl];
  return typeof file === 'string' ? file : undefined;
}

export async function rememberSshIdentityFile(cli: CliEnv, apiUrl: string, file: string): Promise<void> {
  const saved = await readSaved(cli.configFile);
  if (saved.sshIdentityFiles?.[apiUrl] === file) return;
  await writeSaved(cli.configFile, { ...saved, sshIdentityFiles: { ...saved.sshIdentityFiles, [apiUrl]: file } });
}

interface SavedConfig extends Partial<Credentials> {
  sshIdentityFiles?: Record<string, string>;
}

async function writeSaved(file: string, saved: SavedConfig): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  await writeFile(file, `${JSON.stringify(saved, null, 2)}\n`, { mode: 0o600 });
}

export async function forgetCredentials(cli: CliEnv): Promise<boolean> {
  const saved = await readSaved(cli.configFile);
  await rm(cli.configFile, { force: true });
  return saved.token !== undefined;
}

async function readSaved(file: string): Promise<SavedConfig> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as SavedConfig;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new Error(`cannot read ${file}: ${(error as Error).message} (fix or delete it, then \`roost login\`)`);
  }
}
