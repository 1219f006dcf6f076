//! The web console, served by every node on its HTTP listener: a few
//! static files embedded at build time (`console/` in the repository, plus
//! mpegts.js from the npm registry through `build.rs`), and the two API
//! calls only the console needs: `GET /api/v1/me` and `GET /api/v1/tree`.
//! The pages are open; everything they show comes from the API with the
//! token the person signs in with, so they see what the policy lets them.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use topology::GbId;

use super::sharing::{caller, Caller};
use super::AppState;
use crate::catalog::tree::{Branch, TreeQuery};

const INDEX: &str = include_str!("../../../console/index.html");
const APP_JS: &str = include_str!("../../../console/app.js");
const STYLE: &str = include_str!("../../../console/style.css");
const MPEGTS_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mpegts.js"));

/// Search hits at most, whatever is asked.
const MAX_SEARCH: usize = 200;

fn file(content_type: &'static str, body: impl IntoResponse) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Embedded in this build: a new binary may serve new files.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /console`: the console's page.
#[utoipa::path(
    get,
    path = "/console",
    tag = "console",
    responses((status = 200, description = "The console's page (open: the data comes from the API with a token)", body = String, content_type = "text/html"))
)]
pub(super) async fn get_console() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

/// `GET /console/{file}`: the console's script, style sheet and player.
#[utoipa::path(
    get,
    path = "/console/{file}",
    tag = "console",
    params(("file" = String, Path, description = "app.js, style.css or mpegts.js", example = "app.js")),
    responses(
        (status = 200, description = "The file", body = String, content_type = "text/javascript"),
        (status = 404, description = "No such file", body = String, content_type = "text/plain"),
    )
)]
pub(super) async fn get_console_file(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => file("text/javascript; charset=utf-8", APP_JS),
        "style.css" => file("text/css; charset=utf-8", STYLE),
        "mpegts.js" => file("text/javascript; charset=utf-8", MPEGTS_JS),
        _ => (StatusCode::NOT_FOUND, "no such console file\n").into_response(),
    }
}

/// `GET /api/v1/me` answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MeView {
    /// True when a sharing policy is in force (tokens are needed).
    pub policy: bool,
    /// The person, when a token was given.
    pub user: Option<String>,
    /// Their department.
    pub department: Option<String>,
    /// May use the admin endpoints.
    pub admin: bool,
}

/// `GET /api/v1/me`.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "console",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Who the token belongs to", body = MeView),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
    )
)]
pub(super) async fn get_me(State(st): State<AppState>, headers: HeaderMap) -> Response {
    match caller(&st, &headers) {
        Ok(Caller::Open) => Json(MeView {
            policy: false,
            user: None,
            department: None,
            admin: false,
        })
        .into_response(),
        Ok(Caller::Holder(h)) => Json(MeView {
            policy: true,
            user: Some(h.user),
            department: Some(h.dept),
            admin: h.admin,
        })
        .into_response(),
        Err(r) => r.into_response(),
    }
}

/// Query string of `GET /api/v1/tree`: one of `region`, `parent`, `q`.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TreeParams {
    /// A civil-code region (2, 4, 6 or 8 digits; empty for the top).
    pub region: Option<String>,
    /// A 20-digit ID: what hangs under it.
    pub parent: Option<String>,
    /// Search cameras by name or ID prefix.
    pub q: Option<String>,
    /// Search hits at most (default 50, at most 200).
    pub limit: Option<usize>,
}

/// `GET /api/v1/tree` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TreeView {
    /// The branches, by key.
    pub branches: Vec<Branch>,
}

/// `GET /api/v1/tree?region=|parent=|q=`.
#[utoipa::path(
    get,
    path = "/api/v1/tree",
    tag = "console",
    params(TreeParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One level of the catalog tree (regions by civil code, then devices and groups, then what hangs under them), or search hits; counts are of the cameras the caller may see", body = TreeView),
        (status = 400, description = "A region that is not 0-8 digits, a parent that is not a 20-digit ID, or more than one of region, parent and q", body = String, content_type = "text/plain"),
        (status = 401, description = "No token, or one not known here", body = String, content_type = "text/plain"),
        (status = 503, description = "The node is stopping", body = String, content_type = "text/plain"),
    )
)]
pub(super) async fn get_tree(
    State(st): State<AppState>,
    Query(p): Query<TreeParams>,
    headers: HeaderMap,
) -> Response {
    let who = match caller(&st, &headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let query = match tree_query(p) {
        Ok(q) => q,
        Err(msg) => return (StatusCode::BAD_REQUEST, format!("{msg}\n")).into_response(),
    };
    let res = st
        .node
        .command(move |n, now| n.tree(who.subjects(), &query, now))
        .await;
    match res {
        Ok(branches) => Json(TreeView { branches }).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

fn tree_query(p: TreeParams) -> Result<TreeQuery, String> {
    let given = [p.region.is_some(), p.parent.is_some(), p.q.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err("give one of region, parent and q".into());
    }
    if let Some(text) = p.q {
        let limit = p.limit.unwrap_or(50).clamp(1, MAX_SEARCH);
        return Ok(TreeQuery::Search { text, limit });
    }
    if let Some(parent) = p.parent {
        return GbId::parse(&parent)
            .map(TreeQuery::Children)
            .map_err(|e| format!("parent={parent:?} is not a 20-digit ID: {e}"));
    }
    let region = p.region.unwrap_or_default();
    if region.len() > 8 || region.len() % 2 == 1 || !region.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "region={region:?}: a civil code is 2, 4, 6 or 8 digits (empty for the top)"
        ));
    }
    Ok(TreeQuery::Region(region))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_queries_are_checked() {
        let p = |region: Option<&str>, parent: Option<&str>, q: Option<&str>| TreeParams {
            region: region.map(str::to_owned),
            parent: parent.map(str::to_owned),
            q: q.map(str::to_owned),
            limit: Some(10_000),
        };
        assert_eq!(
            tree_query(p(None, None, None)),
            Ok(TreeQuery::Region(String::new()))
        );
        assert_eq!(
            tree_query(p(Some("3501"), None, None)),
            Ok(TreeQuery::Region("3501".into()))
        );
        assert!(tree_query(p(Some("350"), None, None)).is_err());
        assert!(tree_query(p(Some("35010203x"), None, None)).is_err());
        assert!(tree_query(p(None, Some("123"), None)).is_err());
        assert!(tree_query(p(Some("35"), None, Some("gate"))).is_err());
        assert_eq!(
            tree_query(p(None, None, Some("gate"))),
            Ok(TreeQuery::Search {
                text: "gate".into(),
                limit: MAX_SEARCH
            })
        );
        assert!(APP_JS.contains("/api/v1/tree"));
        assert!(INDEX.contains("/console/app.js"));
    }
}
