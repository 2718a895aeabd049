//! Auth end to end: a real proxy process with the secret, JWT tokens and rules, in front of a
//! real Postgres holding the example app with rows of two owners. Every attempt to read or
//! write what a token must not gets its exact status, and no response body ever shows another
//! owner's rows or a hidden column.

mod cdn;
mod expiry;
mod live;
mod matrix;
mod subsets;
mod support;
mod sync_protocols;
mod writes;

use support::*;

#[tokio::test]
async fn attack_matrix_never_shows_or_changes_what_a_token_may_not() {
    let world = World::new("auth_matrix").await;
    let proxy = world.proxy("auth_matrix", &[]).await;
    let attempts = matrix::attempts();
    assert!(attempts.len() >= 50, "{} attempts", attempts.len());
    let mut problems = Vec::new();
    for attempt in &attempts {
        problems.extend(matrix::run(&proxy, attempt).await);
    }
    assert!(
        problems.is_empty(),
        "{} of {} attempts went wrong:\n{}",
        problems.len(),
        attempts.len(),
        problems.join("\n")
    );
    database_kept_every_other_owners_row(&world).await;
}

/// After the matrix: refused writes changed nothing, and allowed ones happened.
async fn database_kept_every_other_owners_row(world: &World) {
    let sql = world.sql().await;
    let todo = |id: &'static str| {
        let sql = &sql;
        async move {
            sql.query_opt(
                "SELECT owner_id, title, deleted_at IS NOT NULL FROM todos WHERE id = $1::text::uuid",
                &[&id],
            )
            .await
            .expect("read a todo")
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, bool>(2)))
        }
    };
    assert_eq!(
        todo(BOB_TODO).await,
        Some(("bob".into(), "BOB-TODO-TITLE-5581".into(), false))
    );
    assert_eq!(
        todo(ALICE_TODO).await,
        Some(("alice".into(), "x'); DROP TABLE todos; --".into(), false)),
        "alice's own writes applied, the atomic batch and the move to bob did not"
    );
    assert_eq!(
        todo(BOB_DENTIST).await,
        Some(("bob".into(), "dentist moved".into(), false)),
        "the secret writes any row"
    );
    assert_eq!(todo("a11ce000-0000-4000-8000-0000000000a4").await, None);
    assert_eq!(
        todo("a11ce000-0000-4000-8000-0000000000a7").await,
        Some(("alice".into(), "new for alice".into(), false))
    );
    let bobs: i64 = sql
        .query_one("SELECT count(*) FROM todos WHERE owner_id = 'bob'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(bobs, 2, "no row was planted for bob or taken from him");
    let note: (String, bool) = sql
        .query_one(
            "SELECT title, deleted_at IS NULL FROM notes WHERE id = $1::text::uuid",
            &[&BOB_NOTE],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("bob's note");
    assert_eq!(note, ("BOB-NOTE-TITLE-9913".into(), true));
    let alice_note_live: bool = sql
        .query_one(
            "SELECT deleted_at IS NULL FROM notes WHERE id = $1::text::uuid",
            &[&ALICE_NOTE],
        )
        .await
        .expect("alice's note")
        .get(0);
    assert!(alice_note_live, "deleting notes is not allowed");
    let code: String = sql
        .query_one("SELECT code FROM secrets WHERE id = 1", &[])
        .await
        .expect("secret 1")
        .get(0);
    assert_eq!(code, "SECRET-CODE-ALICE-1");
    let doc: String = sql
        .query_one("SELECT body FROM team_docs WHERE id = 1", &[])
        .await
        .expect("team doc 1")
        .get(0);
    assert_eq!(
        doc, "RED-TEAM-DOC",
        "--writable refused what the rules allow"
    );
}
