//! What the API offers, for a newcomer and for tools: `/` answers an index of the endpoints,
//! `/openapi.json` an OpenAPI 3.1 document generated from the same table ([`ENDPOINTS`]),
//! and `/v1/public-key` the key that signs checkpoints, reports and exports. A path no route
//! serves answers 404 with a JSON body pointing at the index.
//!
//! The table is checked against the router's routes by a unit test, so neither drifts.

use serde_json::{Map, Value, json};

/// One endpoint of the API.
pub struct Endpoint {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Axum's path syntax: `/v1/tenants/{tenant}/events`.
    pub path: &'static str,
    /// One line.
    pub summary: &'static str,
    /// Query parameters: name, type (`string`, `integer`), required, description.
    pub query: &'static [(&'static str, &'static str, bool, &'static str)],
    /// A bearer token is needed (when `api.tokens` are configured).
    pub auth: bool,
}

const RANGE: [(&str, &str, bool, &str); 2] = [
    (
        "from",
        "string",
        false,
        "RFC 3339 time or date: events at or after it",
    ),
    (
        "to",
        "string",
        false,
        "RFC 3339 time or date: events before it",
    ),
];

/// Every endpoint, in the order the index lists them.
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: "GET",
        path: "/",
        summary: "This index",
        query: &[],
        auth: false,
    },
    Endpoint {
        method: "GET",
        path: "/openapi.json",
        summary: "The OpenAPI 3.1 document of this API",
        query: &[],
        auth: false,
    },
    Endpoint {
        method: "GET",
        path: "/healthz",
        summary: "Liveness: `ok`",
        query: &[],
        auth: false,
    },
    Endpoint {
        method: "GET",
        path: "/metrics",
        summary: "Prometheus metrics of this process (a bearer token when \
                  `api.metrics_token_sha256` is set)",
        query: &[],
        auth: false,
    },
    Endpoint {
        method: "GET",
        path: "/dashboard",
        summary: "The live compliance dashboard (HTML)",
        query: &[],
        auth: false,
    },
    Endpoint {
        method: "GET",
        path: "/v1/public-key",
        summary: "The Ed25519 key signing checkpoints, reports and exports (hex), and its id",
        query: &[],
        auth: false,
    },
    Endpoint {
        method: "GET",
        path: "/v1/tenants",
        summary: "The tenants the caller may see",
        query: &[],
        auth: true,
    },
    Endpoint {
        method: "GET",
        path: "/v1/checkpoints",
        summary: "Every tenant's latest signed checkpoint (for witnesses)",
        query: &[],
        auth: true,
    },
    Endpoint {
        method: "GET",
        path: "/v1/checkpoints/consistency",
        summary: "A consistency proof of any tenant's log (for witnesses)",
        query: &[
            ("tenant", "string", true, "the tenant"),
            ("from", "integer", true, "the older tree size"),
            ("to", "integer", true, "the newer tree size"),
        ],
        auth: true,
    },
    Endpoint {
        method: "GET",
        path: "/v1/tenants/{tenant}/views/event-counts",
        summary: "Live event counts by event type",
        query: &[],
        auth: true,
    },
    Endpoint {
        method: "GET",
        path: "/v1/tenants/{tenant}/views/hitl-latency",
        summary: "Live human-review latency against the SLA",
        query: &[],
        auth: true,
    },
    Endpoint {
        method: "GET",
        path: "/v1/tenants/{tenant}/views/{view}",
        summary: "Rows of a keyed view: sessions, causal-chains, hitl-groups, sla-breaches, \
                  policy-violations, alerts, model-versions",
        query: &[
            ("limit", "integer", false, "rows per page"),
            ("offset", "integer", false, "rows to skip"),
        ],
        auth: true,
    },
    Endpoint {
        method: "GET",
        path: "/v1/tenants/{tenant}/checkpoints/latest",
        summary: "The tenant's latest signed checkpoint",
        query: &[],
        auth: true,
    },
    Endpoint {
        method: "GET",
        path: "/v1/tenants/{tenant}/proofs/inclusion",
        summary: "An inclusion proof of one event in the latest checkpoint",
        query: &[("event_id", "string", true, "the event")],
        auth: true,
    },
    Endpoint {
        method: "GET",
        path: "/v1/tenants/{tenant}/proofs/consistency",
        summary: "A consistency proof between two sizes of the tenant's log",
        query: &[
            ("from", "integer", true, "the older tree size"),
            ("to", "integer", true, "the newer tree size"),
        ],
        auth: true,
    },
    Endpoint {
        method: "GET",
        path: "/v1/tenants/{tenant}/events",
        summary: "Stored events, filtered, newest last, a page at a time",
        query: &[
            (
                "type",
                "string",
                false,
                "one event type (its wire name, e.g. TOOL_CALLED)",
            ),
            ("agent", "string", false, "one agent id"),
            ("user", "string", false, "one user id (tokenized as stored)"),
            ("session", "string", false, "one session id"),
            ("model_version", "string", false, "one model version"),
            RANGE[0],
            RANGE[1],
            ("limit", "integer", false, "events per page"),
            (
                "cursor",
                "string",
                false,
                "the next_cursor of the previous page",
            ),
        ],
        auth: true,
    },
    Endpoint {
        method: "GET",
        path: "/v1/tenants/{tenant}/sessions/{session}",
        summary: "The events of one session, in order",
        query: &[
            ("limit", "integer", false, "events per page"),
            (
                "cursor",
                "string",
                false,
                "the next_cursor of the previous page",
            ),
        ],
        auth: true,
    },
    Endpoint {
        method: "GET",
        path: "/v1/tenants/{tenant}/events/{event_id}/causes",
        summary: "The causal chain leading to an event",
        query: &[],
        auth: true,
    },
    Endpoint {
        method: "GET",
        path: "/v1/tenants/{tenant}/overrides",
        summary: "Human review decisions that overrode the agent",
        query: &RANGE,
        auth: true,
    },
    Endpoint {
        method: "GET",
        path: "/v1/tenants/{tenant}/reports",
        summary: "The regulatory reports available",
        query: &[],
        auth: true,
    },
    Endpoint {
        method: "GET",
        path: "/v1/tenants/{tenant}/reports/{report}",
        summary: "A regulatory report: live, or reproducible over a range or at a checkpoint",
        query: &[
            RANGE[0],
            RANGE[1],
            (
                "as_of",
                "integer",
                false,
                "the checkpoint size to report at",
            ),
            ("format", "string", false, "json (default), signed or html"),
        ],
        auth: true,
    },
    Endpoint {
        method: "GET",
        path: "/v1/tenants/{tenant}/export",
        summary: "Every event up to the latest checkpoint, signed (manifest in x-custody-* \
                  headers; with bundle=tar, one tar file holding the events, the signed \
                  manifest, the checkpoint and the public key)",
        query: &[
            ("format", "string", false, "ndjson (default) or parquet"),
            (
                "bundle",
                "string",
                false,
                "tar: answer one archive that keeps the signature with the events",
            ),
            RANGE[0],
            RANGE[1],
        ],
        auth: true,
    },
    Endpoint {
        method: "GET",
        path: "/v1/tenants/{tenant}/holds",
        summary: "The tenant's legal holds",
        query: &[],
        auth: true,
    },
    Endpoint {
        method: "POST",
        path: "/v1/tenants/{tenant}/holds",
        summary: "Place a legal hold (JSON body: hold_id, session_id, agent_id, from, to, \
                  reason), chained as LEGAL_HOLD_PLACED",
        query: &[],
        auth: true,
    },
    Endpoint {
        method: "POST",
        path: "/v1/tenants/{tenant}/holds/{hold_id}/release",
        summary: "Release a legal hold (JSON body: reason), chained as LEGAL_HOLD_RELEASED",
        query: &[],
        auth: true,
    },
    Endpoint {
        method: "POST",
        path: "/v1/tenants/{tenant}/sql",
        summary: "Read-only SQL over the tenant's tables (JSON body: sql, max_rows)",
        query: &[],
        auth: true,
    },
];

