//! Engine behaviour: windows, late policies, checkpoints, and order independence (proptest).

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::definition::FeatureSetDef;
use super::engine::{CompiledFeatureSet, Engine, EntityState, EventRef, FeatureRow, Outcome};

const S: i64 = 1_000_000;

fn engine(yaml: &str) -> Engine {
    let def = FeatureSetDef::from_yaml(yaml).expect("valid definition");
    Engine::new(Arc::new(CompiledFeatureSet::compile("fs", 1, &def)))
}

struct Feed {
    engine: Engine,
    state: EntityState,
    rows: Vec<FeatureRow>,
}

impl Feed {
    fn new(yaml: &str) -> Feed {
        Feed { engine: engine(yaml), state: EntityState::default(), rows: Vec::new() }
    }

    fn push(&mut self, secs: i64, payload: Value) -> Outcome {
        self.push_micros(secs * S, payload)
    }

    fn push_micros(&mut self, t: i64, payload: Value) -> Outcome {
        let tie = super::engine::fnv64(&[payload.to_string().as_bytes(), &t.to_le_bytes()]);
        self.engine.process(
            &mut self.state,
            "e1",
            EventRef { time: t, sequence: None, tie, payload: &payload },
            &mut self.rows,
        )
    }

    fn row(&self, end_secs: i64) -> &FeatureRow {
        self.rows
            .iter()
            .rev()
            .find(|r| r.window_end == end_secs * S)
            .unwrap_or_else(|| panic!("no row at {end_secs}s: {:?}", self.rows))
    }
}

const TUMBLING: &str = r#"
allowed_lateness: 10s
windows:
  - name: m1
    type: tumbling
    size: 1m
    aggregates:
      - {name: n, op: count}
      - {name: sum, op: sum, field: /v}
      - {name: mean, op: mean, field: /v}
      - {name: min, op: min, field: /v}
      - {name: max, op: max, field: /v}
      - {name: sd, op: stddev, field: /v}
      - {name: last, op: last, field: /v}
      - {name: hosts, op: distinct_count, field: /host}
      - {name: with_v, op: count, field: /v}
"#;

#[test]
fn tumbling_window_emits_when_the_watermark_passes_its_end() {
    let mut f = Feed::new(TUMBLING);
    f.push(5, json!({"v": 2, "host": "a"}));
    f.push(50, json!({"v": 4, "host": "b"}));
    f.push(45, json!({"host": "a"})); // out of order (watermark 40s), no value
    f.push(65, json!({"v": 100}));
    assert!(f.rows.is_empty(), "watermark 55s has not passed 60s");
    f.push(70, json!({"v": 1}));
    assert_eq!(f.rows.len(), 1);
    let r = f.row(60);
    assert_eq!(r.revision, 0);
    assert_eq!(
        r.values,
        json!({"m1": {"n": 3, "sum": 6.0, "mean": 3.0, "min": 2.0, "max": 4.0, "sd": 1.0, "last": 4.0, "hosts": 2, "with_v": 2}})
    );
    assert_eq!(f.state.watermark(f.engine.feature_set()), Some(60 * S));
}

#[test]
fn sliding_windows_overlap() {
    let mut f = Feed::new(
        "allowed_lateness: 0s\nwindows: [{name: s, type: sliding, size: 2m, slide: 1m, aggregates: [{name: n, op: count}]}]",
    );
    f.push(10, json!({}));
    f.push(70, json!({}));
    f.push(130, json!({}));
    f.push(250, json!({}));
    let got: Vec<(i64, Value)> = f.rows.iter().map(|r| (r.window_end / S, r.values["s"]["n"].clone())).collect();
    assert_eq!(got, vec![(60, json!(1)), (120, json!(2)), (180, json!(2)), (240, json!(1))]);
}

