-- Delivery events are counted once per recipient and kind: delivered → opened → delivered must
-- count one delivery, not two. `event` keeps the latest new kind; `event_kinds` remembers every
-- kind seen, as bits (delivered 1, bounced 2, complained 4, opened 8), in two bytes per row.
ALTER TABLE sender_recipients ADD COLUMN event_kinds smallint NOT NULL DEFAULT 0;
UPDATE sender_recipients SET event_kinds = CASE event
    WHEN 'delivered' THEN 1 WHEN 'bounced' THEN 2 WHEN 'complained' THEN 4 WHEN 'opened' THEN 8 ELSE 0 END
  WHERE event IS NOT NULL;
