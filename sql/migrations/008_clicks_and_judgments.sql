-- 8: search quality. search_log rows get the id the page's clicks name them by; the tables of clicks
-- (search_clicks) and of judged queries (judgments) are made by schema.sql, which runs before the migrations.
ALTER TABLE search_log ADD COLUMN IF NOT EXISTS search_id String DEFAULT '' AFTER top_ids;
