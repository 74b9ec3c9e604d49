// The commands of `roost`, as data: each declares its arguments and options and a handler that
// talks to the daemon only through the SDK.
import { Command } from 'commander';
import type { Sandbox } from '@roost/sdk';
import { checkArguments, cliLimits } from './arguments.js';
import { addVersionCommand, cliVersion } from './version.js';
import { client, connect, withJson, type JsonOpt } from './connection.js';
import { defaultApiUrl, forgetCredentials, loadCredentials, normalizedApiUrl, saveCredentials, type CliEnv } from './credentials.js';
import { addQuotaCommands } from './quota-commands.js';
import { addSshCommands } from './ssh-commands.js';
import { addWorkspaceCommands, diskGb } from './workspace-commands.js';
import { ago, describeSandbox, ExitError, printJson, printLine, runOutcome, table, UsageError } from './output.js';
import { attachTerminal, sendsStdin, terminalRequest } from './stdin.js';
import { streamCommand } from './streaming.js';
import { adminTokenFromDaemonHost } from './trust.js';

function collectEnv(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const index = value.indexOf('=');
  if (index <= 0) throw new UsageError(`-e expects KEY=VALUE, got "${value}"`);
  return { ...previous, [value.slice(0, index)]: value.slice(index + 1) };
}

function positiveNumber(flag: string, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const number = value.trim() === '' ? NaN : Number(value);
    if (!Number.isFinite(number) || number <= 0 || number > max) {
      throw new UsageError(`${flag} expects a number above 0${max < Number.MAX_SAFE_INTEGER ? ` and at most ${max}` : ''}, got "${value}"`);
    }
    return number;
  };
}

/** A whole number within what the API takes (the contract's bounds, said before any request). */
function wholeNumber(flag: string, min: number, max: number, unit = '') {
  return (value: string): number => {
    const number = /^\d+$/.test(value) ? Number(value) : NaN;
    if (!Number.isSafeInteger(number) || number < min || number > max) {
      throw new UsageError(`${flag} expects a whole number${unit} from ${min} to ${max}, got "${value}"`);
    }
    return number;
  };
}

