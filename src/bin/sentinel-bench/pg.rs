//! A PostgreSQL database of the run's own for the audit trail: created at the start, dropped
//! (with any connection still open) when it goes, also when the run fails.

use anyhow::Context;
use sqlx::Connection;

pub struct PgDb {
    admin: String,
    name: String,
    pub url: String,
}

impl PgDb {
    /// `admin` is the server's maintenance database, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
    pub async fn create(admin: &str) -> anyhow::Result<PgDb> {
        let name = format!("sentinel_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .with_context(|| format!("governance on audits to PostgreSQL: none at {admin} (set --pg)"))?;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
        conn.close().await?;
        let server = admin.rsplit_once('/').context("no database name at the end of the PostgreSQL URL")?.0;
        Ok(PgDb { admin: admin.to_string(), url: format!("{server}/{name}"), name })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        // Drop cannot await and may run inside a runtime: a thread with a runtime of its own.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the bench database {}", self.name);
        }
    }
}
