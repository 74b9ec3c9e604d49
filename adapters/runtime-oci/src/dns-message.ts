// Just enough of RFC 1035 for the DNS forwarder: read a query's question, read the A records of
// an answer, and make an error answer from a query. Every read is bounds-checked: the input
// comes from a sandbox (queries) or the network (answers).

export interface Question {
  /** Lower case, without the trailing dot. */
  name: string;
  type: number;
  /** Where the question section ends (header + one question). */
  end: number;
}

export interface AddressRecord {
  address: string;
  ttlS: number;
}

export const RCODE_NXDOMAIN = 3;
export const RCODE_REFUSED = 5;
const TYPE_A = 1;
const HEADER_BYTES = 12;
const MAX_POINTER_HOPS = 32;

export class DnsFormatError extends Error {}

function need(message: Buffer, offset: number, bytes: number): void {
  if (offset + bytes > message.length) throw new DnsFormatError('message ends early');
}

/** Reads a (possibly compressed) name at `offset`; returns it and where the name's bytes end. */
function readName(message: Buffer, offset: number): { name: string; end: number } {
  const labels: string[] = [];
  let end = -1;
  let at = offset;
  for (let hops = 0; ; ) {
    need(message, at, 1);
    const length = message[at]!;
    if (length === 0) {
      if (end < 0) end = at + 1;
      break;
    }
    if ((length & 0xc0) === 0xc0) {
      need(message, at, 2);
      if (end < 0) end = at + 2;
      if (++hops > MAX_POINTER_HOPS) throw new DnsFormatError('name pointer loop');
      at = message.readUInt16BE(at) & 0x3fff;
      continue;
    }
    if (length > 63) throw new DnsFormatError('bad label length');
    need(message, at + 1, length);
    labels.push(message.toString('latin1', at + 1, at + 1 + length));
    at += 1 + length;
    if (labels.length > 127) throw new DnsFormatError('name too long');
  }
  return { name: labels.join('.').toLowerCase(), end };
}

/** The one question of a query (QDCOUNT must be 1, QR must be 0). */
export function readQuestion(query: Buffer): Question {
  need(query, 0, HEADER_BYTES);
  if (query[2]! & 0x80) throw new DnsFormatError('not a query');
  if (query.readUInt16BE(4) !== 1) throw new DnsFormatError('not exactly one question');
  const { name, end } = readName(query, HEADER_BYTES);
  need(query, end, 4);
  return { name, type: query.readUInt16BE(end), end: end + 4 };
}

/** The A records of an answer's answer section (CNAME chains included: every A there). */
export function readAddressRecords(answer: Buffer): AddressRecord[] {
  need(answer, 0, HEADER_BYTES);
  const questions = answer.readUInt16BE(4);
  const answers = answer.readUInt16BE(6);
  let at = HEADER_BYTES;
  for (let i = 0; i < questions; i++) at = readName(answer, at).end + 4;
  const records: AddressRecord[] = [];
  for (let i = 0; i < answers; i++) {
    at = readName(answer, at).end;
    need(answer, at, 10);
    const type = answer.readUInt16BE(at);
    const ttlS = answer.readUInt32BE(at + 4);
    const length = answer.readUInt16BE(at + 8);
    at += 10;
    need(answer, at, length);
    if (type === TYPE_A && length === 4) records.push({ address: [...answer.subarray(at, at + 4)].join('.'), ttlS });
    at += length;
  }
  return records;
}

/** An answer to `query` with no records and `rcode` (the question echoed, as resolvers expect). */
export function errorAnswer(query: Buffer, question: Question, rcode: number): Buffer {
  const answer = Buffer.from(query.subarray(0, question.end));
  // QR=1, same opcode and RD, RA=1, rcode.
  answer[2] = 0x80 | (query[2]! & 0x79);
  answer[3] = 0x80 | rcode;
  answer.writeUInt16BE(1, 4);
  answer.writeUInt16BE(0, 6);
  answer.writeUInt16BE(0, 8);
  answer.writeUInt16BE(0, 10);
  return answer;
}

/** Whether an answer belongs to the query: same id, a response. */
export function answers(query: Buffer, answer: Buffer): boolean {
  return answer.length >= HEADER_BYTES && answer.readUInt16BE(0) === query.readUInt16BE(0) && (answer[2]! & 0x80) !== 0;
}
