//! Test databases: one template per set of migrations, migrated once, and a copy of it for
//! each test app (`CREATE DATABASE … TEMPLATE`), which costs a file copy instead of a
//! migration run. The template's name changes with the migrations, so a template an earlier
//! run left is reused as long as they are the same; scripts/test drops it at the end.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// How long the harness waits for PostgreSQL to connect or answer one statement.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The server's maintenance database, which the harness connects to for DDL.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A name no other test (of this or another process) uses.
pub fn unique(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}{}_{:x}", std::process::id(), n)
}

/// The URL of database `name` on the test server.
pub fn url_of(name: &str) -> String {
    format!(
        "{}/{name}",
        admin_url().rsplit_once('/').expect("admin url").0
    )
}

/// The database name in `url`.
pub fn name_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

fn migration_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("migrations directory") {
        let path = entry.expect("migration entry").path();
        if path.is_dir() {
            migration_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// `post_rate_template_` and a hash of every migration file's path and contents.
fn template_name() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files = Vec::new();
    migration_files(&dir, &mut files);
    files.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in files {
        file.strip_prefix(&dir)
            .expect("under migrations")
            .hash(&mut hasher);
        std::fs::read(&file)
            .expect("migration file")
            .hash(&mut hasher);
    }
    format!("post_rate_template_{:016x}", hasher.finish())
}

/// The migrated template, made (or brought up to date) once per test process, on a thread
/// of its own so that no test's runtime holds its connections.
fn template() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let name = template_name();
        let url = url_of(&name);
        std::thread::spawn(move || {
            // Migrations run in `block_in_place`, which needs a multi-threaded runtime.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                post_rate::db::create_database_if_missing(&url, TIMEOUT).await?;
                post_rate::db::run_migrations(&url, TIMEOUT).await
            })
        })
        .join()
        .expect("template thread")
        .expect("migrate the template database");
        name
    })
}

async fn admin() -> AsyncPgConnection {
    AsyncPgConnection::establish(&admin_url())
        .await
        .expect("connect to the admin database")
}

/// Creates the database of `url` as a copy of the migrated template, unless it exists (an
/// app restarted on its database).
pub async fn create_from_template(url: &str) {
    let name = name_of(url).to_owned();
    let template = template();
    let mut conn = admin().await;
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let found: Found =
        diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
            .bind::<diesel::sql_types::Text, _>(&name)
            .get_result(&mut conn)
            .await
            .expect("look the database up");
    if found.n > 0 {
        return;
    }
    // The template may still show the session that migrated it for a moment after it ended.
    for attempt in 0.. {
        let created = diesel::sql_query(format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
        ))
        .execute(&mut conn)
        .await;
        match created {
            Ok(_) => return,
            Err(e) if e.to_string().contains("being accessed by other users") && attempt < 200 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("create {name} from {template}: {e}"),
        }
    }
}

/// Drops the database of `url`, closing whatever still uses it.
pub async fn drop_database(url: &str) {
    if let Ok(mut conn) = AsyncPgConnection::establish(&admin_url()).await {
        let _ = diesel::sql_query(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            name_of(url)
        ))
        .execute(&mut conn)
        .await;
    }
}
