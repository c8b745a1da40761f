-- Nova's changes-since: the actions of one instance changed since a time,
-- found by seeking, not by walking the instance's history (see
-- `actions::few_changed`). actions_updated stays for retention's sweep.
CREATE INDEX actions_changed ON actions (instance_uuid, updated_at);
