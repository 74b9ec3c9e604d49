// The tools every sandbox gets read-only at /.roost/tools, whatever its image: built from
// native/ (Makefile) by scripts/setup.mjs. See docs/runtime-oci.md, "In-sandbox tools".
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where the tools dir is mounted inside every sandbox. */
export const TOOLS_MOUNT = '/.roost/tools';

/** The tools as seen from inside a sandbox. */
export const SANDBOX_TOOLS = {
  /** roost-pty [--size COLSxROWS] [--resize-fd N] [--] COMMAND... */
  pty: `${TOOLS_MOUNT}/bin/roost-pty`,
  /** roost-relay connect [--ready] HOST PORT | connect [--ready] --unix PATH | listen tcp ADDR PORT | listen unix PATH */
  relay: `${TOOLS_MOUNT}/bin/roost-relay`,
  /** OpenSSH's sftp-server with its own loader and libc (interpreter and RPATH point into the tools dir). */
  sftpServer: `${TOOLS_MOUNT}/libexec/sftp-server`,
} as const;

/** adapters/runtime-oci/native: the sources and the Makefile. */
export const NATIVE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'native');

/** The tools dir of this checkout, built by `make -C adapters/runtime-oci/native`. */
export const DEFAULT_TOOLS_DIR = path.join(NATIVE_DIR, 'build', 'tools');

/** The files of a complete tools dir, relative to it. */
const TOOL_FILES = Object.values(SANDBOX_TOOLS).map((p) => p.slice(TOOLS_MOUNT.length + 1));

/** Which tools are missing from `dir` (empty when it is complete). */
export function missingTools(dir: string): string[] {
  return TOOL_FILES.filter((file) => !existsSync(path.join(dir, file)));
}

/** The command that builds the tools into `dir`. */
export function buildToolsCommand(dir: string): string {
  const out = path.resolve(dir) === DEFAULT_TOOLS_DIR ? '' : ` OUT=${path.resolve(dir)}`;
  return `apt-get install -y gcc libc6-dev make patchelf openssh-sftp-server && make -C ${NATIVE_DIR}${out}`;
}

/** roostd's own helper for idmapped image layers (native/roost-idmap.c): runs on the host as
 *  root and is never mounted into sandboxes, hence its own dir beside the tools. */
export const DEFAULT_IDMAP_HELPER = path.join(NATIVE_DIR, 'build', 'host', 'roost-idmap');
