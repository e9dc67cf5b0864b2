//! `PUT` and `DELETE /api/v1/posts/{id}/rating`.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::{Body, Rules};
use super::extract::{Fields, Writer};
use super::problem::{BadBody, BadToken, Problem, Unavailable, UnknownPost, WriteLimit};
use crate::app::AppState;
use crate::error::ApiError;
use crate::service::ratings;

/// Body of `PUT /api/v1/posts/{id}/rating`.
#[derive(Deserialize, ToSchema)]
pub struct NewRating {
    #[schema(minimum = 0, maximum = 5)]
    pub score: i16,
}

impl Rules for NewRating {
    fn check(body: &mut Body<'_>) {
        body.integer("score", 0, 5);
    }
}

#[derive(Serialize, ToSchema)]
pub struct RatingSaved {
    pub post_id: i64,
    #[schema(minimum = 0, maximum = 5)]
    pub score: i16,
    pub updated_at: DateTime<Utc>,
}

#[utoipa::path(
    put,
    path = "/api/v1/posts/{id}/rating",
    tag = "ratings",
    params(("id" = i64, Path, description = "Post id")),
    request_body = NewRating,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's rating", body = RatingSaved),
        (status = 403, description = "Rating your own post", body = Problem, content_type = "application/problem+json"),
        BadToken,
        UnknownPost,
        BadBody,
        WriteLimit,
        Unavailable
    )
)]
pub async fn put(
    state: web::Data<AppState>,
    Writer(user): Writer,
    id: web::Path<String>,
    body: Fields<NewRating>,
) -> Result<HttpResponse, ApiError> {
    let post_id = super::post_id(&id)?;
    let body = body.check()?;
    let rated = ratings::rate(&state.service, &user, post_id, body.score).await?;
    Ok(HttpResponse::Ok().json(RatingSaved {
        post_id: rated.post_id,
        score: rated.score,
        updated_at: rated.updated_at,
    }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/posts/{id}/rating",
    tag = "ratings",
    params(("id" = i64, Path, description = "Post id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Withdrawn (or there was nothing to withdraw)"),
        BadToken,
        UnknownPost,
        WriteLimit,
        Unavailable
    )
)]
pub async fn delete(
    state: web::Data<AppState>,
    Writer(user): Writer,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let post_id = super::post_id(&id)?;
    ratings::withdraw(&state.service, &user, post_id).await?;
    Ok(HttpResponse::NoContent().finish())
}
