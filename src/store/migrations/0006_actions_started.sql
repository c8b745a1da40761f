-- Retention removes the oldest actions beyond `max_actions` a batch at a
-- time, found by seeking this index; without it each batch sorted every
-- action held (a second's work at a million).
CREATE INDEX actions_started ON actions (start_time, id);
