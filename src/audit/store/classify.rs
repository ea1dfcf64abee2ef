//! Which store errors are about the records themselves (retrying cannot help: the records go
//! to the dead-letter file) and which are about the store (down, busy, full: retry).
//!
//! Only errors the database gives for the statement's data are permanent. Anything else, and
//! any error not known to be about the data, is transient: a store-wide problem (a dropped
//! table, a revoked privilege on the table, a read-only file) must hold the records in the
//! spool until someone fixes it, not move every record aside.

/// PostgreSQL SQLSTATEs that refuse the data of a statement for good.
fn postgres_permanent(sqlstate: &str) -> bool {
    match sqlstate {
        // A unique violation is a replay; the store handles it by skipping stored ids.
        "23505" => false,
        // Row-level security refusing a row ("new row violates row-level security policy").
        "42501" => true,
        // A trigger's RAISE EXCEPTION (`P0001`), or an ASSERT (`P0004`).
        "P0001" | "P0004" => true,
        // Statement too complex or a value too large (`54000`, `54001`).
        "54000" | "54001" => true,
        // Class 22, data exception (bad encoding, value too long, out of range);
        // class 23, integrity constraint violation (check, not null, foreign key, exclusion).
        s => s.starts_with("22") || s.starts_with("23"),
    }
}

/// SQLite result codes (primary, the low byte of the extended code) that refuse the data.
fn sqlite_permanent(code: i64) -> bool {
    const TOOBIG: i64 = 18;
    const CONSTRAINT: i64 = 19; // also a trigger's RAISE(ABORT, ...): SQLITE_CONSTRAINT_TRIGGER
    const MISMATCH: i64 = 20;
    matches!(code & 0xff, TOOBIG | CONSTRAINT | MISMATCH)
}

use super::SqlError;

/// Whether `e` says the store refuses the records for good.
pub fn is_permanent(e: &SqlError) -> bool {
    let SqlError::Database(sqlx::Error::Database(db)) = e else {
        return false;
    };
    let Some(code) = db.code() else { return false };
    if db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
        postgres_permanent(&code)
    } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        code.parse().is_ok_and(sqlite_permanent)
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_data_errors_are_permanent_and_store_errors_are_not() {
        for code in ["23514", "23502", "23503", "22021", "22001", "42501", "P0001", "54000"] {
            assert!(postgres_permanent(code), "{code}");
        }
        // Unique (a replay), connection, serialization, disk full, shutdown, undefined table.
        for code in ["23505", "08006", "40001", "53100", "57P01", "42P01", "42703", "XX000"] {
            assert!(!postgres_permanent(code), "{code}");
        }
    }

    #[test]
    fn sqlite_constraint_and_size_errors_are_permanent() {
        // CONSTRAINT_CHECK, CONSTRAINT_TRIGGER, CONSTRAINT_NOTNULL, TOOBIG, MISMATCH
        for code in [275, 1811, 1299, 18, 20] {
            assert!(sqlite_permanent(code), "{code}");
        }
        // BUSY, LOCKED, IOERR_WRITE, FULL, READONLY, CANTOPEN, CORRUPT
        for code in [5, 6, 778, 13, 8, 14, 11] {
            assert!(!sqlite_permanent(code), "{code}");
        }
    }

    #[test]
    fn errors_that_are_not_the_databases_are_transient() {
        assert!(!is_permanent(&SqlError::NotAStoreUrl("mysql://h/d".into())));
        assert!(!is_permanent(&SqlError::Database(sqlx::Error::PoolTimedOut)));
    }
}
