//! `GET /`: the playground, one page to try the model in a browser (generate, fill masks,
//! see the routing). Its HTML, CSS and JavaScript are compiled into the binary and load
//! nothing else, so the page works with no network and no build step.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;

const HTML: &str = include_str!("page/index.html");
const CSS: &str = include_str!("page/playground.css");
const JS: &str = include_str!("page/playground.js");

/// A page asset with its type; never cached, so a rebuilt server serves its own page.
fn asset(kind: &'static str, body: &'static str) -> impl IntoResponse {
    ([(CONTENT_TYPE, kind), (CACHE_CONTROL, "no-store")], body)
}

pub async fn page() -> impl IntoResponse {
    asset("text/html; charset=utf-8", HTML)
}

pub async fn css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", CSS)
}

pub async fn js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", JS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for asset in [HTML, CSS, JS] {
            for remote in ["http://", "https://", "src=\"//", "href=\"//", "@import"] {
                assert!(!asset.contains(remote), "{remote} in a page asset");
            }
        }
        assert!(HTML.contains("<script src=\"/playground.js\">"));
        assert!(HTML.contains("href=\"/playground.css\""));
    }
}
