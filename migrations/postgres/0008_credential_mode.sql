-- Which credential mode served the call (SPEC §7): `shared` (the backend's own, from the
-- config), `per_user` (the caller's stored credential) or `token_exchange` (a token issued
-- for the caller). Never the credential itself. NULL for requests refused before routing and
-- in records written before it existed.
ALTER TABLE audit_records ADD COLUMN credential_mode TEXT;
