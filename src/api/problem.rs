//! The problem+json answers as the OpenAPI document lists them: the [`Problem`] schema and
//! the sets of error responses that several operations share, so each handler names a set
//! instead of repeating its lines.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, Ref, RefOr, Response, ResponseBuilder, ResponsesBuilder,
};
use utoipa::{IntoResponses, PartialSchema, ToSchema};

use crate::error::{FieldError, PROBLEM_JSON};

/// An RFC 9457 problem document, the body of every error.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem, e.g. `/problems/validation-error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Present for 422: one entry per invalid field.
    pub errors: Option<Vec<FieldError>>,
}

/// A problem+json response; with `retry_after`, the description of its `Retry-After` header.
fn problem(description: &str, retry_after: Option<&str>) -> Response {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, content);
    if let Some(header) = retry_after {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(u64::schema())
                .description(Some(header))
                .build(),
        );
    }
    response.build()
}

/// Declares a set of problem responses: `Name { status => "description" [, retry "header"] }`.
macro_rules! problem_set {
    ($(#[$doc:meta])* $name:ident { $($status:literal => $desc:literal $(, retry $retry:literal)?;)+ }) => {
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                ResponsesBuilder::new()
                    $(.response($status, problem($desc, None $(.or(Some($retry)))?)))+
                    .build()
                    .into()
            }
        }
    };
}

problem_set! {
    /// A JSON body that could not be read or whose fields break their rules.
    BadBody {
        "400" => "Malformed JSON";
        "413" => "Body over 256 KiB";
        "415" => "Body is not application/json";
        "422" => "Invalid fields";
    }
}

problem_set! {
    /// A bearer token that was required, or sent, and is not valid.
    BadToken {
        "401" => "Missing, invalid or expired token";
    }
}

problem_set! {
    /// A post id that names no post.
    UnknownPost {
        "404" => "Unknown post";
    }
}

problem_set! {
    /// Over the per-user write limit.
    WriteLimit {
        "429" => "Over RATE_LIMIT_WRITES_PER_MIN", retry "Seconds until a request passes again";
    }
}

problem_set! {
    /// Over the per-client sign-up and token limit, or the password threads are full.
    AuthLimit {
        "429" => "Over RATE_LIMIT_AUTH_PER_MIN", retry "Seconds until a request passes again";
        "503" => "A dependency is down, or password hashing is at capacity (PASSWORD_HASH_QUEUE)",
            retry "Seconds to wait before trying again";
    }
}

problem_set! {
    /// PostgreSQL (or, where it is needed, Redis) cannot answer.
    Unavailable {
        "503" => "A dependency is down";
    }
}
