-- The audit trail (SPEC §5). Times are integer milliseconds since the Unix epoch; `id` is the
-- UUIDv7 as lowercase hyphenated text (it sorts in time order and reads well in `sqlite3`);
-- `roles` is a JSON array of strings.
CREATE TABLE audit_records (
    id                 TEXT    PRIMARY KEY NOT NULL,
    ts_ms              INTEGER NOT NULL,
    client             TEXT,
    roles              TEXT    NOT NULL DEFAULT '[]',
    session            TEXT,
    transport          TEXT    NOT NULL,
    method             TEXT    NOT NULL,
    tool               TEXT,
    backend            TEXT,
    arguments          TEXT,
    outcome            TEXT    NOT NULL,
    error_code         INTEGER,
    latency_ms         REAL    NOT NULL,
    backend_latency_ms REAL,
    response_bytes     INTEGER NOT NULL
);

-- One index per filter of `sentinel audit`, each ending in time so the newest come first
-- without a sort; `ts_ms` alone also serves retention.
CREATE INDEX audit_records_ts ON audit_records (ts_ms);
CREATE INDEX audit_records_client_ts ON audit_records (client, ts_ms);
CREATE INDEX audit_records_tool_ts ON audit_records (tool, ts_ms);
CREATE INDEX audit_records_backend_ts ON audit_records (backend, ts_ms);
CREATE INDEX audit_records_outcome_ts ON audit_records (outcome, ts_ms);
