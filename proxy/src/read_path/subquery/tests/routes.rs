//! The index of subquery shapes finds every shape a change concerns: shapes routed through it
//! end exactly as copies of them asked about every change, through moves and dropped
//! transactions; and it finds few.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shapes::routing::ShapeId;

use super::{XID, row, shape_of, slots};
use crate::read_path::subquery::SubqueryShape;
use crate::read_path::subquery::routes::SubqueryRoutes;
use shapes::lsn::Lsn;
use shapes::schema::Row;

const WHERES: &[&str] = &[
    "project_id IN (SELECT project_id FROM members WHERE user_id = 'u0')",
    "project_id IN (SELECT project_id FROM members WHERE user_id = 'u1')",
    "project_id IN (SELECT project_id FROM members WHERE user_id = 'u1') AND title <> 'x'",
    "project_id NOT IN (SELECT project_id FROM members WHERE user_id = 'u2')",
    "project_id IN (SELECT project_id FROM members WHERE user_id = 'u0') OR title = 'x'",
    "title = 'x' AND project_id IN (SELECT project_id FROM members)",
    "EXISTS (SELECT 1 FROM members m WHERE m.project_id = todos.project_id AND m.user_id IN ('u1', 'u2'))",
    "project_id IN (SELECT project_id FROM members WHERE user_id = 'u3' AND project_id IN (SELECT project_id FROM members WHERE user_id = 'u0'))",
];

fn indexed(routes: &mut SubqueryRoutes) -> Vec<SubqueryShape> {
    WHERES
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut levels = shape_of(w);
            routes.add(ShapeId(i as u64), &mut levels);
            levels
        })
        .collect()
}