function collectList(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function networkMode(value: string): 'none' | 'nat' {
  if (value !== 'none' && value !== 'nat') throw new UsageError(`--network expects none or nat, got "${value}"`);
  return value;
}

/** Flags of what a sandbox is made with, shared by run and new. */
interface SandboxFlags {
  env?: Record<string, string>;
  image?: string;
  cpus?: number;
  memory?: number;
  pids?: number;
  openFiles?: number;
  network?: 'none' | 'nat';
  sshAgent?: boolean;
  user?: string;
  allowNet?: string[];
  denyNet?: string[];
  workspace?: string;
  base?: string;
  disk?: number;
}

function withSandboxFlags(command: Command): Command {
  return command
    .option('-w, --workspace <ws>', 'mount this workspace (name or id; made on first use): what it writes is there next time')
    .option('--base <ws>', 'make the workspace as a copy-on-write fork of this one')
    .option('--disk <GB>', 'disk size of the workspace in GB (fractions allowed); a writer past it fails', diskGb('--disk'))
    .option('-e, --env <KEY=VALUE>', 'environment variable (repeatable)', collectEnv)
    .option('--image <ref>', 'image (default: the default Debian image)')
    .option('--cpus <n>', 'CPU limit', positiveNumber('--cpus', cliLimits.cpus.max))
    .option('--memory <MB>', 'memory limit in MB', wholeNumber('--memory', cliLimits.memoryMb.min, cliLimits.memoryMb.max, ' of MB'))
    .option('--pids <n>', 'most processes and threads at once', wholeNumber('--pids', cliLimits.pids.min, cliLimits.pids.max))
    .option('--open-files <n>', 'open-files limit of each process', wholeNumber('--open-files', cliLimits.openFiles.min, cliLimits.openFiles.max))
    .option('--network <mode>', 'none (no way out, the default) or nat (egress with DNS)', networkMode)
    .option('--ssh-agent', 'let SSH sessions forward your agent into it (ssh -A); off by default')
    .option('--user <name>', 'the user SSH logins run as (default root; box+name picks another)')
    .option('--allow-net <cidr|domain>', 'with --network nat: reach only these (IPv4 range, example.com, *.example.com; repeatable)', collectList)
    .option('--deny-net <cidr|domain>', 'with --network nat: never reach these (beats --allow-net; repeatable)', collectList);
}

function sandboxOptions(flags: SandboxFlags) {
  return {
    env: flags.env,
    image: flags.image,
    cpus: flags.cpus,
    memoryMb: flags.memory,
    pids: flags.pids,
    openFiles: flags.openFiles,
    network: flags.network,
    sshAgentForwarding: flags.sshAgent,
    defaultUser: flags.user,
    allowNet: flags.allowNet,
    denyNet: flags.denyNet,
    workspaceId: flags.workspace,
    baseWorkspaceId: flags.base,
    diskGb: flags.disk,
  };
}


export function buildProgram(cli: CliEnv): Command {
  const program = new Command('roost')
    .description('Instant, isolated Linux sandboxes on your own machines.')
    .version(cliVersion, '-V, --version', 'print the version of this roost CLI')
    .enablePositionalOptions()
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText(
      'after',
      `
Examples:
  roost login                         on the daemon host: finds the admin token by itself
  roost run 'echo Hello World'        run a script in a fresh sandbox, then remove it
  roost run -p --name dev 'apt list --installed | wc -l'   keep the sandbox afterwards
  roost new dev && roost exec dev 'uname -a'
  roost run -w proj 'pip install requests'   a workspace keeps what it writes for the next run
  roost ls                            your running sandboxes (--all for ended runs)

Environment: ROOST_API_URL, ROOST_API_TOKEN override ~/.roost/config.json.
Exit codes: run and exec exit with the command's own code (127: no such command, 126: it could
not start, e.g. no such -w directory); 2 = usage error; 1 = other failure.`,
    );

  withJson(
    program
      .command('login')
      .description('save the daemon URL and a token in ~/.roost/config.json')
      .option('--url <url>', `daemon URL (default ${defaultApiUrl}; http:// when no scheme is given)`, (url: string) => normalizedApiUrl(url, '--url'))
      .option('--token <token>', 'API token; on the daemon host the admin token is found by itself'),
  ).action(async (opts: { url?: string; token?: string } & JsonOpt) => {
    const current = await loadCredentials(cli);
    const apiUrl = opts.url ?? current.apiUrl;
    let token = opts.token;
    token ??= await adminTokenFromDaemonHost(apiUrl, () => connect({ apiUrl }).health());
    const { user } = await connect({ apiUrl, token }).whoami();
    await saveCredentials(cli, { apiUrl, token });
    if (opts.json) printJson({ apiUrl, user });
    else printLine(`Logged in to ${apiUrl} as ${user.name}. Try: roost run 'echo Hello World'`);
  });

  withJson(program.command('logout').description('forget the saved token')).action(async (opts: JsonOpt) => {
    const hadToken = await forgetCredentials(cli);
    if (opts.json) printJson({ loggedOut: hadToken });
    else printLine(hadToken ? 'Logged out.' : 'You were not logged in.');
  });

  withJson(program.command('whoami').description('the user your token belongs to')).action(async (opts: JsonOpt) => {
    const roost = await client(cli);
    const { user } = await roost.whoami();
    if (opts.json) printJson({ apiUrl: roost.apiUrl, user });
    else printLine(`${user.name}${user.isAdmin ? ' (admin)' : ''} on ${roost.apiUrl}`);
  });

  withJson(
    withSandboxFlags(
      program
        .command('run')
        .description('run a shell script in a fresh sandbox, stream its output, exit with its code')
        .argument('<script>', 'shell script, run with bash -c')
        .option('-p, --persistent', 'keep the sandbox after the script ends (with a workspace of its name unless -w)')
        .option('--name <name>', 'sandbox name (a DNS label); generated when absent')
        .option('--timeout <seconds>', 'kill the script after this many seconds (exit code 124)', positiveNumber('--timeout', cliLimits.timeoutSec.max))
        .option('-i, --interactive', 'send stdin even from a terminal (from a pipe or file it is sent anyway)')
        .addHelpText(
          'after',
          "\nWithout -w or -p the sandbox and its files are gone when the script ends. With -w <ws> the\nworkspace keeps them (and everything installed) for the next run with -w <ws>; with -p the\nsandbox stays, its files in a workspace of its name.\n\nExamples:\n  roost run 'echo hi'\n  roost run -w proj 'apt-get install -y jq'   # then: roost run -w proj 'jq --version'\n  roost run -w try --base proj 'make test'    # a copy of proj; proj is unchanged\n  roost run -p --name dev --disk 10 'git clone …'",
        ),
    ),
  ).action(
    async (script: string, opts: { persistent?: boolean; name?: string; timeout?: number; interactive?: boolean } & SandboxFlags & JsonOpt) => {
      const roost = await client(cli);
      const handle = roost.run({
        ...(sendsStdin(opts.interactive) && { stdin: process.stdin }),
        script,
        persistent: opts.persistent,
        name: opts.name,
        timeoutSec: opts.timeout,
        ...sandboxOptions(opts),
      });
      const sandbox = await handle.sandbox();
      const result = await streamCommand(handle, { collect: Boolean(opts.json) });
      if (opts.json) {
        // The sandbox as the run left it (the stream sends it again before the exit).
        printJson({ sandbox: (await handle.sandbox()) ?? sandbox, ...result.exit, stdout: result.stdout, stderr: result.stderr });
      } else {
        process.stderr.write(runOutcome(result.exit, sandbox, Boolean(opts.persistent)));
      }
      throw new ExitError(result.exit.exitCode);
    },
  );

  withJson(
    withSandboxFlags(program
      .command('new')
      .description('create a persistent sandbox and wait until it is running')
      .argument('<name>', 'sandbox name: lowercase letters, digits and -, up to 63')
      .option('-p, --persistent', 'keep it until removed (the default for new)')
      .addHelpText(
        'after',
        '\nIts files live in a workspace (named after it unless -w says another), so stop and start\nkeep them and rm keeps the workspace.\n\nExamples:\n  roost new dev\n  roost new dev -w proj --disk 20',
      )),
  ).action(async (name: string, opts: SandboxFlags & JsonOpt) => {
    const roost = await client(cli);
    const sandbox = await roost.sandboxes.create({ name, ...sandboxOptions(opts) });
    if (opts.json) printJson(sandbox.info);
    else printLine(`Sandbox ${sandbox.name} is running (${sandbox.id}). Try: roost exec ${sandbox.name} 'uname -a'`);
  });

  const exec = withJson(
    program
      .command('exec')
      .description('run a command in a running sandbox; one argument runs as a bash script')
      .argument('<sandbox>', 'name or id')
      .argument('<command...>', "command and its arguments (after --), or one quoted script ('ls | wc -l')")
      .option('-e, --env <KEY=VALUE>', 'environment variable (repeatable)', collectEnv)
      .option('-w, --workdir <dir>', 'working directory (default /root)')
      .option('--timeout <seconds>', 'kill the command after this many seconds (exit code 124)', positiveNumber('--timeout'))
      .option('-i, --interactive', 'send stdin even from a terminal (from a pipe or file it is sent anyway)')
      .option('-t, --tty', 'run it under a terminal, like docker exec -t (-it for a shell: your keys go to it)')
      .addHelpText(
        'after',
        "\nOptions go before --; everything after it is the command.\n\nExamples:\n  roost exec dev 'ls | wc -l'          # one argument: a bash script\n  roost exec dev -e A=1 -- ls -la /    # several: argv\n  echo hi | roost exec dev cat         # stdin from a pipe or file is sent\n  roost exec -it dev bash              # an interactive shell",
      ),
  );
  // An option after the sandbox that is not ours belongs to the command: say how to pass it.
  Object.assign(exec, {
    unknownOption(flag: string): never {
      throw new UsageError(
        `unknown option '${flag}': an option of the command goes after --, as in \`roost exec <sandbox> -- ls -la\`, or quote the whole script: \`roost exec <sandbox> 'ls -la'\``,
      );
    },
  });
  exec.action(
    async (
      ref: string,
      command: string[],
      opts: { env?: Record<string, string>; workdir?: string; timeout?: number; interactive?: boolean; tty?: boolean } & JsonOpt,
    ) => {
      const tty = opts.tty ? terminalRequest(process.env.TERM) : undefined;
      const stdin = sendsStdin(opts.interactive);
      const roost = await client(cli);
      const argv = command.length === 1 ? ['bash', '-c', command[0]!] : command;
      const handle = roost.exec(ref, argv, {
        env: opts.env,
        cwd: opts.workdir,
        timeoutSec: opts.timeout,
        ...(stdin && { stdin: process.stdin }),
        ...(tty && { tty }),
      });
      // Raw only when our keys go to the command: then Ctrl-C is a byte for its terminal.
      const restore = tty ? attachTerminal(handle, { raw: Boolean(stdin) }) : undefined;
      let result;
      try {
        result = await streamCommand(handle, { collect: Boolean(opts.json) });
      } finally {
        restore?.();
      }
      if (opts.json) printJson({ ...result.exit, stdout: result.stdout, stderr: result.stderr });
      else if (result.exit.reason) process.stderr.write(`roost: ${result.exit.reason}\n`);
      throw new ExitError(result.exit.exitCode);
    },
  );

  const list = async (opts: { all?: boolean } & JsonOpt) => {
    const roost = await client(cli);
    const sandboxes = await roost.sandboxes.list({ all: opts.all });
    if (opts.json) return printJson(sandboxes);
    if (sandboxes.length === 0) {
      return printLine(opts.all ? 'No sandboxes. Try: roost run \'echo hi\'' : 'No running sandboxes (roost ls --all shows stopped ones and ended runs).');
    }
    printLine(table(['NAME', 'ID', 'STATUS', 'IMAGE', 'CREATED'], sandboxes.map(row)));
  };
  withJson(program.command('list').description('your sandboxes, newest first').option('-a, --all', 'include stopped sandboxes and ended runs')).action(list);
  withJson(program.command('ls').description('same as list').option('-a, --all', 'include stopped sandboxes and ended runs')).action(list);

  withJson(program.command('status').description('details of one sandbox').argument('<sandbox>', 'name or id')).action(
    async (ref: string, opts: JsonOpt) => {
      const sandbox = await (await client(cli)).sandboxes.get(ref);
      if (opts.json) printJson(sandbox.info);
      else printLine(describeSandbox(sandbox.info));
    },
  );

  program
    .command('logs')
    .description("output of the sandbox's script")
    .argument('<sandbox>', 'name or id')
    .option('-f, --follow', 'keep printing until the script ends')
    .option('--json', 'print {stdout, stderr, exitCode} as JSON')
    .action(async (ref: string, opts: { follow?: boolean } & JsonOpt) => {
      const roost = await client(cli);
      const result = await streamCommand(roost.logs(ref, { follow: opts.follow }), { collect: Boolean(opts.json) });
      if (opts.json) printJson({ ...result.exit, stdout: result.stdout, stderr: result.stderr });
    });

  withJson(
    program
      .command('stop')
      .description('stop a sandbox: its processes end, its record, name and workspace stay (roost start runs it again)')
      .argument('<sandbox>', 'name or id')
      .addHelpText('after', '\nIt answers once the workspace\'s final sync is done, or says why it is not yet safe in the store\n(the local copy is kept; roost status shows the failure).'),
  ).action(async (ref: string, opts: JsonOpt) => {
    const sandbox = await (await client(cli)).sandboxes.stop(ref);
    if (opts.json) printJson(sandbox);
    else {
      printLine(`Stopped ${sandbox.name}.`);
      if (sandbox.workspace?.failure) process.stderr.write(`roost: workspace ${sandbox.workspace.name} is not yet safe in the store: ${sandbox.workspace.failure} (its local copy is kept)\n`);
    }
  });

  const restartNote =
    '\nIt mounts its workspace again: the files written in it before the stop (installed packages\nincluded) are there. Its name, id, settings, limits and egress rules stay.';
  withJson(
    program
      .command('start')
      .description('start a stopped sandbox again and wait until it is running')
      .argument('<sandbox>', 'name or id')
      .addHelpText('after', `${restartNote}\n\nExamples:\n  roost stop dev && roost start dev`),
  ).action(async (ref: string, opts: JsonOpt) => {
    const sandbox = await (await client(cli)).sandboxes.start(ref);
    if (opts.json) printJson(sandbox);
    else printLine(`Sandbox ${sandbox.name} is running (${sandbox.id}). Try: roost exec ${sandbox.name} 'uname -a'`);
  });

  withJson(
    program
      .command('restart')
      .description('stop a sandbox and start it again; waits until it is running')
      .argument('<sandbox>', 'name or id')
      .addHelpText('after', restartNote),
  ).action(async (ref: string, opts: JsonOpt) => {
    const sandbox = await (await client(cli)).sandboxes.restart(ref);
    if (opts.json) printJson(sandbox);
    else printLine(`Sandbox ${sandbox.name} restarted and running (${sandbox.id}).`);
  });

  withJson(
    program
      .command('prune')
      .description('remove your ended runs with their logs (never a running sandbox)')
      .option('--stopped', 'also remove your stopped sandboxes')
      .addHelpText(
        'after',
        '\nThe daemon also removes the oldest ended runs by itself past its retention limits\n(ROOST_RUN_RETENTION_COUNT, ROOST_RUN_RETENTION_BYTES; see `roostd --help`).\n\nExamples:\n  roost prune                 # ended runs only\n  roost prune --stopped --json',
      ),
  ).action(async (opts: { stopped?: boolean } & JsonOpt) => {
    const removed = await (await client(cli)).sandboxes.prune({ stopped: opts.stopped });
    if (opts.json) return printJson({ removed });
    if (removed.length === 0) return printLine(opts.stopped ? 'Nothing to remove: no ended runs or stopped sandboxes.' : 'Nothing to remove: no ended runs.');
    for (const sandbox of removed) printLine(`Removed ${sandbox.name} (${sandbox.id}, ${sandbox.status}).`);
  });

  withJson(
    program
      .command('rm')
      .description('remove sandboxes and everything they made, except their workspaces')
      .argument('<sandbox...>', 'names or ids')
      .addHelpText('after', '\nA workspace outlives its sandbox: `roost workspace rm <ws>` removes it.'),
  ).action(async (refs: string[], opts: JsonOpt) => {
    const roost = await client(cli);
    const removed: string[] = [];
    const keptWorkspaces: string[] = [];
    for (const ref of refs) {
      const { info } = await roost.sandboxes.get(ref);
      await roost.sandboxes.remove(info.id);
      removed.push(ref);
      if (info.workspace) keptWorkspaces.push(info.workspace.name);
      if (!opts.json) {
        printLine(info.workspace ? `Removed ${ref}; its workspace ${info.workspace.name} is kept (roost workspace rm ${info.workspace.name} removes it).` : `Removed ${ref}.`);
      }
    }
    if (opts.json) printJson({ removed, keptWorkspaces });
  });

  withJson(
    program
      .command('set')
      .description('change a sandbox\'s settings')
      .argument('<sandbox>', 'name or id')
      .option('--ssh-agent', 'let SSH sessions forward the client\'s agent into it (ssh -A)')
      .option('--no-ssh-agent', 'stop that (the default)')
      .option('--user <name>', 'the user SSH logins run as unless the SSH user says box+name')
      .option('--allow-net <cidr|domain>', 'replace the egress allow-list (repeatable); applies at once', collectList)
      .option('--deny-net <cidr|domain>', 'replace the egress deny-list (repeatable); applies at once', collectList)
      .option('--clear-net', 'drop every egress rule (then apply --allow-net/--deny-net, if given)')
      .option('--cpus <n>', 'CPU limit; applies at once', positiveNumber('--cpus'))
      .option('--memory <MB>', 'memory limit in MB; applies at once', positiveNumber('--memory'))
      .option('--pids <n>', 'most processes and threads at once; applies at once', positiveNumber('--pids'))
      .option('--open-files <n>', 'open-files limit: only processes started afterwards get it', positiveNumber('--open-files'))
      .addHelpText(
        'after',
        '\nExamples:\n  roost set dev --ssh-agent      # then: roost ssh -A dev, git push with your keys\n  roost set dev --no-ssh-agent\n  roost set dev --user alice     # ssh dev@host logs in as alice (refused if the image has no alice)\n  roost set dev --allow-net pypi.org --allow-net files.pythonhosted.org\n  roost set dev --clear-net      # every public destination again\n  roost set dev --memory 2048 --cpus 2   # a running sandbox gets them at once, within your quota',
      ),
  ).action(async (ref: string, opts: { sshAgent?: boolean; user?: string; allowNet?: string[]; denyNet?: string[]; clearNet?: boolean; cpus?: number; memory?: number; pids?: number; openFiles?: number } & JsonOpt) => {
    const limits = { cpus: opts.cpus, memoryMb: opts.memory, pids: opts.pids, openFiles: opts.openFiles };
    if (opts.sshAgent === undefined && opts.user === undefined && !opts.allowNet && !opts.denyNet && !opts.clearNet && Object.values(limits).every((value) => value === undefined)) {
      throw new UsageError('nothing to set: give --ssh-agent, --no-ssh-agent, --user, --allow-net, --deny-net, --clear-net, --cpus, --memory, --pids or --open-files');
    }
    const sandbox = await (await client(cli)).sandboxes.update(ref, {
      sshAgentForwarding: opts.sshAgent,
      defaultUser: opts.user,
      allowNet: opts.allowNet,
      denyNet: opts.denyNet,
      clearNet: opts.clearNet,
      ...limits,
    });
    if (opts.json) printJson(sandbox);
    else {
      const net = `egress ${sandbox.allowNet.length ? `only to ${sandbox.allowNet.join(', ')}` : 'to every public destination'}${sandbox.denyNet.length ? `, never to ${sandbox.denyNet.join(', ')}` : ''}`;
      printLine(`${sandbox.name}: SSH logins as ${sandbox.defaultUser}, agent forwarding ${sandbox.sshAgentForwarding ? 'allowed' : 'off'}, ${net}.`);
      printLine(`limits: ${sandbox.cpus} CPUs, ${sandbox.memoryMb} MB memory, ${sandbox.pidsLimit} processes, ${sandbox.openFiles} open files per process.`);
    }
  });

  withJson(
    program.command('doctor').description('check the host prerequisites and look for residue of removed sandboxes (admin)'),
  ).action(async (opts: JsonOpt) => {
    const report = await (await client(cli)).doctor();
    const healthy = report.problems.length === 0 && report.leftovers.length === 0;
    if (opts.json) printJson({ healthy, ...report });
    else {
      printLine(`runtime      ${report.runtime}`);
      printLine(report.problems.length === 0 ? 'host         ok: every prerequisite is there' : 'host         problems:');
      for (const { problem, fix } of report.problems) printLine(`  - ${problem}\n    fix: ${fix}`);
      printLine(report.leftovers.length === 0 ? 'residue      none' : `residue      ${report.leftovers.length} item(s):`);
      for (const { sandboxId, what } of report.leftovers) printLine(`  - ${sandboxId}: ${what}`);
      if (report.leftovers.length > 0) printLine('See docs/operations.md ("Cleaning up by hand") to remove residue.');
    }
    if (!healthy) throw new ExitError(1);
  });

  addSshCommands(program, cli);
  addQuotaCommands(program, cli);
  addWorkspaceCommands(program, cli);
  addVersionCommand(program, cli);
  checkArguments(program);

  return program;
}

function row(sandbox: Sandbox): string[] {
  // A run's exit code belongs to its script: beside a sandbox that still runs (run -p) it would
  // read as the sandbox's own state, so it is shown only for ended runs.
  const ended = sandbox.status === 'completed' || sandbox.status === 'error';
  const status = ended && sandbox.exitCode !== null ? `${sandbox.status} (exit ${sandbox.exitCode})` : sandbox.status;
  return [sandbox.name, sandbox.id, status, sandbox.image, ago(sandbox.createdAt)];
}
