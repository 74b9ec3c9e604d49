// Quotas for tests that are about something else: high enough never to be what refuses.
import type { QuotaLimits } from '@roost/core';

export const roomyQuota: QuotaLimits = {
  sandboxes: 1000,
  cpus: 1000,
  memoryMb: 1024 * 1024,
  pids: 1_000_000,
  timeoutSec: 86_400,
  logBytes: 1024 * 1024 * 1024,
};
