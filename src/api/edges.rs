//! Request-level limits on what a client can make the service spend (DESIGN §8.6), as one
//! middleware:
//!
//! - the head (target and headers) at most `HTTP_MAX_HEADER_BYTES`, else 431;
//! - the body in full within `HTTP_BODY_TIMEOUT_MS` of the head, and, once 2 s have passed,
//!   at least `HTTP_BODY_MIN_BYTES_PER_SEC` on average, else 408 (actix-web bounds neither:
//!   a client that sends `Content-Length: 1000` and one byte would hold its connection for
//!   ever);
//! - each request marks its connection busy until its answer is out
//!   ([`super::connection`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{web, Error, HttpMessage, HttpRequest};
use futures::Stream;
use tokio::time::{Instant, Sleep};

use super::connection::{ConnWatch, RequestPhase};
use crate::app::AppState;
use crate::config::EdgeLimits;
use crate::error::ApiError;

/// A request body as actix-web's `Payload::Stream` holds it.
type BoxedBody = Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>;

/// How long a body may take before the minimum rate applies.
const RATE_GRACE: Duration = Duration::from_secs(2);

pub async fn limit(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<Tracked>, Error> {
    let phase = req.conn_data::<ConnWatch>().map(ConnWatch::begin_request);
    let limits = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.settings.edges.clone());
    let res = match limits {
        Some(limits) if head_bytes(req.request()) > limits.max_header_bytes => {
            req.error_response(ApiError::HeadersTooLarge)
        }
        Some(limits) => {
            let payload = req.take_payload();
            if !matches!(payload, Payload::None) {
                let timed: BoxedBody = Box::pin(TimedBody::new(payload, &limits));
                req.set_payload(Payload::from(timed));
            }
            next.call(req).await?.map_into_boxed_body()
        }
        None => next.call(req).await?.map_into_boxed_body(),
    };
    Ok(res.map_body(|_, body| Tracked { body, phase }))
}

/// The bytes of the request target and headers, counted as they are sent.
fn head_bytes(req: &HttpRequest) -> usize {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    target + headers
}

/// A request body with a deadline and a minimum rate.
struct TimedBody {
    inner: Payload,
    started: Instant,
    received: u64,
    /// The deadline of the whole body.
    total: Instant,
    min_rate: u64,
    timer: Pin<Box<Sleep>>,
    failed: bool,
}

impl TimedBody {
    fn new(inner: Payload, limits: &EdgeLimits) -> Self {
        let started = Instant::now();
        let mut body = TimedBody {
            inner,
            started,
            received: 0,
            total: started + limits.body_timeout,
            min_rate: limits.body_min_rate,
            timer: Box::pin(tokio::time::sleep_until(started)),
            failed: false,
        };
        let deadline = body.deadline();
        body.timer.as_mut().reset(deadline);
        body
    }

    /// The sooner of the total deadline and the time by which the bytes received so far
    /// should have come at the minimum rate.
    fn deadline(&self) -> Instant {
        if self.min_rate == 0 {
            return self.total;
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        self.total.min(self.started + RATE_GRACE + earned)
    }
}

impl Stream for TimedBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.received += chunk.len() as u64;
                let deadline = this.deadline();
                this.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Pending if this.timer.as_mut().poll(cx).is_ready() => {
                this.failed = true;
                Poll::Ready(Some(Err(body_timed_out())))
            }
            other => other,
        }
    }
}

fn body_timed_out() -> PayloadError {
    PayloadError::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        "the request body did not arrive in time",
    ))
}

/// Whether a body read failed on [`TimedBody`]'s deadline (answered 408).
pub fn is_body_timeout(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(e) if e.kind() == io::ErrorKind::TimedOut)
}

/// An answer's body that keeps its request marked in progress until it has been sent.
pub struct Tracked {
    body: BoxBody,
    phase: Option<RequestPhase>,
}

impl MessageBody for Tracked {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_next(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.phase = None;
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn limits(body_timeout_ms: u64, min_rate: u64) -> EdgeLimits {
        EdgeLimits {
            header_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(5),
            body_timeout: Duration::from_millis(body_timeout_ms),
            body_min_rate: min_rate,
            request_timeout: Duration::from_secs(30),
            disconnect_timeout: Duration::from_secs(1),
            shutdown_timeout_secs: 10,
            max_connections: 100,
            max_header_bytes: 16_384,
        }
    }

    /// A body of `chunks` sent `every` apart, then nothing.
    fn body(chunks: usize, every: Duration) -> Payload {
        let stream = futures::stream::iter(0..chunks).then(move |_| async move {
            tokio::time::sleep(every).await;
            Ok::<_, PayloadError>(Bytes::from_static(&[b'x'; 100]))
        });
        let stalled = stream.chain(futures::stream::pending());
        let boxed: BoxedBody = Box::pin(stalled);
        Payload::from(boxed)
    }

    async fn read(mut body: TimedBody) -> (u64, Option<PayloadError>) {
        let mut got = 0;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => got += c.len() as u64,
                Err(e) => return (got, Some(e)),
            }
        }
        (got, None)
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_at_the_rate_deadline() {
        // 100 bytes, then nothing: at 100 B/s the grace plus one second.
        let started = Instant::now();
        let (got, err) = read(TimedBody::new(
            body(1, Duration::ZERO),
            &limits(60_000, 100),
        ))
        .await;
        assert_eq!(got, 100);
        assert!(is_body_timeout(&err.expect("a timeout")));
        assert_eq!(started.elapsed(), RATE_GRACE + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_may_take_until_the_total_deadline() {
        // 100 bytes a second meets a 50 B/s minimum; the 10.5 s deadline still ends it.
        let started = Instant::now();
        let slow = TimedBody::new(body(1000, Duration::from_secs(1)), &limits(10_500, 50));
        let (got, err) = read(slow).await;
        assert!(is_body_timeout(&err.expect("a timeout")));
        assert_eq!(started.elapsed(), Duration::from_millis(10_500));
        assert_eq!(got, 1000, "the chunks that arrived before it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_within_its_limits_arrives_whole() {
        let inner = futures::stream::iter(vec![Ok(Bytes::from_static(b"{}"))]);
        let boxed: BoxedBody = Box::pin(inner);
        let (got, err) = read(TimedBody::new(Payload::from(boxed), &limits(10_000, 1024))).await;
        assert_eq!((got, err.is_none()), (2, true));
    }
}
