//! Queries on `users`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::users;
use super::DbResult;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

/// Inserts a user; `None` when the username is taken (the unique index decides, so two
/// concurrent registrations of one name cannot both succeed).
pub async fn insert(
    conn: &mut AsyncPgConnection,
    username: &str,
    password_hash: &str,
) -> DbResult<Option<User>> {
    Ok(diesel::insert_into(users::table)
        .values((
            users::username.eq(username),
            users::password_hash.eq(password_hash),
        ))
        .on_conflict(users::username)
        .do_nothing()
        .returning(User::as_returning())
        .get_result(conn)
        .await
        .optional()?)
}

pub async fn find_by_username(
    conn: &mut AsyncPgConnection,
    username: &str,
) -> DbResult<Option<User>> {
    Ok(users::table
        .filter(users::username.eq(username))
        .select(User::as_select())
        .first(conn)
        .await
        .optional()?)
}
