export { createOciRuntime, type OciRuntimeOpts } from './driver.js';
export { checkHostPrerequisites, type HostProblem } from './prereqs.js';
export {
  createImageStore, defaultImageRecipe, recipeHash, DEFAULT_IMAGE_CACHE, type ImageStore, type ImageRecipe,
} from './images.js';
export { SHIFT_BASE, BRIDGE } from './constants.js';
export { findResidue } from './residue.js';
export { hostIdBase, DEFAULT_REGION_SIZE, INSTANCE_REGION_SIZE, type IdRegion } from './id-ranges.js';
export { readInstance, DEFAULT_INSTANCE, type Instance } from './instance.js';
export { NON_PUBLIC_V4 } from './egress.js';
export type { EngineName } from './engine.js';
export { DEFAULT_TOOLS_DIR, SANDBOX_TOOLS, TOOLS_MOUNT, missingTools } from './tools.js';
export {
  encodeRelayFrame, RelayFrameDecoder, RelayProtocolError, RELAY_HEADER_BYTES, RELAY_INITIAL_WINDOW, RELAY_MAX_PAYLOAD,
  type RelayFrame,
} from './relay-protocol.js';
export { DEFAULT_DNS_LIMITS, type DnsLimits } from './dns-forwarder.js';
export { OciNetwork, findNetworkResidue, firewallRules } from './network.js';
export { openInstance, removeIdleInstance } from './instance.js';
export type { EgressOpts } from './egress.js';
export { LXCFS_FILES, DEFAULT_LXCFS_BINARY, DEFAULT_LXCFS_HOST_DIR, type LxcfsOpts } from './lxcfs.js';
