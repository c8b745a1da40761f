//! The live page's HTML, rendered on the host: the wall, one domain, the
//! log-in form. Every value is escaped; scripts come only from
//! `/ui/assets/live.js` (the Content-Security-Policy allows nothing inline).

use std::fmt::Write;

use crate::service::recordings::Recording;
use crate::service::{CaptureJob, ConsoleOutput, Listed};

/// `s` safe between tags and inside quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn layout(
    title: &str,
    csrf: &str,
    user: Option<&str>,
    class: &str,
    data: &str,
    body: &str,
) -> String {
    let who = match user {
        Some(u) => format!("<span>{}</span>", esc(u)),
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <meta name=\"vmshot-csrf\" content=\"{csrf}\">\
         <title>{title} · vmshot</title><link rel=\"stylesheet\" href=\"/ui/assets/live.css\"></head>\
         <body><header><h1><a href=\"/ui/\">vmshot</a></h1>{who}</header>\
         <main class=\"{class}\"{data}>{body}</main>\
         <script src=\"/ui/assets/live.js\" defer></script></body></html>\n",
        csrf = esc(csrf),
        title = esc(title),
    )
}

fn unchanged(listed: &Listed) -> String {
    match listed.screen.unchanged.map(|d| d.as_secs()) {
        None => String::new(),
        Some(s) if s < 60 => format!("unchanged for {s} s"),
        Some(s) if s < 3600 => format!("unchanged for {} min", s / 60),
        Some(s) => format!("unchanged for {} h", s / 3600),
    }
}

fn state(listed: &Listed) -> &'static str {
    listed.domain.state.map_or("unknown", |s| s.as_str())
}

/// The diagnosis watcher's verdict word, if it has one for the domain.
fn verdict(listed: &Listed) -> Option<String> {
    crate::api::native::verdict(listed)
}

fn badge(listed: &Listed) -> String {
    match verdict(listed) {
        Some(v) => format!("<span class=\"badge verdict-{0}\">{0}</span>", esc(&v)),
        None => "<span class=\"badge\" hidden></span>".into(),
    }
}

fn has_screen(listed: &Listed) -> bool {
    listed.screens > 0 && listed.domain.state.is_some_and(|s| s.has_console())
}

pub fn wall(domains: &[Listed], csrf: &str, user: Option<&str>) -> String {
    let mut body = format!("<p>{} domains</p><div class=\"wall\">", domains.len());
    for l in domains {
        let d = &l.domain;
        let gen = l
            .screen
            .generation
            .map_or("0".to_owned(), |g| g.to_string());
        let picture = if has_screen(l) {
            format!(
                "<img class=\"thumb\" loading=\"lazy\" width=\"256\" height=\"192\" alt=\"screen of {name}\" \
                 src=\"/v1/domains/{uuid}/thumbnail?g={gen}\">",
                name = esc(&d.name),
                uuid = esc(&d.uuid),
            )
        } else if l.screens == 0 {
            "<div class=\"nothumb\">no display</div>".into()
        } else {
            format!("<div class=\"nothumb\">{}</div>", esc(state(l)))
        };
        let _ = write!(
            body,
            "<a class=\"tile\" href=\"/ui/domains/{uuid}\" data-uuid=\"{uuid}\" data-name=\"{name}\" data-gen=\"{gen}\">\
             {picture}<div class=\"name\">{name}</div><div class=\"meta\"><span class=\"state\">{state}</span>\
             {badge}<span class=\"unchanged\">{unchanged}</span></div></a>",
            uuid = esc(&d.uuid),
            name = esc(&d.name),
            state = esc(state(l)),
            badge = badge(l),
            unchanged = esc(&unchanged(l)),
        );
    }
    body.push_str("</div>");
    layout("every console", csrf, user, "wall-page", "", &body)
}

pub struct DomainPage<'a> {
    pub listed: &'a Listed,
    pub console: Result<ConsoleOutput, String>,
    pub recordings: Result<Vec<Recording>, String>,
    pub captures: Vec<CaptureJob>,
}

