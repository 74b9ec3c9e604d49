// At most `size` tasks at once; `add` waits for a free slot, so a producer that reads data for
// each task holds at most `size` + 1 pieces of it (the bound on the engine's memory).
export class TaskPool {
  private running = 0;
  private readonly slotWaiters: (() => void)[] = [];
  private readonly idleWaiters: (() => void)[] = [];
  private firstError: unknown = null;

  constructor(private readonly size: number) {}

  get failed(): unknown {
    return this.firstError;
  }

  /** Starts `task` once a slot is free; resolves when it has started. A task's failure is kept
   *  and thrown by `drain` (and by the next `add`, so a producer stops early). */
  async add(task: () => Promise<void>): Promise<void> {
    if (this.firstError) throw this.firstError;
    while (this.running >= this.size) await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    if (this.firstError) throw this.firstError;
    this.running++;
    void task()
      .catch((error: unknown) => {
        this.firstError ??= error;
      })
      .finally(() => {
        this.running--;
        this.slotWaiters.shift()?.();
        if (this.running === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
      });
  }

  /** Waits for every started task; throws the first failure. */
  async drain(): Promise<void> {
    while (this.running > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    if (this.firstError) throw this.firstError;
  }

  /** Waits for every started task, ignoring failures (cleanup after an error). */
  async settle(): Promise<void> {
    while (this.running > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }
}
