export { startDaemon, type StartDaemonOpts, type TestDaemon } from './start-daemon.js';
export { runtimeConformance } from './runtime-conformance.js';
export { workspacesConformance, type WorkspacesConformanceOpts } from './workspaces-conformance.js';
export { FakeRuntime } from './fake-runtime.js';
export { runCli, cliPath, type CliResult, type RunCliOpts } from './cli.js';
export { runProcess, type ProcessResult } from './process.js';
export { waitFor, freePort } from './wait.js';
export { ManualClock } from './manual-clock.js';
export { startFakeOutside, type FakeOutside } from './outside.js';
/** Which roostd instance (bridge, subnet, nft table, cgroup parent) a test daemon's runtime dir belongs to. */
export { readInstance, type Instance } from '@roost/runtime-oci';
export { silentLogger, wallClock, collectOutput } from './test-deps.js';
export { networkConformance, type NetworkConformanceOpts, type NetworkUnderTest, type ProbeResult } from './network-conformance.js';
export { FakeNetwork, type FakeNetworkOpts } from './fake-network.js';
export { drainOutput } from './test-deps.js';
export { startS3, type TestS3 } from './s3-server.js';
export { FakeWorkspaces, type FakeWorkspacesOpts } from './fake-workspaces.js';
export { storeConformance, type StoreConformanceOpts, type StoreUnderTest } from './store-conformance.js';
