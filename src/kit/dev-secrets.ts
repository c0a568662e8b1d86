// Dev convenience: a JWT and a webhook secret generated once and kept in DATA_DIR, so sessions and
// signatures survive restarts when none are configured.
import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

export interface DevSecrets {
  jwtSecret: string;
  webhookSecret: string;
}

/**
 * The secrets in `<dataDir>/secrets.json`, made on first use. Several processes may start at once
 * on a fresh DATA_DIR (three workers in a test, `npm start` beside a CLI command): each writes its
 * candidate to a file of its own and links it into place, which only one can do. The others read
 * the winner's, so all agree, and nobody reads a file still being written.
 */
export async function devSecrets(dataDir: string): Promise<DevSecrets> {
  const file = path.resolve(dataDir, 'secrets.json');
  const existing = await readSecrets(file);
  if (existing) return existing;
  const secrets: DevSecrets = {
    jwtSecret: randomBytes(32).toString('base64url'),
    webhookSecret: `whsec_${randomBytes(24).toString('base64')}`,
  };
  await mkdir(path.dirname(file), { recursive: true });
  const candidate = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(candidate, JSON.stringify(secrets, null, 2), { mode: 0o600 });
  try {
    await link(candidate, file);
    return secrets;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return (await readSecrets(file))!;
  } finally {
    await unlink(candidate);
  }
}

async function readSecrets(file: string): Promise<DevSecrets | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as DevSecrets;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
