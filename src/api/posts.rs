//! `GET/POST /api/v1/posts` and `GET /api/v1/posts/{id}`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::{Body, Rules};
use super::extract::{Fields, MaybeUser, Writer};
use super::problem::{BadBody, BadToken, Problem, Unavailable, UnknownPost, WriteLimit};
use crate::app::AppState;
use crate::db::posts::PageKey;
use crate::error::{ApiError, FieldError};
use crate::service::posts;
use crate::service::posts::Post;

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

/// Body of `POST /api/v1/posts`. Both fields are trimmed and may not be blank or hold NUL.
#[derive(Deserialize, ToSchema)]
pub struct NewPost {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    pub title: String,
    #[schema(
        min_length = 1,
        max_length = 20000,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    pub content: String,
}

impl Rules for NewPost {
    fn check(body: &mut Body<'_>) {
        body.string("title", 1, 255, true);
        body.string("content", 1, 20_000, true);
    }
}

// The page's body is written by `service::render`, byte for byte what serializing this type
// would give; the type documents it.
#[derive(Serialize, ToSchema)]
pub struct PostPage {
    pub results: Vec<Post>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/posts",
    tag = "posts",
    request_body = NewPost,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Post),
        BadToken,
        BadBody,
        WriteLimit,
        Unavailable
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    Writer(user): Writer,
    body: Fields<NewPost>,
) -> Result<HttpResponse, ApiError> {
    let body = body.check()?;
    let post = posts::create(&state.service, &user, body.title, body.content).await?;
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
        BadToken,
        UnknownPost,
        Unavailable
    )
)]
pub async fn get(
    state: web::Data<AppState>,
    viewer: MaybeUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = super::post_id(&id)?;
    let body = posts::get(&state.service, viewer.0.as_ref(), id).await?;
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
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        BadToken,
        Unavailable
    )
)]
pub async fn list(
    state: web::Data<AppState>,
    viewer: MaybeUser,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (limit, after) = page_query(&state, req.query_string())?;
    let body = posts::list(&state.service, viewer.0.as_ref(), after, limit).await?;
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
        Some(c) => Some(state.service.cursors.decode(&c)?),
    };
    Ok((limit, after))
}
