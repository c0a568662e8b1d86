// Suppression list per account: suppressed addresses are skipped by every batch (and counted).
// Bounces and complaints add to it automatically; unsubscribe links and the API add and remove.
import type { Queryable } from '../../kit/db.ts';

export async function addSuppressions(db: Queryable, accountId: string, addresses: string[], reason: string) {
  const { rowCount } = await db.query(
    `INSERT INTO sender_suppressions (account_id, address, reason)
     SELECT $1, lower(a), $3 FROM unnest($2::text[]) AS a ON CONFLICT DO NOTHING`,
    [accountId, addresses, reason],
  );
  return rowCount ?? 0;
}

export async function removeSuppression(db: Queryable, accountId: string, address: string) {
  const { rowCount } = await db.query(
    'DELETE FROM sender_suppressions WHERE account_id = $1 AND address = lower($2)',
    [accountId, address],
  );
  return (rowCount ?? 0) > 0;
}

export async function listSuppressions(db: Queryable, accountId: string, limit: number, after?: string) {
  const { rows } = await db.query(
    `SELECT address, reason, created_at AS "createdAt" FROM sender_suppressions
     WHERE account_id = $1 AND ($2::text IS NULL OR address > $2) ORDER BY address LIMIT $3`,
    [accountId, after ?? null, limit],
  );
  return rows;
}
