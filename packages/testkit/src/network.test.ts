// The Network conformance suite against the fake and against the real OciNetwork: real netns
// made with `ip netns add`, a real bridge (a throw-away roostd instance's), real nft.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger, Network } from '@roost/core';
import { findNetworkResidue, firewallRules, OciNetwork, openInstance, removeIdleInstance, type EgressOpts } from '@roost/runtime-oci';
import { FakeNetwork } from './fake-network.js';
import { networkConformance, type ProbeResult } from './network-conformance.js';
import { runProcess } from './process.js';

const silent: Logger = { info() {}, warn() {}, error() {}, debug() {} };
/** Names of the netns this process made: unique across the networks it opens. */
let netnsSeq = 0;

networkConformance({
  name: 'FakeNetwork',
  isolation: false,
  newNetwork: async (opts = {}) => {
    let seq = 0;
    let current = new FakeNetwork(opts);
    return {
      network: current,
      newNetns: async () => `/fake/netns/${++seq}`,
      reopen: async (old: Network) => {
        await old.close();
        current = new FakeNetwork(opts);
        return current;
      },
      residue: async (id: string) => current.residue(id),
      enforcedRules: async (id: string) => current.rulesOf(id),
      cleanup: async () => {},
    };
  },
});

async function must(command: string, args: string[]): Promise<string> {
  const r = await runProcess(command, args);
  if (r.exitCode !== 0) throw new Error(`${command} ${args.join(' ')}: ${r.stderr.trim() || `exit ${r.exitCode}`}`);
  return r.stdout;
}

/** Connects from inside the netns and prints how it went (no output: the probe did not run). */
const PROBE = `
const [address, port] = process.argv.slice(1);
const socket = require('node:net').connect({ host: address, port: Number(port) });
socket.setTimeout(2000, () => { console.log('timeout'); process.exit(0); });
socket.on('connect', () => { console.log('connected'); process.exit(0); });
socket.on('error', (e) => { console.log(e.code); process.exit(0); });
`;

const SERVER = `
const server = require('node:net').createServer((c) => c.end());
server.listen(Number(process.argv[1]), '0.0.0.0', () => console.log('listening'));
`;

networkConformance({
  name: 'OciNetwork',
  isolation: true,
  newNetwork: async ({ natAllowed = true } = {}) => {
    const stateDir = await mkdtemp(join(tmpdir(), 'roost-net-'));
    const namespaces: string[] = [];
    const instance = await openInstance(stateDir, { logger: silent });
    const opts: EgressOpts = { instance, allowNat: natAllowed, dnsServers: [], allowCidrs: [], logger: silent };
    return {
      network: new OciNetwork(opts),
      newNetns: async () => {
        const name = `roost-nt${process.pid}-${++netnsSeq}`;
        await must('ip', ['netns', 'add', name]);
        namespaces.push(name);
        return `/run/netns/${name}`;
      },
      reopen: async (old: Network) => {
        await old.close();
        return new OciNetwork(opts);
      },
      residue: (id: string, address: string) => findNetworkResidue(instance, id, address),
      enforcedRules: (id: string) => firewallRules(instance, id),
      listen: async (netnsPath: string, port: number) => {
        const child = spawn('nsenter', [`--net=${netnsPath}`, process.execPath, '-e', SERVER, String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
        await new Promise<void>((resolve, reject) => {
          let out = '';
          child.stdout.on('data', (chunk: Buffer) => {
            out += chunk.toString();
            if (out.includes('listening')) resolve();
          });
          child.once('exit', (code) => reject(new Error(`server in ${netnsPath} exited (${code}) before it listened: ${out}`)));
        });
        return async () => {
          const exited = new Promise((resolve) => child.once('exit', resolve));
          child.kill();
          await exited;
        };
      },
      probe: async (netnsPath: string, address: string, port: number) => {
        const out = (await must('nsenter', [`--net=${netnsPath}`, process.execPath, '-e', PROBE, address, String(port)])).trim();
        if (!['connected', 'timeout', 'ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH'].includes(out)) throw new Error(`the probe did not run: ${JSON.stringify(out)}`);
        return out as ProbeResult;
      },
      cleanup: async () => {
        for (const name of namespaces) await must('ip', ['netns', 'del', name]).catch(() => {});
        await removeIdleInstance(instance, silent);
        await rm(stateDir, { recursive: true, force: true });
      },
    };
  },
});
