// The default seccomp profile. It denies what Docker's and Podman's default profiles deny to a
// container without CAP_SYS_ADMIN (written as a deny list over an allow-by-default action, which
// keeps it short and lets new harmless syscalls through): kernel modules and kexec, mounting and
// pivot_root, new namespaces (so root inside cannot make a user namespace where it holds every
// capability), keyrings, bpf, perf, the clock, swap, reboot, and file handles.

const deniedSyscalls = [
  'acct', 'add_key', 'bpf', 'clock_adjtime', 'clock_settime', 'create_module', 'delete_module',
  'finit_module', 'fsconfig', 'fsmount', 'fsopen', 'fspick', 'get_kernel_syms', 'init_module',
  'ioperm', 'iopl', 'kexec_file_load', 'kexec_load', 'keyctl', 'lookup_dcookie', 'mount',
  'mount_setattr', 'move_mount', 'name_to_handle_at', 'nfsservctl', 'open_by_handle_at',
  'open_tree', 'perf_event_open', 'pivot_root', 'query_module', 'quotactl', 'quotactl_fd',
  'reboot', 'request_key', 'setns', 'settimeofday', 'stime', 'swapoff', 'swapon', 'sysfs',
  '_sysctl', 'umount', 'umount2', 'unshare', 'uselib', 'userfaultfd', 'ustat', 'vm86', 'vm86old',
];

/** clone() flags that make new namespaces. */
const namespaceFlags = {
  CLONE_NEWCGROUP: 0x02000000,
  CLONE_NEWUTS: 0x04000000,
  CLONE_NEWIPC: 0x08000000,
  CLONE_NEWUSER: 0x10000000,
  CLONE_NEWPID: 0x20000000,
  CLONE_NEWNET: 0x40000000,
  CLONE_NEWNS: 0x00020000,
};

const EPERM = 1;
const ENOSYS = 38;

export function defaultSeccompProfile(): object {
  return {
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
    syscalls: [
      { names: deniedSyscalls, action: 'SCMP_ACT_ERRNO', errnoRet: EPERM },
      // One rule per flag: a rule's argument conditions must all hold, so "any of" needs several.
      ...Object.values(namespaceFlags).map((flag) => ({
        names: ['clone'],
        action: 'SCMP_ACT_ERRNO',
        errnoRet: EPERM,
        args: [{ index: 0, value: flag, valueTwo: flag, op: 'SCMP_CMP_MASKED_EQ' }],
      })),
      // clone3 passes its flags in memory, out of seccomp's reach: answer ENOSYS so libc falls
      // back to clone(), which the rules above can read (what Docker does too).
      { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS },
    ],
  };
}
