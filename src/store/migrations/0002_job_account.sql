-- The storage account a capture request named (Oracle echoes it back);
-- NULL for jobs of dialects that have none.
ALTER TABLE jobs ADD COLUMN account TEXT;
