// The README's "one-minute tour", run line by line as written against a real daemon (real crun,
// the built CLI for `npx roost`), each line checked to end as its comment says. The tour is
// parsed, not copied, so a line added or changed there is run here. A few lines need what a
// test daemon cannot have (a terminal, the internet); each is listed in `needs` below with how
// it is run instead, and that list is checked to stay small.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cliPath, startDaemon, type TestDaemon } from '@roost/testkit';

export interface TourLine {
  /** The shell line, as a user pastes it. */
  command: string;
  /** The comment after `#`, or ''. */
  comment: string;
}

/** The command lines of the README's tour: its first code block after the heading. */
export function tourLines(readme: string): TourLine[] {
  const section = readme.split(/^## A one-minute tour$/m)[1];
  if (!section) throw new Error('README.md has no "## A one-minute tour" section');
  const block = /^```[a-z]*\n([\s\S]*?)^```/m.exec(section)?.[1];
  if (!block) throw new Error('the tour has no code block');
  return block
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const at = commentStart(line);
      return at === -1 ? { command: line.trim(), comment: '' } : { command: line.slice(0, at).trim(), comment: line.slice(at + 1).trim() };
    });
}

/** Where a shell comment begins: a `#` after whitespace, outside quotes. */
function commentStart(line: string): number {
  let quote: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const char = line[i]!;
    if (quote) {
      if (char === quote) quote = undefined;
    } else if (char === "'" || char === '"') {
      quote = char;
    } else if (char === '#' && (i === 0 || /\s/.test(line[i - 1]!))) {
      return i;
    }
  }
  return -1;
}

/** The exit code a line's comment promises ("exit code 124", "the script's code: 3"); 0 when it names none. */
export function promisedExitCode(line: TourLine): number {
  const match = /\bcode:? (\d+)\b/.exec(line.comment) ?? /\bexits? (\d+)\b/.exec(line.comment);
  return match ? Number(match[1]) : 0;
}

/** Lines that end in `; echo $?` print the code instead of exiting with it. */
const printsItsCode = (line: TourLine) => /;\s*echo \$\?\s*$/.test(line.command);

interface LineResult {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

/**
 * The lines a test daemon cannot run exactly as a user does, and how each is run instead.
 * Every other line runs as written.
 */
const needs: {
  what: RegExp;
  why: string;
  stdin?: (match: RegExpExecArray) => string;
  /** A variant of the line that says why it printed nothing; run after it when it did. */
  diagnose?: (line: string) => string;
  check?: (result: LineResult, match: RegExpExecArray, internet: boolean, diagnosis?: LineResult) => void;
}[] = [
  {
    // `roost ssh <name>` opens a shell on a terminal; with the shell's input on a pipe instead
    // it runs what it is given, through the same gateway, key and pinned host key.
    what: /\broost ssh ([a-z0-9-]+)$/,
    why: 'a terminal: the shell reads `hostname` from stdin instead',
    stdin: () => 'hostname\n',
    check: (result, match) => assert.equal(result.stdout.trim(), match[1], 'the shell ran in the sandbox'),
  },
  {
    // Where this host reaches the site, the line runs as written (the test daemon lets NAT reach
    // the address this host resolves it to, which may be a range NAT refuses by default) and
    // must print its status line, unless the only difference is TLS trust: a network whose proxy
    // re-signs HTTPS with a CA the host trusts and the image does not. Without internet the line
    // must fail only for that. Both are shown by curl's own error (-S, with a connect timeout
    // instead of minutes of SYN retries), while roost itself exits 0.
    what: /--network nat '.*\bcurl -s\S* https:\/\/([a-z0-9.-]+)/,
    why: 'the internet',
    diagnose: (line) => line.replace(/\bcurl -s(\S*)/, 'curl -sS$1 --connect-timeout 5 --max-time 10'),
    check: (result, match, internet, diagnosis) => {
      if (internet && /^HTTP\/[\d.]+ \d{3}/.test(result.stdout)) return;
      assert.equal(result.stdout, '', `${match[1]}: curl printed nothing`);
      const why = internet ? /certificate/i : /Could not resolve host|Failed to connect|timed out|unreachable/i;
      assert.match(diagnosis?.stderr ?? '', why, `curl failed for ${internet ? "TLS trust (an intercepting proxy)" : 'lack of internet'} only`);
    },
  },
];

/** Whether this host reaches https://host, and the address it resolves it to. */
async function reach(host: string): Promise<{ internet: boolean; address?: string }> {
  const address = await Promise.race([
    lookup(host, { family: 4 }).then((found) => found.address, () => undefined),
    new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 5000).unref()),
  ]);
  if (!address) return { internet: false };
  // -k: whether packets get there and back; what the sandbox trusts is its image's business.
  const curl = spawnSync('curl', ['-sSIk', '--max-time', '10', '-o', '/dev/null', `https://${host}`]);
  return { internet: curl.status === 0, address };
}

