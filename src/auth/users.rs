//! Every statement on the `users` table.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::db::statement;

/// What an account may do: shop, or also run the shop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

/// An account as the API shows it (never its password hash).
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct UserView {
    pub id: i64,
    #[schema(example = "ada@example.com")]
    pub email: String,
    #[schema(example = "Ada Lovelace")]
    pub full_name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// What a login checks: the account's id, password hash and role.
#[derive(Debug, sqlx::FromRow)]
pub struct Credentials {
    pub id: i64,
    pub password_hash: String,
    pub role: Role,
}

/// A new account; a taken e-mail violates `users_email_key`.
pub async fn insert(
    conn: &mut PgConnection,
    email: &str,
    password_hash: &str,
    full_name: &str,
    role: Role,
) -> sqlx::Result<UserView> {
    statement!(
        "INSERT INTO users (email, password_hash, full_name, role) VALUES ($1, $2, $3, $4) \
         RETURNING id, email, full_name, role, created_at"
    )
    .query_as()
    .bind(email)
    .bind(password_hash)
    .bind(full_name)
    .bind(role)
    .fetch_one(conn)
    .await
}

/// An account made to be exactly this (created, or its role and password replaced): the
/// configured admin, the demo customer.
pub async fn put(
    conn: &mut PgConnection,
    email: &str,
    password_hash: &str,
    full_name: &str,
    role: Role,
) -> sqlx::Result<()> {
    statement!(
        "INSERT INTO users (email, password_hash, full_name, role) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (email) DO UPDATE \
         SET role = EXCLUDED.role, password_hash = EXCLUDED.password_hash"
    )
    .query()
    .bind(email)
    .bind(password_hash)
    .bind(full_name)
    .bind(role)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn find(conn: &mut PgConnection, id: i64) -> sqlx::Result<Option<UserView>> {
    statement!("SELECT id, email, full_name, role, created_at FROM users WHERE id = $1")
        .query_as()
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn credentials(
    conn: &mut PgConnection,
    email: &str,
) -> sqlx::Result<Option<Credentials>> {
    statement!("SELECT id, password_hash, role FROM users WHERE email = $1")
        .query_as()
        .bind(email)
        .fetch_optional(conn)
        .await
}