#[test]
fn shapes_found_through_the_index_end_as_shapes_asked_about_every_change() {
    let seed: u64 = std::env::var("SUBQUERY_ROUTES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("SUBQUERY_ROUTES_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let (todos_slot, members_slot) = slots();
    let mut routes = SubqueryRoutes::default();
    let mut fast = indexed(&mut routes);
    let mut every: Vec<SubqueryShape> = WHERES.iter().map(|w| shape_of(w)).collect();
    let mut members: Vec<(u32, u32)> = Vec::new();
    let mut todos: Vec<Row> = Vec::new();
    let mut found = Vec::new();
    let mut before: Option<(Vec<SubqueryShape>, Vec<SubqueryShape>)> = None;
    for step in 0..3000 {
        if before.is_none() {
            before = Some((fast.clone(), every.clone()));
        }
        let (slot, old, new) = match rng.random_range(0..10) {
            0..3 => {
                let m = (rng.random_range(0..5), rng.random_range(0..4));
                let r = row(&[Some(&m.0.to_string()), Some(&format!("u{}", m.1))]);
                match members.iter().position(|x| *x == m) {
                    Some(at) => {
                        members.swap_remove(at);
                        (members_slot, Some(r), None)
                    }
                    None => {
                        members.push(m);
                        (members_slot, None, Some(r))
                    }
                }
            }
            _ => {
                let id = rng.random_range(0..12).to_string();
                let project =
                    (rng.random_range(0..6) < 5).then(|| rng.random_range(0..5).to_string());
                let title = if rng.random_bool(0.3) { "x" } else { "t" };
                let fresh = row(&[Some(&id), project.as_deref(), Some(title)]);
                let at = todos.iter().position(|r| r[0].as_deref() == Some(&id));
                match (at, rng.random_range(0..4)) {
                    (None, _) => {
                        todos.push(fresh.clone());
                        (todos_slot, None, Some(fresh))
                    }
                    (Some(at), 0) => {
                        let gone = todos.swap_remove(at);
                        (
                            todos_slot,
                            Some(row(&[gone[0].as_deref(), None, None])),
                            None,
                        )
                    }
                    (Some(at), 1) => {
                        // A key change: the old row comes whole.
                        let other = format!("{}", 100 + step);
                        let moved = row(&[Some(&other), fresh[1].as_deref(), Some(title)]);
                        let old = std::mem::replace(&mut todos[at], moved.clone());
                        (todos_slot, Some(old), Some(moved))
                    }
                    (Some(at), _) => {
                        // Default replica identity: no old row.
                        todos[at] = fresh.clone();
                        (todos_slot, None, Some(fresh))
                    }
                }
            }
        };
        routes.candidates(slot, old.as_ref(), new.as_ref(), &mut found);
        for (i, (f, e)) in fast.iter_mut().zip(every.iter_mut()).enumerate() {
            let id = ShapeId(i as u64);
            let concerned = e.would_change(slot, XID, Lsn(1000), old.as_ref(), new.as_ref());
            assert!(
                !concerned || found.contains(&id),
                "seed {seed}, step {step}: `{}` not found for {old:?} → {new:?}",
                WHERES[i]
            );
            let expected = e
                .change(slot, XID, Lsn(1000), old.as_ref(), new.as_ref())
                .map(|o| (o.change, o.left));
            let got = if found.contains(&id) {
                let outcome = f
                    .change(slot, XID, Lsn(1000), old.as_ref(), new.as_ref())
                    .map(|o| (o.change, o.left));
                routes.follow_traces(id, f);
                outcome
            } else {
                None
            };
            assert_eq!(got, expected, "seed {seed}, step {step}: `{}`", WHERES[i]);
        }
        // A commit now and then: moves out (move-ins need a database), or a dropped
        // transaction, which puts the levels back.
        if rng.random_bool(0.2) {
            let (fast_before, every_before) = before.take().expect("a transaction is open");
            if rng.random_bool(0.2) {
                for (i, (f, mut b)) in fast.iter_mut().zip(fast_before).enumerate() {
                    routes.remove(ShapeId(i as u64), f);
                    routes.add(ShapeId(i as u64), &mut b);
                    *f = b;
                }
                every = every_before;
                continue;
            }
            for (i, (f, e)) in fast.iter_mut().zip(every.iter_mut()).enumerate() {
                for levels in [&mut *f, &mut *e] {
                    if levels.unsettled() {
                        levels.root.move_out();
                        levels.settle();
                    }
                }
                routes.follow_traces(ShapeId(i as u64), f);
            }
        }
    }
    for (i, (f, e)) in fast.iter().zip(&every).enumerate() {
        assert_eq!(
            f.root.present, e.root.present,
            "seed {seed}: `{}`",
            WHERES[i]
        );
    }
}

#[test]
fn a_change_finds_only_the_shapes_whose_subqueries_offer_its_value_or_keep_its_row() {
    let (todos_slot, members_slot) = slots();
    let mut routes = SubqueryRoutes::default();
    let text = |user: u32| {
        format!("project_id IN (SELECT project_id FROM members WHERE user_id = 'u{user}')")
    };
    let mut shapes: Vec<SubqueryShape> = (0..3)
        .map(|user| {
            let mut levels = shape_of(&text(user));
            routes.add(ShapeId(user as u64), &mut levels);
            levels
        })
        .collect();
    let mut found = Vec::new();
    let mut apply =
        |shapes: &mut Vec<SubqueryShape>, routes: &mut SubqueryRoutes, slot, new: Row| {
            routes.candidates(slot, None, Some(&new), &mut found);
            for &id in &found {
                let levels = &mut shapes[id.0 as usize];
                levels.change(slot, XID, Lsn(1000), None, Some(&new));
                routes.follow_traces(id, levels);
            }
            found.clone()
        };
    // A membership row is found by its user: only u1's shape.
    let found_for = apply(
        &mut shapes,
        &mut routes,
        members_slot,
        row(&[Some("5"), Some("u1")]),
    );
    assert_eq!(found_for, vec![ShapeId(1)]);
    // A todo of project 5 is found by u1's shape only, now that u1 is a member of it.
    let todo = row(&[Some("1"), Some("5"), Some("t")]);
    assert_eq!(
        apply(&mut shapes, &mut routes, todos_slot, todo),
        vec![ShapeId(1)]
    );
    // Moved to project 6: u1's shape keeps the row, so it is found (and lets it go).
    let moved = row(&[Some("1"), Some("6"), Some("t")]);
    assert_eq!(
        apply(&mut shapes, &mut routes, todos_slot, moved.clone()),
        vec![ShapeId(1)]
    );
    // Now nobody holds it or offers 6.
    assert!(apply(&mut shapes, &mut routes, todos_slot, moved).is_empty());
}
