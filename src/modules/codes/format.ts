// Code formats: the alphabet presets, validation of a campaign's format, capacity and density.
// Characters are limited to the URL-unreserved set (A–Z a–z 0–9 - _ . ~) so a code is safe in a
// URL path, a CSV cell and a COPY row without any escaping.
import { unprocessable } from '../../kit/errors.ts';

export const ALPHABET_PRESETS = {
  /** A–Z and 0–9: seed 000's batch codes. */
  alphanumeric: 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789',
  /** No look-alikes: 0 O 1 I L are left out, so codes survive being read aloud or retyped. */
  safe: 'ABCDEFGHJKMNPQRSTUVWXYZ23456789',
  numeric: '0123456789',
} as const;
export type AlphabetPreset = keyof typeof ALPHABET_PRESETS;

export const MIN_LENGTH = 4;
export const MAX_LENGTH = 32;
/** Generation is refused past this share of the code space: beyond it codes become guessable. */
export const MAX_DENSITY = 0.01;
const ALLOWED = /^[A-Za-z0-9\-_.~]*$/;

export interface CodeFormat {
  length: number;
  /** The characters themselves, in digit order. */
  alphabet: string;
  /** The preset name, or 'custom'. */
  preset: AlphabetPreset | 'custom';
  prefix: string;
}

/** Resolves `alphabet` (a preset name or the characters) and checks the whole format; 422 says what to fix. */
export function parseFormat(input: { length: number; alphabet: string; prefix?: string }): CodeFormat {
  const { length } = input;
  if (!Number.isInteger(length) || length < MIN_LENGTH || length > MAX_LENGTH)
    throw unprocessable(`format.length must be a whole number from ${MIN_LENGTH} to ${MAX_LENGTH}`);
  const name = input.alphabet;
  const preset = (Object.keys(ALPHABET_PRESETS) as AlphabetPreset[]).find((p) => p === name);
  const alphabet = preset ? ALPHABET_PRESETS[preset] : name;
  if (!preset) {
    // "Alphanumeric" or "SAFE" was a typo for a preset, yet it is also a valid set of distinct
    // characters: taken as one, it made a campaign of codes such as "umlurp" from 12 letters.
    const meant = (Object.keys(ALPHABET_PRESETS) as AlphabetPreset[]).find((p) => p === name.toLowerCase());
    if (meant)
      throw unprocessable(
        `format.alphabet "${name}" is not a preset: preset names are lower case (did you mean "${meant}"?); to use these letters as a custom alphabet, list them in another order`,
      );
    if (alphabet.length < 2)
      throw unprocessable(
        `format.alphabet must be a preset (${Object.keys(ALPHABET_PRESETS).join(', ')}) or at least 2 distinct characters`,
      );
    if (!ALLOWED.test(alphabet))
      throw unprocessable('format.alphabet may only use the characters A-Z a-z 0-9 - _ . ~');
    const seen = new Set<string>();
    for (const ch of alphabet) {
      if (seen.has(ch))
        throw unprocessable(`format.alphabet has the character "${ch}" twice: list each character once`);
      seen.add(ch);
    }
  }
  const prefix = input.prefix ?? '';
  if (prefix.length > 32 || !ALLOWED.test(prefix))
    throw unprocessable('format.prefix may have up to 32 of the characters A-Z a-z 0-9 - _ . ~');
  return { length, alphabet, preset: preset ?? 'custom', prefix };
}

/** alphabet^length, exact. */
export function capacityOf(f: Pick<CodeFormat, 'alphabet' | 'length'>): bigint {
  return BigInt(f.alphabet.length) ** BigInt(f.length);
}

/** The most codes a campaign may hold (1% of its space), capped to what a bigint column holds. */
export function densityLimit(f: Pick<CodeFormat, 'alphabet' | 'length'>): bigint {
  const limit = capacityOf(f) / BigInt(1 / MAX_DENSITY);
  const cap = 2n ** 62n;
  return limit > cap ? cap : limit;
}

const foldsByFormat = new WeakMap<CodeFormat, boolean>();

/**
 * Whether codes of this format fold case: when no letter of the alphabet is there in both cases,
 * case tells no two codes apart, so a code typed in the other case (prefix included) is the same
 * code. That covers one-case alphabets and digit-only ones, which have no case at all (WIN-1234
 * typed win-1234); an alphabet holding both a and A makes case part of the code, prefix included.
 */
export function foldsCase(f: CodeFormat): boolean {
  let fold = foldsByFormat.get(f);
  if (fold === undefined) {
    // The alphabet's characters are distinct: two that lower-case alike are one letter in both cases.
    fold = new Set(f.alphabet.toLowerCase()).size === f.alphabet.length;
    foldsByFormat.set(f, fold);
  }
  return fold;
}

/**
 * The other case of an ASCII letter, else the character itself. ASCII only: String case mapping
 * would turn dotless ı into I or the Kelvin sign into k, and let them pass for letters of a code.
 */
function otherCase(ch: string): string {
  const c = ch.charCodeAt(0);
  if (c >= 65 && c <= 90) return String.fromCharCode(c + 32);
  if (c >= 97 && c <= 122) return String.fromCharCode(c - 32);
  return ch;
}

/** `typed` is `prefix`, or (when folding) `prefix` with some ASCII letters in the other case. */
function matchesPrefix(typed: string, prefix: string, fold: boolean): boolean {
  if (typed === prefix) return true;
  if (!fold) return false;
  for (let i = 0; i < prefix.length; i++)
    if (typed[i] !== prefix[i] && otherCase(typed[i]!) !== prefix[i]) return false;
  return true;
}

/** The code as stored (prefix and letters in the format's case), or null when it is not one of the format's. */
export function normalizeCode(f: CodeFormat, raw: string): string | null {
  const code = raw.trim();
  if (code.length !== f.prefix.length + f.length) return null;
  const fold = foldsCase(f);
  if (!matchesPrefix(code.slice(0, f.prefix.length), f.prefix, fold)) return null;
  let body = '';
  for (let i = f.prefix.length; i < code.length; i++) {
    const ch = code[i]!;
    if (f.alphabet.includes(ch)) body += ch;
    // Not in the alphabet as typed: when folding, it may be in the other case (never both, see foldsCase).
    else if (fold && f.alphabet.includes(otherCase(ch)) && otherCase(ch) !== ch) body += otherCase(ch);
    else return null;
  }
  return f.prefix + body;
}
