-- The audit trail (SPEC §5).
CREATE TABLE audit_records (
    id                 uuid             PRIMARY KEY,
    ts                 timestamptz      NOT NULL,
    client             text,
    roles              text[]           NOT NULL DEFAULT '{}',
    session            text,
    transport          text             NOT NULL,
    method             text             NOT NULL,
    tool               text,
    backend            text,
    arguments          text,
    outcome            text             NOT NULL,
    error_code         bigint,
    latency_ms         double precision NOT NULL,
    backend_latency_ms double precision,
    response_bytes     bigint           NOT NULL
);

-- One index per filter of `sentinel audit`, each ending in time so the newest come first
-- without a sort; `ts` alone also serves retention.
CREATE INDEX audit_records_ts ON audit_records (ts);
CREATE INDEX audit_records_client_ts ON audit_records (client, ts);
CREATE INDEX audit_records_tool_ts ON audit_records (tool, ts);
CREATE INDEX audit_records_backend_ts ON audit_records (backend, ts);
CREATE INDEX audit_records_outcome_ts ON audit_records (outcome, ts);
