//! Real late data: the USGS earthquake feed in npm `vega-datasets@3.2.1` (`data/earthquakes.json`, one week,
//! 1,707 events). Each event has an origin `time` and an `updated` time; replaying in `updated` order gives real
//! out-of-order arrival per network (`net`). The file is fetched by `.ci/run` into the data cache (it is not
//! committed); without it this test says so and passes.

use std::collections::BTreeMap;
use std::sync::Arc;

use frostbyte_core::signals::definition::FeatureSetDef;
use frostbyte_core::signals::engine::{EventRef, Outcome};
use frostbyte_core::signals::event::{Event, hash_tie};
use frostbyte_core::signals::{CompiledFeatureSet, Engine, EntityState, FeatureRow};
use serde_json::{Value, json};

type Arrival = (i64, Event, String);

fn data_file() -> Option<std::path::PathBuf> {
    let cache = std::env::var_os("FROSTBYTE_DATA_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/frostbyte-data")))?;
    let path = cache.join("vega-datasets-3.2.1/package/data/earthquakes.json");
    path.exists().then_some(path)
}

/// `(arrival, event, hash)` in arrival (`updated`) order.
fn load() -> Option<Vec<Arrival>> {
    let Some(path) = data_file() else {
        eprintln!("vega-datasets earthquakes.json not in the data cache: skipping (see .ci/run)");
        return None;
    };
    let doc: Value = serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json");
    let mut out = Vec::new();
    for f in doc["features"].as_array().expect("features") {
        let p = &f["properties"];
        let (Some(time), Some(updated), Some(net)) = (p["time"].as_i64(), p["updated"].as_i64(), p["net"].as_str())
        else {
            continue;
        };
        let event = Event::from_json(json!({
            "entity_id": net,
            "event_time": chrono::DateTime::from_timestamp_millis(time).unwrap().to_rfc3339(),
            "payload": {"mag": p["mag"], "depth": f["geometry"]["coordinates"][2], "kind": p["type"]},
            "source": "usgs",
        }))
        .expect("valid event");
        let hash = event.content_hash();
        out.push((updated * 1000, event, hash));
    }
    out.sort_by(|a, b| (a.0, &a.2).cmp(&(b.0, &b.2)));
    Some(out)
}

fn run(yaml: &str, events: &[&Arrival]) -> (Vec<FeatureRow>, BTreeMap<&'static str, u64>) {
    let def = FeatureSetDef::from_yaml(yaml).expect("valid");
    let mut engine = Engine::new(Arc::new(CompiledFeatureSet::compile("quakes", 1, &def)));
    let mut states: BTreeMap<String, EntityState> = BTreeMap::new();
    let mut rows = Vec::new();
    let mut outcomes = BTreeMap::new();
    for (_, e, hash) in events {
        let state = states.entry(e.entity_id.clone()).or_default();
        let ev =
            EventRef { time: e.event_time_micros(), sequence: e.sequence, tie: hash_tie(hash), payload: &e.payload };
        let out = engine.process(state, &e.entity_id, ev, &mut rows);
        let key = match out {
            Outcome::Applied | Outcome::Filtered => "on_time",
            Outcome::LateDropped => "dropped",
            Outcome::LateHeld => "held",
            Outcome::LateCorrected => "corrected",
        };
        *outcomes.entry(key).or_insert(0) += 1;
    }
    (rows, outcomes)
}

/// The final values per `(entity, window_end)` (last revision wins, as in the online store).
fn final_values(rows: &[FeatureRow]) -> BTreeMap<(String, i64), Value> {
    rows.iter().map(|r| ((r.entity_id.clone(), r.window_end), r.values.clone())).collect()
}

const WINDOWS: &str = r#"
filters: [{field: /kind, op: eq, value: earthquake}]
windows:
  - {name: h1, type: tumbling, size: 1h, aggregates: [{name: n, op: count}, {name: mag_mean, op: mean, field: /mag}, {name: mag_max, op: max, field: /mag}, {name: depth_sd, op: stddev, field: /depth}]}
  - {name: h6, type: sliding, size: 6h, slide: 1h, aggregates: [{name: n, op: count}]}
  - {name: mag_ewma, type: ewma, field: /mag, half_life: 3h, every: 1h}
"#;

#[test]
fn real_out_of_order_arrival_gives_the_event_time_answer() {
    let Some(events) = load() else { return };
    assert!(events.len() > 1_500, "{} events", events.len());
    let arrival: Vec<&Arrival> = events.iter().collect();
    let mut by_time = arrival.clone();
    by_time.sort_by(|a, b| (a.1.event_time_micros(), &a.2).cmp(&(b.1.event_time_micros(), &b.2)));
    let max_delay = events.iter().map(|(a, e, _)| a - e.event_time_micros()).max().unwrap();
    assert!(max_delay > 3_600_000_000, "updates arrive hours after the quake");

    // Lateness covering the largest real delay: nothing is late, and arrival order does not matter.
    let lateness = format!("allowed_lateness: {}s\n", max_delay / 1_000_000 + 1);
    let (a, oa) = run(&format!("{lateness}{WINDOWS}"), &arrival);
    let (b, _) = run(&format!("{lateness}{WINDOWS}"), &by_time);
    assert_eq!(oa.get("dropped"), None);
    assert!(a.len() > 10, "{} rows", a.len());
    let (mut sa, mut sb) = (a.clone(), b.clone());
    sa.sort_by_key(|r| (r.entity_id.clone(), r.window_end));
    sb.sort_by_key(|r| (r.entity_id.clone(), r.window_end));
    assert_eq!(sa, sb);

    // A short lateness: real late events. `drop` counts them; `correct` converges to the in-order answer.
    let (_, dropped) = run(&format!("allowed_lateness: 5m\nlate_policy: drop\n{WINDOWS}"), &arrival);
    assert!(dropped["dropped"] > 10, "{dropped:?}");
    let correct = format!("allowed_lateness: 5m\nlate_policy: correct\ncorrection_horizon: 7d\n{WINDOWS}");
    let (corrected, oc) = run(&correct, &arrival);
    assert_eq!(oc["corrected"], dropped["dropped"]);
    assert!(corrected.iter().any(|r| r.revision > 0));
    let (in_order, _) = run(&correct, &by_time);
    assert_eq!(final_values(&corrected), final_values(&in_order));
}
