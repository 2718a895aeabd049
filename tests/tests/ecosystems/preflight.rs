//! Browsers ask before a cross-origin request with a JSON body or an `Authorization` header
//! (every RxDB pull and push from a web app does one or both): each route a browser client
//! calls answers the preflight, and allows `Authorization` by name (by the Fetch standard a
//! `*` does not cover it).

use crate::support::*;

#[tokio::test]
async fn every_route_a_browser_app_calls_answers_the_cors_preflight() {
    let db = database("eco_preflight", ITEMS).await;
    let proxy = open_proxy(&db, "items").await;
    let routes = [
        ("GET", "/v1/rxdb/items/pull"),
        ("GET", "/v1/rxdb/items/pullStream"),
        ("POST", "/v1/rxdb/items/push"),
        ("GET", "/v1/watermelon/pull"),
        ("POST", "/v1/watermelon/push"),
        ("POST", "/v1/mutations"),
        ("GET", "/v1/shape"),
    ];
    for (method, path) in routes {
        let reply = proxy
            .http()
            .request(reqwest::Method::OPTIONS, format!("{}{path}", proxy.url))
            .header("origin", "http://app.test")
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
            .await
            .expect("preflight");
        let header = |name: &str| {
            reply
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(reply.status(), 204, "OPTIONS {path}");
        assert_eq!(header("access-control-allow-origin"), "http://app.test");
        assert!(
            header("access-control-allow-methods").contains(method),
            "OPTIONS {path}: {}",
            header("access-control-allow-methods")
        );
        assert_eq!(
            header("access-control-allow-headers"),
            "authorization,content-type",
            "OPTIONS {path}"
        );
    }
}
