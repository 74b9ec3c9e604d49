// The SSH side of `roost`: keys, `ssh`, `ssh-config` and `proxy`.
import { spawn } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { constants } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { openSshTunnel } from '@roost/sdk/node';
import { client, withJson, type JsonOpt } from './connection.js';
import { loadCredentials, rememberSshIdentityFile, sshIdentityFile, type CliEnv } from './credentials.js';
import { blockBegin, blockEnd, writeManagedBlock } from './ssh-config-file.js';
import { ago, ExitError, printJson, printLine, table, UsageError } from './output.js';
import { checkedEndpoint, checkedHostKeys, checkedSandboxName, checkedSandboxRef, checkedUnixUser } from './trust.js';

export function addSshCommands(program: Command, cli: CliEnv): void {
  program
    .command('ssh')
    .description('open an SSH session to a sandbox (runs your ssh with the gateway\'s address and pinned host key)')
    .argument('<sandbox>', 'sandbox name or id; name+user logs in as that user inside')
    .argument('[command...]', 'run this instead of a login shell (put it after --)')
    .option('-i, --identity <file>', 'use this private key only (default: your agent, then the key `roost ssh-key add` read)')
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
      const identity = opts.identity ?? (await registeredIdentityFile(cli, roost.apiUrl));
      // commander keeps the "--" that separates the command; ssh gets its own below.
      const remote = command[0] === '--' ? command.slice(1) : command;
      const args = [
        '-p', String(endpoint.port),
        '-o', `UserKnownHostsFile=${knownHosts}`,
        '-o', 'StrictHostKeyChecking=yes',
        // -i of your choosing: that key only. The remembered key: added to the agent's keys (ssh
        // offers them first), not instead of them: IdentitiesOnly would hide a registered key that
        // lives only in the agent.
        ...(identity ? ['-i', identity] : []),
        ...(opts.identity ? ['-o', 'IdentitiesOnly=yes'] : []),
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
    .option('--host-prefix <prefix>', 'strip this from the start of <sandbox> (a Host pattern such as roost-* with %n)')
    .addHelpText(
      'after',
      [
        '',
        'The tunnel is opened for one sandbox, so the SSH user name does not matter (user+alice: as alice inside).',
        'The gateway\'s host key is checked under the alias [host]:port (here the default gateway, 127.0.0.1:2222),',
        'in ~/.roost/known_hosts once `roost ssh` or `roost ssh-config` has run:',
        '',
        '  ssh -o ProxyCommand=\'roost proxy %n\' -o HostKeyAlias=\'[127.0.0.1]:2222\' -o UserKnownHostsFile=~/.roost/known_hosts dev',
        '',
        'For every sandbox at once (ssh roost-dev, VS Code, PyCharm): roost ssh-config --write',
      ].join('\n'),
    )
    .action(async (target: string, opts: { hostPrefix?: string }) => {
      const credentials = await loadCredentials(cli);
      if (!credentials.token) throw new UsageError('you are not logged in: run `roost login`');
      let ref = target.split('+')[0]!;
      if (opts.hostPrefix && ref.startsWith(opts.hostPrefix) && ref.length > opts.hostPrefix.length) ref = ref.slice(opts.hostPrefix.length);
      const tunnel = await openSshTunnel({ apiUrl: credentials.apiUrl, token: credentials.token, sandbox: ref });
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
      .description('print, or --write into ~/.ssh/config, the entries for your sandboxes (ssh roost-<name>; VS Code Remote-SSH, PyCharm)')
      .option('--write', 'put the block into ~/.ssh/config (replacing the one written before; nothing else in the file changes)')
      .option('--print', 'print the block on stdout (the default without --write)')
      .option('-i, --identity <file>', 'IdentityFile for the block, and that key only (default: the key `roost ssh-key add` read)')
      .addHelpText(
        'after',
        [
          '',
          'One Host pattern, roost-*, covers all your sandboxes, also stopped ones and ones made later: ssh reaches',
          'them through `roost proxy` (the daemon\'s HTTP port), checks the gateway\'s host key against',
          '~/.roost/known_hosts and offers the key you registered.',
          '',
          'Examples:',
          '  roost ssh-config --write          # then: ssh roost-dev, or pick roost-dev in VS Code / PyCharm',
          '  roost ssh-config                  # the same block on stdout',
          '  roost ssh-config --json           # every option, the host keys and your sandboxes',
        ].join('\n'),
      ),
  ).action(async (opts: { write?: boolean; print?: boolean; identity?: string } & JsonOpt) => {
    const roost = await client(cli);
    const [info, sandboxes] = await Promise.all([roost.sshInfo(), roost.sandboxes.list({ all: true })]);
    // Every value from the server is checked before it becomes config text: a name with a
    // newline could add a ProxyCommand line to the user's ~/.ssh/config.
    const endpoint = gatewayEndpoint(info, roost.apiUrl);
    const hostKeys = checkedHostKeys(roost.apiUrl, info.hostKeys);
    const covered = sandboxes.map((sandbox) => ({ name: checkedSandboxName(roost.apiUrl, sandbox.name), host: `${sshHostPrefix}${sandbox.name}`, status: sandbox.status }));
    const knownHostsFile = await writeKnownHosts(cli, endpoint, hostKeys);
    const identityFile = opts.identity ? resolve(opts.identity) : await registeredIdentityFile(cli, roost.apiUrl);
    const options: Record<string, string> = {
      ProxyCommand: `${proxyCommandWord(process.execPath)} ${proxyCommandWord(realpathSync(process.argv[1]!))} proxy --host-prefix ${sshHostPrefix} %n`,
      HostKeyAlias: hostKeyAlias(endpoint),
      UserKnownHostsFile: configPath(knownHostsFile),
      StrictHostKeyChecking: 'yes',
      ...(identityFile && { IdentityFile: configPath(identityFile) }),
      ...(opts.identity && { IdentitiesOnly: 'yes' }),
    };
    const host = `${sshHostPrefix}*`;
    const block = [
      `${blockBegin} (${printableUrl(roost.apiUrl)}) ---`,
      '# Written by `roost ssh-config --write` and replaced by its next run: edit outside this block.',
      `# ssh ${sshHostPrefix}<sandbox> reaches any of your sandboxes through \`roost proxy\`.`,
      `Host ${host}`,
      ...Object.entries(options).map(([key, value]) => `  ${key} ${value}`),
      '# Ends the pattern above: what follows applies to every host, as before.',
      'Host *',
      blockEnd,
    ].join('\n');
    const file = join(cli.home, '.ssh', 'config');
    const written = opts.write ? await writeManagedBlock(file, block) : undefined;
    if (opts.json) {
      printJson({ file, written: written?.changed ?? false, host, options, knownHostsFile, knownHosts: knownHostsLines(endpoint, hostKeys), block: `${block}\n`, sandboxes: covered });
    } else if (opts.write && !opts.print) {
      const examples = covered.slice(0, 3).map((sandbox) => `ssh ${sandbox.host}`);
      printLine(
        `${written?.changed ? 'Wrote' : 'Already up to date:'} the block of roost ssh-config (Host ${host}) in ${file}. ` +
          (examples.length ? `Try: ${examples.join(', ')}` : `Try it after \`roost new <name>\`: ssh ${sshHostPrefix}<name>`),
      );
    } else printLine(block);
    if (written?.legacy && !opts.json) {
      process.stderr.write(`roost: ${file} still has entries an older \`roost ssh-config >>\` appended ("# Roost sandboxes on …"): delete them, the block replaces them\n`);
    }
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
    const { line, source, privateKeyFile } = await readPublicKey(cli, key);
    const roost = await client(cli);
    const added = await roost.sshKeys.add(line, { name: opts.name });
    // The private key beside the .pub: `roost ssh` and `ssh-config` name it, for a key that is
    // neither one of ssh's defaults nor in the agent.
    const identityFile = privateKeyFile && (await access(privateKeyFile).then(() => privateKeyFile, () => undefined));
    if (identityFile) await rememberSshIdentityFile(cli, roost.apiUrl, identityFile);
    if (opts.json) printJson({ ...added, identityFile: identityFile ?? null });
    else if (added.alreadyRegistered) {
      const renamed = opts.name && opts.name !== added.name ? ` (--name is not applied to a key you have: \`roost ssh-key rm ${added.fingerprint}\` and add it again)` : '';
      printLine(`Already registered as ${added.name} (${added.fingerprint}); nothing changed${renamed}.`);
    } else printLine(`Added ${added.type} key ${added.fingerprint} (${added.name}) from ${source}. Try: roost ssh <sandbox>`);
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
async function readPublicKey(cli: CliEnv, key: string | undefined): Promise<{ line: string; source: string; privateKeyFile?: string }> {
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
    if (text !== undefined) return { line: text, source: file, ...(file.endsWith('.pub') && { privateKeyFile: resolve(file.slice(0, -'.pub'.length)) }) };
  }
  throw new UsageError(`no public key found in ${join(cli.home, '.ssh')} (id_ed25519.pub, id_ecdsa.pub, id_rsa.pub): make one with ssh-keygen -t ed25519, or name a .pub file`);
}


/** `ssh roost-<name>`: the Host pattern `roost ssh-config` writes, stripped again by `roost proxy`. */
const sshHostPrefix = 'roost-';

/**
 * The key file `roost ssh-key add` read for this daemon, if it is still there; if it is gone,
 * one line says so and ssh's own defaults stay.
 */
async function registeredIdentityFile(cli: CliEnv, apiUrl: string): Promise<string | undefined> {
  const file = await sshIdentityFile(cli, apiUrl);
  if (!file) return undefined;
  const present = await access(file).then(() => true, () => false);
  if (!present) process.stderr.write(`roost: ${file}, the key \`roost ssh-key add\` read, is gone: going on with ssh's own keys (roost ssh-key add <file.pub> names another)\n`);
  return present ? file : undefined;
}

/**
 * The gateway's name in known_hosts, whichever way ssh reaches it ("[host]:port", as ssh writes
 * it for a direct connection): a ProxyCommand connection, whose host name is roost-<sandbox>,
 * checks the same line with HostKeyAlias.
 */
function hostKeyAlias(endpoint: Endpoint): string {
  return knownHostsLines(endpoint, ['x'])[0]!.split(' ')[0]!;
}

/** A path as a config value: ssh expands %-tokens in it, and splits on blanks outside quotes. */
function configPath(path: string): string {
  if (/["\\\x00-\x1f\x7f]/.test(path)) throw new UsageError(`cannot name ${JSON.stringify(path)} in ssh config (quote, backslash or control character): use a plainer path`);
  const escaped = path.replaceAll('%', '%%');
  return /\s/.test(escaped) ? `"${escaped}"` : escaped;
}

/** A word of the ProxyCommand, which ssh %-expands and hands to the shell. */
function proxyCommandWord(word: string): string {
  if (/^[\w/.,:+@=-]+$/.test(word)) return word;
  if (/['\x00-\x1f\x7f]/.test(word)) throw new UsageError(`cannot name ${JSON.stringify(word)} in an ssh ProxyCommand: run the roost CLI from a plainer path`);
  return `'${word.replaceAll('%', '%%')}'`;
}

/** The API URL in the block's first line, never a second line. */
function printableUrl(apiUrl: string): string {
  return /^[\x21-\x7e]+$/.test(apiUrl) ? apiUrl : 'your roostd';
}
