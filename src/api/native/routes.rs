//! The native API's one route table: requests are dispatched from it and the
//! OpenAPI document is generated from it, so neither can drift from the
//! other (`every_route_is_in_the_document`).

use serde_json::{json, Map, Value};

/// What a route does; `Native::serve` matches on it exhaustively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ListDomains,
    GetDomain,
    Screenshot,
    Thumbnail,
    ScreenEvents,
    PressKey,
    Console,
    Diagnosis,
    ListRecordings,
    StartRecording,
    StopRecording,
    RecordingVideo,
    ListCaptures,
    CaptureImage,
    OpenApi,
}

#[derive(Debug)]
pub struct Route {
    pub method: &'static str,
    /// `{name}` segments are parameters: 1 to `MAX_PARAM` bytes each.
    pub path: &'static str,
    pub action: Action,
    pub summary: &'static str,
    /// The media type of a success.
    pub produces: &'static str,
    /// Query parameters: name and description.
    pub query: &'static [(&'static str, &'static str)],
}

pub const MAX_PARAM: usize = 256;
const JSON: &str = "application/json";

pub const ROUTES: &[Route] = &[
    Route { method: "GET", path: "/v1/domains", action: Action::ListDomains, produces: JSON, query: &[],
        summary: "Every domain the caller may see: state, display, screen generation, seconds unchanged, verdict" },
    Route { method: "GET", path: "/v1/domains/{id}", action: Action::GetDomain, produces: JSON, query: &[],
        summary: "One domain (by name or UUID)" },
    Route { method: "GET", path: "/v1/domains/{id}/screenshot", action: Action::Screenshot, produces: "image/jpeg",
        query: &[("fresh", "true: a libvirt screenshot, not the VNC mirror's copy")],
        summary: "The screen as a JPEG (fast path); X-Vmshot-Sha256 carries its digest" },
    Route { method: "GET", path: "/v1/domains/{id}/thumbnail", action: Action::Thumbnail, produces: "image/jpeg",
        query: &[("width", "64 to 640 pixels (256)"), ("g", "the screen generation, for caches; ignored")],
        summary: "A small JPEG of the screen, scaled on the host and cached by screen generation (ETag: its SHA-256)" },
    Route { method: "GET", path: "/v1/domains/{id}/screen/events", action: Action::ScreenEvents, produces: "text/event-stream",
        query: &[],
        summary: "Server-sent events: `screen` with the generation each time the screen changes; the stream ends after the request deadline (EventSource reconnects)" },
    Route { method: "POST", path: "/v1/domains/{id}/keys", action: Action::PressKey, produces: JSON, query: &[],
        summary: "Presses Shift (a blanked console redraws) or wakes a suspended guest; needs X-Vmshot-Csrf" },
    Route { method: "GET", path: "/v1/domains/{id}/console", action: Action::Console, produces: JSON,
        query: &[("bytes", "the end of the serial log to return, 1 to 1048576 (65536)")],
        summary: "The end of the serial console log, terminal escapes removed" },
    Route { method: "GET", path: "/v1/domains/{id}/diagnosis", action: Action::Diagnosis, produces: JSON,
        query: &[("watch_seconds", "without a watcher's verdict, how long to watch the screen now: 1 to 20 (5)")],
        summary: "Why the domain looks stuck: verdict, since, unchanged_seconds, evidence (the diagnosis watcher's, or one made now)" },
    Route { method: "GET", path: "/v1/domains/{id}/recordings", action: Action::ListRecordings, produces: JSON, query: &[],
        summary: "The domain's screen recordings, newest first, with their files' SHA-256" },
    Route { method: "POST", path: "/v1/domains/{id}/recordings", action: Action::StartRecording, produces: JSON,
        query: &[("max_duration_seconds", "1 to 86400: it stops by itself then")],
        summary: "Starts a FULL recording of the domain; needs X-Vmshot-Csrf" },
    Route { method: "POST", path: "/v1/recordings/{rid}/stop", action: Action::StopRecording, produces: JSON, query: &[],
        summary: "Stops a recording; needs X-Vmshot-Csrf" },
    Route { method: "GET", path: "/v1/recordings/{rid}/video", action: Action::RecordingVideo, produces: "video/mp4", query: &[],
        summary: "The recording's MP4 (one Range span honoured; ETag: its SHA-256 once closed)" },
    Route { method: "GET", path: "/v1/domains/{id}/captures", action: Action::ListCaptures, produces: JSON, query: &[],
        summary: "The domain's capture jobs (any dialect's), newest first, with their images' SHA-256" },
    Route { method: "GET", path: "/v1/domains/{id}/captures/{job}", action: Action::CaptureImage, produces: "image/jpeg", query: &[],
        summary: "A complete capture job's image" },
    Route { method: "GET", path: "/v1/openapi.json", action: Action::OpenApi, produces: JSON, query: &[],
        summary: "This document" },
];

