/** Host uid/gid that uid/gid 0 inside every sandbox maps to. Images are shifted by this much
 *  once at build time, because idmapped mounts do not work on the target hosts. */
export const SHIFT_BASE = 1_000_000;
/** How many ids each sandbox's user namespace maps (container 0..65535). */
export const SHIFT_SIZE = 65_536;

/** The default instance's bridge (others: instance.ts). */
export const BRIDGE = 'roost0';

/** Parent cgroup of every sandbox of the default instance (others: instance.ts). */
export const CGROUP_PARENT = 'roost';

export const CATATONIT = '/usr/bin/catatonit';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
