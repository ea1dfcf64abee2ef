-- Which replica (gateway process) answered the request: `[cluster] replica_id`, by default the
-- host name and process id. Several replicas write to one store; this tells their records
-- apart. NULL in records written before it existed. No index: read, not searched by.
ALTER TABLE audit_records ADD COLUMN replica TEXT;
