import path from 'node:path';
import type { SandboxLimits, SandboxSpec } from '@roost/core';
import type { LxcfsViews } from './lxcfs.js';
import { defaultSeccompProfile } from './seccomp.js';
import { TOOLS_MOUNT } from './tools.js';
import { CATATONIT, CGROUP_PARENT, DEFAULT_PATH, SHIFT_BASE, SHIFT_SIZE } from './constants.js';

/**
 * Podman's default set: Docker's without CAP_NET_RAW, so a sandbox cannot forge packets with
 * another sandbox's source address (ping still works through ICMP sockets, see sysctl below).
 */
export const DEFAULT_CAPS = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD',
  'CAP_SETGID', 'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
];

const MASKED = [
  '/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats',
  '/proc/timer_list', '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware',
];
const READONLY = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

/** Environment of PID 1 and, because `crun exec --env` replaces rather than extends it, of every exec. */
export function baseEnv(spec: Pick<SandboxSpec, 'hostname' | 'env'>): Record<string, string> {
  return { PATH: DEFAULT_PATH, HOME: '/root', HOSTNAME: spec.hostname, ...spec.env };
}

export const envList = (env: Record<string, string>) => Object.entries(env).map(([k, v]) => `${k}=${v}`);

/** `parent`: the roostd instance's cgroup parent (see instance.ts). */
export function cgroupsPath(id: string, parent = CGROUP_PARENT): string {
  return `/${parent}/${id}`;
}

/** linux.resources of config.json, also what `update --resources` takes. */
export function ociResources({ cpus, memoryMb, pids }: SandboxLimits): object {
  const period = 100_000;
  return {
    ...(memoryMb > 0 ? { memory: { limit: memoryMb * 1024 * 1024 } } : {}),
    ...(cpus > 0 ? { cpu: { quota: Math.max(1000, Math.round(cpus * period)), period } } : {}),
    ...(pids > 0 ? { pids: { limit: pids } } : {}),
  };
}

interface ConfigOpts {
  /** Bind-mounted over the image's files so each sandbox has its own. */
  hostsFile?: string;
  hostnameFile?: string;
  resolvConfFile?: string;
  /** Mount cgroupfs read-only at /sys/fs/cgroup (works with crun on the hybrid host). */
  mountCgroup: boolean;
  /** Host dir mounted read-only at /.roost/tools (pty, relay, sftp-server). */
  toolsDir: string;
  /** Host uid/gid of the sandbox's root (its range: SHIFT_SIZE ids from there); default SHIFT_BASE, the shared range. */
  hostIdBase?: number;
  /** The roostd instance's cgroup parent (default: `roost`, the default instance's). */
  cgroupParent?: string;
  /** LXCFS views bind-mounted read-only over the sandbox's /proc and /sys files of the same name. */
  lxcfs?: LxcfsViews;
}

export function ociConfig(spec: Omit<SandboxSpec, 'idRange'>, o: ConfigOpts): object {
  const mounts: object[] = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    // sysfs can be mounted only because the netns is created by the engine inside the userns.
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
  ];
  // After /proc and /sys, over their files: lxcfs answers each read with the reader's cgroup
  // limits. runc allows bind mounts under /proc only for these lxcfs files.
  for (const file of o.lxcfs?.files ?? []) {
    mounts.push({ destination: `/${file}`, type: 'bind', source: path.join(o.lxcfs!.dir, file), options: ['bind', 'ro', 'nosuid', 'nodev', 'noexec'] });
  }
  if (o.mountCgroup) {
    mounts.push({ destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] });
  }
  mounts.push({ destination: '/.roost/init', type: 'bind', source: CATATONIT, options: ['bind', 'ro', 'nosuid', 'nodev'] });
  mounts.push({ destination: TOOLS_MOUNT, type: 'bind', source: o.toolsDir, options: ['bind', 'ro', 'nosuid', 'nodev'] });
  if (o.hostsFile) mounts.push({ destination: '/etc/hosts', type: 'bind', source: o.hostsFile, options: ['bind', 'nosuid', 'nodev', 'noexec'] });
  if (o.hostnameFile) mounts.push({ destination: '/etc/hostname', type: 'bind', source: o.hostnameFile, options: ['bind', 'nosuid', 'nodev', 'noexec'] });
  if (o.resolvConfFile) mounts.push({ destination: '/etc/resolv.conf', type: 'bind', source: o.resolvConfFile, options: ['bind', 'nosuid', 'nodev', 'noexec'] });

  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      // catatonit -P: stays PID 1 without a child, reaping whatever execs leave behind.
      args: ['/.roost/init', '-P'],
      env: envList(baseEnv(spec)),
      cwd: '/root',
      capabilities: { bounding: DEFAULT_CAPS, effective: DEFAULT_CAPS, permitted: DEFAULT_CAPS },
      noNewPrivileges: true,
      // No rlimits: raising one above the daemon's own hard limit fails (EPERM) once the engine
      // is inside the user namespace. Execs get theirs from prlimit, run before the engine.
    },
    root: { path: 'rootfs', readonly: false },
    hostname: spec.hostname,
    mounts,
    linux: {
      uidMappings: [{ containerID: 0, hostID: o.hostIdBase ?? SHIFT_BASE, size: SHIFT_SIZE }],
      gidMappings: [{ containerID: 0, hostID: o.hostIdBase ?? SHIFT_BASE, size: SHIFT_SIZE }],
      namespaces: ['user', 'pid', 'ipc', 'uts', 'mount', 'network', 'cgroup'].map((type) => ({ type })),
      cgroupsPath: cgroupsPath(spec.id, o.cgroupParent),
      resources: ociResources(spec.limits),
      // Unprivileged ICMP echo sockets, so ping works without CAP_NET_RAW.
      sysctl: { 'net.ipv4.ping_group_range': '0 65535' },
      seccomp: defaultSeccompProfile(),
      maskedPaths: MASKED,
      readonlyPaths: READONLY,
    },
  };
}

/**
 * The process of an exec, for `crun exec --process FILE` (runc takes the same): the command line
 * and env never appear in the host's process list. The engine does not take noNewPrivileges or
 * the capabilities from config.json for an exec, so both are given here: without
 * noNewPrivileges an exec'd setuid binary could gain privileges the sandbox's init never had.
 */
export function execProcess(p: { args: string[]; env: Record<string, string>; cwd: string; uid: number; gid: number }): object {
  return {
    terminal: false,
    user: { uid: p.uid, gid: p.gid },
    args: p.args,
    env: envList(p.env),
    cwd: p.cwd,
    capabilities: { bounding: DEFAULT_CAPS, effective: DEFAULT_CAPS, permitted: DEFAULT_CAPS },
    noNewPrivileges: true,
  };
}
