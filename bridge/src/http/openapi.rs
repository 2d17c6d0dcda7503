//! `/api/v1/openapi.json`: the API's OpenAPI 3.1 document, derived by
//! utoipa from the handlers' `#[utoipa::path]` and the served types'
//! `ToSchema` (the CLI's own `--json` types), so it cannot drift from the
//! code. [`super::routes`] and this document list the same paths (tested).

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{api, events};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ota bridge (read-only)",
        description = "What ota serve's [http] listener answers: the fleet, devices, groups, \
                       artifacts, campaigns and their members, the bridge's events and its \
                       Prometheus metrics. Every route is a GET: commands stay signed MQTT \
                       (the ota CLI). Reads need `Authorization: Bearer TOKEN` (a token of \
                       [http] read_tokens, made by `ota http-token`), unless the bridge allows \
                       anonymous reads from loopback."
    ),
    paths(
        api::fleet,
        api::devices,
        api::groups,
        api::artifacts,
        api::campaigns,
        api::campaign,
        api::members,
        events::stream,
        api::metrics,
        openapi_json,
    ),
    // The failures' body is named by `api::Failures`, which does not
    // collect it.
    components(schemas(super::error::ErrorBody)),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The bearer scheme the `security` above names.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, content_type = "application/json", body = Object,
        description = "OpenAPI 3.1"), api::Failures))]
pub async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc = ApiDoc::openapi();
        let documented: BTreeSet<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        let routed: BTreeSet<&str> = super::super::routes().iter().map(|(p, _)| *p).collect();
        assert_eq!(documented, routed);
        for (path, item) in &doc.paths.paths {
            assert!(item.get.is_some(), "{path} has no GET");
            assert!(
                item.post.is_none()
                    && item.put.is_none()
                    && item.delete.is_none()
                    && item.patch.is_none(),
                "{path} documents a write"
            );
        }
    }
}
