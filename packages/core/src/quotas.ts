// Per-user quotas: what one user may hold at once, so that no user starves another. Every user
// has the daemon's defaults unless an admin set an override (the admin included: it may raise
// its own). The store checks a new sandbox against them in the same transaction that inserts
// it, so parallel creates cannot all pass on the same count.
import { RoostError } from './errors.js';
import type { QuotaChange, QuotaLimits, QuotaOverrides, Store, UserRecord, UserUsage } from './ports.js';

/** setTimeout holds at most a signed 32-bit count of milliseconds; a longer delay fires at once. */
export const maxTimerDelayMs = 2 ** 31 - 1;
/** The longest timeout a run or exec can have: the most a timer can wait, in whole seconds. */
export const maxTimeoutSec = Math.floor(maxTimerDelayMs / 1000);

/** What one sandbox asks of its owner's quota. */
export interface SandboxAsk {
  cpus: number;
  memoryMb: number;
  pids: number;
}

/** A user's quota as `roost quota` shows it. */
export interface QuotaView {
  user: Pick<UserRecord, 'id' | 'name'>;
  /** What applies: the override where an admin set one, else the daemon's default. */
  limits: QuotaLimits;
  /** What an admin set for this user (absent keys follow the defaults). */
  overrides: QuotaOverrides;
  usage: UserUsage;
  /** Workspaces held and their limits; absent on a daemon without workspaces. */
  workspaces?: { count: number; diskBytes: number; maxCount: number; maxDiskBytes: number };
}

export interface QuotasDeps {
  store: Store;
  /** What every user gets unless an admin set an override. */
  defaults: QuotaLimits;
  now(): Date;
  /** The workspace quota (config `workspaces.perUser`, `diskBytesPerUser`), shown with the rest. */
  workspaces?: { workspaces: number; diskBytes: number };
}

export class Quotas {
  constructor(private readonly deps: QuotasDeps) {}

  async limitsOf(userId: string): Promise<QuotaLimits> {
    const overrides = await this.deps.store.getQuotaOverrides(userId);
    return { ...this.deps.defaults, ...overrides };
  }

  async view(user: UserRecord): Promise<QuotaView> {
    const { store, defaults } = this.deps;
    const [overrides, usage] = await Promise.all([store.getQuotaOverrides(user.id), store.usageOf(user.id)]);
    const view: QuotaView = { user: { id: user.id, name: user.name }, limits: { ...defaults, ...overrides }, overrides, usage };
    const quota = this.deps.workspaces;
    if (quota) {
      const held = await store.listWorkspaces(user.id);
      view.workspaces = {
        count: held.length,
        diskBytes: held.reduce((sum, ws) => sum + (ws.diskBytes ?? 0), 0),
        maxCount: quota.workspaces,
        maxDiskBytes: quota.diskBytes,
      };
    }
    return view;
  }

  /** Another user's quota, by name or id: admins only (others learn nothing, not even whether the user exists). */
  async viewOf(caller: UserRecord, ref: string): Promise<QuotaView> {
    return this.view(await this.userForAdmin(caller, ref));
  }

  async change(caller: UserRecord, ref: string, change: QuotaChange): Promise<QuotaView> {
    const user = await this.userForAdmin(caller, ref);
    for (const [key, value] of Object.entries(change)) {
      if (key === 'timeoutSec' && typeof value === 'number') assertTimerCanHold(value, 'a timeout quota');
    }
    await this.deps.store.changeQuotaOverrides(user.id, change, this.deps.now());
    return this.view(user);
  }

  private async userForAdmin(caller: UserRecord, ref: string): Promise<UserRecord> {
    if (!caller.isAdmin) throw new RoostError('FORBIDDEN', "only an admin can see or change another user's quota; `roost quota` shows yours");
    const { store } = this.deps;
    const user = (await store.getUserByName(ref)) ?? (await store.getUser(ref));
    if (!user) throw new RoostError('ROOST_USER_NOT_FOUND', `no Roost user named or with id "${ref}"`);
    return user;
  }
}

/**
 * Refuses a new sandbox that would take its owner past a limit. Called by the store inside the
 * transaction that inserts the sandbox, with the owner's live use at that moment.
 */
export function admitSandbox(limits: QuotaLimits, usage: UserUsage, ask: SandboxAsk): void {
  const live = `${usage.sandboxes} live sandbox${usage.sandboxes === 1 ? '' : 'es'}`;
  const over: string[] = [];
  if (usage.sandboxes + 1 > limits.sandboxes) {
    over.push(`sandboxes: ${usage.sandboxes} of ${limits.sandboxes} live sandboxes in use; this would be one more`);
  }
  // CPUs are fractional: sums like 0.1 + 0.2 must not count as over 0.3.
  if (usage.cpus + ask.cpus > limits.cpus + 1e-9) {
    over.push(`cpus: ${formatNumber(usage.cpus)} of ${formatNumber(limits.cpus)} CPUs in use by ${live}; this sandbox asks ${formatNumber(ask.cpus)}`);
  }
  if (usage.memoryMb + ask.memoryMb > limits.memoryMb) {
    over.push(`memory: ${usage.memoryMb} MB of ${limits.memoryMb} MB in use by ${live}; this sandbox asks ${ask.memoryMb} MB`);
  }
  if (usage.pids + ask.pids > limits.pids) {
    over.push(`pids: ${usage.pids} of ${limits.pids} processes in use by ${live}; this sandbox asks ${ask.pids}`);
  }
  if (over.length > 0) throw new RoostError('QUOTA_EXCEEDED', `over your quota: ${over.join('; ')}`);
}

/** Refuses a run or exec that asks a longer timeout than its owner may, or than a timer can hold. */
export function admitTimeout(limits: QuotaLimits, timeoutSec: number | undefined, what: 'run' | 'exec'): void {
  if (timeoutSec === undefined) return;
  assertTimerCanHold(timeoutSec, `a timeout`);
  if (timeoutSec > limits.timeoutSec) {
    throw new RoostError('QUOTA_EXCEEDED', `over your quota: timeout: this ${what} asks ${formatNumber(timeoutSec)} s; the longest you may ask is ${limits.timeoutSec} s`);
  }
}

/** A delay longer than a timer holds would fire at once: refuse it instead. */
export function assertTimerCanHold(seconds: number, what: string): void {
  if (!(seconds * 1000 <= maxTimerDelayMs)) {
    throw new RoostError('LIMIT_TOO_HIGH', `${what} of ${seconds} s is longer than a timer can wait (at most ${maxTimeoutSec} s, about 24.8 days)`);
  }
}

function formatNumber(value: number): string {
  return Number.isInteger(value) ? String(value) : String(+value.toFixed(3));
}
