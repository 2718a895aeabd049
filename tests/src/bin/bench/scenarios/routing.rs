//! `routing_10` and `routing_100k`: the routing index (`shapes::routing::ShapeIndex`) in
//! process, with 10 and 100,000 equality shapes (`owner_id = k`) on one table (and 1,000 on the
//! way, `routing_1k`).
//!
//! Each change is an update moving a row between two random owners (so it is looked up on the
//! old and the new row), made fresh in the row buffers as a just-decoded change would be, with
//! random keys over the whole key space (no key favoured by the CPU cache). The time to make
//! the rows alone is measured in a separate pass and taken out. Memory per shape is the heap
//! the index grew by while the shapes were inserted, counted by this binary's allocator
//! ([`crate::alloc_count`]): an idle shape costs nothing but this in the router.
//!
//! `routing_10` also reports the cost of evaluating a typical three-conjunct `where` on a row
//! (`where_eval`), and `routing_100k` the rate with a residual conjunct evaluated after the
//! index lookup (`owner_id = k AND priority > 2`).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use shapes::routing::{ShapeId, ShapeIndex};
use shapes::schema::TableSchema;
use shapes::testing::{base, column, table};
use shapes::where_clause::WhereClause;

use crate::Bench;
use crate::alloc_count;
use crate::figures::{Figure, Target};

#[derive(Debug, Clone, Copy)]
pub enum Size {
    Ten,
    HundredThousand,
}

pub fn run(bench: &mut Bench, size: Size) -> anyhow::Result<()> {
    // How long each rate is sampled: not a size, so the quick run samples briefly (a debug
    // build routes a few hundred thousand changes a second).
    let changes = if bench.scale.quick {
        100_000
    } else {
        4_000_000
    };
    let ten = route(10, changes, "")?;
    match size {
        Size::Ten => {
            bench.report.add(
                Figure::new("routing_10", ten.rate, "changes/s").note(format!(
                    "10 shapes `owner_id = k`, {changes} updates moving a row"
                )),
            );
            let ns = bench_eval(if bench.scale.quick {
                100_000
            } else {
                2_000_000
            })?;
            bench.report.add(
                Figure::new("where_eval", ns, "ns/row").note(
                    "evaluate `owner_id = 42 AND status = 'open' AND priority > 2` on one row",
                ),
            );
        }
        Size::HundredThousand => {
            let thousand = bench.scale.of(1_000) as u64;
            let middle = route(thousand, changes, "")?;
            bench.report.add(
                Figure::new("routing_1k", middle.rate, "changes/s")
                    .baseline(ten.rate)
                    .note(format!(
                        "{thousand} shapes `owner_id = k` vs 10; {:.0} ns/change",
                        1e9 / middle.rate
                    )),
            );
            let shapes = bench.scale.of(100_000) as u64;
            let many = route(shapes, changes, "")?;
            bench.report.add(
                Figure::new("routing_100k", many.rate, "changes/s")
                    .baseline(ten.rate)
                    .target(Target::RatioAtLeast(0.66))
                    .note(format!(
                        "{shapes} shapes `owner_id = k` vs 10; {:.0} ns/change",
                        1e9 / many.rate
                    )),
            );
            bench.report.add(
                Figure::new(
                    "routing_100k.bytes_per_shape",
                    many.bytes_per_shape,
                    "bytes",
                )
                .target(Target::AtMost(2048.0))
                .note("heap growth of the index per shape inserted"),
            );
            let residual = route(shapes, changes, " AND priority > 2")?;
            let residual_ten = route(10, changes, " AND priority > 2")?;
            bench.report.add(
                Figure::new("routing_100k.residual", residual.rate, "changes/s")
                    .baseline(residual_ten.rate)
                    .target(Target::RatioAtLeast(0.66))
                    .note(format!(
                        "{shapes} shapes `owner_id = k AND priority > 2` vs 10 of them \
                         (routing only: index lookups of the old and new owner, then the \
                         residual `priority > 2` on the rows); {:.0} ns/change",
                        1e9 / residual.rate
                    )),
            );
            bench.report.add(
                Figure::new(
                    "routing_100k.residual.bytes_per_shape",
                    residual.bytes_per_shape,
                    "bytes",
                )
                .target(Target::AtMost(2048.0))
                .note(
                    "heap growth of the index per shape `owner_id = k AND priority > 2` inserted",
                ),
            );
        }
    }
    Ok(())
}

