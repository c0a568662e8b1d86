// Tessera is reachable from another network namespace: proof that it listens on every address,
// not on 127.0.0.1 (seed 002's gateway). A veth pair joins this namespace (10.200.1.1/30) to a
// new one (10.200.1.2/30); a request from inside the new namespace must reach Tessera over the
// veth. Traffic never leaves this machine. Namespace and veth are removed afterwards.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { freshDatabase, spawnTessera } from '../helpers.ts';
import { which } from './lib.ts';

const ip = (...args: string[]) => spawnSync('ip', args, { encoding: 'utf8', timeout: 10000 });

function netnsUsable(): string | undefined {
  if (!which('ip')) return 'ip is not installed (Debian package iproute2; CI installs it)';
  const probe = `tessera-probe-${randomBytes(3).toString('hex')}`;
  const r = ip('netns', 'add', probe);
  if (r.status !== 0) return `ip netns is not permitted here: ${r.stderr.trim()}`;
  ip('netns', 'del', probe);
  return undefined;
}

const skip = netnsUsable();

describe('reachability', () => {
  test('when Tessera listens with the default HOST, then a client in another network namespace reaches it over a veth', {
    skip,
    timeout: 60000,
  }, async () => {
    const tag = randomBytes(3).toString('hex');
    const ns = `tessera-ns-${tag}`;
    const host = `tsh${tag}`; // veth names are at most 15 characters
    const peer = `tsp${tag}`;
    after(() => {
      ip('link', 'del', host); // deleting one end removes the pair
      ip('netns', 'del', ns);
    });
    const must = (...args: string[]) => {
      const r = ip(...args);
      assert.equal(r.status, 0, `ip ${args.join(' ')}: ${r.stderr}`);
    };
    must('netns', 'add', ns);
    must('link', 'add', host, 'type', 'veth', 'peer', 'name', peer);
    must('link', 'set', peer, 'netns', ns);
    must('addr', 'add', '10.200.1.1/30', 'dev', host);
    must('link', 'set', host, 'up');
    must('-n', ns, 'addr', 'add', '10.200.1.2/30', 'dev', peer);
    must('-n', ns, 'link', 'set', peer, 'up');
    must('-n', ns, 'link', 'set', 'lo', 'up');

    // HOST unset: the program's default (0.0.0.0) is what is under test, not the helper's 127.0.0.1.
    const t = await spawnTessera('all', { DATABASE_URL: await freshDatabase(), HOST: '' });
    await t.waitHealthy(30000);

    const fetchFromNs = (url: string) =>
      spawnSync(
        'ip',
        [
          'netns',
          'exec',
          ns,
          process.execPath,
          '-e',
          `fetch(${JSON.stringify(url)}).then(async r => { console.log(r.status, await r.text()); }, e => { console.error(e.cause?.code ?? e.message); process.exit(3); })`,
        ],
        { encoding: 'utf8', timeout: 15000 },
      );
    const r = fetchFromNs(`http://10.200.1.1:${t.port}/heartbeat`);
    assert.equal(r.status, 0, `from ${ns}: ${r.stderr}`);
    assert.match(r.stdout, /^200 .*"alive"/);
    // The namespace really is separate: its own loopback has no Tessera on that port.
    const local = fetchFromNs(`http://127.0.0.1:${t.port}/heartbeat`);
    assert.equal(local.status, 3, 'the other namespace must not share our loopback');
    assert.match(local.stderr, /ECONNREFUSED/);
  });
});
