// Connections one client may hold on a port roostd serves: at most `maxPerSource` per source
// (sourceKey: an IPv4 address or an IPv6 /64) and `maxTotal` in all. The HTTP server counts its
// open connections with it, the SSH gateway its connections not logged in yet. Past a cap the
// caller closes the new connection at once.

export interface ConnectionCapsLimits {
  maxPerSource: number;
  maxTotal: number;
}

/** One admitted connection's place; release() when it no longer counts (idempotent). */
export interface Admission {
  release(): void;
}

export class ConnectionCaps {
  private readonly perSource = new Map<string, number>();
  private total = 0;

  constructor(private readonly limits: ConnectionCapsLimits) {}

  /** A place for a new connection from `source`, or why there is none. */
  admit(source: string): Admission | 'source-full' | 'total-full' {
    const key = sourceKey(source);
    const held = this.perSource.get(key) ?? 0;
    if (held >= this.limits.maxPerSource) return 'source-full';
    if (this.total >= this.limits.maxTotal) return 'total-full';
    this.perSource.set(key, held + 1);
    this.total++;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.total--;
        const left = (this.perSource.get(key) ?? 1) - 1;
        // Deleted at zero: the map holds only sources with a connection open.
        if (left === 0) this.perSource.delete(key);
        else this.perSource.set(key, left);
      },
    };
  }

  /** Connections held: in all, and sources holding any. */
  get counts(): { total: number; sources: number } {
    return { total: this.total, sources: this.perSource.size };
  }
}

/**
 * What counts as one source: an IPv4 address (also when written IPv4-mapped), or an IPv6 /64,
 * since one host usually holds a whole /64 and could otherwise rotate through it.
 */
export function sourceKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!address.includes(':')) return address;
  const [head = '', tail = ''] = address.split('::');
  const headParts = head ? head.split(':') : [];
  const tailParts = address.includes('::') && tail ? tail.split(':') : [];
  const missing = 8 - headParts.length - tailParts.length;
  const groups = [...headParts, ...Array(Math.max(missing, 0)).fill('0'), ...tailParts];
  return `${groups.slice(0, 4).map((g) => g.toLowerCase().replace(/^0+(?=.)/, '')).join(':')}::/64`;
}
