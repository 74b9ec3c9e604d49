// Per-sandbox egress rules: which destinations a NAT sandbox may reach, on top of the daemon's
// block of non-public ranges. Entries are IPv4 ranges ("203.0.113.0/24", "198.51.100.7") or
// domain names ("example.com" exactly, "*.example.com" any name under it). Semantics: no
// allow-list means every public destination; with one, only those; deny beats allow. Denied
// names get NXDOMAIN; allowed names' answers let their addresses through for the answer's TTL.
import { RoostError } from './errors.js';

export interface EgressRules {
  allow: string[];
  deny: string[];
}

export const NO_EGRESS_RULES: EgressRules = { allow: [], deny: [] };
/** Entries per list: each is an nft element or a name to match on every DNS query. */
export const MAX_EGRESS_RULES = 64;

const IPV4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/;
const DOMAIN_RE = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export type EgressRule = { kind: 'cidr'; cidr: string } | { kind: 'domain'; domain: string };

/** Reads one entry; throws VALIDATION_FAILED saying what is wrong. */
export function parseEgressRule(text: string): EgressRule {
  const entry = text.trim().toLowerCase().replace(/\.$/, '');
  const ip = IPV4_RE.exec(entry);
  if (ip) {
    const octets = ip.slice(1, 5).map(Number);
    const bits = ip[5] === undefined ? 32 : Number(ip[5]);
    if (octets.some((o) => o > 255) || bits > 32) throw invalid(text, 'not an IPv4 address or range');
    const value = ((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0;
    const size = 2 ** (32 - bits);
    if (value % size !== 0) throw invalid(text, `the range does not start at its first address`);
    return { kind: 'cidr', cidr: `${octets.join('.')}/${bits}` };
  }
  if (entry.length > 253 || !DOMAIN_RE.test(entry) || /^[\d.]+$/.test(entry)) {
    throw invalid(text, 'not an IPv4 range (a.b.c.d/n) or a domain name (example.com, *.example.com)');
  }
  return { kind: 'domain', domain: entry };
}

function invalid(text: string, why: string): RoostError {
  return new RoostError('VALIDATION_FAILED', `egress rule "${text}": ${why}`);
}

/** Checks and normalises both lists (lower case, duplicates dropped). */
export function normaliseEgressRules(rules: EgressRules): EgressRules {
  const normalise = (list: string[], which: string) => {
    if (list.length > MAX_EGRESS_RULES) throw new RoostError('VALIDATION_FAILED', `at most ${MAX_EGRESS_RULES} --${which}-net rules`);
    return [...new Set(list.map((entry) => { const rule = parseEgressRule(entry); return rule.kind === 'cidr' ? rule.cidr : rule.domain; }))];
  };
  return { allow: normalise(rules.allow, 'allow'), deny: normalise(rules.deny, 'deny') };
}

/** Whether `name` (a DNS name, lower case) is named by `pattern` ("a.com" exactly, "*.a.com" below it). */
export function domainMatches(pattern: string, name: string): boolean {
  return pattern.startsWith('*.') ? name.endsWith(pattern.slice(1)) : name === pattern;
}
