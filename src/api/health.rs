//! `/healthz` (the process answers) and `/readyz` (a shared snapshot of named checks, see
//! [`crate::readiness`]).

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::app::AppState;

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process answers")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Every check passes (status and latency of each); taken at most once a second"),
        (status = 503, description = "A dependency is down")
    ))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let snapshot = state.readiness.snapshot().await;
    let body = snapshot.to_json();
    if snapshot.ready() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
