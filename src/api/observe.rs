//! Per-request observation: a request id (the caller's `X-Request-Id` when it is sane,
//! else a new one) echoed on the answer, the HTTP metrics, and one log line with method,
//! route pattern, status and latency. Never the query string, body or headers, so neither
//! passwords nor tokens reach the log.
//!
//! Every label comes from a closed set, so no request can add a time series: the method is
//! one of the standard ones or `OTHER`, the route is a pattern of the route table or
//! `unmatched`, the status one the service sends.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, Error};

use crate::app::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()))
}

/// The method as a metric label: a client may send any token as a method.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let id = request_id(&req);
    let method = method_label(req.method());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let mut res = next.call(req).await?;
    // A pattern of the route table (never the path itself), else `unmatched`.
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = res.status();
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, value);
    }
    let elapsed = started.elapsed();
    if let Some(state) = state {
        let m = &state.service.metrics;
        m.http_requests
            .with_label_values(&[method, route.as_str(), status.as_str()])
            .inc();
        m.http_duration
            .with_label_values(&[method, route.as_str()])
            .observe(elapsed.as_secs_f64());
    }
    log::info!(
        "request_id={id} method={method} route={route} status={} latency_ms={:.2}",
        status.as_u16(),
        elapsed.as_secs_f64() * 1000.0
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_set_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for odd in ["XXXX1", "get", "PROPFIND", "BREW"] {
            let m = Method::from_bytes(odd.as_bytes()).unwrap();
            assert_eq!(method_label(&m), "OTHER", "{odd}");
        }
    }
}