/// The index `/` answers.
pub fn index() -> Value {
    let endpoints: Vec<Value> = ENDPOINTS
        .iter()
        .map(|e| json!({"method": e.method, "path": e.path, "summary": e.summary}))
        .collect();
    json!({
        "service": "custody",
        "version": env!("CARGO_PKG_VERSION"),
        "openapi": "/openapi.json",
        "dashboard": "/dashboard",
        "public_key": "/v1/public-key",
        "auth": "Authorization: Bearer <token> (api.tokens) on the /v1 endpoints",
        "endpoints": endpoints,
    })
}

/// The OpenAPI 3.1 document `/openapi.json` answers.
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for e in ENDPOINTS {
        let mut parameters: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true,
                       "schema": {"type": "string"}})
            })
            .collect();
        parameters.extend(e.query.iter().map(|(name, ty, required, description)| {
            json!({"name": name, "in": "query", "required": required,
                   "description": description, "schema": {"type": ty}})
        }));
        let mut operation = json!({
            "summary": e.summary,
            "parameters": parameters,
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "A bad parameter (JSON error body)"},
                "401": {"description": "No or an unknown bearer token"},
                "403": {"description": "The token may not see this tenant"},
                "404": {"description": "No such tenant, event or view"},
                "503": {"description": "Not ready, or no answer within the deadline"},
            },
        });
        if e.auth {
            operation["security"] = json!([{"bearer": []}]);
        }
        if e.method == "POST" {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"type": "object"}}},
            });
        }
        let item = paths.entry(e.path.to_string()).or_insert_with(|| json!({}));
        item[e.method.to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Custody",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Tamper-evident, per-tenant audit trails for AI agents: live views, \
                            regulatory reports, proofs and signed exports.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the router serves is in the table, and every entry is a route.
    #[test]
    fn the_table_lists_every_route() {
        let source = include_str!("serve.rs");
        let mut routed: Vec<String> = Vec::new();
        let mut rest = source;
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + ".route(".len()..];
            let start = rest.find('"').expect("a route path") + 1;
            let end = start + rest[start..].find('"').expect("a closed path");
            routed.push(rest[start..end].to_string());
        }
        routed.sort();
        routed.dedup();
        let mut listed: Vec<String> = ENDPOINTS.iter().map(|e| e.path.to_string()).collect();
        listed.sort();
        listed.dedup();
        assert_eq!(routed, listed);
    }

    #[test]
    fn the_document_is_openapi() {
        let doc = openapi();
        assert_eq!(doc["openapi"], "3.1.0");
        let holds = &doc["paths"]["/v1/tenants/{tenant}/holds"];
        assert!(holds["get"].is_object() && holds["post"].is_object());
        let events = &doc["paths"]["/v1/tenants/{tenant}/events"]["get"]["parameters"];
        assert_eq!(events[0]["in"], "path");
        assert!(
            events
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "cursor")
        );
        assert_eq!(
            index()["endpoints"].as_array().unwrap().len(),
            ENDPOINTS.len()
        );
    }
}
