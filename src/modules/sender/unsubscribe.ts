// List-Unsubscribe links: `/api/unsubscribe/<batchId>.<recipientId>.<mac>`. The HMAC (keyed with
// the platform's webhook secret) makes the link unguessable, so only the recipient can use it.
import { createHmac, timingSafeEqual } from 'node:crypto';

const mac = (secret: string, batchId: string, recipientId: number) =>
  createHmac('sha256', secret)
    .update(`unsubscribe:${batchId}.${recipientId}`)
    .digest('base64url')
    .slice(0, 22);

export function unsubscribeToken(secret: string, batchId: string, recipientId: number): string {
  return `${batchId}.${recipientId}.${mac(secret, batchId, recipientId)}`;
}

export function readUnsubscribeToken(secret: string, token: string) {
  const m = /^([0-9a-f-]{36})\.(\d+)\.([A-Za-z0-9_-]{22})$/.exec(token);
  if (!m) return null;
  const batchId = m[1]!;
  const recipientId = Number(m[2]);
  const want = Buffer.from(mac(secret, batchId, recipientId));
  const got = Buffer.from(m[3]!);
  return want.length === got.length && timingSafeEqual(want, got) ? { batchId, recipientId } : null;
}
