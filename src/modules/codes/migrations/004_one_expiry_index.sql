-- Reserved reservations were indexed by expiry twice: per campaign and across campaigns. Every
-- reservation paid for both; the cross-campaign index serves the per-campaign questions too
-- (expired-but-unswept reservations are few: the cron returns them every minute), so one goes.
DROP INDEX IF EXISTS codes_reservations_expiring;
