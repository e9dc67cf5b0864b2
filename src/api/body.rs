//! Field-by-field validation of JSON bodies, so that every invalid field is named in the
//! 422 answer (serde's own errors name neither the field nor the rule). A request type states
//! its rules ([`Rules`]); what passes them, trimmed where a rule trims, is what the type is
//! deserialized from (`extract::Fields`).

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{ApiError, FieldError};

/// The field rules of a request body type.
pub trait Rules: DeserializeOwned {
    /// Checks each field of `body`, which keeps what passes.
    fn check(body: &mut Body<'_>);
}

pub struct Body<'a> {
    object: &'a Map<String, Value>,
    errors: Vec<FieldError>,
    /// The fields that passed, as checked (trimmed strings).
    passed: Map<String, Value>,
}

impl<'a> Body<'a> {
    pub fn new(value: &'a Value) -> Result<Self, ApiError> {
        match value {
            Value::Object(object) => Ok(Body {
                object,
                errors: Vec::new(),
                passed: Map::new(),
            }),
            _ => Err(ApiError::validation("body", "must be a JSON object")),
        }
    }

    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// A string field of `min..=max` characters (counted after trimming when `trim`),
    /// without NUL characters, which PostgreSQL text cannot hold.
    pub fn string(&mut self, field: &str, min: usize, max: usize, trim: bool) -> Option<String> {
        let raw = match self.object.get(field) {
            None | Some(Value::Null) => {
                self.fail(field, "is required");
                return None;
            }
            Some(Value::String(s)) => s,
            Some(_) => {
                self.fail(field, "must be a string");
                return None;
            }
        };
        let value = if trim { raw.trim() } else { raw.as_str() };
        let len = value.chars().count();
        if value.contains('\0') {
            self.fail(field, "must not contain NUL characters");
        } else if len < min || raw.chars().count() > max {
            let what = if trim && len == 0 && !raw.is_empty() {
                "must not be blank".to_owned()
            } else {
                format!("must be {min} to {max} characters long")
            };
            self.fail(field, what);
        } else {
            self.passed.insert(field.to_owned(), Value::from(value));
            return Some(value.to_owned());
        }
        None
    }

    /// An integer field in `min..=max`: not a string, float or boolean.
    pub fn integer(&mut self, field: &str, min: i64, max: i64) -> Option<i64> {
        let message = match self.object.get(field) {
            None | Some(Value::Null) => "is required",
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) if (min..=max).contains(&v) => {
                    self.passed.insert(field.to_owned(), Value::from(v));
                    return Some(v);
                }
                _ if n.is_f64() => "must be an integer",
                _ => "is out of range",
            },
            Some(_) => "must be an integer",
        };
        let message = if message == "is out of range" {
            format!("must be between {min} and {max}")
        } else {
            message.to_owned()
        };
        self.fail(field, message);
        None
    }

    /// The fields that passed, or 422 naming every one that did not.
    pub fn finish(self) -> Result<Map<String, Value>, ApiError> {
        if self.errors.is_empty() {
            Ok(self.passed)
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

/// Username rules: 3 to 32 of `A-Z a-z 0-9 _ . -`.
pub fn check_username(body: &mut Body<'_>) -> Option<String> {
    let name = body.string("username", 3, 32, false)?;
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        Some(name)
    } else {
        body.fail(
            "username",
            "may contain only letters, digits, '_', '.' and '-'",
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn score(v: Value) -> Result<Option<i64>, ApiError> {
        let body = json!({ "score": v });
        let mut b = Body::new(&body)?;
        let s = b.integer("score", 0, 5);
        b.finish().map(|_| s)
    }

    #[test]
    fn score_must_be_an_integer_in_range() {
        assert_eq!(score(json!(0)).ok().flatten(), Some(0));
        assert_eq!(score(json!(5)).ok().flatten(), Some(5));
        for bad in [
            json!(6),
            json!(-1),
            json!(4.0),
            json!(4.5),
            json!("4"),
            json!(true),
            json!(null),
            json!(1e300),
            json!(18446744073709551615u64),
        ] {
            assert!(
                matches!(score(bad.clone()), Err(ApiError::Validation(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn strings_are_trimmed_and_bounded() {
        let body = json!({ "title": "  hi  ", "content": "   ", "nul": "a\u{0}b" });
        let mut b = Body::new(&body).unwrap();
        assert_eq!(b.string("title", 1, 255, true).as_deref(), Some("hi"));
        assert_eq!(b.string("content", 1, 20_000, true), None);
        assert_eq!(b.string("nul", 1, 10, false), None);
        assert_eq!(b.string("missing", 1, 10, false), None);
        let Err(ApiError::Validation(errors)) = b.finish() else {
            panic!("expected 422")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["content", "nul", "missing"]);
    }

    #[test]
    fn usernames_use_a_small_alphabet() {
        for (name, ok) in [
            ("abc", true),
            ("a.b-c_9", true),
            ("ab", false),
            ("a b", false),
            ("é√x", false),
        ] {
            let body = json!({ "username": name });
            let mut b = Body::new(&body).unwrap();
            assert_eq!(check_username(&mut b).is_some(), ok, "{name}");
        }
    }

    #[test]
    fn body_must_be_an_object() {
        assert!(Body::new(&json!([1, 2])).is_err());
    }
}
