//! Throwaway PostgreSQL databases on this machine (`postgres://postgres@127.0.0.1:5432`, or
//! `SENTINEL_TEST_PG`): each test makes its own database and drops it at the end, panic or not.

use std::net::{SocketAddr, ToSocketAddrs};

use sentinel::audit::store::SqlStore;
use sqlx::Connection;

/// The server's maintenance database, where test databases are created and dropped.
pub fn pg_admin_url() -> String {
    std::env::var("SENTINEL_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test, dropped (with any connection still open) when it goes.
pub struct PgDb {
    pub name: String,
    /// The database's URL, straight to the server.
    pub url: String,
    pub store: SqlStore,
}

impl PgDb {
    pub async fn create() -> PgDb {
        let admin = pg_admin_url();
        let name = format!("sentinel_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("these tests need PostgreSQL at {admin} (set SENTINEL_TEST_PG): {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
        let store = SqlStore::connect(&url).await.unwrap();
        PgDb { name, url, store }
    }

    /// The server's address (for a proxy in front of it).
    pub fn server_addr(&self) -> SocketAddr {
        let (_, authority) = self.url.split_once('@').expect("a user in the URL");
        let host_port = authority.split('/').next().unwrap();
        host_port.to_socket_addrs().expect("resolve").next().expect("an address")
    }

    /// The database's URL through another address (a proxy).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let (user, _) = self.url.split_once('@').expect("a user in the URL");
        format!("{user}@{addr}/{}", self.name)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        // Drop cannot await, and may run while a panic unwinds on the test's runtime: the
        // database is dropped from a thread with a runtime of its own.
        let name = self.name.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&pg_admin_url()).await.unwrap();
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await.unwrap();
            });
        })
        .join()
        .unwrap();
    }
}
