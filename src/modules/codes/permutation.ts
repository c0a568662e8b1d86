// Unique codes without collision checks: code #i of a campaign is FPE(key, i), a keyed permutation
// of [0, alphabet^length). Two different counters can never give the same code, at any fill, so a
// generation is a counter range plus a COPY and never a "random + retry until unique" loop.
//
// The permutation is an FF1-style unbalanced Feistel network over the code's digits in the
// campaign's radix (NIST SP 800-38G shape): the digits split into halves of u and v digits, and
// each of the 10 rounds adds a pseudo-random value modulo radix^u or radix^v to one half. Because
// each round works modulo the exact half-domain, the network permutes exactly [0, radix^length):
// no cycle walking is needed. The round function is AES-128 under a random per-campaign key
// (node's AES-NI), evaluated for a whole chunk of codes per round in one cipher.update call, which
// is what makes ten million codes a few seconds of CPU. Without the key the codes are
// unpredictable: knowing some codes reveals nothing useful about the others.
import { type Cipher, createCipheriv } from 'node:crypto';
import { endianness } from 'node:os';

const ROUNDS = 10;
const TWO32 = 2 ** 32;
/** Halves up to this size use float arithmetic: (m-1)² stays exact below 2^53. */
const NUMBER_PATH_MAX = 2 ** 26;

export class CodePermutation {
  readonly radix: number;
  readonly length: number;
  private readonly u: number;
  private readonly v: number;
  private readonly cipher: Cipher;
  private readonly fast: boolean;

  constructor(
    key: Buffer,
    readonly alphabet: string,
    length: number,
  ) {
    if (key.length !== 16) throw new Error('permutation key must be 16 bytes');
    this.radix = alphabet.length;
    this.length = length;
    this.u = Math.floor(length / 2);
    this.v = length - this.u;
    this.cipher = createCipheriv('aes-128-ecb', key, null);
    this.cipher.setAutoPadding(false);
    this.fast = this.radix ** this.v <= NUMBER_PATH_MAX;
    // The fast path reads AES blocks as host-order 32-bit words; codes must be the same on every
    // process of a cluster, and every platform Node ships for (x64, arm64) is little-endian.
    if (endianness() !== 'LE') throw new Error('code generation needs a little-endian CPU');
  }

  /** Digit indices (length per code, most significant first) of codes #start … #start+count-1. */
  digits(start: number, count: number): Uint8Array {
    return this.fast ? this.digitsFast(start, count) : this.digitsBig(start, count);
  }

  /** The codes as strings (prefix not included). */
  codes(start: number, count: number): string[] {
    const d = this.digits(start, count);
    const out: string[] = new Array(count);
    for (let k = 0; k < count; k++) {
      let s = '';
      for (let j = 0; j < this.length; j++) s += this.alphabet[d[k * this.length + j]!];
      out[k] = s;
    }
    return out;
  }

  private block(count: number, round: number): Buffer {
    const buf = Buffer.alloc(count * 16);
    for (let k = 0; k < count; k++) {
      const o = k * 16;
      buf[o] = round;
      buf[o + 1] = this.radix;
      buf[o + 2] = this.length;
    }
    return buf;
  }

  private digitsFast(start: number, count: number): Uint8Array {
    const { radix, u, v } = this;
    const mu = radix ** u;
    const mv = radix ** v;
    const a = new Float64Array(count);
    const b = new Float64Array(count);
    for (let k = 0; k < count; k++) {
      const i = start + k;
      a[k] = Math.floor(i / mv);
      b[k] = i % mv;
    }
    const buf = Buffer.alloc(count * 16);
    const words = new Uint32Array(buf.buffer, buf.byteOffset, count * 4);
    for (let r = 0; r < ROUNDS; r++) {
      const m = r % 2 === 0 ? mu : mv;
      const scale = m / 2 ** 52;
      const header = r | (this.radix << 8) | (this.length << 16);
      for (let k = 0; k < count; k++) {
        words[k * 4] = header;
        words[k * 4 + 3] = b[k]!;
      }
      const y = this.cipher.update(buf);
      const yw = new Uint32Array(y.buffer, y.byteOffset, count * 4);
      for (let k = 0; k < count; k++) {
        // 52 bits of AES output scaled onto [0, m) by a multiply (Lemire's reduction, no
        // division): bias below m / 2^52 < 2^-26. Any deterministic map into [0, m) keeps the
        // network a permutation; the clamp guards the last float rounding.
        let f = Math.floor(((yw[k * 4]! & 0xfffff) * TWO32 + yw[k * 4 + 1]!) * scale);
        if (f >= m) f = m - 1;
        const c = a[k]! + f;
        a[k] = b[k]!;
        b[k] = c >= m ? c - m : c;
      }
    }
    const out = new Uint8Array(count * this.length);
    for (let k = 0; k < count; k++) {
      const base = k * this.length;
      let x = a[k]!;
      for (let j = u - 1; j >= 0; j--) {
        const q = Math.floor(x / radix);
        out[base + j] = x - q * radix;
        x = q;
      }
      x = b[k]!;
      for (let j = this.length - 1; j >= u; j--) {
        const q = Math.floor(x / radix);
        out[base + j] = x - q * radix;
        x = q;
      }
    }
    return out;
  }

  private digitsBig(start: number, count: number): Uint8Array {
    const radix = BigInt(this.radix);
    const mu = radix ** BigInt(this.u);
    const mv = radix ** BigInt(this.v);
    const a: bigint[] = new Array(count);
    const b: bigint[] = new Array(count);
    for (let k = 0; k < count; k++) {
      const i = BigInt(start + k);
      a[k] = i / mv;
      b[k] = i % mv;
    }
    for (let r = 0; r < ROUNDS; r++) {
      const m = r % 2 === 0 ? mu : mv;
      const buf = this.block(count, r);
      for (let k = 0; k < count; k++) {
        // b < radix^16 ≤ 66^16 < 2^97: 13 bytes from offset 3 hold it.
        let x = b[k]!;
        for (let j = 15; j >= 3 && x > 0n; j--) {
          buf[k * 16 + j] = Number(x & 0xffn);
          x >>= 8n;
        }
      }
      const y = this.cipher.update(buf);
      for (let k = 0; k < count; k++) {
        const f = BigInt(`0x${y.subarray(k * 16, k * 16 + 16).toString('hex')}`) % m;
        const c = (a[k]! + f) % m;
        a[k] = b[k]!;
        b[k] = c;
      }
    }
    const out = new Uint8Array(count * this.length);
    for (let k = 0; k < count; k++) {
      const base = k * this.length;
      let x = a[k]!;
      for (let j = this.u - 1; j >= 0; j--) {
        out[base + j] = Number(x % radix);
        x /= radix;
      }
      x = b[k]!;
      for (let j = this.length - 1; j >= this.u; j--) {
        out[base + j] = Number(x % radix);
        x /= radix;
      }
    }
    return out;
  }
}
