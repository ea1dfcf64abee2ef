//! A store's identity: what says that two audit URLs name the same database, so that a spool
//! folder is replayed only into the store it was written for.
//!
//! It is made from the URL alone, without asking the database, because it is needed before the
//! database answers: a gateway that starts while its store is down spools under it. (An id kept
//! in the database would survive a changed host name but not a database restored from before
//! it was made, and cannot be read during the very outage the spool is for.) Credentials and
//! connection options are left out: a new password or `sslmode` is still the same database,
//! and the identity is written in the spool folder, where no secret belongs.

use std::path::{Path, PathBuf};

/// `postgres://host:port/database` (host lowercased, the default port and database filled
/// in, user, password and options left out) or `sqlite:///absolute/real/path.db`.
pub fn identity(url: &str) -> String {
    if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        if path == ":memory:" {
            // Never the same store as another process's: a fresh one each time.
            return format!("sqlite::memory:{}", uuid::Uuid::new_v4().simple());
        }
        return format!("sqlite://{}", real_path(Path::new(path)).display());
    }
    let Ok(u) = reqwest::Url::parse(url) else { return url.to_string() };
    let param = |key: &str| u.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned());
    let host = param("host").or_else(|| u.host_str().map(str::to_string)).unwrap_or_else(|| "localhost".into());
    let port = param("port").and_then(|p| p.parse().ok()).or(u.port()).unwrap_or(5432);
    // libpq's default database is the user's name.
    let database = param("dbname")
        .or_else(|| Some(u.path().trim_start_matches('/').to_string()).filter(|d| !d.is_empty()))
        .unwrap_or_else(|| u.username().to_string());
    format!("postgres://{}:{port}/{database}", host.to_ascii_lowercase())
}

/// The path with its folder's symbolic links resolved (the file itself may not exist yet).
fn real_path(path: &Path) -> PathBuf {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return path.to_path_buf() };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    dir.canonicalize().map(|d| d.join(name)).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::identity;

    #[test]
    fn postgres_urls_of_one_database_have_one_identity() {
        let id = "postgres://db.example:5432/audit";
        for url in [
            "postgres://sentinel:secret@db.example/audit",
            "postgresql://other@DB.example:5432/audit?sslmode=require",
            "postgres://db.example:5432/audit",
        ] {
            assert_eq!(identity(url), id, "{url}");
        }
        assert_ne!(identity("postgres://db.example/audit2"), id);
        assert_ne!(identity("postgres://db.example:5433/audit"), id);
        assert_eq!(identity("postgres://ann@db.example"), "postgres://db.example:5432/ann");
        assert_eq!(identity("postgres:///audit?host=/run/postgresql"), "postgres:///run/postgresql:5432/audit");
    }

    #[test]
    fn no_secret_is_kept() {
        assert!(!identity("postgres://u:hunter2@h/d").contains("hunter2"));
    }

    #[test]
    fn sqlite_paths_are_resolved() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, tmp.path().join("link")).unwrap();
        let a = identity(&format!("sqlite://{}/link/a.db", tmp.path().display()));
        assert_eq!(a, format!("sqlite://{}/a.db", real.canonicalize().unwrap().display()));
        assert_ne!(a, identity(&format!("sqlite://{}/link/b.db", tmp.path().display())));
        assert_ne!(identity("sqlite://:memory:"), identity("sqlite://:memory:"));
    }
}
