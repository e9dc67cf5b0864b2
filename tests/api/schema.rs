//! `src/db/schema.rs` matches what the migrations create: every table, column, type,
//! nullability and primary key. Fails when either is changed without the other.

use std::collections::BTreeSet;

use diesel_async::RunQueryDsl;

use crate::common::TestApp;

/// (table, column, PostgreSQL type, nullable).
type Columns = BTreeSet<(String, String, String, bool)>;
/// (table, column) of each primary key.
type Keys = BTreeSet<(String, String)>;

/// The columns and primary keys declared in schema.rs.
fn declared() -> (Columns, Keys) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/db/schema.rs"))
        .expect("schema.rs");
    let mut columns = BTreeSet::new();
    let mut keys = BTreeSet::new();
    let mut table = None;
    for line in text.lines().map(str::trim) {
        if line == "}" {
            table = None;
            continue;
        }
        if let Some((name, rest)) = line.split_once(" (") {
            if let Some(pk) = rest.strip_suffix(") {") {
                for k in pk.split(',') {
                    keys.insert((name.to_owned(), k.trim().to_owned()));
                }
                table = Some(name.to_owned());
                continue;
            }
        }
        let Some(table) = &table else { continue };
        if let Some((col, ty)) = line.trim_end_matches(',').split_once(" -> ") {
            let (ty, nullable) = match ty.strip_prefix("Nullable<") {
                Some(inner) => (inner.trim_end_matches('>'), true),
                None => (ty, false),
            };
            let pg = match ty {
                "Int8" => "bigint",
                "Int4" => "integer",
                "Int2" => "smallint",
                "Text" => "text",
                "Timestamptz" => "timestamp with time zone",
                "Bool" => "boolean",
                "Bytea" => "bytea",
                other => panic!("add the PostgreSQL name of {other}"),
            };
            columns.insert((table.clone(), col.to_owned(), pg.to_owned(), nullable));
        }
    }
    (columns, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_rs_matches_the_migrations() {
    #[derive(diesel::QueryableByName)]
    struct Col {
        #[diesel(sql_type = diesel::sql_types::Text)]
        table_name: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        column_name: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        data_type: String,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        nullable: bool,
    }
    #[derive(diesel::QueryableByName)]
    struct Key {
        #[diesel(sql_type = diesel::sql_types::Text)]
        table_name: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        column_name: String,
    }
    let app = TestApp::new().await;
    let mut conn = app.db().await;
    let cols: Vec<Col> = diesel::sql_query(
        "SELECT table_name::text, column_name::text, data_type::text,
                (is_nullable = 'YES') AS nullable
         FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name NOT LIKE '\\_\\_diesel%'",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let keys: Vec<Key> = diesel::sql_query(
        "SELECT k.table_name::text, k.column_name::text
         FROM information_schema.table_constraints c
         JOIN information_schema.key_column_usage k USING (constraint_schema, constraint_name)
         WHERE c.constraint_type = 'PRIMARY KEY' AND c.table_schema = 'public'
           AND c.table_name NOT LIKE '\\_\\_diesel%'",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let actual: BTreeSet<_> = cols
        .into_iter()
        .map(|c| (c.table_name, c.column_name, c.data_type, c.nullable))
        .collect();
    let actual_keys: BTreeSet<_> = keys
        .into_iter()
        .map(|k| (k.table_name, k.column_name))
        .collect();
    let (declared, declared_keys) = declared();
    assert!(!declared.is_empty());
    assert_eq!(declared, actual, "schema.rs and the migrations differ");
    assert_eq!(declared_keys, actual_keys, "primary keys differ");
}
