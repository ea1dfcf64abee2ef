//! A batch as one `COPY audit_records FROM STDIN (FORMAT binary)`: PostgreSQL's cheapest way in.
//! Nothing is parsed or planned, rows are stored a page at a time, and, unlike `INSERT ... ON
//! CONFLICT DO NOTHING`, there is no speculative insertion (one more primary-key probe and one
//! more WAL record per row). What it cannot do is skip ids already stored: a batch holding one
//! fails whole with a unique violation, and the caller stores it again the way that skips them.
//!
//! Hand-written because sqlx only passes COPY's bytes through; the format is PostgreSQL's
//! "binary COPY" (a header, then per row a field count and each field as length + value).

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

use super::no_nul;
use crate::audit::AuditRecord;
use crate::audit::store::{COLUMNS, stored_bytes};

const COPY: &str = "COPY audit_records (id, ts, client, roles, session, transport, method, tool, backend, \
     arguments, outcome, error_code, latency_ms, backend_latency_ms, response_bytes, trace_id, replica, profile, credential_mode) FROM STDIN (FORMAT binary)";

/// The format's signature, then its flags and header extension length (both none).
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// A field count of -1 ends the data.
const TRAILER: [u8; 2] = (-1i16).to_be_bytes();

/// Data goes out in pieces of about this size: a batch of large arguments is never encoded
/// whole in memory.
const CHUNK: usize = 1 << 20;

/// PostgreSQL's epoch (2000-01-01), where `timestamptz` counts microseconds from, in
/// milliseconds since the Unix epoch.
const PG_EPOCH_MS: i64 = 946_684_800_000;

/// The element type of a `text[]`: `text`'s oid.
const TEXT_OID: u32 = 25;

/// Stores `batch` with one COPY; all or nothing.
pub(super) async fn copy(pool: &PgPool, batch: &[AuditRecord]) -> sqlx::Result<u64> {
    let mut on = Closing { conn: pool.acquire().await?, clean: false };
    let result = send(&mut on.conn, batch).await;
    // A refusal by the server ends the exchange cleanly (sqlx reads on to ReadyForQuery); an
    // I/O or protocol error may leave it half way.
    on.clean = matches!(result, Ok(_) | Err(sqlx::Error::Database(_)));
    result
}

async fn send(conn: &mut PgConnection, batch: &[AuditRecord]) -> sqlx::Result<u64> {
    let mut copy = conn.copy_in_raw(COPY).await?;
    let mut buf = Vec::with_capacity(CHUNK.min(batch.len() * 256) + 64);
    buf.extend_from_slice(HEADER);
    for r in batch {
        row(&mut buf, r);
        if buf.len() >= CHUNK {
            copy.send(buf.as_slice()).await?;
            buf.clear();
        }
    }
    buf.extend_from_slice(&TRAILER);
    copy.send(buf.as_slice()).await?;
    copy.finish().await
}

/// The pool connection a COPY runs on: closed, not given back, unless the exchange ended
/// cleanly. A COPY cut short (the drainer's timeout drops it, or an I/O error) leaves the
/// connection in the middle of the protocol, where its next user would misread the answers.
struct Closing {
    conn: PoolConnection<Postgres>,
    clean: bool,
}

impl Drop for Closing {
    fn drop(&mut self) {
        if !self.clean {
            self.conn.close_on_drop();
        }
    }
}

/// One row, in the column order of `COPY`.
fn row(buf: &mut Vec<u8>, r: &AuditRecord) {
    buf.extend_from_slice(&(COLUMNS as i16).to_be_bytes());
    field(buf, r.id.as_bytes());
    field(buf, &r.ts_ms.saturating_sub(PG_EPOCH_MS).saturating_mul(1000).to_be_bytes());
    text(buf, r.client.as_deref());
    roles(buf, &r.roles);
    text(buf, r.session.as_deref());
    text(buf, Some(&r.transport));
    text(buf, Some(&r.method));
    text(buf, r.tool.as_deref());
    text(buf, r.backend.as_deref());
    text(buf, r.arguments.as_deref());
    text(buf, Some(r.outcome.as_str()));
    field_or_null(buf, r.error_code.map(i64::to_be_bytes));
    field(buf, &r.latency_ms.to_be_bytes());
    field_or_null(buf, r.backend_latency_ms.map(f64::to_be_bytes));
    field(buf, &stored_bytes(r.response_bytes).to_be_bytes());
    text(buf, r.trace_id.as_deref());
    text(buf, r.replica.as_deref());
    text(buf, r.profile.as_deref());
    text(buf, r.credential_mode.as_deref());
}

