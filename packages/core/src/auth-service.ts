// Users and bearer tokens. Tokens are random and high-entropy, so a plain sha256 is the right
// hash: it lets a token be found by its hash in one lookup, and a stolen database holds none.
import { RoostError } from './errors.js';
import type { Clock, Logger, SshKeyRecord, Store, UserRecord } from './ports.js';
import { parseSshPublicKey, sshFingerprint } from './ssh-keys.js';

export interface TokenCrypto {
  /** A new random token, e.g. "roost_…" with ≥ 256 bits of entropy. */
  newToken(): string;
  sha256Hex(value: string): string;
  sha256Base64(data: Uint8Array): string;
}

export interface AuthServiceDeps {
  store: Store;
  clock: Clock;
  logger: Logger;
  crypto: TokenCrypto;
  newId(prefix: string): string;
}

export const adminUserName = 'admin';

export class AuthService {
  constructor(private readonly deps: AuthServiceDeps) {}

  /** The user a bearer token belongs to; UNAUTHENTICATED for a missing or unknown token. */
  async authenticate(token: string | undefined): Promise<UserRecord> {
    const { store, crypto, clock } = this.deps;
    if (!token) throw new RoostError('UNAUTHENTICATED', 'this request needs a token (Authorization: Bearer <token>)');
    const record = await store.findTokenByHash(crypto.sha256Hex(token));
    const user = record && (await store.getUser(record.userId));
    if (!record || !user) throw new RoostError('UNAUTHENTICATED', 'the token is not valid (revoked, or from another daemon)');
    await store.touchToken(record.id, clock.now());
    return user;
  }

  /**
   * Creates the admin user and a token for it on the first start. Returns the token only when
   * it was just made: it is never readable again from the store.
   */
  async ensureAdmin(): Promise<{ user: UserRecord; newToken?: string }> {
    const existing = await this.deps.store.getUserByName(adminUserName);
    if (existing) return { user: existing };
    const user = await this.createUser(adminUserName, { isAdmin: true });
    const newToken = await this.createToken(user.id, 'admin token made on first start');
    this.deps.logger.info({ userId: user.id }, 'admin user created');
    return { user, newToken };
  }

  async createUser(name: string, opts: { isAdmin?: boolean } = {}): Promise<UserRecord> {
    const user: UserRecord = { id: this.deps.newId('usr'), name, isAdmin: opts.isAdmin ?? false, createdAt: this.deps.clock.now() };
    await this.deps.store.createUser(user);
    return user;
  }

  async createToken(userId: string, description: string): Promise<string> {
    const { store, crypto, clock, newId } = this.deps;
    const token = crypto.newToken();
    await store.createToken({
      id: newId('tok'),
      userId,
      tokenHash: crypto.sha256Hex(token),
      description,
      createdAt: clock.now(),
      lastUsedAt: null,
    });
    return token;
  }

  /**
   * Registers a public key for the SSH gateway; `name` defaults to the key's comment. A key this
   * user already has is no error: the existing record comes back with `alreadyRegistered`, so
   * `roost ssh-key add` can be run again. Another user's key is SSH_KEY_TAKEN, and the answer
   * names nobody: a public key is public, so whose it is must not be learnt from it.
   */
  async addSshKey(userId: string, publicKeyLine: string, name?: string): Promise<{ key: SshKeyRecord; alreadyRegistered: boolean }> {
    const { store, crypto, clock, newId, logger } = this.deps;
    const parsed = parseSshPublicKey(publicKeyLine);
    const fingerprint = sshFingerprint(crypto.sha256Base64, parsed.blob);
    const existing = async () => {
      const found = await store.getSshKeyByFingerprint(fingerprint);
      if (found && found.userId !== userId) throw new RoostError('SSH_KEY_TAKEN', `the key ${fingerprint} is registered to another user`);
      return found;
    };
    const mine = await existing();
    if (mine) return { key: mine, alreadyRegistered: true };
    const key: SshKeyRecord = {
      id: newId('key'),
      userId,
      name: name ?? (parsed.comment || parsed.type),
      type: parsed.type,
      publicKey: parsed.publicKey,
      fingerprint,
      createdAt: clock.now(),
      lastUsedAt: null,
    };
    try {
      await store.insertSshKey(key);
    } catch (error) {
      // Two adds of one key at once: the loser sees the winner's record, or whose it is not.
      const raced = error instanceof RoostError && error.code === 'SSH_KEY_TAKEN' ? await existing() : undefined;
      if (raced) return { key: raced, alreadyRegistered: true };
      throw error;
    }
    logger.info({ userId, keyId: key.id, fingerprint: key.fingerprint }, 'ssh key added');
    return { key, alreadyRegistered: false };
  }

  listSshKeys(userId: string): Promise<SshKeyRecord[]> {
    return this.deps.store.listSshKeys(userId);
  }

  /** By id, name or fingerprint; another user's key is not found. */
  async removeSshKey(userId: string, ref: string): Promise<void> {
    const keys = await this.deps.store.listSshKeys(userId);
    const matches = keys.filter((key) => key.id === ref || key.fingerprint === ref || key.name === ref);
    if (matches.length === 0) throw new RoostError('SSH_KEY_NOT_FOUND', `you have no SSH key with id, name or fingerprint "${ref}"`);
    if (matches.length > 1) {
      throw new RoostError('VALIDATION_FAILED', `${matches.length} of your keys are named "${ref}": remove one by its id or fingerprint`);
    }
    await this.deps.store.deleteSshKey(matches[0]!.id);
    this.deps.logger.info({ userId, keyId: matches[0]!.id }, 'ssh key removed');
  }

  /** The user a public key (its wire blob, as an SSH client offers it; the blob names its type) belongs to. */
  async userForSshKey(blob: Uint8Array): Promise<UserRecord | undefined> {
    const { store, crypto, clock } = this.deps;
    const key = await store.getSshKeyByFingerprint(sshFingerprint(crypto.sha256Base64, blob));
    if (!key) return undefined;
    await store.touchSshKey(key.id, clock.now());
    return store.getUser(key.userId);
  }
}
