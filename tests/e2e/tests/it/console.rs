//! The console's HTTP API against a real fleet: the auth matrix (no token
//! 401, another tenant's task 404, read-only cannot change anything, admin
//! can), bad input with its code, bounded bodies, and the audit log.

use clawfleet_console::auth::{hash_token, Role};
use clawfleet_console::config::Token;
use clawfleet_testkit::{monitor_config, start_console, start_health_monitor, wait_for};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{Fleet, FINISH};

fn token(name: &str, role: Role, tenant: Option<&str>) -> Token {
    Token {
        name: name.to_string(),
        sha256: hash_token(&format!("{name}-secret")),
        role,
        tenant: tenant.map(str::to_string),
    }
}

struct Console {
    base: String,
    http: reqwest::Client,
}

impl Console {
    async fn call(
        &self,
        method: &str,
        path: &str,
        who: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        if let Some(who) = who {
            req = req.bearer_auth(format!("{who}-secret"));
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.expect("the console answers");
        let status = r.status();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn the_console_api_enforces_roles_scopes_tenants_and_audits_every_change() {
    let mut fleet = Fleet::new().await;
    let _monitor = start_health_monitor(monitor_config(fleet.server.url())).await;
    fleet.agent("c1", &[], None).await;
    let config = clawfleet_console::Config {
        nats_url: fleet.server.url().to_string(),
        max_body_bytes: 4096,
        tokens: vec![
            token("adm", Role::Admin, None),
            token("ops", Role::Operator, None),
            token("ro", Role::ReadOnly, None),
            token("acme", Role::Tenant, Some("acme")),
            token("beta", Role::Tenant, Some("beta")),
        ],
        ..Default::default()
    };
    let (_console, addr) = start_console(config).await;
    let c = Console {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
    };

    // No token, or an unknown one: 401.
    let (s, b) = c.call("GET", "/api/v1/agents", None, None).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "{b}"
    );
    let (s, _) = c.call("GET", "/api/v1/agents", Some("nobody"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = c.call("GET", "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);

    // A tenant submits for itself (its tenant is filled in) and reads it back.
    let (s, b) = c
        .call(
            "POST",
            "/api/v1/tasks",
            Some("acme"),
            Some(json!({"payload": {"op": "echo"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    let record = wait_for("the task done", FINISH, || async {
        let (s, b) = c
            .call("GET", &format!("/api/v1/tasks/{id}"), Some("acme"), None)
            .await;
        (s == StatusCode::OK && b["status"] == "succeeded").then_some(b)
    })
    .await;
    assert_eq!(record["tenant"], "acme");
    // Another tenant does not see it, nor can cancel it, nor submit as acme.
    let (s, b) = c
        .call("GET", &format!("/api/v1/tasks/{id}"), Some("beta"), None)
        .await;
    assert_eq!((s, code(&b)), (StatusCode::NOT_FOUND, "not_found"), "{b}");
    let (s, _) = c
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/cancel"),
            Some("beta"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = c
        .call(
            "POST",
            "/api/v1/tasks",
            Some("beta"),
            Some(json!({"tenant": "acme", "payload": {}})),
        )
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "tenant_mismatch"),
        "{b}"
    );
    // The fleet-wide views are not a tenant's.
    for path in [
        "/api/v1/agents",
        "/api/v1/queues",
        "/api/v1/alerts",
        "/api/v1/audit",
    ] {
        let (s, b) = c.call("GET", path, Some("acme"), None).await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{path}: {b}"
        );
    }

    // Read-only reads everything and changes nothing.
    let (s, b) = c.call("GET", "/api/v1/agents", Some("ro"), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["agents"][0]["health"]["agent_id"], "c1");
    let (s, _) = c
        .call("GET", &format!("/api/v1/tasks/{id}"), Some("ro"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = c
        .call(
            "POST",
            "/api/v1/tasks",
            Some("ro"),
            Some(json!({"tenant": "acme", "payload": {}})),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "forbidden"), "{b}");

    // Operators and admins see every tenant; the API's own codes come through.
    let (s, b) = c.call("GET", "/api/v1/queues", Some("ops"), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = c
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/cancel"),
            Some("adm"),
            None,
        )
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::CONFLICT, "already_final"),
        "{b}"
    );
    let (s, b) = c
        .call(
            "POST",
            "/api/v1/tasks",
            Some("adm"),
            Some(json!({"tenant": "acme", "payload": {}, "bogus": 1})),
        )
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "unknown_field"),
        "{b}"
    );
    let raw = c
        .http
        .post(format!("{}/api/v1/tasks", c.base))
        .bearer_auth("adm-secret")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    assert_eq!(code(&raw.json::<Value>().await.unwrap()), "invalid_json");
    let big = c
        .http
        .post(format!("{}/api/v1/tasks", c.base))
        .bearer_auth("adm-secret")
        .body(vec![b' '; 10_000])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Every change is audited, refused ones too.
    let audit = wait_for("the audit entries", FINISH, || async {
        let (s, b) = c
            .call("GET", "/api/v1/audit?since=1h", Some("adm"), None)
            .await;
        (s == StatusCode::OK && b["entries"].as_array().is_some_and(|e| e.len() >= 6)).then_some(b)
    })
    .await;
    let entries: Vec<(String, String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["who"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let has = |who: &str, action: &str, result: &str| {
        entries
            .iter()
            .any(|(w, a, r)| w == who && a == action && r == result)
    };
    assert!(has("acme", "task.submit", "ok"), "{entries:?}");
    assert!(has("beta", "task.cancel", "not_found"), "{entries:?}");
    assert!(has("ro", "task.submit", "forbidden"), "{entries:?}");
    assert!(has("adm", "task.cancel", "already_final"), "{entries:?}");
    let submitted = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["who"] == "acme" && e["action"] == "task.submit")
        .unwrap();
    assert_eq!(submitted["target"], id.as_str());
    assert_eq!(submitted["tenant"], "acme");
}
