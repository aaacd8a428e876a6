use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    ADMIN_EMAIL, JWT_SECRET, PASSWORD, expect_json, expect_problem, spawn_app, spawn_app_with,
};

#[tokio::test]
async fn register_login_and_me() {
    let app = spawn_app().await;
    let created = expect_json(
        app.post(
            "/api/auth/register",
            None,
            &json!({"email": " Ada@Example.COM ", "password": PASSWORD, "full_name": "Ada Lovelace"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["email"], "ada@example.com");
    assert_eq!(created["role"], "customer");
    assert!(created.get("password_hash").is_none() && created.get("password").is_none());

    let login = expect_json(
        app.post(
            "/api/auth/login",
            None,
            &json!({"email": "ADA@example.com", "password": PASSWORD}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(login["token_type"], "bearer");
    assert_eq!(login["expires_in"], 3600);
    let token = login["access_token"].as_str().unwrap();

    let me = expect_json(app.get("/api/auth/me", Some(token)).await, StatusCode::OK).await;
    assert_eq!(me["id"], created["id"]);
    assert_eq!(me["full_name"], "Ada Lovelace");

    let stored: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(created["id"].as_i64().unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$"), "stored: {stored}");
}

#[tokio::test]
async fn a_taken_email_is_a_conflict_whatever_its_case() {
    let app = spawn_app().await;
    app.customer("bob@example.com").await;
    let response = app
        .post(
            "/api/auth/register",
            None,
            &json!({"email": "BOB@example.com", "password": PASSWORD, "full_name": "Bob"}),
        )
        .await;
    expect_problem(response, StatusCode::CONFLICT, "already-exists").await;
    assert_eq!(app.count("users").await, 2, "admin and the first Bob only");
}

#[tokio::test]
async fn invalid_registrations_name_the_field() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": PASSWORD, "full_name": "X"}),
            "email",
        ),
        (
            json!({"email": "x@example.com", "password": "short", "full_name": "X"}),
            "password",
        ),
        (
            json!({"email": "x@example.com", "password": PASSWORD, "full_name": "  "}),
            "full_name",
        ),
        (
            json!({"email": "x@example.com", "password": PASSWORD}),
            "full_name",
        ),
        (
            json!({"email": 42, "password": PASSWORD, "full_name": "X"}),
            "email",
        ),
    ];
    for (body, field) in cases {
        let problem = expect_problem(
            app.post("/api/auth/register", None, &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-error",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    assert_eq!(app.count("users").await, 1, "only the admin");
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_the_same_answer() {
    let app = spawn_app().await;
    app.customer("carol@example.com").await;
    let wrong_password = expect_problem(
        app.post(
            "/api/auth/login",
            None,
            &json!({"email": "carol@example.com", "password": "not her password"}),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let unknown = expect_problem(
        app.post(
            "/api/auth/login",
            None,
            &json!({"email": "nobody@example.com", "password": "not her password"}),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert_eq!(wrong_password["detail"], unknown["detail"]);
    assert_eq!(wrong_password["title"], unknown["title"]);
}

fn token_with(secret: &str, algorithm: Algorithm, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn missing_invalid_expired_and_tampered_tokens_are_401() {
    let app = spawn_app().await;
    let token = app.customer("dave@example.com").await;
    let now = jsonwebtoken::get_current_timestamp();
    let expired = token_with(
        JWT_SECRET,
        Algorithm::HS256,
        json!({"sub": "2", "role": "customer", "iat": now - 7200, "exp": now - 3600}),
    );
    let foreign = token_with(
        "some-other-secret-that-is-long-enough-as-well",
        Algorithm::HS256,
        json!({"sub": "2", "role": "admin", "iat": now, "exp": now + 3600}),
    );
    let other_algorithm = token_with(
        JWT_SECRET,
        Algorithm::HS512,
        json!({"sub": "2", "role": "admin", "iat": now, "exp": now + 3600}),
    );
    let mut tampered = token.clone();
    let middle = tampered.find('.').unwrap() + 3;
    tampered.replace_range(
        middle..middle + 1,
        if &token[middle..=middle] == "A" {
            "B"
        } else {
            "A"
        },
    );

    let no_token = app.get("/api/auth/me", None).await;
    assert_eq!(
        no_token.headers().get("www-authenticate").unwrap(),
        "Bearer"
    );
    expect_problem(no_token, StatusCode::UNAUTHORIZED, "unauthorized").await;
    for bad in [
        expired.as_str(),
        foreign.as_str(),
        other_algorithm.as_str(),
        tampered.as_str(),
        "garbage",
    ] {
        expect_problem(
            app.get("/api/auth/me", Some(bad)).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    }
    let expired_problem = expect_problem(
        app.get("/api/auth/me", Some(&expired)).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert!(
        expired_problem["detail"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    // A non-bearer scheme is refused too.
    let basic = app
        .request(reqwest::Method::GET, "/api/auth/me", None)
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    expect_problem(basic, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn tokens_expire_after_the_configured_ttl() {
    let app = spawn_app_with(&[("JWT_TTL_SECONDS", "1")]).await;
    let token = app.customer("erin@example.com").await;
    assert_eq!(
        app.get("/api/auth/me", Some(&token)).await.status(),
        StatusCode::OK
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    expect_problem(
        app.get("/api/auth/me", Some(&token)).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn the_configured_admin_exists_and_has_the_admin_role() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let me = expect_json(app.get("/api/auth/me", Some(&token)).await, StatusCode::OK).await;
    assert_eq!(me["email"], ADMIN_EMAIL);
    assert_eq!(me["role"], "admin");
}

#[tokio::test]
async fn customers_get_403_on_admin_endpoints() {
    let app = spawn_app().await;
    let token = app.customer("frank@example.com").await;
    expect_problem(
        app.post(
            "/api/products/categories",
            Some(&token),
            &json!({"name": "Nope"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_problem(
        app.get("/api/orders", Some(&token)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_problem(
        app.get("/api/admin/faults", Some(&token)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // A forged role claim without the secret is no way around it.
    let now = jsonwebtoken::get_current_timestamp();
    let forged = token_with(
        "wrong-secret-wrong-secret-wrong-secret-!!",
        Algorithm::HS256,
        json!({"sub": "1", "role": "admin", "iat": now, "exp": now + 60}),
    );
    expect_problem(
        app.get("/api/admin/faults", Some(&forged)).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
}

/// A client whose connections come from another loopback address: a second person.
fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(address))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stranger_guessing_a_password_cannot_lock_its_owner_out() {
    let app = crate::helpers::spawn_process(&[]).await;
    app.customer("victim@example.com").await;
    let login = |client: reqwest::Client, password: &'static str| {
        let url = format!("{}/api/auth/login", app.address);
        async move {
            client
                .post(url)
                .json(&json!({"email": "victim@example.com", "password": password}))
                .send()
                .await
                .expect("login")
                .status()
        }
    };
    // 30 wrong passwords from one address: it is throttled...
    let attacker = client_from([127, 0, 0, 1]);
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(login(attacker.clone(), "wrong guess").await);
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert_eq!(
        login(attacker.clone(), crate::helpers::PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "even with the right password, from that address"
    );
    // ...and the owner, from an address that has not been failing, logs in at once.
    let owner = client_from([127, 0, 0, 2]);
    assert_eq!(login(owner, crate::helpers::PASSWORD).await, StatusCode::OK);
}
