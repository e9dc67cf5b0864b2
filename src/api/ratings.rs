//! `PUT` and `DELETE /api/v1/posts/{id}/rating`.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::body::Body;
use super::openapi::{NewRating, Problem, RatingSaved};
use crate::error::ApiError;
use crate::limits::Writer;
use crate::server::AppState;
use crate::service::ratings;

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
        (status = 401, description = "Missing, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown post", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 256 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over RATE_LIMIT_WRITES_PER_MIN", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds until a request passes again"))),
        (status = 503, description = "A dependency is down", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn put(
    state: web::Data<AppState>,
    Writer(user): Writer,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let post_id = super::post_id(&id)?;
    let mut b = Body::new(&body)?;
    let score = b.integer("score", 0, 5);
    b.finish()?;
    let score = score.ok_or_else(|| ApiError::Internal("validated field missing".into()))?;
    // 0..=5 fits in i16.
    let rated = ratings::rate(&state, &user, post_id, score as i16).await?;
    Ok(HttpResponse::Ok().json(json!({
        "post_id": rated.post_id,
        "score": rated.score,
        "updated_at": rated.updated_at,
    })))
}

#[utoipa::path(
    delete,
    path = "/api/v1/posts/{id}/rating",
    tag = "ratings",
    params(("id" = i64, Path, description = "Post id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Withdrawn (or there was nothing to withdraw)"),
        (status = 401, description = "Missing, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown post", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over RATE_LIMIT_WRITES_PER_MIN", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds until a request passes again"))),
        (status = 503, description = "A dependency is down", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn delete(
    state: web::Data<AppState>,
    Writer(user): Writer,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let post_id = super::post_id(&id)?;
    ratings::withdraw(&state, &user, post_id).await?;
    Ok(HttpResponse::NoContent().finish())
}
