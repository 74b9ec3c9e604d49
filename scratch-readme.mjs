import { startDaemon } from '@roost/testkit';
import { execSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
const d = await startDaemon({ driver: 'oci' });
try {
  const readme = readFileSync('README.md', 'utf8');
  const cmd = readme.match(/\ncurl -s [^\n]*\\\n[^\n]*\n/)[0].trim()
    .replace('/var/lib/roost/admin-token', d.daemon.adminTokenFile).replace('http://127.0.0.1:7070', d.url);
  console.log(execSync(cmd, { shell: '/bin/bash', encoding: 'utf8' }));
} finally { await d.close(); }