#[test]
fn late_events_follow_the_policy() {
    let base =
        "windows: [{name: m, type: tumbling, size: 1m, aggregates: [{name: n, op: count}]}]\nallowed_lateness: 5s\n";
    // drop: counted and discarded
    let mut f = Feed::new(&format!("{base}late_policy: drop"));
    f.push(10, json!({}));
    f.push(70, json!({}));
    assert_eq!(f.push(20, json!({})), Outcome::LateDropped);
    assert_eq!(f.row(60).values["m"]["n"], json!(1));
    // hold: counted in the earliest open window (moved up to the watermark)
    let mut f = Feed::new(&format!("{base}late_policy: hold"));
    f.push(10, json!({}));
    f.push(70, json!({}));
    assert_eq!(f.push(20, json!({})), Outcome::LateHeld);
    f.push(130, json!({}));
    assert_eq!(f.row(60).values["m"]["n"], json!(1));
    assert_eq!(f.row(120).values["m"]["n"], json!(2), "held event joins [60s, 120s)");
    // correct: the emitted window is recomputed with the next revision
    let mut f = Feed::new(&format!("{base}late_policy: correct\ncorrection_horizon: 2m"));
    f.push(10, json!({}));
    f.push(70, json!({}));
    assert_eq!(f.push(20, json!({})), Outcome::LateCorrected);
    let r = f.row(60);
    assert_eq!((r.revision, r.values["m"]["n"].clone()), (1, json!(2)));
    assert_eq!(f.push(25, json!({})), Outcome::LateCorrected);
    assert_eq!(f.row(60).revision, 2);
    // beyond the horizon: dropped
    f.push(400, json!({}));
    assert_eq!(f.push(30, json!({})), Outcome::LateDropped);
}

#[test]
fn ewma_decays_by_half_life_and_corrections_refold() {
    let yaml = "allowed_lateness: 0s\nlate_policy: correct\nwindows: [{name: e, type: ewma, field: /v, half_life: 1m, every: 1m}]";
    let mut f = Feed::new(yaml);
    f.push(0, json!({"v": 10}));
    f.push(60, json!({"v": 20}));
    f.push(120, json!({"v": 0}));
    // At 60s: only the first event (age 60s, weight 1/2 — the weight cancels): 10.
    assert_eq!(f.row(60).values["e"]["value"], json!(10.0));
    // At 120s: 10 with weight 1/4, 20 with weight 1/2 → (2.5 + 10) / 0.75.
    let v = f.row(120).values["e"]["value"].as_f64().unwrap();
    assert!((v - 12.5 / 0.75).abs() < 1e-9, "{v}");
    // A late event in the first pane changes both values.
    f.push(30, json!({"v": 30}));
    let r60 = f.row(60);
    assert_eq!(r60.revision, 1);
    let w0 = 0.5f64;
    let w1 = (-30.0f64 / 60.0).exp2();
    let expect60 = (10.0 * w0 + 30.0 * w1) / (w0 + w1);
    assert!((r60.values["e"]["value"].as_f64().unwrap() - expect60).abs() < 1e-9);
    assert_eq!(f.row(120).revision, 1);
}

#[test]
fn zscore_of_the_latest_value() {
    let mut f = Feed::new("allowed_lateness: 0s\nwindows: [{name: z, type: zscore, field: /v, size: 1h, every: 1m}]");
    for (t, v) in [(1, 1.0), (2, 2.0), (3, 3.0), (4, 6.0)] {
        f.push(t, json!({"v": v}));
    }
    f.push(61, json!({"v": 0}));
    let z = &f.row(60).values["z"];
    let (mean, sd): (f64, f64) = (3.0, ((4.0f64 + 1.0 + 0.0 + 9.0) / 4.0).sqrt());
    assert_eq!(z["mean"], json!(mean));
    assert!((z["z"].as_f64().unwrap() - (6.0 - mean) / sd).abs() < 1e-12);
    assert_eq!(z["n"], json!(4));
}

