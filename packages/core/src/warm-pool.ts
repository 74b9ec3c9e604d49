// Ready sandboxes kept per image, so that `run` and `new` pay for a claim instead of a create.
// Pure logic over the Runtime port: members are ordinary runtime sandboxes that no store record
// names yet; a claim takes one synchronously (never two claims for one member), the record is
// then written under the member's id, and the runtime gives it its real hostname, limits, env.
import type { Logger, Runtime, SandboxLimits, Store } from './ports.js';

export interface WarmPoolOpts {
  runtime: Runtime;
  /** Members hold a host id range from their creation on; a claim keeps it. */
  idRanges: Pick<Store, 'allocateIdRange' | 'releaseIdRange'>;
  logger: Logger;
  newId(prefix: string): string;
  /** How many ready sandboxes to keep per image. */
  sizes: Record<string, number>;
  /** The limits members are made with (the daemon's defaults); a claim may change them. */
  limits: SandboxLimits;
}

export interface PoolStats {
  image: string;
  ready: number;
  target: number;
}

/** Hostname of a member until it is claimed. */
const memberHostname = 'roost-pool';
/** After this many creates in a row fail, an image's refill pauses for a while. */
const maxFailuresInARow = 3;
const pauseAfterFailuresMs = 30_000;

export class WarmPool {
  private readonly ready = new Map<string, string[]>();
  private readonly filling = new Map<string, Promise<void>>();
  private readonly failures = new Map<string, number>();
  /** Ends a refill's pause early when the pool closes. */
  private readonly pauses = new Set<() => void>();
  /** Members being created: held by the runtime already, not ready yet. */
  private readonly making = new Set<string>();
  private closed = false;

  constructor(private readonly opts: WarmPoolOpts) {
    for (const image of Object.keys(opts.sizes)) this.ready.set(image, []);
  }

  /** Starts filling every image's pool in the background. */
  start(): void {
    for (const image of this.ready.keys()) this.refill(image);
  }

  /** A ready member of the image's pool, now the caller's alone; undefined when there is none. */
  claim(image: string): string | undefined {
    const members = this.ready.get(image);
    const id = members?.shift();
    if (id) this.refill(image);
    return id;
  }

  /** Gives back a member the caller claimed but could not use (it is still untouched). */
  giveBack(image: string, id: string): void {
    const members = this.ready.get(image);
    // Full again when a refill finished meanwhile: then the spare one goes.
    if (!members || this.closed || members.length >= (this.opts.sizes[image] ?? 0)) {
      void this.destroy(id);
      return;
    }
    members.unshift(id);
  }

  /** Ids of members not yet claimed (they have no store record on purpose). */
  members(): string[] {
    return [...this.ready.values()].flat();
  }

  /** Every id the pool holds in the runtime: ready members and those still being created
   *  (whose bundles already exist), so the doctor does not take them for leftovers. */
  held(): string[] {
    return [...this.members(), ...this.making];
  }

  stats(): PoolStats[] {
    return [...this.ready].map(([image, members]) => ({ image, ready: members.length, target: this.opts.sizes[image] ?? 0 }));
  }

  /** Resolves once every image's pool is full (or its refill gave up for now). */
  async filled(): Promise<void> {
    while (this.filling.size > 0) await Promise.all([...this.filling.values()]);
  }

  /** Stops refilling and destroys the members nobody claimed. */
  async close(): Promise<void> {
    this.closed = true;
    for (const wake of this.pauses) wake();
    await Promise.all([...this.filling.values()]);
    const members = this.members();
    for (const list of this.ready.values()) list.length = 0;
    await Promise.all(members.map((id) => this.destroy(id)));
  }

  /** One create at a time per image, until the pool is full; claims in the meantime go cold. */
  private refill(image: string): void {
    if (this.closed || this.filling.has(image)) return;
    const run = this.fill(image).finally(() => this.filling.delete(image));
    this.filling.set(image, run);
  }

  private async fill(image: string): Promise<void> {
    const { runtime, idRanges, logger, newId, limits, sizes } = this.opts;
    const members = this.ready.get(image)!;
    while (!this.closed && members.length < (sizes[image] ?? 0)) {
      const id = newId('sb');
      const t0 = performance.now();
      this.making.add(id);
      try {
        const idRange = await idRanges.allocateIdRange(id);
        await runtime.create({ id, hostname: memberHostname, image, limits, network: 'none', env: {}, idRange });
      } catch (error) {
        this.making.delete(id);
        // The runtime rolled its create back: nothing on the host uses the range.
        await idRanges.releaseIdRange(id).catch((release: unknown) => logger.error({ sandboxId: id, err: String(release) }, 'warm pool: id range release failed'));
        const failures = (this.failures.get(image) ?? 0) + 1;
        this.failures.set(image, failures);
        logger.error({ image, err: (error as Error).message, failures }, 'warm pool: create failed');
        if (failures >= maxFailuresInARow) {
          logger.warn({ image, pauseMs: pauseAfterFailuresMs }, 'warm pool: refill paused after repeated failures');
          await new Promise<void>((resolve) => {
            const wake = () => {
              clearTimeout(timer);
              this.pauses.delete(wake);
              resolve();
            };
            const timer = setTimeout(wake, pauseAfterFailuresMs);
            this.pauses.add(wake);
          });
          this.failures.set(image, 0);
        }
        continue;
      }
      this.failures.set(image, 0);
      // Closed meanwhile, or full again because a claim gave its member back.
      if (this.closed || members.length >= (sizes[image] ?? 0)) {
        await this.destroy(id);
        this.making.delete(id);
        return;
      }
      members.push(id);
      this.making.delete(id);
      logger.debug({ image, sandboxId: id, ms: +(performance.now() - t0).toFixed(1), ready: members.length }, 'warm pool: member ready');
    }
  }

  private async destroy(id: string): Promise<void> {
    await this.opts.runtime
      .destroy(id)
      .then(() => this.opts.idRanges.releaseIdRange(id))
      .catch((error: unknown) => this.opts.logger.error({ sandboxId: id, err: String(error) }, 'warm pool: destroy failed'));
  }
}
