import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { type ConfigError, configMarkdownTable, loadConfig } from '../../src/kit/config.ts';
import { ROOT } from '../helpers.ts';

describe('configuration', () => {
  it('when nothing is set, then the defaults bind 0.0.0.0:3000', () => {
    const c = loadConfig({ TESSERA_CONFIG: 'none' });
    assert.equal(c.host, '0.0.0.0');
    assert.equal(c.port, 3000);
    assert.equal(c.apiFailureMode, 'none');
  });

  it('when several values are wrong, then one error names each variable and what is allowed', () => {
    assert.throws(
      () =>
        loadConfig({ TESSERA_CONFIG: 'none', PORT: 'abc', LOG_FORMAT: 'xml', API_FAILURE_MODE: 'sometimes' }),
      (err: ConfigError) => {
        assert.match(err.message, /PORT="abc": must be an integer from 0 to 65535/);
        assert.match(err.message, /LOG_FORMAT="xml": must be one of json \| logstash \| pretty/);
        assert.match(err.message, /API_FAILURE_MODE="sometimes": must be one of none \| db \| random_500/);
        return true;
      },
    );
  });

  it('when TRUST_PROXY is set, then it is a yes, a no or a list of addresses, and anything else names what would do', () => {
    const trust = (value?: string) => loadConfig({ TESSERA_CONFIG: 'none', TRUST_PROXY: value }).trustProxy;
    assert.deepEqual(trust(), ['loopback', 'linklocal', 'uniquelocal']);
    assert.equal(trust('false'), false);
    assert.equal(trust('true'), true);
    assert.deepEqual(trust('10.0.0.0/8, 192.168.1.7'), ['10.0.0.0/8', '192.168.1.7']);
    const refusal = (value: string) => {
      try {
        trust(value);
      } catch (err) {
        return (err as Error).message;
      }
      return 'accepted';
    };
    assert.match(
      refusal('10.0.0.0/99'),
      /TRUST_PROXY="10\.0\.0\.0\/99": invalid range .*: must be true, false or comma-separated/,
    );
    assert.match(refusal('proxy.example.com'), /TRUST_PROXY="proxy\.example\.com": invalid IP address/);
    assert.match(refusal('2'), /TRUST_PROXY="2": a hop count is not supported: list the proxies' addresses/);
  });

  it('when tessera.config.json sets a value, then it applies and the environment wins over it', (t) => {
    const dir = mkdtempSync(path.join(tmpdir(), 'cfg-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'tessera.config.json');
    writeFileSync(file, JSON.stringify({ WORKER_FAILURE_MODE: 'slow', PORT: 4000 }));
    const c = loadConfig({ TESSERA_CONFIG: file, PORT: '5000' });
    assert.equal(c.workerFailureMode, 'slow');
    assert.equal(c.port, 5000);
    writeFileSync(file, JSON.stringify({ NOT_A_SETTING: 1 }));
    assert.throws(() => loadConfig({ TESSERA_CONFIG: file }), /unknown setting NOT_A_SETTING/);
  });

  it('when TESSERA_CONFIG is empty or names a directory, then empty is unset and a directory is named as one', (t) => {
    // Before: "" resolved to the working directory, refused as "must be a JSON object … EISDIR".
    assert.equal(loadConfig({ TESSERA_CONFIG: '', PORT: '4001' }).port, 4001);
    const dir = mkdtempSync(path.join(tmpdir(), 'cfg-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    assert.throws(
      () => loadConfig({ TESSERA_CONFIG: dir }),
      (err: ConfigError) => {
        assert.deepEqual(err.problems, [
          `TESSERA_CONFIG: ${dir} is a directory: name a JSON file of SETTING: value, or set TESSERA_CONFIG=none`,
        ]);
        return true;
      },
    );
  });

  it('when tessera.config.json holds a wrong value, then the error names the file and the value as written there', (t) => {
    const dir = mkdtempSync(path.join(tmpdir(), 'cfg-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'tessera.config.json');
    writeFileSync(file, JSON.stringify({ API_FAILURE_MODE: 5, LOG_FORMAT: 'xml' }));
    assert.throws(
      () => loadConfig({ TESSERA_CONFIG: file }),
      (err: ConfigError) => {
        assert.deepEqual(err.problems, [
          `${file}: LOG_FORMAT="xml": must be one of json | logstash | pretty`,
          `${file}: API_FAILURE_MODE=5: must be one of none | db | random_500`,
        ]);
        return true;
      },
    );
    // A wrong value in the environment, which wins over the file, is the environment's.
    assert.throws(
      () => loadConfig({ TESSERA_CONFIG: file, LOG_FORMAT: 'json', API_FAILURE_MODE: '7' }),
      (err: ConfigError) => {
        assert.deepEqual(err.problems, ['API_FAILURE_MODE="7": must be one of none | db | random_500']);
        return true;
      },
    );
  });

  it('when production lacks secrets, then the start is refused with what to set', () => {
    assert.throws(
      () => loadConfig({ TESSERA_CONFIG: 'none', NODE_ENV: 'production' }),
      /DATABASE_URL: required[\s\S]*JWT_SECRET[\s\S]*WEBHOOK_SECRET/,
    );
  });

  it('when WEBHOOK_SECRET is not whsec_ and base64, then the start is refused without printing it', () => {
    for (const secret of ['CHANGE-ME', 'whsec_abc', 'whsec_=', 'plain text secret']) {
      const err = assert.throws(
        () => loadConfig({ TESSERA_CONFIG: 'none', WEBHOOK_SECRET: secret }),
        (e: Error) =>
          /WEBHOOK_SECRET: must be whsec_ followed by base64/.test(e.message) && !e.message.includes(secret),
      );
      assert.equal(err, undefined);
    }
    // What the package itself accepts loads, with or without the prefix.
    for (const secret of [`whsec_${Buffer.from('k'.repeat(32)).toString('base64')}`, 'MTIzNA=='])
      assert.equal(loadConfig({ TESSERA_CONFIG: 'none', WEBHOOK_SECRET: secret }).webhookSecret, secret);
  });

  it('when production keeps a loopback SENDER_PUBLIC_URL, then `tessera start` exits 2 naming it, and a public URL passes', () => {
    const production = {
      TESSERA_CONFIG: 'none',
      NODE_ENV: 'production',
      DATABASE_URL: 'postgres://tessera@db.invalid:5432/tessera',
      JWT_SECRET: 'x'.repeat(40),
      WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
    };
    for (const url of [undefined, 'http://127.0.0.1:3000', 'https://mail.localhost', 'http://[::1]:3000'])
      assert.throws(
        () => loadConfig({ ...production, SENDER_PUBLIC_URL: url }),
        /SENDER_PUBLIC_URL=.*production needs the public base URL/,
        String(url),
      );
    const ok = loadConfig({ ...production, SENDER_PUBLIC_URL: 'https://tessera.example.com' });
    assert.equal(ok.senderPublicUrl, 'https://tessera.example.com');
    // Development keeps the localhost default.
    assert.equal(loadConfig({ TESSERA_CONFIG: 'none' }).senderPublicUrl, 'http://localhost:3000');

    // The default (unset) is what a forgotten setting looks like: the start is refused before it
    // touches the database (db.invalid would never answer).
    const { SENDER_PUBLIC_URL: _unset, ...inherited } = process.env;
    const res = spawnSync(process.execPath, ['bin/tessera.js', 'start'], {
      cwd: ROOT,
      env: { ...inherited, ...production },
      encoding: 'utf8',
      timeout: 30000,
    });
    assert.equal(res.status, 2, res.stderr);
    assert.match(res.stderr, /SENDER_PUBLIC_URL="http:\/\/localhost:3000": production needs/);
  });

  it('when a split role is started without DATABASE_URL, then it exits 2 rather than start its own embedded database', () => {
    for (const [args, env] of [
      [['start', '--role', 'api'], {}],
      [['start'], { TESSERA_ROLE: 'worker' }],
    ] as const) {
      const res = spawnSync(process.execPath, ['bin/tessera.js', ...args], {
        cwd: ROOT,
        env: {
          ...process.env,
          TESSERA_CONFIG: 'none',
          DATABASE_URL: '',
          DATA_DIR: '/nonexistent/tessera',
          ...env,
        },
        encoding: 'utf8',
        timeout: 30000,
      });
      // Before: it initialised an embedded PostgreSQL and answered healthy, alone.
      assert.equal(res.status, 2, res.stderr);
      assert.match(
        res.stderr,
        /^the (api|worker) role runs beside other processes on one PostgreSQL: set DATABASE_URL/,
      );
    }
  });

  it('when `tessera start` gets a bad value, then it prints the problem and exits with code 2', () => {
    const res = spawnSync(process.execPath, ['bin/tessera.js', 'start'], {
      cwd: ROOT,
      env: { ...process.env, TESSERA_CONFIG: 'none', PORT: 'seventy', DATABASE_URL: '' },
      encoding: 'utf8',
      timeout: 30000,
    });
    assert.equal(res.status, 2);
    assert.match(res.stderr, /PORT="seventy": must be an integer/);
  });

  it('when the README lists the settings, then its table is exactly what the code declares', () => {
    // Cells, not whitespace: the formatter may pad the Markdown columns.
    const cells = (table: string) =>
      table
        .trim()
        .split('\n')
        .filter((row) => !/^\|[-\s|]+\|$/.test(row))
        .map((row) => row.split(/(?<!\\)\|/).map((c) => c.trim()));
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const table = readme.split('<!-- config-table:start -->')[1]?.split('<!-- config-table:end -->')[0] ?? '';
    assert.deepEqual(
      cells(table),
      cells(configMarkdownTable()),
      'regenerate with: node bin/tessera.js config --markdown',
    );
    assert.match(table, /`TESSERA_CONFIG`/, 'the config file setting is listed');
    assert.match(table, /`NODE_ENV` .*development \\\| production \\\| test/, 'NODE_ENV lists its values');
  });
});
