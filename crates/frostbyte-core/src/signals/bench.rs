//! The engine benchmark behind `frostbyte signals bench` and `cargo run --release -p frostbyte-core --example
//! signals_bench`: events per second through a tumbling + sliding + EWMA feature set, and memory per active
//! entity. In-process only: no store, no JSON parsing on the clock.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use super::definition::FeatureSetDef;
use super::engine::{CompiledFeatureSet, Engine, EntityState, EventRef};
use super::partition::partition_of;

/// The feature set the benchmark runs: a tumbling, a sliding and an EWMA window over one field.
pub const BENCH_FEATURE_SET: &str = r#"
allowed_lateness: 5s
windows:
  - {name: m1, type: tumbling, size: 1m, aggregates: [{name: n, op: count}, {name: mean, op: mean, field: /t}, {name: max, op: max, field: /t}]}
  - {name: m5, type: sliding, size: 5m, slide: 1m, aggregates: [{name: mean, op: mean, field: /t}, {name: sd, op: stddev, field: /t}]}
  - {name: ewma, type: ewma, field: /t, half_life: 10m, every: 1m}
"#;

/// What `frostbyte signals bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub events: u64,
    pub entities: u64,
    pub threads: u32,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub rows_emitted: u64,
    pub state_bytes_per_entity: f64,
    pub checkpoint_bytes_per_entity: f64,
}

/// Runs the in-process engine over synthetic readings: each entity reports every second, a third of the
/// events arrive up to 4 s out of order (inside the 5 s lateness). Payloads are parsed before the clock starts,
/// so the figure is the engine's, not the JSON parser's.
pub fn run(events: u64, entities: u64, threads: u32) -> BenchReport {
    let def = FeatureSetDef::from_yaml(BENCH_FEATURE_SET).expect("the bench feature set is valid");
    let fs = Arc::new(CompiledFeatureSet::compile("bench", 1, &def));
    let payloads: Vec<serde_json::Value> =
        (0..1024).map(|i| json!({"t": 20.0 + f64::from(i % 97) / 10.0, "unit": "C"})).collect();
    let names: Vec<String> = (0..entities).map(|e| format!("device-{e}")).collect();
    let owner: Vec<u32> = names.iter().map(|n| partition_of(n, threads)).collect();
    let base: i64 = 1_770_000_000_000_000;
    let start = Instant::now();
    let results: Vec<(u64, usize, usize, usize, f64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|me| {
                let (fs, payloads, names, owner) = (Arc::clone(&fs), &payloads, &names, &owner);
                scope.spawn(move || {
                    let mut engine = Engine::new(fs);
                    let mut states: Vec<EntityState> = vec![EntityState::default(); names.len()];
                    let mut rows = Vec::with_capacity(4096);
                    let mut emitted = 0u64;
                    for i in 0..events {
                        let e = (i % entities) as usize;
                        if owner[e] != me {
                            continue;
                        }
                        let tick = (i / entities) as i64;
                        let jitter = if i % 3 == 0 { -((i % 5) as i64) * 800_000 } else { 0 };
                        let ev = EventRef {
                            time: base + tick * 1_000_000 + jitter,
                            sequence: None,
                            tie: i,
                            payload: &payloads[(i % 1024) as usize],
                        };
                        engine.process(&mut states[e], &names[e], ev, &mut rows);
                        if rows.len() >= 4096 {
                            emitted += rows.len() as u64;
                            rows.clear();
                        }
                    }
                    emitted += rows.len() as u64;
                    let done = start.elapsed().as_secs_f64();
                    let active: Vec<&EntityState> = states.iter().filter(|s| s.max_event_time().is_some()).collect();
                    let heap: usize = active.iter().map(|s| s.heap_bytes()).sum();
                    let checkpoint: usize =
                        active.iter().map(|s| serde_json::to_vec(s).map(|v| v.len()).unwrap_or(0)).sum();
                    (emitted, active.len(), heap, checkpoint, done)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("bench thread")).collect()
    });
    let seconds = results.iter().map(|r| r.4).fold(0.0, f64::max).max(1e-9);
    let rows_emitted = results.iter().map(|r| r.0).sum();
    let active = results.iter().map(|r| r.1).sum::<usize>().max(1) as f64;
    BenchReport {
        events,
        entities,
        threads,
        seconds,
        events_per_sec: events as f64 / seconds,
        rows_emitted,
        state_bytes_per_entity: results.iter().map(|r| r.2).sum::<usize>() as f64 / active,
        checkpoint_bytes_per_entity: results.iter().map(|r| r.3).sum::<usize>() as f64 / active,
    }
}