/// Why no route took a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Miss {
    NotFound,
    /// The path is a route's, the method is not.
    Method,
}

/// The route for `method` and `path`, and its parameters in order.
pub fn find<'p>(method: &str, path: &'p str) -> Result<(&'static Route, Vec<&'p str>), Miss> {
    let mut path_matched = false;
    for route in ROUTES {
        if let Some(params) = matches(route.path, path) {
            if route.method == method {
                return Ok((route, params));
            }
            path_matched = true;
        }
    }
    Err(if path_matched {
        Miss::Method
    } else {
        Miss::NotFound
    })
}

fn matches<'p>(template: &str, path: &'p str) -> Option<Vec<&'p str>> {
    let mut params = Vec::new();
    let mut got = path.split('/');
    for want in template.split('/') {
        let seg = got.next()?;
        if want.starts_with('{') {
            if seg.is_empty() || seg.len() > MAX_PARAM {
                return None;
            }
            params.push(seg);
        } else if want != seg {
            return None;
        }
    }
    got.next().is_none().then_some(params)
}

/// The OpenAPI 3.0 document of `ROUTES`.
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let mut parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "maxLength": MAX_PARAM}}))
            .collect();
        parameters.extend(route.query.iter().map(|(name, description)| {
            json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}})
        }));
        let operation = json!({
            "operationId": format!("{:?}", route.action),
            "summary": route.summary,
            "parameters": parameters,
            "responses": {
                "200": {"description": "success", "content": {route.produces: {}}},
                "default": {"description": "an error: {\"error\": {\"code\", \"message\"}}",
                            "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        let entry = paths.entry(route.path).or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "vmshot native API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "The live page's API: loopback callers, or a session cookie from /ui/login. POSTs need the X-Vmshot-Csrf header the page carries."},
        "paths": paths,
        "components": {"schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the router dispatches to is in the document, under its
    /// method, and a concrete path of it reaches it.
    #[test]
    fn every_route_is_in_the_document() {
        let doc = openapi();
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
            assert_eq!(
                op["operationId"],
                format!("{:?}", route.action),
                "{}",
                route.path
            );
            let concrete = route
                .path
                .replace("{id}", "vm-1")
                .replace("{rid}", "r-1")
                .replace("{job}", "7");
            let (found, _) = find(route.method, &concrete).unwrap();
            assert_eq!(found.action, route.action);
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(
            documented,
            ROUTES.len(),
            "no method documented twice or left out"
        );
    }

    #[test]
    fn paths_match_segment_by_segment() {
        let (r, params) = find("GET", "/v1/domains/web%201/screenshot").unwrap();
        assert_eq!((r.action, params), (Action::Screenshot, vec!["web%201"]));
        assert_eq!(find("DELETE", "/v1/domains/x").unwrap_err(), Miss::Method);
        for bad in [
            "/v1/domains/",
            "/v1/domains//screenshot",
            "/v1/domains/x/screenshot/",
            "/v1",
            "/v1/nope",
        ] {
            assert_eq!(find("GET", bad).unwrap_err(), Miss::NotFound, "{bad}");
        }
        let long = format!("/v1/domains/{}", "a".repeat(MAX_PARAM + 1));
        assert!(find("GET", &long).is_err());
    }
}
