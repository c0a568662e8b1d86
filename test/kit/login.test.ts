// Sign-in throttling (src/kit/login-throttle.ts): wrong passwords for one e-mail are counted per client
// address and over all addresses; past the limit the answer is a 429 with Retry-After, whatever the
// password, until the window ends or a right password clears the count.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createUser } from '../../src/kit/auth.ts';
import {
  forgetOldLoginAttempts,
  LOGIN_MAX_PER_ADDRESS,
  LOGIN_MAX_PER_EMAIL,
} from '../../src/kit/login-throttle.ts';
import { startPlatform } from '../helpers.ts';

describe('sign-in throttling', async () => {
  const p = await startPlatform({ modules: [] });
  // From a proxy on a private network (TRUST_PROXY's default), so the address X-Forwarded-For names
  // is the client's.
  const signIn = (email: string, password: string, ip: string, remoteAddress = '10.200.0.1') =>
    p.app.inject({
      method: 'POST',
      url: '/api/auth/login',
      remoteAddress,
      headers: { 'x-forwarded-for': ip },
      payload: { email, password },
    });
  const statuses = async (email: string, password: string, ip: string, n: number) => {
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push((await signIn(email, password, ip)).statusCode);
    return out;
  };

  it('when one address sends too many wrong passwords, then it gets 429 even with the right one, and other addresses still sign in', async () => {
    await createUser(p.kit.pool, 'ann@example.com', 'right-pass', 'user');
    // Before: every guess was checked, at request speed.
    assert.deepEqual(await statuses('ann@example.com', 'wrong', '10.0.0.1', LOGIN_MAX_PER_ADDRESS), [
      ...Array(LOGIN_MAX_PER_ADDRESS).fill(401),
    ]);
    const refused = await signIn('ANN@example.com', 'right-pass', '10.0.0.1');
    assert.equal(refused.statusCode, 429, refused.body);
    assert.match(
      refused.json().message,
      /^10 failed sign-ins for this e-mail from your address in 15 minutes: try again in 15 minutes, or ask an admin to lift it \(tessera users unlock\)$/,
    );
    const retryAfter = Number(refused.headers['retry-after']);
    assert.ok(retryAfter > 840 && retryAfter <= 900, `Retry-After ${retryAfter}`);
    // One address keeps guessing: refused, its guesses unchecked and not counted for the e-mail.
    await statuses('ann@example.com', 'wrong', '10.0.0.1', LOGIN_MAX_PER_EMAIL);
    // Before: its 429s counted toward the e-mail's 100, so this was a 429 from anywhere.
    assert.equal((await signIn('ann@example.com', 'right-pass', '10.0.0.2')).statusCode, 200);
    assert.equal((await signIn('bob@example.com', 'wrong', '10.0.0.1')).statusCode, 401, 'per e-mail');
  });

  it('when a burst of guesses arrives at once, then only the limit is checked and the rest are 429', async () => {
    await createUser(p.kit.pool, 'cy@example.com', 'right-pass', 'user');
    const answers = await Promise.all(
      Array.from({ length: 30 }, () => signIn('cy@example.com', 'wrong', '10.0.1.1')),
    );
    const codes = answers.map((r) => r.statusCode).sort();
    assert.deepEqual(codes, [...Array(LOGIN_MAX_PER_ADDRESS).fill(401), ...Array(20).fill(429)]);
  });

  it('when a right password follows wrong ones, then the count starts again', async () => {
    await createUser(p.kit.pool, 'dee@example.com', 'right-pass', 'user');
    const ip = '10.0.2.1';
    await statuses('dee@example.com', 'wrong', ip, LOGIN_MAX_PER_ADDRESS - 1);
    assert.equal((await signIn('dee@example.com', 'right-pass', ip)).statusCode, 200);
    assert.deepEqual(
      await statuses('dee@example.com', 'wrong', ip, LOGIN_MAX_PER_ADDRESS),
      Array(LOGIN_MAX_PER_ADDRESS).fill(401),
    );
  });

  it('when guesses come from ever new addresses, then the e-mail is still refused past its own limit', async () => {
    await createUser(p.kit.pool, 'eve@example.com', 'right-pass', 'user');
    const answers: number[] = [];
    for (let i = 0; i < LOGIN_MAX_PER_EMAIL + 1; i++)
      answers.push((await signIn('eve@example.com', 'wrong', `10.1.${i >> 8}.${i & 255}`)).statusCode);
    assert.deepEqual(answers, [...Array(LOGIN_MAX_PER_EMAIL).fill(401), 429]);
    const res = await signIn('eve@example.com', 'right-pass', '10.9.9.9');
    assert.equal(res.statusCode, 429);
    assert.match(res.json().message, /^100 failed sign-ins for this e-mail in 15 minutes/);
  });

  it('when the window has passed, then the address may sign in again, and the old counts are forgotten', async () => {
    await createUser(p.kit.pool, 'fay@example.com', 'right-pass', 'user');
    const ip = '10.0.3.1';
    await statuses('fay@example.com', 'wrong', ip, LOGIN_MAX_PER_ADDRESS + 1);
    assert.equal((await signIn('fay@example.com', 'right-pass', ip)).statusCode, 429);
    await p.kit.pool.query(
      `UPDATE login_attempts SET since = now() - interval '16 minutes' WHERE email = 'fay@example.com'`,
    );
    assert.equal((await signIn('fay@example.com', 'right-pass', ip)).statusCode, 200);
    await statuses('fay@example.com', 'wrong', ip, 1);
    await p.kit.pool.query(
      `UPDATE login_attempts SET since = now() - interval '16 minutes' WHERE email = 'fay@example.com'`,
    );
    await forgetOldLoginAttempts(p.kit.pool);
    const { rows } = await p.kit.pool.query(`SELECT 1 FROM login_attempts WHERE email = 'fay@example.com'`);
    assert.equal(rows.length, 0);
  });

  it('when a client on the internet writes its own X-Forwarded-For, then its guesses still count for its real address', async () => {
    await createUser(p.kit.pool, 'gus@example.com', 'right-pass', 'user');
    const answers: number[] = [];
    for (let i = 0; i <= LOGIN_MAX_PER_ADDRESS; i++)
      answers.push((await signIn('gus@example.com', 'wrong', `10.0.4.${i}`, '203.0.113.5')).statusCode);
    // Before (every proxy header believed): each forged address got its own 10 guesses.
    assert.deepEqual(answers, [...Array(LOGIN_MAX_PER_ADDRESS).fill(401), 429]);
    // Through a trusted proxy, the address it appends is the client's, whatever the client wrote.
    const viaProxy = await signIn('gus@example.com', 'right-pass', '10.0.4.99, 203.0.113.6');
    assert.equal(viaProxy.statusCode, 200, viaProxy.body);
  });
});

describe('sign-in throttling with TRUST_PROXY=false', async () => {
  const p = await startPlatform({ modules: [], env: { TRUST_PROXY: 'false' } });

  it('when a proxy on the private network forwards guesses, then they all count for the proxy', async () => {
    await createUser(p.kit.pool, 'hal@example.com', 'right-pass', 'user');
    const answers: number[] = [];
    for (let i = 0; i <= LOGIN_MAX_PER_ADDRESS; i++) {
      const res = await p.app.inject({
        method: 'POST',
        url: '/api/auth/login',
        remoteAddress: '10.200.0.1',
        headers: { 'x-forwarded-for': `198.51.100.${i}` },
        payload: { email: 'hal@example.com', password: 'wrong' },
      });
      answers.push(res.statusCode);
    }
    assert.deepEqual(answers, [...Array(LOGIN_MAX_PER_ADDRESS).fill(401), 429]);
  });
});