/// A value: its length, then its bytes. PostgreSQL refuses any value over 1 GB; one over
/// 2 GiB (no request body is allowed that large) is cut so the stream stays well formed and
/// PostgreSQL refuses it as it would any oversized value.
fn field(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len().min(i32::MAX as usize);
    buf.extend_from_slice(&(len as i32).to_be_bytes());
    buf.extend_from_slice(&bytes[..len]);
}

/// A NULL: a length of -1 and no bytes.
fn null(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&(-1i32).to_be_bytes());
}

fn field_or_null<const N: usize>(buf: &mut Vec<u8>, bytes: Option<[u8; N]>) {
    match bytes {
        Some(b) => field(buf, &b),
        None => null(buf),
    }
}

fn text(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => field(buf, no_nul(s).as_bytes()),
        None => null(buf),
    }
}

/// A `text[]`: its dimensions (none when empty, else one), a has-NULLs flag, the element
/// type, the dimension's length and lower bound (1), then each element as a field.
fn roles(buf: &mut Vec<u8>, roles: &[String]) {
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]); // the field's length, known at the end
    buf.extend_from_slice(&i32::from(!roles.is_empty()).to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&TEXT_OID.to_be_bytes());
    if !roles.is_empty() {
        buf.extend_from_slice(&(roles.len().min(i32::MAX as usize) as i32).to_be_bytes());
        buf.extend_from_slice(&1i32.to_be_bytes());
        for role in roles {
            field(buf, no_nul(role).as_bytes());
        }
    }
    let len = buf.len() - at - 4;
    buf[at..at + 4].copy_from_slice(&(len.min(i32::MAX as usize) as i32).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_its_field_count_then_each_field() {
        let mut r = AuditRecord::start("tools/call", "http", None, &["a".into(), "b\0".into()], None);
        r.ts_ms = PG_EPOCH_MS + 1;
        let mut buf = Vec::new();
        row(&mut buf, &r);
        assert_eq!(&buf[..2], &19i16.to_be_bytes());
        assert_eq!(&buf[2..6], &16i32.to_be_bytes());
        assert_eq!(&buf[6..22], r.id.as_bytes());
        // ts: 1 ms after 2000-01-01, in microseconds.
        assert_eq!(&buf[22..34], [&8i32.to_be_bytes()[..], &1000i64.to_be_bytes()].concat());
        // client: NULL.
        assert_eq!(&buf[34..38], &(-1i32).to_be_bytes());
        // roles: a one-dimensional text[] of 2, the NUL replaced.
        let roles = [
            &1i32.to_be_bytes()[..],
            &0i32.to_be_bytes(),
            &25u32.to_be_bytes(),
            &2i32.to_be_bytes(),
            &1i32.to_be_bytes(),
            &1i32.to_be_bytes(),
            b"a",
            &4i32.to_be_bytes(),
            "b\u{FFFD}".as_bytes(),
        ]
        .concat();
        assert_eq!(&buf[38..42], &(roles.len() as i32).to_be_bytes());
        assert_eq!(&buf[42..42 + roles.len()], roles);
        // The last four fields: trace_id, replica, profile and credential_mode, each NULL without
        // one, else its text.
        let replica = crate::replica::id();
        let null = (-1i32).to_be_bytes();
        assert!(buf.ends_with(
            &[&null[..], &(replica.len() as i32).to_be_bytes(), replica.as_bytes(), &null[..], &null[..]].concat()
        ));
        r.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        r.replica = None;
        r.profile = Some("research".into());
        r.credential_mode = Some("per_user".into());
        let mut buf = Vec::new();
        row(&mut buf, &r);
        assert!(
            buf.ends_with(
                &[
                    &32i32.to_be_bytes()[..],
                    b"4bf92f3577b34da6a3ce929d0e0e4736",
                    &null[..],
                    &8i32.to_be_bytes(),
                    b"research",
                    &8i32.to_be_bytes(),
                    b"per_user"
                ]
                .concat()
            )
        );
    }

    #[test]
    fn no_roles_is_an_empty_array() {
        let mut buf = Vec::new();
        roles(&mut buf, &[]);
        assert_eq!(
            buf,
            [&12i32.to_be_bytes()[..], &0i32.to_be_bytes(), &0i32.to_be_bytes(), &25u32.to_be_bytes()].concat()
        );
    }
}
