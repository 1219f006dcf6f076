//! The OpenAPI document a real `gbgate run` node serves (one city node with
//! a sharing policy and tokens): `GET /api/openapi.json` answers without a
//! token while the rest of the API asks for one; the document passes a
//! validator we did not write (the PyPI package `openapi-spec-validator`,
//! installed by `make deps`; the test fails, not skips, without it); and
//! every operation it lists, called with an admin token and with none,
//! answers with a status the document lists for it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::time::Duration;

use gbgate::api::auth::new_token;
use integration::demo::TreeSpec;
use integration::harness::{Cluster, FleetSpec};

/// A channel ID for path parameters: well formed, not in the catalog.
const CH: &str = "35010201001310000001";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .new_agent()
}

/// Status of `method url` with `token` as bearer; POSTs send `{}` as JSON.
/// The body is not read: a video endpoint that answers 200 streams on.
fn status(method: &str, url: &str, token: Option<&str>) -> u16 {
    let agent = agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let resp = if method == "post" {
        let mut r = agent.post(url).header("Content-Type", "application/json");
        if let Some(a) = &auth {
            r = r.header("Authorization", a);
        }
        r.send("{}")
    } else {
        let mut r = agent.get(url);
        if let Some(a) = &auth {
            r = r.header("Authorization", a);
        }
        r.call()
    };
    resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"))
        .status()
        .as_u16()
}

/// `path` with its parameters filled in, and the query strings without
/// which the request would be refused before its caller is checked.
fn concrete(path: &str) -> String {
    let query = match path {
        "/api/v1/devices/{id}/records" => "?start=2026-05-01T00:00:00&end=2026-05-01T01:00:00",
        "/playback/{file}" => "?start=1777593600&end=1777597200",
        _ => "",
    };
    path.replace("/devices/{id}", &format!("/devices/{CH}"))
        .replace("/access-requests/{id}", "/access-requests/999")
        .replace("{file}", &format!("{CH}.flv"))
        .replace("{session}", "12345")
        + query
}

#[test]
fn the_node_serves_a_valid_openapi_document_that_matches_its_answers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let spec = TreeSpec {
        counties: 0,
        sip_base: 21700,
        http_base: 21800,
        ..TreeSpec::default()
    };
    let (admin, admin_entry) = new_token("ops", "ops", true);
    std::fs::write(d.join("tokens.toml"), admin_entry).unwrap();
    std::fs::write(d.join("city.csv"), "p, dept:police, *, *, allow\n").unwrap();
    let files = d.clone();
    let cluster = Cluster::start_nodes_with(
        &d,
        spec,
        FleetSpec::default(),
        move |_| {
            [
                "--policy",
                &files.join("city.csv").display().to_string(),
                "--tokens",
                &files.join("tokens.toml").display().to_string(),
                "--grants",
                &files.join("grants.csv").display().to_string(),
            ]
            .map(String::from)
            .to_vec()
        },
        Some(admin.clone()),
    )
    .unwrap();
    let base = format!("http://{}", cluster.tree.root().http);

    // The policy is in force: the catalog needs a token ...
    assert_eq!(status("get", &format!("{base}/api/v1/catalog"), None), 401);
    // ... and the document does not.
    let mut resp = agent()
        .get(&format!("{base}/api/openapi.json"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(ctype, "application/json");
    let text = resp.body_mut().read_to_string().unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3."),
        "{}",
        doc["openapi"]
    );

    // A validator we did not write. Missing is a failure: `make deps`
    // installs it.
    let file = d.join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed to validate the document: {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "openapi-spec-validator refuses the document (or is not installed: run `make deps`):\n{said}"
    );
    assert!(said.contains("OK"), "{said}");

    // Every operation answers, with a token and without, with a status
    // the document lists for it.
    let paths = doc["paths"].as_object().unwrap();
    let mut checked = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                method == "get" || method == "post",
                "{method} {path}: teach this test the method"
            );
            let listed: Vec<&str> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let url = format!("{base}{}", concrete(path));
            for (who, token) in [("admin", Some(admin.as_str())), ("anyone", None)] {
                let got = status(method, &url, token);
                assert!(
                    listed.contains(&got.to_string().as_str()),
                    "{method} {path} as {who} answered {got}; the document lists {listed:?}"
                );
            }
            let open = op.get("security").is_none();
            if !open {
                // With a policy, a secured operation refuses a caller
                // without a token (422: axum refuses `{}` as the body of
                // POST /api/v1/streams and of playback control before the
                // handler asks who calls).
                let got = status(method, &url, None);
                assert!(
                    [401, 422].contains(&got),
                    "{method} {path} answers {got} without a token"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} operations in the document");
}
