//! Benchmarks of the `where` evaluator and the routing index (not a test: figures only).
//!
//! `cargo run --release -p shapes --example bench`
//!
//! - ns per row to evaluate a typical three-conjunct `where`;
//! - routing one change (an update moving a row between owners) with 10, 1,000 and 100,000
//!   equality shapes on one table, and the 100k/10 rate ratio (target ≥ 0.66);
//! - memory per indexed shape, counted by a global allocator (target ≤ 2 KB).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use shapes::routing::{ShapeId, ShapeIndex};
use shapes::schema::{Column, PgType, QualifiedName, TableSchema, TypeKind};
use shapes::where_clause::WhereClause;

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; we only count.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn column(name: &str, ty: &str, pk: bool) -> Column {
    Column {
        name: name.into(),
        ty: PgType {
            oid: 0,
            name: ty.into(),
            kind: TypeKind::Base,
        },
        type_mod: -1,
        dims: 0,
        not_null: pk,
        pk_index: pk.then_some(0),
        generated: false,
    }
}

fn table() -> TableSchema {
    TableSchema {
        name: QualifiedName::new("public", "issues"),
        oid: 1,
        columns: vec![
            column("id", "int8", true),
            column("owner_id", "int8", false),
            column("status", "text", false),
            column("priority", "int4", false),
            column("title", "text", false),
        ],
    }
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

/// A small deterministic generator (no dependency needed for a benchmark).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn bench_eval() {
    let t = table();
    let w = WhereClause::parse(
        "owner_id = 42 AND status = 'open' AND priority > 2",
        &BTreeMap::new(),
        &t,
    )
    .expect("where");
    let statuses = ["open", "closed", "open", "triage"];
    let rows: Vec<_> = (0..1024u64)
        .map(|i| row(i, 40 + i % 4, statuses[(i % 4) as usize], (i % 5) as u32))
        .collect();
    let n = 2_000_000;
    let start = Instant::now();
    let mut hits = 0u64;
    for i in 0..n {
        if w.matches(black_box(&rows[i % rows.len()])) {
            hits += 1;
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "evaluate `owner_id = 42 AND status = 'open' AND priority > 2`: {ns:.1} ns/row ({hits} matches)"
    );
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

/// Routes `changes` updates moving a row between random owners among `shapes`. Each change
/// is a fresh row in the cache, as one just decoded from the WAL would be, with random keys
/// over the whole key space (no key is favoured by the cache). Returns the changes per
/// second, the same with the cost of making the rows taken out, and the heap bytes per
/// indexed shape.
fn bench_route(shapes: u64, changes: usize, extra: &str) -> (f64, f64, f64) {
    let t = table();
    let before = LIVE.load(Ordering::Relaxed);
    let mut index = ShapeIndex::default();
    for k in 0..shapes {
        let w = WhereClause::parse(&format!("owner_id = {k}{extra}"), &BTreeMap::new(), &t)
            .expect("where");
        index.insert(ShapeId(k), &t, Some(&w));
    }
    let per_shape = (LIVE.load(Ordering::Relaxed) - before) as f64 / shapes as f64;
    let mut old = row(1, 0, "open", 3);
    let mut new = row(1, 0, "open", 3);
    let mut out = Vec::with_capacity(8);
    let mut routed = 0usize;

    // the cost of making the rows alone
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
        index.route(black_box(&t.name), Some(&old), Some(&new), &mut out);
        routed += out.len();
        out.clear();
    }
    let total = start.elapsed().as_secs_f64();
    black_box(routed);
    let raw = changes as f64 / total;
    let net = changes as f64 / (total - making).max(1e-9);
    (raw, net, per_shape)
}

fn main() {
    bench_eval();
    for (what, extra) in [
        ("owner_id = k", ""),
        ("owner_id = k AND priority > 2", " AND priority > 2"),
    ] {
        let mut base = 0.0;
        println!("shapes `{what}`:");
        for shapes in [10u64, 1_000, 100_000] {
            let (raw, net, per_shape) = bench_route(shapes, 4_000_000, extra);
            if shapes == 10 {
                base = net;
            }
            println!(
                "  route one update with {shapes:>7} shapes: {:>9.0} changes/s routing only ({:.0} ns/change; \
                 {:.0}/s with making the rows), {:.2}× the 10-shape rate; {per_shape:.0} bytes per indexed shape",
                net,
                1e9 / net,
                raw,
                net / base
            );
        }
    }
}
