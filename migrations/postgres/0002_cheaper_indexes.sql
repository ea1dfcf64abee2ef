-- Fewer index entries per stored record (every index is updated by every insert), and still an
-- index for every filter of `sentinel audit` (tests/audit_plans.rs checks each query's plan):
-- - time (`--since`, `--follow`, no filter) and retention: the primary key. Ids are UUIDv7 whose
--   time is the record's `ts` (before this version: taken just after it), so `ts >= T` implies
--   `id >= the smallest id of T`, and the queries add that bound. The `ts` index repeated that order.
-- - client, tool, backend: one index each, ending in `id` so the newest come first without a
--   sort, and without the rows where the column is NULL (no filter asks for NULL).
-- - outcome: only the rows that are not `ok`, which are what people look for; `ok` (most rows)
--   is found by walking the primary key.
DROP INDEX audit_records_ts;
DROP INDEX audit_records_client_ts;
DROP INDEX audit_records_tool_ts;
DROP INDEX audit_records_backend_ts;
DROP INDEX audit_records_outcome_ts;
CREATE INDEX audit_records_client_id ON audit_records (client, id) WHERE client IS NOT NULL;
CREATE INDEX audit_records_tool_id ON audit_records (tool, id) WHERE tool IS NOT NULL;
CREATE INDEX audit_records_backend_id ON audit_records (backend, id) WHERE backend IS NOT NULL;
CREATE INDEX audit_records_outcome_id ON audit_records (outcome, id) WHERE outcome <> 'ok';
