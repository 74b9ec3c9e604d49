// The one .Xauthority entry an X11-forwarded session needs: the cookie the client sent in its
// x11-req, for display N of any host (FamilyWild), in libXau's file format.

const familyWild = 65535;

function field(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(2 + data.length);
  new DataView(out.buffer).setUint16(0, data.length);
  out.set(data, 2);
  return out;
}

export function xauthorityEntry(display: number, protocol: string, cookieHex: string): Uint8Array {
  const encoder = new TextEncoder();
  const family = new Uint8Array(2);
  new DataView(family.buffer).setUint16(0, familyWild);
  const cookie = Uint8Array.from(cookieHex.match(/../g) ?? [], (byte) => parseInt(byte, 16));
  const parts = [family, field(new Uint8Array(0)), field(encoder.encode(String(display))), field(encoder.encode(protocol)), field(cookie)];
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
