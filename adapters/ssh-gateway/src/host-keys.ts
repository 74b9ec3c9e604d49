// The gateway's host keys: made once with ssh-keygen, kept with the daemon's state, never
// replaced, so clients never see "REMOTE HOST IDENTIFICATION HAS CHANGED".
import { execFile } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from '@roost/core';

const run = promisify(execFile);

export interface HostKey {
  /** e.g. ssh-ed25519 */
  type: string;
  /** OpenSSH private key file contents (for ssh2). */
  privateKey: Buffer;
  /** "TYPE BASE64", as in known_hosts. */
  publicKey: string;
}

/** ed25519 for every modern client; RSA for the few that still lack it. */
const kinds = [
  { file: 'ssh_host_ed25519_key', args: ['-t', 'ed25519'] },
  { file: 'ssh_host_rsa_key', args: ['-t', 'rsa', '-b', '3072'] },
];

export async function loadOrCreateHostKeys(dir: string, logger: Logger): Promise<HostKey[]> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const keys: HostKey[] = [];
  for (const kind of kinds) {
    const file = path.join(dir, kind.file);
    if (!existsSync(file)) {
      // Written under a temporary name and renamed: a crash never leaves half a key.
      const temp = `${file}.new`;
      await fs.rm(temp, { force: true });
      await fs.rm(`${temp}.pub`, { force: true });
      await run('ssh-keygen', ['-q', ...kind.args, '-N', '', '-C', 'roost-gateway', '-f', temp]);
      await fs.rename(`${temp}.pub`, `${file}.pub`);
      await fs.rename(temp, file);
      logger.info({ file }, 'SSH host key made (kept for good: clients pin it)');
    }
    const [privateKey, publicLine] = await Promise.all([fs.readFile(file), fs.readFile(`${file}.pub`, 'utf8')]);
    const [type, base64] = publicLine.trim().split(/\s+/);
    if (!type || !base64) throw new Error(`${file}.pub is not a public key: remove both files to make a new pair`);
    keys.push({ type, privateKey, publicKey: `${type} ${base64}` });
  }
  return keys;
}
