-- The OpenTelemetry trace id of the request (32 hex digits), set when `[telemetry]` is on:
-- how an operator goes from a record to its trace (docs/operations.md). No index: it is read
-- from a record found by the other filters, never searched by.
ALTER TABLE audit_records ADD COLUMN trace_id TEXT;
