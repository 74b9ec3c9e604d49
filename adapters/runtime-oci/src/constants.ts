/** Host uid/gid that uid/gid 0 inside every sandbox maps to. Images are shifted by this much
 *  once at build time, because idmapped mounts do not work on the target hosts. */
export const SHIFT_BASE = 1_000_000;
/** How many ids each sandbox's user namespace maps (container 0..65535). */
export const SHIFT_SIZE = 65_536;

export const BRIDGE = 'roost0';
/** Sandbox addresses; the bridge itself has none, so there is no route to the host. */
export const SUBNET_PREFIX = '10.213';
export const SUBNET_BITS = 16;
/** The bridge's address once NAT is on: NAT sandboxes' default route and DNS server. */
export const GATEWAY = `${SUBNET_PREFIX}.0.1`;

/** Parent cgroup of every sandbox (v1 hierarchies and the unified one). */
export const CGROUP_PARENT = 'roost';

export const CATATONIT = '/usr/bin/catatonit';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
