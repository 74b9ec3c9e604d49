// The SSH side of `roost`: keys, `ssh`, `ssh-config` and `proxy`.
import { spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import { openSshTunnel } from '@roost/sdk/node';
import { client, withJson, type JsonOpt } from './connection.js';
import { loadCredentials, type CliEnv } from './credentials.js';
import { ago, ExitError, printJson, printLine, table, UsageError } from './output.js';
import { checkedEndpoint, checkedHostKeys, checkedSandboxName, checkedSandboxRef, checkedUnixUser } from './trust.js';

export function addSshCommands(program: Command, cli: CliEnv): void {
  program
    .command('ssh')
    .description('open an SSH session to a sandbox (runs your ssh with the gateway\'s address and pinned host key)')
    .argument('<sandbox>', 'sandbox name or id; name+user logs in as that user inside')
    .argument('[command...]', 'run this instead of a login shell (put it after --)')
    .option('-i, --identity <file>', 'private key to use (default: your ssh defaults and agent)')
    .option('-A, --forward-agent', 'forward your SSH agent (only if the sandbox allows it)')
    .passThroughOptions()
    .addHelpText('after', '\nExamples:\n  roost ssh dev\n  roost ssh dev -- uname -a\n  roost ssh dev+alice          # as user alice inside\n\nFirst register a key: roost ssh-key add')
    .action(async (target: string, command: string[], opts: { identity?: string; forwardAgent?: boolean }) => {
      const roost = await client(cli);
      const plus = target.indexOf('+');
      const ref = checkedSandboxRef(plus === -1 ? target : target.slice(0, plus));
      const unixUser = plus === -1 ? undefined : checkedUnixUser(target.slice(plus + 1));
      const [sandbox, info, keys] = await Promise.all([roost.sandboxes.get(ref), roost.sshInfo(), roost.sshKeys.list()]);
      if (keys.length === 0) throw new UsageError('you have no SSH key registered: run `roost ssh-key add` first');
      // Everything from the server that becomes an ssh argument is checked first.
      const name = checkedSandboxName(roost.apiUrl, sandbox.name);
      const endpoint = gatewayEndpoint(info, roost.apiUrl);
      const knownHosts = await writeKnownHosts(cli, endpoint, checkedHostKeys(roost.apiUrl, info.hostKeys));
      // commander keeps the "--" that separates the command; ssh gets its own below.
      const remote = command[0] === '--' ? command.slice(1) : command;
      const args = [
        '-p', String(endpoint.port),
        '-o', `UserKnownHostsFile=${knownHosts}`,
        '-o', 'StrictHostKeyChecking=yes',
        ...(opts.identity ? ['-i', opts.identity, '-o', 'IdentitiesOnly=yes'] : []),
        ...(opts.forwardAgent ? ['-A'] : []),
        ...(remote.length > 0 && process.stdin.isTTY ? ['-t'] : []),
        // "--": whatever follows is the destination and the command, never an option.
        '--',
        `${name}${unixUser ? `+${unixUser}` : ''}@${endpoint.host}`,
        ...remote,
      ];
      const code = await new Promise<number>((resolve, reject) => {
        const child = spawn('ssh', args, { stdio: 'inherit' });
        child.on('error', (error: NodeJS.ErrnoException) =>
          reject(error.code === 'ENOENT' ? new Error('ssh is not installed: apt-get install -y openssh-client') : error),
        );
        child.on('close', (exitCode, signal) => resolve(exitCode ?? (signal ? 128 + (constants.signals[signal] ?? 0) : 1)));
      });
      throw new ExitError(code);
    });

  program
    .command('proxy')
    .description('carry SSH over the daemon\'s HTTP port (for ProxyCommand where only that port is open)')
    .argument('<sandbox>', 'sandbox name or id (checked, and woken, before the tunnel opens)')
    .addHelpText('after', '\nIn ~/.ssh/config:\n  Host roost-*\n    ProxyCommand npx roost proxy %r\n\nor: ssh -o ProxyCommand="roost proxy dev" dev@roost')
    .action(async (ref: string) => {
      const credentials = await loadCredentials(cli);
      if (!credentials.token) throw new UsageError('you are not logged in: run `roost login`');
      const tunnel = await openSshTunnel({ apiUrl: credentials.apiUrl, token: credentials.token, sandbox: ref.split('+')[0]! });
      await new Promise<void>((resolve, reject) => {
        process.stdin.pipe(tunnel);
        tunnel.pipe(process.stdout);
        tunnel.once('end', resolve);
        tunnel.once('close', resolve);
        tunnel.once('error', reject);
      });
      process.exit(0);
    });

  withJson(
    program
      .command('ssh-config')
      .description('print ~/.ssh/config entries for your sandboxes (VS Code Remote-SSH, PyCharm, plain ssh)')
      .argument('[sandbox]', 'only this sandbox (default: all your running ones)')
      .option('-i, --identity <file>', 'add IdentityFile (and IdentitiesOnly) to each entry')
      .addHelpText('after', '\nExamples:\n  roost ssh-config >> ~/.ssh/config    # then: ssh roost-<name>, or pick it in VS Code\n  roost ssh-config dev -i ~/.ssh/id_ed25519\n\nThe gateway\'s host key is written to ~/.roost/known_hosts, which the entries name.'),
  ).action(async (ref: string | undefined, opts: { identity?: string } & JsonOpt) => {
    const roost = await client(cli);
    const [info, sandboxes] = await Promise.all([roost.sshInfo(), ref ? roost.sandboxes.get(ref).then((s) => [s.info]) : roost.sandboxes.list()]);
    // Every value from the server is checked before it becomes config text: a name with a
    // newline could add a ProxyCommand line to the user's ~/.ssh/config.
    const endpoint = gatewayEndpoint(info, roost.apiUrl);
    const hostKeys = checkedHostKeys(roost.apiUrl, info.hostKeys);
    const names = sandboxes.map((sandbox) => checkedSandboxName(roost.apiUrl, sandbox.name));
    const knownHosts = await writeKnownHosts(cli, endpoint, hostKeys);
    const entries = names.map((name) => ({
      host: `roost-${name}`,
      hostName: endpoint.host,
      port: endpoint.port,
      user: name,
    }));
    if (opts.json) {
      printJson({ knownHostsFile: knownHosts, knownHosts: knownHostsLines(endpoint, hostKeys), entries });
      return;
    }
    const lines = [`# Roost sandboxes on ${roost.apiUrl} (roost ssh-config)`];
    for (const line of knownHostsLines(endpoint, hostKeys)) lines.push(`# known_hosts (in ${knownHosts}): ${line}`);
    for (const entry of entries) {
      lines.push(
        `Host ${entry.host}`,
        `  HostName ${entry.hostName}`,
        `  Port ${entry.port}`,
        `  User ${entry.user}`,
        `  UserKnownHostsFile ${knownHosts}`,
        '  StrictHostKeyChecking yes',
        ...(opts.identity ? [`  IdentityFile ${opts.identity}`, '  IdentitiesOnly yes'] : []),
      );
    }
    if (entries.length === 0) lines.push('# (no running sandboxes: roost new <name> first)');
    printLine(lines.join('\n'));
  });

  const sshKey = program
    .command('ssh-key')
    .description('the SSH public keys that open SSH sessions to your sandboxes')
    .addHelpText('after', '\nExamples:\n  roost ssh-key add                  # ~/.ssh/id_ed25519.pub (or id_ecdsa, id_rsa)\n  roost ssh-key add ~/.ssh/work.pub --name laptop\n  roost ssh-key list\n  roost ssh-key rm laptop');
  withJson(
    sshKey
      .command('add')
      .description('register a public key (a .pub file, "-" for stdin, or the key line itself)')
      .argument('[key]', 'path of a .pub file, "-", or "ssh-ed25519 AAAA…" (default: your ~/.ssh/id_*.pub)')
      .option('--name <name>', 'a label for the key (default: its comment)'),
  ).action(async (key: string | undefined, opts: { name?: string } & JsonOpt) => {
    const { line, source } = await readPublicKey(cli, key);
    const added = await (await client(cli)).sshKeys.add(line, { name: opts.name });
    if (opts.json) printJson(added);
    else printLine(`Added ${added.type} key ${added.fingerprint} (${added.name}) from ${source}. Try: roost ssh <sandbox>`);
  });
  withJson(sshKey.command('list').alias('ls').description('your SSH keys')).action(async (opts: JsonOpt) => {
    const keys = await (await client(cli)).sshKeys.list();
    if (opts.json) printJson(keys);
    else if (keys.length === 0) printLine('No SSH keys yet. Add one: roost ssh-key add');
    else {
      printLine(table(['NAME', 'TYPE', 'FINGERPRINT', 'ADDED', 'LAST USED'], keys.map((k) => [k.name, k.type, k.fingerprint, ago(k.createdAt), k.lastUsedAt ? ago(k.lastUsedAt) : 'never'])));
    }
  });
  withJson(
    sshKey.command('rm').description('remove one of your SSH keys').argument('<key>', 'its name, id or SHA256 fingerprint'),
  ).action(async (ref: string, opts: JsonOpt) => {
    await (await client(cli)).sshKeys.remove(ref);
    if (opts.json) printJson({ removed: ref });
    else printLine(`Removed SSH key ${ref}.`);
  });

}

interface Endpoint {
  host: string;
  port: number;
}

/**
 * The gateway's address as this client reaches it: a wildcard listen address means "the API's
 * host". Checked: it goes into ssh's argv and config text.
 */
function gatewayEndpoint(info: { host: string; port: number }, apiUrl: string): Endpoint {
  const wildcard = info.host === '0.0.0.0' || info.host === '::' || info.host === '';
  return checkedEndpoint(apiUrl, wildcard ? new URL(apiUrl).hostname.replace(/^\[|\]$/g, '') : info.host, info.port);
}

function knownHostsLines(endpoint: Endpoint, hostKeys: string[]): string[] {
  const pattern = endpoint.port === 22 ? endpoint.host : `[${endpoint.host}]:${endpoint.port}`;
  return hostKeys.map((key) => `${pattern} ${key}`);
}

/**
 * Keeps ~/.roost/known_hosts holding the gateway's keys (other gateways' lines stay), so ssh
 * can check the host key strictly without the user ever answering "yes".
 */
async function writeKnownHosts(cli: CliEnv, endpoint: Endpoint, hostKeys: string[]): Promise<string> {
  const file = join(dirname(cli.configFile), 'known_hosts');
  const ours = knownHostsLines(endpoint, hostKeys);
  const pattern = ours[0]?.split(' ')[0];
  const existing = await readFile(file, 'utf8').catch(() => '');
  const others = existing.split('\n').filter((line) => line.trim() && line.split(' ')[0] !== pattern);
  const next = [...others, ...ours].join('\n') + '\n';
  if (next !== existing) {
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    await writeFile(file, next, { mode: 0o600 });
  }
  return file;
}

/** The public key line from a file, stdin, the argument itself, or the user's default key. */
async function readPublicKey(cli: CliEnv, key: string | undefined): Promise<{ line: string; source: string }> {
  if (key && /^(ssh-|ecdsa-|sk-)/.test(key)) return { line: key, source: 'the command line' };
  if (key === '-') {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return { line: Buffer.concat(chunks).toString('utf8'), source: 'stdin' };
  }
  const candidates = key ? [key] : ['id_ed25519.pub', 'id_ecdsa.pub', 'id_rsa.pub'].map((name) => join(cli.home, '.ssh', name));
  for (const file of candidates) {
    const text = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT' && !key) return undefined;
      throw new UsageError(`cannot read ${file}: ${error.code === 'ENOENT' ? 'no such file' : error.message}`);
    });
    if (text !== undefined) return { line: text, source: file };
  }
  throw new UsageError(`no public key found in ${join(cli.home, '.ssh')} (id_ed25519.pub, id_ecdsa.pub, id_rsa.pub): make one with ssh-keygen -t ed25519, or name a .pub file`);
}

