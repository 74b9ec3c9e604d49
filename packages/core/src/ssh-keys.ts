// SSH public keys as users paste them (one authorized_keys line), checked and fingerprinted.
import { RoostError } from './errors.js';

/** Key types the gateway accepts (what OpenSSH 9 offers by default, plus RSA). */
export const sshKeyTypes = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
  'ssh-rsa',
] as const;

export interface ParsedSshKey {
  type: string;
  /** The key blob, base64, as in the line. */
  publicKey: string;
  blob: Uint8Array;
  comment: string;
}

/**
 * Parses "TYPE BASE64 [COMMENT]" (options before the type, as authorized_keys allows, are
 * refused: they would mean something the gateway does not do). The blob must name the same
 * type as the line, so a truncated or mixed-up paste is caught here, not at login.
 */
export function parseSshPublicKey(line: string): ParsedSshKey {
  const text = line.trim();
  if (/PRIVATE KEY/.test(text)) {
    throw new RoostError('INVALID_SSH_KEY', 'that is a private key: give the public one (the .pub file)');
  }
  const [type, base64, ...rest] = text.split(/\s+/);
  if (!type || !base64 || !(sshKeyTypes as readonly string[]).includes(type)) {
    throw new RoostError('INVALID_SSH_KEY', `not an SSH public key line: it should start with one of ${sshKeyTypes.join(', ')}`);
  }
  let blob: Uint8Array;
  try {
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(base64)) throw new Error('not base64');
    blob = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  } catch {
    throw new RoostError('INVALID_SSH_KEY', 'the key data (second field) is not valid base64');
  }
  if (blobType(blob) !== type) {
    throw new RoostError('INVALID_SSH_KEY', `the key data is not a ${type} key (truncated or mixed up?)`);
  }
  return { type, publicKey: base64, blob, comment: rest.join(' ') };
}

/** The first string of an SSH wire-format key blob: its type. */
function blobType(blob: Uint8Array): string | undefined {
  if (blob.length < 4) return undefined;
  const length = ((blob[0]! << 24) | (blob[1]! << 16) | (blob[2]! << 8) | blob[3]!) >>> 0;
  if (length > blob.length - 4 || length > 64) return undefined;
  return String.fromCharCode(...blob.subarray(4, 4 + length));
}

/** "SHA256:" + unpadded base64 of the blob's sha256, as `ssh-keygen -l` prints it. */
export function sshFingerprint(sha256Base64: (data: Uint8Array) => string, blob: Uint8Array): string {
  return `SHA256:${sha256Base64(blob).replace(/=+$/, '')}`;
}
