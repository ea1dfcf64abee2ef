-- Per-user credentials for backends (src/credentials): one secret per subject and backend,
-- sealed with AES-256-GCM under the operator's key; `key_id` names that key (a MAC of a fixed
-- label under it, not the key), `sealed` is the nonce followed by ciphertext and tag.
CREATE TABLE credentials (
    subject TEXT NOT NULL,
    backend TEXT NOT NULL,
    key_id TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (subject, backend)
);
