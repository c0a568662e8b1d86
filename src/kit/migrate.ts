// Numbered plain .sql migrations per module (`<module>/migrations/001_name.sql`), applied in order
// under a PostgreSQL advisory lock so processes starting together never race.
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import type { Logger } from './log.ts';

const MIGRATION_LOCK = 7_315_001; // arbitrary, constant: one lock for all Tessera migrations

export interface MigrationSource {
  module: string;
  dir: string;
}

interface Migration {
  module: string;
  id: number;
  name: string;
  sql: string;
}

async function readMigrations(src: MigrationSource): Promise<Migration[]> {
  const files = (await readdir(src.dir).catch(() => [])).filter((f) => /^\d+_.+\.sql$/.test(f)).sort();
  // Applied migrations are remembered by number: a second file with the same number would be
  // skipped silently wherever the first already ran.
  const byId = new Map<number, string>();
  for (const file of files) {
    const id = Number.parseInt(file, 10);
    const other = byId.get(id);
    if (other)
      throw new Error(
        `migrations ${src.module}/${other} and ${src.module}/${file} share the number ${id}; renumber one`,
      );
    byId.set(id, file);
  }
  return Promise.all(
    files.map(async (file) => ({
      module: src.module,
      id: Number.parseInt(file, 10),
      name: file,
      sql: await readFile(path.join(src.dir, file), 'utf8'),
    })),
  );
}

/** Applies what is missing; returns the names applied. Each migration runs in its own transaction. */
export async function migrate(pool: pg.Pool, sources: MigrationSource[], log: Logger): Promise<string[]> {
  const client = await pool.connect();
  const applied: string[] = [];
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    await client.query(`CREATE TABLE IF NOT EXISTS tessera_migrations (
      module text NOT NULL, id int NOT NULL, name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (module, id))`);
    const done = await client.query<{ module: string; id: number }>(
      'SELECT module, id FROM tessera_migrations',
    );
    const seen = new Set(done.rows.map((r) => `${r.module}/${r.id}`));
    for (const src of sources) {
      for (const m of await readMigrations(src)) {
        if (seen.has(`${m.module}/${m.id}`)) continue;
        await client.query('BEGIN');
        try {
          await client.query(m.sql);
          await client.query('INSERT INTO tessera_migrations (module, id, name) VALUES ($1, $2, $3)', [
            m.module,
            m.id,
            m.name,
          ]);
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK');
          throw new Error(`migration ${m.module}/${m.name} failed: ${(err as Error).message}`);
        }
        applied.push(`${m.module}/${m.name}`);
        log.info({ migration: `${m.module}/${m.name}` }, 'MIGRATION_APPLIED');
      }
    }
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    client.release();
  }
  return applied;
}