describe("the README's tour runs as written", () => {
  // ROOST_TOUR_README: another copy, e.g. to see this test fail on a tour line that does not work.
  const readme = readFileSync(process.env.ROOST_TOUR_README ?? new URL('../../../README.md', import.meta.url), 'utf8');
  const lines = tourLines(readme);
  let daemon: TestDaemon;
  let home: string;
  let agent: ReturnType<typeof spawn> | undefined;
  let agentSocket: string;
  let internet = false;

  before(async () => {
    // What the tour assumes of the user: a key in ~/.ssh (for `ssh-key add`) held by an agent (for ssh).
    home = mkdtempSync(join(tmpdir(), 'roost-tour-'));
    execFileSync('mkdir', ['-m', '700', join(home, '.ssh')]);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(home, '.ssh', 'id_ed25519')]);
    agentSocket = join(home, 'agent.sock');
    agent = spawn('ssh-agent', ['-D', '-a', agentSocket], { stdio: 'ignore' });
    await new Promise<void>((resolve, reject) => {
      const add = () => {
        const added = spawnSync('ssh-add', [join(home, '.ssh', 'id_ed25519')], { env: { ...process.env, SSH_AUTH_SOCK: agentSocket }, stdio: 'ignore' });
        if (added.status === 0) resolve();
        else if (agent?.exitCode !== null) reject(new Error('ssh-agent ended'));
        else setTimeout(add, 20);
      };
      add();
    });
    const site = lines.map((line) => needs[1]!.what.exec(line.command)?.[1]).find(Boolean);
    const reached = site ? await reach(site) : { internet: false };
    internet = reached.internet;
    daemon = await startDaemon({
      driver: 'oci',
      config: { network: { allowNat: true, egressAllowCidrs: reached.address ? [`${reached.address}/32`] : [] } },
    });
  });
  after(async () => {
    agent?.kill();
    await daemon?.close();
    if (home) rmSync(home, { recursive: true, force: true });
  });

  it('parses the tour: lines, comments and promised exit codes', () => {
    assert.ok(lines.length >= 10, `the tour has lines (found ${lines.length})`);
    for (const line of lines) assert.match(line.command, /^(?:[^|]+\| )?npx roost /, `every tour line runs npx roost (input may be piped in): ${line.command}`);
    assert.deepEqual(tourLines('## A one-minute tour\n\ntext\n\n```\nnpx roost run \'a # b\'  # c\nnpx roost ls\n```\n'), [
      { command: "npx roost run 'a # b'", comment: 'c' },
      { command: 'npx roost ls', comment: '' },
    ]);
    assert.equal(promisedExitCode({ command: '', comment: 'killed after 5 s, exit code 124' }), 124);
    assert.equal(promisedExitCode({ command: '', comment: "exits with the script's code: 3" }), 3);
    assert.equal(promisedExitCode({ command: '', comment: 'keep the sandbox' }), 0);
    const special = lines.filter((line) => needs.some((need) => need.what.test(line.command)));
    assert.ok(special.length <= 3, `only a few lines are run in another form: ${special.map((line) => line.command).join(' | ')}`);
  });

  it('every line ends as its comment says', async () => {
    // `npx roost` is the built CLI; everything else of the line is bash, as in the user's terminal.
    const prelude = 'npx() { if [ "$1" = roost ]; then shift; node "$ROOST_TOUR_CLI" "$@"; else echo "tour: only npx roost" >&2; return 99; fi; }';
    const env = { PATH: process.env.PATH, HOME: home, ROOST_API_URL: daemon.url, ROOST_TOUR_CLI: cliPath, SSH_AUTH_SOCK: agentSocket };
    for (const line of lines) {
      const need = needs.map((n) => ({ n, match: n.what.exec(line.command) })).find(({ match }) => match);
      // Without internet the line as written would wait minutes for TCP: only its diagnosis runs.
      const diagnoseOnly = !internet && need?.n.diagnose !== undefined;
      const command = diagnoseOnly ? need.n.diagnose!(line.command) : line.command;
      const result = await bash(`${prelude}\n${command}`, env, need?.match && need.n.stdin ? need.n.stdin(need.match) : '');
      const context = `${command}\n  exit ${result.exitCode}\n  stdout: ${result.stdout.slice(-500)}\n  stderr: ${result.stderr.slice(-500)}`;
      if (printsItsCode(line)) {
        assert.equal(result.exitCode, 0, context);
        assert.equal(result.stdout.trimEnd().split('\n').at(-1), String(promisedExitCode(line)), context);
      } else {
        assert.equal(result.exitCode, promisedExitCode(line), context);
      }
      if (need?.match) {
        const diagnosis = need.n.diagnose && (diagnoseOnly ? result : result.stdout === '' ? await bash(`${prelude}\n${need.n.diagnose(line.command)}`, env, '') : undefined);
        need.n.check?.(result, need.match, internet, diagnosis);
      }
      // A comment that says `then ssh roost-NAME`: the written ~/.ssh/config works with plain ssh.
      const then = /`ssh (roost-[a-z0-9-]+)`/.exec(line.comment);
      if (then) {
        const ssh = await bash(`ssh -F ~/.ssh/config -o BatchMode=yes ${then[1]} hostname`, env, '');
        assert.equal(ssh.stdout.trim(), then[1]!.slice('roost-'.length), `ssh ${then[1]} after "${line.command}": ${ssh.stderr}`);
      }
    }
  });
});

function bash(script: string, env: Record<string, string | undefined>, stdin: string): Promise<LineResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', script], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.stdin.on('error', () => {});
    child.stdin.end(stdin);
    child.on('error', reject);
    child.on('close', (exitCode) => resolve({ exitCode, stdout: Buffer.concat(stdout).toString(), stderr: Buffer.concat(stderr).toString() }));
  });
}
