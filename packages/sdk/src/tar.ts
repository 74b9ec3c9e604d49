// The two tiny tar jobs `sb.files.write` and `sb.files.read` need, by hand so the SDK stays free
// of dependencies and runs in browsers: one regular file into a ustar archive, and the first
// regular file out of one (pax and GNU long-name headers skipped). Anything more (directories,
// links, streaming) is the job of a real tar library on top of putArchive/getArchive, as `roost cp` does.
const block = 512;

/** A ustar archive holding one regular file `name` (a single path component, at most 100 bytes). */
export function singleFileTar(name: string, data: Uint8Array, mode = 0o644): Uint8Array {
  const nameBytes = new TextEncoder().encode(name);
  if (nameBytes.length === 0 || nameBytes.length > 100 || name.includes('/')) throw new Error(`"${name}" must be one path component of at most 100 bytes`);
  const header = new Uint8Array(block);
  const put = (offset: number, text: string) => header.set(new TextEncoder().encode(text), offset);
  const octal = (value: number, width: number) => value.toString(8).padStart(width - 1, '0') + '\0';
  header.set(nameBytes, 0);
  put(100, octal(mode, 8));
  put(108, octal(0, 8));
  put(116, octal(0, 8));
  put(124, octal(data.length, 12));
  put(136, octal(Math.floor(Date.now() / 1000), 12));
  put(148, '        ');
  put(156, '0');
  put(257, 'ustar\0');
  put(263, '00');
  let sum = 0;
  for (const byte of header) sum += byte;
  put(148, `${sum.toString(8).padStart(6, '0')}\0 `);
  const padded = Math.ceil(data.length / block) * block;
  const archive = new Uint8Array(block + padded + 2 * block);
  archive.set(header, 0);
  archive.set(data, block);
  return archive;
}

/** The contents of the first regular file in a tar archive; throws when the first entry is not one. */
export function firstFileOfTar(archive: Uint8Array): Uint8Array {
  let offset = 0;
  while (offset + block <= archive.length) {
    const header = archive.subarray(offset, offset + block);
    if (header.every((byte) => byte === 0)) break;
    const size = parseOctal(header.subarray(124, 136));
    const type = String.fromCharCode(header[156] ?? 0);
    const start = offset + block;
    offset = start + Math.ceil(size / block) * block;
    // pax extended headers and GNU long names describe the next entry.
    if (type === 'x' || type === 'g' || type === 'L' || type === 'K') continue;
    if (type !== '0' && type !== '\0' && type !== '7') throw new Error('not a regular file (a directory or link): use getArchive for those');
    return archive.slice(start, start + size);
  }
  throw new Error('the archive holds no file');
}

function parseOctal(field: Uint8Array): number {
  // Base-256 (GNU, files ≥ 8 GiB): the high bit of the first byte is set.
  if ((field[0] ?? 0) & 0x80) {
    let value = 0;
    for (let i = 1; i < field.length; i++) value = value * 256 + (field[i] ?? 0);
    return value;
  }
  const text = new TextDecoder().decode(field).replace(/\0.*$/s, '').trim();
  return text ? Number.parseInt(text, 8) : 0;
}
