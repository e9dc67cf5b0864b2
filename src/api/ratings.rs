//! `PUT` and `DELETE /api/v1/posts/{id}/rating`.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::body::Body;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::server::AppState;
use crate::service::ratings;

pub async fn put(
    state: web::Data<AppState>,
    user: AuthUser,
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

pub async fn delete(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let post_id = super::post_id(&id)?;
    ratings::withdraw(&state, &user, post_id).await?;
    Ok(HttpResponse::NoContent().finish())
}