/// `public.issues(id int8 pk, owner_id int8, status text, priority int4, title text)`.
fn issues() -> TableSchema {
    table(
        "public",
        "issues",
        vec![
            column("id", base("int8")).pk(0).not_null(),
            column("owner_id", base("int8")),
            column("status", base("text")),
            column("priority", base("int4")),
            column("title", base("text")),
        ],
    )
}

fn row(id: u64, owner: u64, status: &str, priority: u32) -> Vec<Option<String>> {
    vec![
        Some(id.to_string()),
        Some(owner.to_string()),
        Some(status.to_string()),
        Some(priority.to_string()),
        Some("Fix the thing that broke".to_string()),
    ]
}

/// A small deterministic generator.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// ns per row to evaluate a three-conjunct `where`.
fn bench_eval(rows_evaluated: usize) -> anyhow::Result<f64> {
    let t = issues();
    let w = WhereClause::parse(
        "owner_id = 42 AND status = 'open' AND priority > 2",
        &BTreeMap::new(),
        &t,
    )?;
    let statuses = ["open", "closed", "open", "triage"];
    let rows: Vec<_> = (0..1024u64)
        .map(|i| row(i, 40 + i % 4, statuses[(i % 4) as usize], (i % 5) as u32))
        .collect();
    let start = Instant::now();
    let mut hits = 0u64;
    for i in 0..rows_evaluated {
        if w.matches(black_box(&rows[i % rows.len()])) {
            hits += 1;
        }
    }
    black_box(hits);
    Ok(start.elapsed().as_nanos() as f64 / rows_evaluated as f64)
}

/// Writes `v` into `s` without going through `fmt` (what a decoder hands over is text).
fn set_int(s: &mut Option<String>, mut v: u64) {
    let s = s.get_or_insert_with(String::new);
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    s.clear();
    for d in digits[..n].iter().rev() {
        s.push(char::from(*d));
    }
}

struct Routed {
    /// Changes per second, routing only.
    rate: f64,
    bytes_per_shape: f64,
}

fn route(shapes: u64, changes: usize, extra: &str) -> anyhow::Result<Routed> {
    let t = issues();
    let wheres = (0..shapes)
        .map(|k| WhereClause::parse(&format!("owner_id = {k}{extra}"), &BTreeMap::new(), &t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut index = ShapeIndex::default();
    let ((), grown) = alloc_count::measure(|| {
        for (k, w) in wheres.iter().enumerate() {
            index.insert(ShapeId(k as u64), &t, Some(w));
        }
    });
    drop(wheres);
    // resolved once, as the consumer keeps it per relation
    let slot = index
        .slot(&t.name)
        .ok_or_else(|| anyhow::anyhow!("no shape on {}", t.name))?;
    let mut old = row(1, 0, "open", 3);
    let mut new = row(1, 0, "open", 3);
    let mut out = Vec::with_capacity(8);
    let mut routed = 0usize;

    // Making the rows alone.
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let start = Instant::now();
    for _ in 0..changes {
        set_int(&mut old[1], rng.next() % shapes);
        set_int(&mut new[1], rng.next() % shapes);
        black_box((&old, &new));
    }
    let making = start.elapsed().as_secs_f64();

    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let start = Instant::now();
    for _ in 0..changes {
        set_int(&mut old[1], rng.next() % shapes);
        set_int(&mut new[1], rng.next() % shapes);
        index.route(black_box(slot), Some(&old), Some(&new), &mut out);
        routed += out.len();
        out.clear();
    }
    let total = start.elapsed().as_secs_f64();
    black_box(routed);
    Ok(Routed {
        rate: changes as f64 / (total - making).max(1e-9),
        bytes_per_shape: grown as f64 / shapes as f64,
    })
}
