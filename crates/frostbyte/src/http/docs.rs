//! `/docs`: the generated OpenAPI document rendered as one self-contained HTML page (no scripts, no CDN; the
//! server may be offline). Rendered once, when the router is built.

use std::fmt::Write;

use serde_json::Value;

const METHODS: [&str; 8] = ["get", "post", "put", "patch", "delete", "head", "options", "trace"];

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
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

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The last segment of a `$ref`, or the schema's type.
fn schema_name(schema: &Value) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next().unwrap_or(r).to_owned();
    }
    match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" | "),
        _ => String::new(),
    }
}

fn needs_auth(op: &Value, spec: &Value) -> &'static str {
    let reqs = op.get("security").or_else(|| spec.get("security"));
    match reqs.and_then(Value::as_array) {
        None => "none",
        Some(list) if list.is_empty() => "none",
        Some(list) if list.iter().any(|r| r.as_object().is_some_and(|o| o.is_empty())) => "optional bearer",
        Some(_) => "bearer",
    }
}

/// Renders the page.
pub fn render(spec: &utoipa::openapi::OpenApi) -> String {
    let spec = serde_json::to_value(spec).unwrap_or(Value::Null);
    let info = spec.get("info").cloned().unwrap_or(Value::Null);
    let title = text(&info, "title");
    let version = text(&info, "version");
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} {v}</title>\n<style>\
body{{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;color:#1d2330}}\
h1{{margin-bottom:.2rem}} .op{{border:1px solid #d8dde6;border-radius:6px;margin:.8rem 0;padding:.6rem .9rem}}\
.m{{display:inline-block;min-width:4.5rem;font-weight:700;text-transform:uppercase}}\
.get{{color:#1a7f37}} .post{{color:#0b5cad}} .put,.patch{{color:#9a6700}} .delete{{color:#c4302b}}\
code{{font-family:ui-monospace,monospace}} table{{border-collapse:collapse;margin:.4rem 0}}\
td,th{{border:1px solid #e3e7ee;padding:.15rem .5rem;text-align:left;font-size:13px}} .muted{{color:#5b6474}}\
</style></head><body>\n<h1>{t}</h1><p class=\"muted\">version {v} &middot; machine-readable: \
<a href=\"/openapi.json\">/openapi.json</a></p>\n<p>{d}</p>\n",
        t = esc(title),
        v = esc(version),
        d = esc(text(&info, "description")),
    );
    let empty = serde_json::Map::new();
    let paths = spec.get("paths").and_then(Value::as_object).unwrap_or(&empty);
    let mut count = 0;
    for (path, item) in paths {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            count += 1;
            let _ = write!(
                html,
                "<div class=\"op\" id=\"{id}\"><div><span class=\"m {method}\">{method}</span> <code>{p}</code> \
                 <span class=\"muted\">&middot; auth: {auth}</span></div>\n<div>{s}</div>\n",
                id = esc(text(op, "operationId")),
                p = esc(path),
                auth = needs_auth(op, &spec),
                s = esc(text(op, "summary")),
            );
            let description = text(op, "description");
            if !description.is_empty() {
                let _ = writeln!(html, "<p class=\"muted\">{}</p>", esc(description));
            }
            if let Some(params) = op.get("parameters").and_then(Value::as_array).filter(|p| !p.is_empty()) {
                html.push_str(
                    "<table><tr><th>parameter</th><th>in</th><th>type</th><th>required</th><th>description</th></tr>\n",
                );
                for p in params {
                    let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
                    let _ = writeln!(
                        html,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(text(p, "name")),
                        esc(text(p, "in")),
                        esc(&p.get("schema").map(schema_name).unwrap_or_default()),
                        if required { "yes" } else { "no" },
                        esc(text(p, "description")),
                    );
                }
                html.push_str("</table>\n");
            }
            if let Some(body) = op.pointer("/requestBody/content/application~1json/schema") {
                let _ = writeln!(html, "<div>body: <code>{}</code></div>", esc(&schema_name(body)));
            }
            if let Some(responses) = op.get("responses").and_then(Value::as_object) {
                let codes: Vec<String> = responses
                    .iter()
                    .map(|(code, r)| {
                        let schema = r
                            .pointer("/content/application~1json/schema")
                            .map(schema_name)
                            .filter(|s| !s.is_empty())
                            .map(|s| format!(" <code>{}</code>", esc(&s)))
                            .unwrap_or_default();
                        format!("{}{}", esc(code), schema)
                    })
                    .collect();
                let _ = writeln!(html, "<div class=\"muted\">responses: {}</div>", codes.join(", "));
            }
            html.push_str("</div>\n");
        }
    }
    let _ = write!(html, "<p class=\"muted\">{count} operations</p>\n</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