pub fn domain(page: &DomainPage<'_>, csrf: &str, user: Option<&str>) -> String {
    let l = page.listed;
    let d = &l.domain;
    let base = format!("/v1/domains/{}", d.uuid);
    let mut body = format!(
        "<h2>{name}</h2><div class=\"meta\"><span>{state}</span>{badge}<span id=\"unchanged\">{unchanged}</span>\
         <span>UUID {uuid}</span></div>",
        name = esc(&d.name),
        state = esc(state(l)),
        badge = badge(l),
        unchanged = esc(&unchanged(l)),
        uuid = esc(&d.uuid),
    );
    if has_screen(l) {
        let _ = write!(
            body,
            "<p><img id=\"screen\" alt=\"the live screen\" src=\"{base}/screenshot\"></p>\
             <p><button id=\"key\">Press a key (Shift)</button> <button id=\"record\">Record 10 s</button> \
             <span id=\"status\"></span></p>",
            base = esc(&base)
        );
    } else {
        body.push_str("<p class=\"nothumb\">no screen now</p><p><button id=\"key\">Press a key (Shift)</button> <span id=\"status\"></span></p>");
    }
    body.push_str("<h3>Serial console</h3>");
    match &page.console {
        Ok(out) => {
            let text = crate::service::without_escapes(&out.bytes);
            let _ = write!(
                body,
                "<pre class=\"console\" id=\"console\">{}</pre>",
                esc(&String::from_utf8_lossy(&text))
            );
        }
        Err(why) => {
            let _ = write!(body, "<p>{}</p>", esc(why));
        }
    }
    body.push_str("<h3>Recordings</h3>");
    match &page.recordings {
        Err(why) => {
            let _ = write!(body, "<p>{}</p>", esc(why));
        }
        Ok(list) if list.is_empty() => body.push_str("<p>none</p>"),
        Ok(list) => {
            body.push_str("<ul class=\"recordings\">");
            for r in list {
                let url = format!("/v1/recordings/{}/video", r.id);
                let (bytes, sha) = r
                    .video
                    .as_ref()
                    .map_or((0, None), |v| (v.bytes, v.sha256.clone()));
                let _ = write!(
                    body,
                    "<li data-id=\"{id}\"><video controls muted preload=\"metadata\" src=\"{url}\"></video>\
                     {kind} {status}, {secs:.1} s, {frames} frames, {bytes} bytes \
                     <a href=\"{url}\" download=\"{id}.mp4\">download</a> SHA-256 <code class=\"sha\">{sha}</code></li>",
                    id = esc(&r.id),
                    url = esc(&url),
                    kind = r.kind.as_str(),
                    status = r.status.as_str(),
                    secs = r.duration.as_secs_f64(),
                    frames = r.frames,
                    sha = esc(sha.as_deref().unwrap_or("(still recording)")),
                );
            }
            body.push_str("</ul>");
        }
    }
    body.push_str("<h3>Capture jobs</h3>");
    if page.captures.is_empty() {
        body.push_str("<p>none</p>");
    } else {
        body.push_str("<ul class=\"captures\">");
        for j in &page.captures {
            let download = match &j.media {
                Some(m) => format!(
                    "<a href=\"{base}/captures/{id}\" download>download</a> {bytes} bytes SHA-256 <code class=\"sha\">{sha}</code>",
                    base = esc(&base),
                    id = j.id,
                    bytes = m.bytes,
                    sha = esc(&m.sha256)
                ),
                None => esc(j.error_reason.as_deref().unwrap_or("")),
            };
            let _ = write!(
                body,
                "<li>{name} ({dialect}) {state} {download}</li>",
                name = esc(&j.name),
                dialect = esc(&j.dialect),
                state = esc(j.state),
            );
        }
        body.push_str("</ul>");
    }
    let data = format!(" data-uuid=\"{}\"", esc(&d.uuid));
    layout(&d.name, csrf, user, "domain-page", &data, &body)
}

pub fn login(message: Option<&str>) -> String {
    let message = message
        .map(|m| format!("<p class=\"error\">{}</p>", esc(m)))
        .unwrap_or_default();
    let body = format!(
        "<h2>Log in</h2>{message}<form method=\"post\" action=\"/ui/login\">\
         <p><label>User <input name=\"user\" autocomplete=\"username\" maxlength=\"128\" required></label></p>\
         <p><label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" maxlength=\"1024\" required></label></p>\
         <p><button>Log in</button></p></form>"
    );
    layout("log in", "", None, "login-page", "", &body)
}

pub fn error(status: u16, message: &str) -> String {
    let body = format!(
        "<h2>{status}</h2><p>{}</p><p><a href=\"/ui/\">every console</a></p>",
        esc(message)
    );
    layout("error", "", None, "error-page", "", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_tags_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
