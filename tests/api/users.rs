//! Registration, tokens and the bearer checks.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{problem, TestApp, JWT_SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_get_a_token() {
    let app = TestApp::new().await;
    let res = app
        .request(
            Method::POST,
            "/api/v1/users",
            None,
            Some(json!({ "username": "alice.b-c_1", "password": "correct horse" })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert!(body["id"].as_i64().unwrap() > 0);
    assert_eq!(body["username"], "alice.b-c_1");
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "no password hash leaks: {body}"
    );

    let res = app
        .request(
            Method::POST,
            "/api/v1/auth/token",
            None,
            Some(json!({ "username": "alice.b-c_1", "password": "correct horse" })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], json!(3600));
    assert!(body["access_token"].as_str().unwrap().len() > 20);

    // The password is stored as an argon2id hash.
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct H {
        #[diesel(sql_type = diesel::sql_types::Text)]
        password_hash: String,
    }
    let h: H = diesel::sql_query("SELECT password_hash FROM users")
        .get_result(&mut app.db().await)
        .await
        .unwrap();
    assert!(
        h.password_hash.starts_with("$argon2id$"),
        "{}",
        h.password_hash
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_taken_is_409() {
    let app = TestApp::new().await;
    app.register("taken").await;
    let res = app
        .request(
            Method::POST,
            "/api/v1/users",
            None,
            Some(json!({ "username": "taken", "password": "another password" })),
        )
        .await;
    problem(res, 409).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_field_rules() {
    let app = TestApp::new().await;
    let long = "x".repeat(33);
    let long_pw = "p".repeat(129);
    let cases = [
        (
            json!({ "username": "ab", "password": "password1" }),
            "username",
        ),
        (
            json!({ "username": long, "password": "password1" }),
            "username",
        ),
        (
            json!({ "username": "bad name", "password": "password1" }),
            "username",
        ),
        (
            json!({ "username": "bad/name", "password": "password1" }),
            "username",
        ),
        (
            json!({ "username": 123, "password": "password1" }),
            "username",
        ),
        (json!({ "password": "password1" }), "username"),
        (
            json!({ "username": "okname", "password": "short" }),
            "password",
        ),
        (
            json!({ "username": "okname", "password": long_pw }),
            "password",
        ),
        (
            json!({ "username": "okname", "password": 12345678 }),
            "password",
        ),
        (json!({ "username": "okname" }), "password"),
    ];
    for (body, field) in cases {
        let res = app
            .request(Method::POST, "/api/v1/users", None, Some(body.clone()))
            .await;
        let p = problem(res, 422).await;
        let fields: Vec<&str> = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, [field], "{body}");
    }
    // Boundaries are accepted.
    for (name, pw) in [("abc", "p".repeat(8)), (&*"y".repeat(32), "p".repeat(128))] {
        let res = app
            .request(
                Method::POST,
                "/api/v1/users",
                None,
                Some(json!({ "username": name, "password": pw })),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "{name}");
    }
    // Nothing invalid was stored.
    use diesel_async::RunQueryDsl;
    let n = diesel::sql_query("SELECT id FROM users")
        .execute(&mut app.db().await)
        .await
        .unwrap();
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let app = TestApp::new().await;
    app.register("carol").await;
    let mut bodies = Vec::new();
    for (u, p) in [("carol", "wrong password"), ("nobody", "password123")] {
        let res = app
            .request(
                Method::POST,
                "/api/v1/auth/token",
                None,
                Some(json!({ "username": u, "password": p })),
            )
            .await;
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        bodies.push(problem(res, 401).await);
    }
    assert_eq!(bodies[0], bodies[1]);
}

fn token_with(claims: Value, secret: &[u8], alg: Algorithm) -> String {
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_401() {
    let app = TestApp::new().await;
    let user = app.register("dave").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sub = user.id.to_string();
    let expired = token_with(
        json!({ "sub": sub, "name": "dave", "iat": now - 7200, "exp": now - 3600 }),
        JWT_SECRET.as_bytes(),
        Algorithm::HS256,
    );
    let other_secret = token_with(
        json!({ "sub": sub, "name": "dave", "iat": now, "exp": now + 3600 }),
        b"some other secret of enough length",
        Algorithm::HS256,
    );
    let other_alg = token_with(
        json!({ "sub": sub, "name": "dave", "iat": now, "exp": now + 3600 }),
        JWT_SECRET.as_bytes(),
        Algorithm::HS512,
    );
    let no_exp = token_with(
        json!({ "sub": sub, "name": "dave", "iat": now }),
        JWT_SECRET.as_bytes(),
        Algorithm::HS256,
    );
    // {"alg":"none"} with the same claims and no signature.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(
            json!({ "sub": sub, "name": "dave", "iat": now, "exp": now + 3600 }).to_string()
        )
    );
    let body = Some(json!({ "title": "t", "content": "c" }));
    for token in [
        expired,
        other_secret,
        other_alg,
        no_exp,
        none,
        "garbage".into(),
    ] {
        let res = app
            .request(Method::POST, "/api/v1/posts", Some(&token), body.clone())
            .await;
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        problem(res, 401).await;
    }
    // No token at all, and a non-bearer scheme.
    let res = app
        .request(Method::POST, "/api/v1/posts", None, body.clone())
        .await;
    problem(res, 401).await;
    let res = app
        .client
        .post(app.url("/api/v1/posts"))
        .header("authorization", "Basic ZGF2ZTpwYXNzd29yZDEyMw==")
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(res, 401).await;
    // A bad token on an endpoint where signing in is optional is still refused.
    let res = app
        .request(Method::GET, "/api/v1/posts", Some("garbage"), None)
        .await;
    problem(res, 401).await;
    // The good token works.
    let res = app
        .request(Method::POST, "/api/v1/posts", Some(&user.token), body)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
}
