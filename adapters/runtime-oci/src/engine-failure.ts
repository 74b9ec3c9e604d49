// When the engine itself fails to start an exec'd process (no such binary, not executable, no
// such working directory), crun and runc exit 255, which a command may also exit with. Their
// --log file tells the two apart: the engine writes to it only about its own failures. The code
// is then the one shells and `docker exec` give: 127 for a command that is not there, 126 for
// one that cannot be started. The engine's one-line reason is already on the process's stderr
// (the engine shares it), so nothing more is printed.
import type { ExitStatus } from '@roost/core';

/** Exit code of a command the shell could not find (bash, dash, docker exec). */
export const commandNotFoundExitCode = 127;
/** Exit code of a command found but not startable: not executable, bad working directory. */
export const cannotStartExitCode = 126;

/** The engine's error messages from its --log-format=json log (one JSON object a line). */
export function engineErrors(logText: string): string[] {
  const messages: string[] = [];
  for (const line of logText.split('\n')) {
    if (!line.trim()) continue;
    try {
      const entry = JSON.parse(line) as { level?: unknown; msg?: unknown };
      if ((entry.level === 'error' || entry.level === 'fatal') && typeof entry.msg === 'string') messages.push(entry.msg);
    } catch {
      // A line that is not JSON is not the engine's structured log; it cannot decide anything.
    }
  }
  return messages;
}

/** The exit status a user should see, given the engine's own log of this exec. */
export function execExitStatus(status: ExitStatus, logText: string): ExitStatus {
  if (status.exitCode !== 255 || status.signal) return status;
  const errors = engineErrors(logText);
  if (errors.length === 0) return status;
  // crun: "executable file `x` not found in $PATH: No such file or directory", "open executable:
  // No such file or directory"; runc: `exec: "x": executable file not found in $PATH`.
  const notFound = errors.some((message) => !/chdir|cwd/i.test(message) && /not found|no such file/i.test(message));
  return { exitCode: notFound ? commandNotFoundExitCode : cannotStartExitCode };
}