#[test]
fn filters_select_events_and_missing_fields_are_skipped() {
    let yaml = r#"
allowed_lateness: 0s
filters: [{field: /kind, op: eq, value: reading}]
windows:
  - name: hot
    type: tumbling
    size: 1m
    filters: [{field: /v, op: gt, value: 50}]
    aggregates: [{name: n, op: count}]
  - name: all
    type: tumbling
    size: 1m
    aggregates: [{name: n, op: count}, {name: mean, op: mean, field: /v}]
"#;
    let mut f = Feed::new(yaml);
    assert_eq!(f.push(1, json!({"kind": "reading", "v": 60})), Outcome::Applied);
    f.push(2, json!({"kind": "reading", "v": 10}));
    assert_eq!(f.push(3, json!({"kind": "noise", "v": 99})), Outcome::Filtered);
    f.push(4, json!({"kind": "reading", "v": "not a number"}));
    f.push(61, json!({"kind": "other"}));
    assert_eq!(f.row(60).values, json!({"hot": {"n": 1}, "all": {"n": 3, "mean": 35.0}}));
}

#[test]
fn a_restored_checkpoint_continues_exactly() {
    let events: Vec<(i64, f64)> = (0..400).map(|i| (i * 7 + (i % 5) * 3, (i % 13) as f64)).collect();
    let yaml = crate::signals::definition::tests_yaml();
    let mut straight = Feed::new(yaml);
    for (t, v) in &events {
        straight.push(*t, json!({"kind": "reading", "t": v}));
    }
    let mut resumed = Feed::new(yaml);
    for (i, (t, v)) in events.iter().enumerate() {
        if i % 50 == 0 {
            let saved = serde_json::to_string(&resumed.state).unwrap();
            resumed.state = serde_json::from_str(&saved).unwrap();
            resumed.engine = engine(yaml);
        }
        resumed.push(*t, json!({"kind": "reading", "t": v}));
    }
    assert!(!straight.rows.is_empty());
    assert_eq!(straight.rows, resumed.rows);
}

fn final_rows(rows: &[FeatureRow]) -> BTreeMap<i64, (u32, Value)> {
    rows.iter().map(|r| (r.window_end, (r.revision, r.values.clone()))).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arrival order within the lateness bound does not change the rows: each event arrives at `time + delay`
    /// with `delay ≤ allowed_lateness`, which is exactly "never behind the watermark".
    #[test]
    fn arrival_order_within_lateness_does_not_change_rows(
        events in prop::collection::vec((0i64..3_600, -50i32..50, 0u8..4), 1..200),
        delays in prop::collection::vec(0i64..=30, 200),
        policy in prop::sample::select(vec!["drop", "hold", "correct"]),
    ) {
        let yaml = format!(
            "allowed_lateness: 30s\nlate_policy: {policy}\n{}",
            r#"windows:
  - {name: m1, type: tumbling, size: 1m, aggregates: [{name: n, op: count}, {name: s, op: sum, field: /v}, {name: sd, op: stddev, field: /v}, {name: d, op: distinct_count, field: /k}, {name: l, op: last, field: /v}]}
  - {name: m5, type: sliding, size: 5m, slide: 1m, aggregates: [{name: mean, op: mean, field: /v}, {name: max, op: max, field: /v}]}
  - {name: e, type: ewma, field: /v, half_life: 2m, every: 1m}
  - {name: z, type: zscore, field: /v, size: 10m, every: 1m}
"#
        );
        let payloads: Vec<Value> = events.iter().map(|(_, v, k)| json!({"v": f64::from(*v) / 7.0, "k": k})).collect();
        let mut in_order: Vec<usize> = (0..events.len()).collect();
        in_order.sort_by_key(|&i| (events[i].0, i));
        let mut shuffled: Vec<usize> = (0..events.len()).collect();
        shuffled.sort_by_key(|&i| (events[i].0 + delays[i], i));
        let run = |order: &[usize]| {
            let mut f = Feed::new(&yaml);
            for &i in order {
                let out = f.push(events[i].0, payloads[i].clone());
                assert!(matches!(out, Outcome::Applied | Outcome::Filtered), "nothing is late: {out:?}");
            }
            f.rows
        };
        let a = run(&in_order);
        let b = run(&shuffled);
        let mut sa = a.clone();
        let mut sb = b.clone();
        sa.sort_by_key(|r| r.window_end);
        sb.sort_by_key(|r| r.window_end);
        prop_assert_eq!(sa, sb);
        prop_assert_eq!(final_rows(&a), final_rows(&b));
    }
}
