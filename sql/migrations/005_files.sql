-- 5: the `files` table (every path the loader has read and its content id; made by schema.sql, which runs
-- before the migrations of every upgrade), filled with the paths `images` holds; load_errors records the
-- version (size, time) of each bad file, so it is recorded once and a watch pass does not read it again.
ALTER TABLE load_errors
    ADD COLUMN IF NOT EXISTS file_size Nullable(UInt64),
    ADD COLUMN IF NOT EXISTS modified_at Nullable(DateTime64(3));
INSERT INTO files (path, id, file_size, modified_at, updated_at)
    SELECT path, argMax(id, loaded_at), argMax(file_size, loaded_at), argMax(modified_at, loaded_at), max(loaded_at)
    FROM images WHERE path NOT IN (SELECT path FROM files) GROUP BY path;
