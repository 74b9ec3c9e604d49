// What the CLI takes from a server before it acts on it. Anything listening on the API URL may
// answer (a stale config, a port taken by another local user's process): names and addresses
// it sends go into ssh's argv and into ~/.ssh/config text, and /healthz names a file that root
// would read and send back as a bearer token. So each value is checked against what a real
// roostd can send, and the admin token file against how roostd writes it.
import { constants } from 'node:fs';
import { lstat, open, stat } from 'node:fs/promises';
import { isAbsolute, join, normalize } from 'node:path';
import type { Health } from '@roost/contract';
import { sandboxNamePattern, unixUserPattern } from '@roost/contract/names';
import { UsageError } from './output.js';

/** The server sent something a real roostd never sends; the CLI refuses to use it. */
export class UntrustedServerError extends Error {}

/** Sandbox ids as core makes them. */
const sandboxIdPattern = /^sb_[a-z0-9]{1,64}$/;
const ipv4Pattern = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const ipv6Pattern = /^(?=.*:)[0-9a-fA-F:.]{2,45}$/;
const dnsNamePattern = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
/** A public host key as the gateway reports it: "TYPE BASE64". */
const hostKeyPattern = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]{16,8192}={0,3}$/;
/** Tokens as roostd makes them ("roost_" and 32 random bytes, base64url). */
const tokenPattern = /^roost_[A-Za-z0-9_-]{20,200}$/;

function untrusted(apiUrl: string, what: string, value: unknown): UntrustedServerError {
  return new UntrustedServerError(
    `the server at ${apiUrl} sent ${what} ${JSON.stringify(value)?.slice(0, 80)}, which no roostd sends: refusing to use it (is ROOST_API_URL, or the URL you logged in to, your roostd?)`,
  );
}

export function checkedSandboxName(apiUrl: string, name: unknown): string {
  if (typeof name !== 'string' || !sandboxNamePattern.test(name)) throw untrusted(apiUrl, 'a sandbox name', name);
  return name;
}

/** A reference the user typed (name or id); checked so it cannot become an ssh option. */
export function checkedSandboxRef(ref: string): string {
  if (!sandboxNamePattern.test(ref) && !sandboxIdPattern.test(ref)) {
    throw new UsageError(`"${ref}" is not a sandbox name (lowercase letters, digits and "-") or id (sb_…)`);
  }
  return ref;
}

export function checkedUnixUser(user: string): string {
  if (!unixUserPattern.test(user)) throw new UsageError(`"${user}" is not a user name (letters, digits, "_", ".", "-") or uid`);
  return user;
}

/** A host name or IP address, with nothing ssh could read as an option or a second line. */
export function isHostName(host: string): boolean {
  return ipv4Pattern.test(host) || ipv6Pattern.test(host) || dnsNamePattern.test(host);
}

export function checkedEndpoint(apiUrl: string, host: unknown, port: unknown): { host: string; port: number } {
  if (typeof host !== 'string' || !isHostName(host)) throw untrusted(apiUrl, 'an SSH host', host);
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw untrusted(apiUrl, 'an SSH port', port);
  return { host, port };
}

export function checkedHostKeys(apiUrl: string, keys: unknown): string[] {
  if (!Array.isArray(keys) || keys.length === 0) throw untrusted(apiUrl, 'SSH host keys', keys);
  for (const key of keys) if (typeof key !== 'string' || !hostKeyPattern.test(key)) throw untrusted(apiUrl, 'an SSH host key', key);
  return keys as string[];
}

/** Whether a URL names this host by a loopback address (127.0.0.0/8, ::1, localhost). */
export function isLoopbackUrl(apiUrl: string): boolean {
  let hostname: string;
  try {
    hostname = new URL(apiUrl).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return false;
  }
  return hostname === 'localhost' || hostname === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

/**
 * The admin token of the roostd on this host, from the file its /healthz names. Read only for
 * a loopback URL, and only when the file is what roostd writes: `<data dir>/admin-token`, the
 * data dir an absolute path to a root-owned directory nobody else may write, the file a
 * regular root-owned 0600 file with one link (not a symlink, checked on the opened file
 * itself), holding a Roost token. Anything else is refused before a byte is sent anywhere:
 * a hostile local server must not get root to read, say, /root/.ssh/id_ed25519 and send it.
 */
export async function adminTokenFromDaemonHost(apiUrl: string, health: () => Promise<Health>): Promise<string> {
  if (!isLoopbackUrl(apiUrl)) {
    throw new UsageError(`roostd at ${apiUrl} is not on this host (not a loopback URL): pass --token with the admin token from that host (its data dir's admin-token file, /var/lib/roost/admin-token by default)`);
  }
  const { adminTokenFile: file, dataDir } = await health();
  if (!file || !dataDir) {
    throw new UsageError(`roostd at ${apiUrl} did not say where its admin token is (a roostd on another host?): pass --token`);
  }
  const refuse = (why: string) =>
    new UntrustedServerError(`will not read the admin token file ${JSON.stringify(file).slice(0, 200)} named by ${apiUrl}: ${why}. Pass --token, or check that ${apiUrl} is your roostd`);
  if (typeof dataDir !== 'string' || !isAbsolute(dataDir) || normalize(dataDir) !== dataDir) throw refuse('the data dir it names is not an absolute, normalized path');
  if (file !== join(dataDir, 'admin-token')) throw refuse(`it is not ${join(dataDir, 'admin-token')}, where roostd writes it`);
  const cannotRead = (error: NodeJS.ErrnoException) =>
    new UsageError(`cannot read the admin token at ${file} (${error.code}): run as root on the daemon host, or pass --token`);
  const dir = await stat(dataDir).catch((error: NodeJS.ErrnoException) => {
    throw cannotRead(error);
  });
  if (!dir.isDirectory() || dir.uid !== 0 || (dir.mode & 0o022) !== 0) throw refuse('its data dir is not a directory owned by root that only root may write');
  const link = await lstat(file).catch((error: NodeJS.ErrnoException) => {
    throw cannotRead(error);
  });
  if (link.isSymbolicLink()) throw refuse('it is a symbolic link');
  // O_NOFOLLOW, and the checks on the opened file: nothing can be swapped in between.
  const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch((error: NodeJS.ErrnoException) => {
    throw error.code === 'ELOOP' ? refuse('it is a symbolic link') : cannotRead(error);
  });
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw refuse('it is not a regular file');
    if (info.uid !== 0) throw refuse(`it is owned by uid ${info.uid}, not root`);
    if ((info.mode & 0o777) !== 0o600) throw refuse(`its mode is ${(info.mode & 0o777).toString(8).padStart(4, '0')}, not 0600`);
    if (info.nlink !== 1) throw refuse('it has other hard links');
    if (info.size > 1024) throw refuse('it is too large to be a token');
    const token = (await handle.readFile('utf8')).trim();
    if (!tokenPattern.test(token)) throw refuse('it does not hold a Roost token');
    return token;
  } finally {
    await handle.close();
  }
}
