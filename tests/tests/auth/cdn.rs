//! Tokens through the shipped nginx.conf and varnish.vcl (tests/tests/cdn.rs has the rest): an answer that
//! depends on the token's claims is never stored, and a stored answer is never served to a
//! request without the token it was made for.

use reqwest::Method;
use rstest::rstest;
use tests::cache_edge::{CacheEdge, Kind};

use crate::support::*;

#[rstest]
#[tokio::test]
async fn the_cache_never_serves_one_token_what_was_made_for_another(
    #[values(Kind::Nginx, Kind::Varnish)] kind: Kind,
) {
    let name = format!("cdn_tokens_{kind:?}").to_lowercase();
    let world = World::new(&name).await;
    let proxy = world.proxy(&name, &[]).await;
    let cache = CacheEdge::start(kind, proxy.port).await;
    let http = reqwest::Client::new();
    let get = |query: &'static str, cred: Cred| {
        let (base, http) = (cache.url.clone(), http.clone());
        async move { send_to(&base, &http, Method::GET, query, &cred, None).await }
    };
    let alice = Cred::Bearer(hs256(&claims("alice")));
    let bob = Cred::Bearer(hs256(&claims("bob")));
    let cache = |reply: &Reply| reply.header("x-proxy-cache").unwrap_or("none").to_owned();

    // Rows by claims: `private`, never stored, each token its own rows.
    let todos = "/v1/shape?table=todos&offset=-1";
    for _ in 0..2 {
        let reply = get(todos, alice.clone()).await;
        assert_eq!(reply.status, 200);
        assert!(
            reply
                .header("cache-control")
                .unwrap()
                .starts_with("private")
        );
        assert_eq!(cache(&reply), "MISS");
        assert!(
            reply
                .rows()
                .iter()
                .all(|r| r["value"]["owner_id"] == "alice")
        );
    }
    let reply = get(todos, bob.clone()).await;
    assert_eq!(cache(&reply), "MISS");
    assert!(!reply.rows().is_empty());
    assert!(reply.rows().iter().all(|r| r["value"]["owner_id"] == "bob"));
    assert_eq!(reply.leaks(&["alice private plan"]), Vec::<String>::new());

    // Rows for every token: stored, but per token.
    let announcements = "/v1/shape?table=announcements&offset=-1";
    assert_eq!(cache(&get(announcements, alice.clone()).await), "MISS");
    let again = get(announcements, alice.clone()).await;
    assert_eq!((again.status, cache(&again)), (200, "HIT".to_owned()));
    for cred in [
        Cred::None,
        Cred::Bearer("not-a-token".into()),
        Cred::Bearer(hs256_with(&claims("alice"), b"another key")),
    ] {
        let reply = get(announcements, cred.clone()).await;
        assert_eq!(reply.status, 401, "{cred:?}: {}", reply.text);
        assert_ne!(cache(&reply), "HIT", "{cred:?}");
    }
    let reply = get(announcements, bob).await;
    assert_eq!((reply.status, cache(&reply)), (200, "MISS".to_owned()));
    // Odd spellings of the path and duplicate parameters reach the proxy, whose answer is
    // its own: never the stored one of another request.
    for query in [
        "/v1//shape?table=todos&offset=-1",
        "/v1/shape/?table=todos&offset=-1",
        "/v1/./shape?table=todos&offset=-1",
        "/V1/SHAPE?table=todos&offset=-1",
        "/v1/shape?table=todos&table=secrets&offset=-1",
    ] {
        let reply = get(query, Cred::None).await;
        assert_ne!(reply.status, 200, "{query}: {}", reply.text);
        assert_ne!(cache(&reply), "HIT", "{query}");
    }
}
