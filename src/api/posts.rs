//! `GET/POST /api/v1/posts` and `GET /api/v1/posts/{id}`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::body::Body;
use super::openapi::{NewPost, PostPage, Problem};
use crate::auth::MaybeUser;
use crate::db::posts::PageKey;
use crate::error::{ApiError, FieldError};
use crate::limits::Writer;
use crate::server::AppState;
use crate::service::posts;
use crate::service::posts::Post;

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

#[utoipa::path(
    post,
    path = "/api/v1/posts",
    tag = "posts",
    request_body = NewPost,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Post),
        (status = 401, description = "Missing, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 256 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over RATE_LIMIT_WRITES_PER_MIN", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds until a request passes again"))),
        (status = 503, description = "A dependency is down", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    Writer(user): Writer,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let mut b = Body::new(&body)?;
    let title = b.string("title", 1, 255, true);
    let content = b.string("content", 1, 20_000, true);
    b.finish()?;
    let (Some(title), Some(content)) = (title, content) else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    let post = posts::create(&state, &user, title, content).await?;
    Ok(HttpResponse::Created().json(post))
}

#[utoipa::path(
    get,
    path = "/api/v1/posts/{id}",
    tag = "posts",
    params(("id" = i64, Path, description = "Post id")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The post", body = Post),
        (status = 401, description = "Missing, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown post", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn get(
    state: web::Data<AppState>,
    viewer: MaybeUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = super::post_id(&id)?;
    let body = posts::get(&state, viewer.0.as_ref(), id).await?;
    Ok(json(body))
}

#[utoipa::path(
    get,
    path = "/api/v1/posts",
    tag = "posts",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Page size, default 20"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of posts, newest first", body = PostPage),
        (status = 400, description = "A cursor this service did not issue", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn list(
    state: web::Data<AppState>,
    viewer: MaybeUser,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (limit, after) = page_query(&state, req.query_string())?;
    let body = posts::list(&state, viewer.0.as_ref(), after, limit).await?;
    Ok(json(body))
}

/// 200 with a JSON body written by `service::render`.
fn json(body: impl actix_web::body::MessageBody + 'static) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(body)
}

/// `limit` (1..=100, default 20; otherwise 422) and `cursor` (one we issued; otherwise 400).
/// A key given twice is refused rather than guessed at; unknown keys are ignored.
fn page_query(state: &AppState, query: &str) -> Result<(usize, Option<PageKey>), ApiError> {
    let mut limit: Option<String> = None;
    let mut cursor: Option<String> = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match key.as_ref() {
            "limit" => &mut limit,
            "cursor" => &mut cursor,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(if key == "limit" {
                ApiError::validation("limit", "must be given once")
            } else {
                ApiError::BadRequest("cursor must be given once".into())
            });
        }
    }
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::Validation(vec![FieldError::new(
                    "limit",
                    format!("must be an integer from 1 to {MAX_LIMIT}"),
                )])
            })?,
    };
    let after = match cursor {
        None => None,
        Some(c) if c.is_empty() => None,
        Some(c) => Some(state.cursors.decode(&c)?),
    };
    Ok((limit, after))
}
