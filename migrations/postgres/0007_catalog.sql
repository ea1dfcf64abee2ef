-- Definition pinning (src/pins): each backend tool's definition as first seen or as last
-- approved by `sentinel pins approve`, by SHA-256 of its canonical JSON. Every gateway on
-- this database polls the hashes.
CREATE TABLE tool_pins (
    backend TEXT NOT NULL,
    tool TEXT NOT NULL,
    exposed TEXT NOT NULL,
    hash TEXT NOT NULL,
    definition TEXT NOT NULL,
    pinned_ms BIGINT NOT NULL,
    pinned_by TEXT NOT NULL,
    PRIMARY KEY (backend, tool)
);
-- Definitions a backend served that differed from the pin: old and new, when and by whom seen.
CREATE TABLE tool_pin_changes (
    backend TEXT NOT NULL,
    tool TEXT NOT NULL,
    exposed TEXT NOT NULL,
    old_hash TEXT NOT NULL,
    old_definition TEXT NOT NULL,
    new_hash TEXT NOT NULL,
    new_definition TEXT NOT NULL,
    seen_ms BIGINT NOT NULL,
    seen_by TEXT NOT NULL,
    PRIMARY KEY (backend, tool, new_hash)
);
-- The `[[profile]]` (virtual server) a request came in by; NULL at /mcp and in older records.
ALTER TABLE audit_records ADD COLUMN profile TEXT;
