import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { foldsCase, normalizeCode, parseFormat } from './format.ts';

describe('codes: normalizeCode folds case unless the alphabet has a letter in both cases', () => {
  it('when the alphabet is digits only, then the prefix folds: win-1234 is WIN-1234', () => {
    const f = parseFormat({ length: 4, alphabet: 'numeric', prefix: 'WIN-' });
    assert.equal(foldsCase(f), true);
    assert.equal(normalizeCode(f, 'win-1234'), 'WIN-1234');
    assert.equal(normalizeCode(f, 'Win-1234'), 'WIN-1234');
    assert.equal(normalizeCode(f, 'WIN-12a4'), null);
  });

  it('when the alphabet has one case, then prefix and letters fold to the stored case', () => {
    const upper = parseFormat({ length: 4, alphabet: 'alphanumeric', prefix: 'sp-' });
    assert.equal(normalizeCode(upper, 'SP-ab12'), 'sp-AB12');
    const lower = parseFormat({ length: 4, alphabet: 'abcdef', prefix: 'WIN-' });
    assert.equal(normalizeCode(lower, 'win-ABCD'), 'WIN-abcd');
  });

  it('when no letter is in both cases but both cases are used, then each letter folds to its own case', () => {
    const f = parseFormat({ length: 4, alphabet: 'abcXYZ', prefix: 'P' });
    assert.equal(foldsCase(f), true);
    assert.equal(normalizeCode(f, 'pAxBy'), 'PaXbY');
  });

  it('when a letter is in both cases, then case is part of the code, the prefix too', () => {
    const f = parseFormat({ length: 4, alphabet: 'aAbB', prefix: 'X-' });
    assert.equal(foldsCase(f), false);
    assert.equal(normalizeCode(f, 'X-aAbB'), 'X-aAbB');
    assert.equal(normalizeCode(f, 'x-aAbB'), null);
    const g = parseFormat({ length: 4, alphabet: 'aAbc', prefix: '' });
    assert.equal(normalizeCode(g, 'abcC'), null, 'C is not folded to c once case matters');
  });

  it('when a character only maps to a letter outside ASCII case rules, then it is not folded', () => {
    const f = parseFormat({ length: 4, alphabet: 'alphanumeric', prefix: 'K-' });
    // Dotless ı upper-cases to I and the Kelvin sign lower-cases to k in JavaScript.
    assert.equal(normalizeCode(f, 'K-ıNFO'), null);
    assert.equal(normalizeCode(f, '\u212a-INFO'), null);
  });
});

describe('codes: parseFormat', () => {
  it('when an alphabet is a preset name in another case, then 422 names the preset instead of making a custom alphabet of its letters', () => {
    for (const [typed, meant] of [
      ['Alphanumeric', 'alphanumeric'],
      ['SAFE', 'safe'],
      ['Numeric', 'numeric'],
    ] as const)
      assert.throws(
        () => parseFormat({ length: 6, alphabet: typed }),
        (err: Error & { statusCode?: number }) =>
          err.statusCode === 422 && err.message.includes(`did you mean "${meant}"?`),
        typed,
      );
    assert.equal(parseFormat({ length: 6, alphabet: 'safe' }).preset, 'safe');
    assert.equal(
      parseFormat({ length: 6, alphabet: 'EFAS' }).preset,
      'custom',
      'the same letters in another order',
    );
  });
});
