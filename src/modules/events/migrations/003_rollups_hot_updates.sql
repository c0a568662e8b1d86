-- The rollups are counters the worker bumps all day (n = n + k). Their indexes hold only the keys,
-- so with room on the page each bump is a HOT update: no new index entry, no dead entry for every
-- ranged analytics scan to step over until vacuum. Pages filled to 70% leave that room.
ALTER TABLE events_counts SET (fillfactor = 70);
ALTER TABLE events_user_counts SET (fillfactor = 70);
ALTER TABLE events_user_day_counts SET (fillfactor = 70);
