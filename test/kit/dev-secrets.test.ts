// Dev secrets on a fresh DATA_DIR, asked for by many starters at once (as three worker processes
// starting together do): every one gets the same secrets, the ones on disk, and no temp file stays.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { devSecrets } from '../../src/kit/dev-secrets.ts';
import { startPlatform } from '../helpers.ts';

describe('kit: dev secrets in DATA_DIR', () => {
  it('when 20 starters ask at once on a fresh directory, then all get the secrets on disk', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'tessera-secrets-'));
    try {
      const got = await Promise.all(Array.from({ length: 20 }, () => devSecrets(path.join(dir, 'data'))));
      const onDisk = JSON.parse(await readFile(path.join(dir, 'data', 'secrets.json'), 'utf8'));
      for (const s of got) assert.deepEqual(s, onDisk);
      assert.match(onDisk.webhookSecret, /^whsec_/);
      assert.deepEqual(await readdir(path.join(dir, 'data')), ['secrets.json']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('when the file exists, then its secrets are kept; when it is not JSON, then the error says so', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'tessera-secrets-'));
    try {
      const kept = { jwtSecret: 'j', webhookSecret: 'whsec_x' };
      await writeFile(path.join(dir, 'secrets.json'), JSON.stringify(kept));
      assert.deepEqual(await devSecrets(dir), kept);
      await writeFile(path.join(dir, 'secrets.json'), '{');
      await assert.rejects(devSecrets(dir), SyntaxError);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('kit: a start without configured secrets says so', async () => {
  it('when WEBHOOK_SECRET and JWT_SECRET are unset, then DEV_SECRETS_IN_USE names them and the file; when set, nothing', async () => {
    const bare = await startPlatform({ modules: [] });
    const [line] = bare.logs.events('DEV_SECRETS_IN_USE');
    assert.deepEqual(line?.unset, ['WEBHOOK_SECRET', 'JWT_SECRET']);
    assert.equal(line?.file, path.resolve(bare.kit.config.dataDir, 'secrets.json'));
    assert.equal(line?.level, 40, 'a warning');
    const configured = await startPlatform({
      modules: [],
      env: {
        WEBHOOK_SECRET: `whsec_${Buffer.from('a-webhook-secret-of-32-bytes-xyz').toString('base64')}`,
        JWT_SECRET: 'a-jwt-secret-a-jwt-secret-a-jwt-secret-0123',
      },
    });
    assert.deepEqual(configured.logs.events('DEV_SECRETS_IN_USE'), []);
  });
});
