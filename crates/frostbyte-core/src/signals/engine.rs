//! The windowing engine: per-entity, event-time windows with watermarks.
//!
//! **Time.** Each entity has a watermark `W = max event time seen − allowed_lateness`. A window `[end − size,
//! end)` is emitted once `W ≥ end`. An event with `time ≥ W` is on time: it can only fall into windows not yet
//! emitted, so it is placed in its own windows whatever order it arrived in. An event with `time < W` is late and
//! the feature set's policy decides (`drop`, `hold` or `correct`, see [`LatePolicy`]).
//!
//! **Determinism.** Events are kept sorted by `(time, sequence, content hash)` until every window that may need
//! them is emitted, and every value is computed from that sorted slice when its window closes; the EWMA is folded
//! pane by pane in the same order. So the rows do not depend on arrival order within the lateness bound (a
//! property test checks it), and a backfill replaying stored events yields the rows the stream produced.
//!
//! **Rows.** All windows ending at the same instant form one [`FeatureRow`] keyed by `(entity_id, window_end)`,
//! with `values = {window: {aggregate: value}}`; EWMA windows give `{value}`, z-score windows `{z, mean,
//! stddev, last, n}`. Windows without events emit nothing. A correction re-emits the whole row with the next
//! `revision`.
//!
//! **Hot path.** Pointers are parsed once per feature set; an event costs its pointer lookups, filter checks
//! and an insert into a vector (a push when in order), with no allocation; work proportional to a window's
//! events happens once per window, when it closes.
//!
//! [`EntityState`] is plain data (serde), checkpointed by the caller after each batch and restored on restart.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use super::definition::{AggOp, FeatureSetDef, FilterDef, FilterOp, LatePolicy, Pointer, WindowKind};

/// A compiled filter.
#[derive(Debug, Clone)]
struct CFilter {
    ptr: Pointer,
    op: FilterOp,
    value: Option<Value>,
    num: f64,
}

impl CFilter {
    fn compile(f: &FilterDef) -> CFilter {
        CFilter {
            ptr: Pointer::parse(&f.field).expect("validated pointer"),
            op: f.op,
            num: f.value.as_ref().and_then(Value::as_f64).unwrap_or(f64::NAN),
            value: f.value.clone(),
        }
    }

    #[inline]
    fn matches(&self, payload: &Value) -> bool {
        let got = self.ptr.resolve(payload);
        match self.op {
            FilterOp::Exists => got.is_some_and(|v| !v.is_null()),
            FilterOp::Eq => got.is_some_and(|v| json_eq(v, self.value.as_ref())),
            FilterOp::Ne => !got.is_some_and(|v| json_eq(v, self.value.as_ref())),
            op => {
                let Some(x) = got.and_then(Value::as_f64) else { return false };
                match op {
                    FilterOp::Gt => x > self.num,
                    FilterOp::Gte => x >= self.num,
                    FilterOp::Lt => x < self.num,
                    _ => x <= self.num,
                }
            }
        }
    }
}

fn json_eq(a: &Value, b: Option<&Value>) -> bool {
    match (a, b) {
        (Value::Number(x), Some(Value::Number(y))) => x.as_f64() == y.as_f64(),
        (a, Some(b)) => a == b,
        _ => false,
    }
}

#[derive(Debug, Clone)]
struct CAgg {
    name: String,
    op: AggOp,
    /// Numeric slot for numeric ops, key slot for `distinct_count` and `count` with a field.
    slot: Option<usize>,
}

#[derive(Debug, Clone)]
enum CKind {
    Agg(Vec<CAgg>),
    Ewma { slot: usize, half_life: f64 },
    Zscore { slot: usize },
}

#[derive(Debug, Clone)]
struct CWindow {
    name: String,
    size: i64,
    step: i64,
    filters: Vec<CFilter>,
    kind: CKind,
}

/// A feature set ready to run: durations in microseconds, pointers parsed, fields assigned to slots.
#[derive(Debug, Clone)]
pub struct CompiledFeatureSet {
    pub name: String,
    pub version: i32,
    pub late_policy: LatePolicy,
    lateness: i64,
    horizon: i64,
    max_size: i64,
    num: Vec<Pointer>,
    keys: Vec<Pointer>,
    filters: Vec<CFilter>,
    windows: Vec<CWindow>,
}

fn slot(list: &mut Vec<(String, Pointer)>, field: &str) -> usize {
    if let Some(i) = list.iter().position(|(f, _)| f == field) {
        return i;
    }
    list.push((field.to_owned(), Pointer::parse(field).expect("validated pointer")));
    list.len() - 1
}

impl CompiledFeatureSet {
    /// Compiles a definition that passed [`FeatureSetDef::validate`].
    pub fn compile(name: &str, version: i32, def: &FeatureSetDef) -> CompiledFeatureSet {
        let mut num = Vec::new();
        let mut keys = Vec::new();
        let mut windows = Vec::new();
        for w in &def.windows {
            let span = |s: Option<super::duration::Span>| s.map(|s| s.micros()).unwrap_or(0).max(1);
            let (size, step, kind) = match w.kind {
                WindowKind::Tumbling | WindowKind::Sliding => {
                    let size = span(w.size);
                    let step = if w.kind == WindowKind::Sliding { span(w.slide) } else { size };
                    let aggs = w
                        .aggregates
                        .iter()
                        .map(|a| CAgg {
                            name: a.name.clone(),
                            op: a.op,
                            slot: a
                                .field
                                .as_deref()
                                .map(|f| if a.op.numeric() { slot(&mut num, f) } else { slot(&mut keys, f) }),
                        })
                        .collect();
                    (size, step, CKind::Agg(aggs))
                }
                WindowKind::Ewma => {
                    let every = span(w.every);
                    let s = slot(&mut num, w.field.as_deref().unwrap_or(""));
                    (every, every, CKind::Ewma { slot: s, half_life: span(w.half_life) as f64 })
                }
                WindowKind::Zscore => {
                    let s = slot(&mut num, w.field.as_deref().unwrap_or(""));
                    (span(w.size), span(w.every), CKind::Zscore { slot: s })
                }
            };
            windows.push(CWindow {
                name: w.name.clone(),
                size,
                step,
                filters: w.filters.iter().map(CFilter::compile).collect(),
                kind,
            });
        }
        CompiledFeatureSet {
            name: name.to_owned(),
            version,
            late_policy: def.late_policy,
            lateness: def.allowed_lateness.micros(),
            horizon: def.correction_horizon().micros(),
            max_size: windows.iter().map(|w| w.size).max().unwrap_or(0),
            num: num.into_iter().map(|(_, p)| p).collect(),
            keys: keys.into_iter().map(|(_, p)| p).collect(),
            filters: def.filters.iter().map(CFilter::compile).collect(),
            windows,
        }
    }

    /// Allowed lateness in microseconds.
    pub fn lateness_micros(&self) -> i64 {
        self.lateness
    }
}

/// One event as the engine sees it.
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'a> {
    /// Microseconds since the Unix epoch.
    pub time: i64,
    pub sequence: Option<i64>,
    /// Tie-breaker for equal `(time, sequence)`: [`super::event::hash_tie`] of the content hash.
    pub tie: u64,
    pub payload: &'a Value,
}

/// What the engine did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// On time: placed in its windows.
    Applied,
    /// Matched no window's filters (it still moves the watermark).
    Filtered,
    /// Late and discarded (`drop`, or `correct` beyond the correction horizon).
    LateDropped,
    /// Late and counted in the earliest open window (`hold`).
    LateHeld,
    /// Late and placed in its own windows, whose rows were re-emitted (`correct`).
    LateCorrected,
}

/// A feature row: every window of one entity ending at `window_end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureRow {
    pub feature_set: String,
    pub version: i32,
    pub entity_id: String,
    /// Microseconds since the Unix epoch.
    pub window_end: i64,
    /// 0 when first emitted; each correction adds one.
    pub revision: u32,
    /// `{window: {aggregate: value}}`.
    pub values: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Rec {
    t: i64,
    seq: i64,
    tie: u64,
    mask: u64,
}

impl Rec {
    fn key(&self) -> (i64, i64, u64) {
        (self.t, self.seq, self.tie)
    }
}

/// EWMA decayed sums as of a pane end.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Snap {
    end: i64,
    #[serde(with = "f64_bits")]
    s: f64,
    #[serde(with = "f64_bits")]
    w: f64,
}

const EMPTY_SNAP: Snap = Snap { end: i64::MIN, s: 0.0, w: 0.0 };

/// Per EWMA window: the sums at each pane end still within reach of a correction, and the last one dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EwmaHistory {
    floor: Snap,
    snaps: VecDeque<Snap>,
}

impl Default for EwmaHistory {
    fn default() -> Self {
        EwmaHistory { floor: EMPTY_SNAP, snaps: VecDeque::new() }
    }
}

impl EwmaHistory {
    fn base_before(&self, end: i64) -> Snap {
        self.snaps.iter().rev().find(|s| s.end < end).copied().unwrap_or(self.floor)
    }

    fn at(&self, end: i64) -> Option<Snap> {
        self.snaps.iter().rev().find(|s| s.end == end).copied()
    }
}

/// One entity's state in one feature set: the watermark, the events still needed, EWMA sums and revisions of
/// corrected rows. Serialisable for checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntityState {
    max_time: Option<i64>,
    recs: Vec<Rec>,
    #[serde(with = "f64_bits::vec")]
    vals: Vec<f64>,
    keys: Vec<u64>,
    ewma: Vec<EwmaHistory>,
    revisions: BTreeMap<i64, u32>,
}

/// Floats in checkpoints as their exact bit patterns: a decimal round trip through JSON may move the last bit,
/// and a restored checkpoint must continue exactly.
mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(f64::from_bits(u64::deserialize(d)?))
    }

    pub mod vec {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|x| x.to_bits()))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
            Ok(Vec::<u64>::deserialize(d)?.into_iter().map(f64::from_bits).collect())
        }
    }
}

impl EntityState {
    /// The watermark in microseconds, once the entity has seen an event.
    pub fn watermark(&self, fs: &CompiledFeatureSet) -> Option<i64> {
        self.max_time.map(|m| m.saturating_sub(fs.lateness))
    }

    /// The latest event time seen.
    pub fn max_event_time(&self) -> Option<i64> {
        self.max_time
    }

    /// Events held in memory (a measure of the state's size).
    pub fn buffered_events(&self) -> usize {
        self.recs.len()
    }

    /// Heap bytes this state holds (capacities, not just lengths), for memory-per-entity figures.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.recs.capacity() * size_of::<Rec>()
            + self.vals.capacity() * size_of::<f64>()
            + self.keys.capacity() * size_of::<u64>()
            + self.ewma.capacity() * size_of::<EwmaHistory>()
            + self.ewma.iter().map(|h| h.snaps.capacity() * size_of::<Snap>()).sum::<usize>()
            + self.revisions.len() * (size_of::<(i64, u32)>() + 16)
    }
}

/// A stable 64-bit FNV-1a hash (the same across processes and releases, unlike std's hasher).
pub(crate) fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn key_hash(v: &Value) -> u64 {
    let h = match v {
        Value::String(s) => fnv64(&[b"s", s.as_bytes()]),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => fnv64(&[b"n", &(f as i64).to_le_bytes()]),
            Some(f) => fnv64(&[b"f", &f.to_bits().to_le_bytes()]),
            None => fnv64(&[b"n", n.to_string().as_bytes()]),
        },
        Value::Bool(b) => fnv64(&[b"b", &[u8::from(*b)]]),
        Value::Null => fnv64(&[b"z"]),
        other => fnv64(&[b"j", crate::audit::canonical_json(other).as_bytes()]),
    };
    // 0 marks a missing value.
    h.max(1)
}

fn num(x: f64) -> Value {
    Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null)
}

fn first_end_after(x: i64, step: i64) -> i64 {
    x.div_euclid(step).saturating_mul(step).saturating_add(step)
}

/// Runs one feature set. Holds scratch buffers, so keep one per thread and reuse it.
#[derive(Debug, Clone)]
pub struct Engine {
    fs: Arc<CompiledFeatureSet>,
    scratch_vals: Vec<f64>,
    scratch_keys: Vec<u64>,
    scratch_ends: Vec<i64>,
    scratch_set: Vec<u64>,
}

impl Engine {
    pub fn new(fs: Arc<CompiledFeatureSet>) -> Engine {
        Engine {
            fs,
            scratch_vals: Vec::new(),
            scratch_keys: Vec::new(),
            scratch_ends: Vec::new(),
            scratch_set: Vec::new(),
        }
    }

    pub fn feature_set(&self) -> &Arc<CompiledFeatureSet> {
        &self.fs
    }

    /// Applies one event to its entity's state, pushing any rows that closed (or were corrected) onto `out`.
    pub fn process(
        &mut self,
        state: &mut EntityState,
        entity_id: &str,
        ev: EventRef<'_>,
        out: &mut Vec<FeatureRow>,
    ) -> Outcome {
        let fs = Arc::clone(&self.fs);
        if state.ewma.len() != fs.windows.len() {
            state.ewma.resize_with(fs.windows.len(), EwmaHistory::default);
        }
        let mut mask = 0u64;
        if fs.filters.iter().all(|f| f.matches(ev.payload)) {
            for (i, w) in fs.windows.iter().enumerate() {
                if w.filters.iter().all(|f| f.matches(ev.payload)) {
                    mask |= 1 << i;
                }
            }
        }
        let wm = state.watermark(&fs);
        let mut t = ev.time;
        let mut outcome = if mask == 0 { Outcome::Filtered } else { Outcome::Applied };
        let mut correct = false;
        if let Some(w) = wm
            && t < w
        {
            match fs.late_policy {
                LatePolicy::Drop => return Outcome::LateDropped,
                LatePolicy::Hold => {
                    t = w;
                    outcome = Outcome::LateHeld;
                }
                LatePolicy::Correct => {
                    if t < w.saturating_sub(fs.horizon) {
                        return Outcome::LateDropped;
                    }
                    outcome = Outcome::LateCorrected;
                    correct = true;
                }
            }
        }
        if mask != 0 {
            self.insert(state, t, ev, mask);
            if correct {
                self.correct(state, entity_id, t, mask, wm.unwrap_or(i64::MIN), out);
            }
        }
        if state.max_time.is_none_or(|m| ev.time > m) {
            state.max_time = Some(ev.time);
            let new_wm = ev.time.saturating_sub(fs.lateness);
            if let Some(old) = wm
                && new_wm > old
            {
                self.emit_range(state, entity_id, old, new_wm, out);
            }
            self.evict(state, new_wm);
        }
        outcome
    }

    fn insert(&mut self, state: &mut EntityState, t: i64, ev: EventRef<'_>, mask: u64) {
        let fs = &self.fs;
        self.scratch_vals.clear();
        for p in &fs.num {
            self.scratch_vals.push(p.resolve(ev.payload).and_then(Value::as_f64).unwrap_or(f64::NAN));
        }
        self.scratch_keys.clear();
        for p in &fs.keys {
            self.scratch_keys.push(p.resolve(ev.payload).filter(|v| !v.is_null()).map(key_hash).unwrap_or(0));
        }
        let rec = Rec { t, seq: ev.sequence.unwrap_or(i64::MIN), tie: ev.tie, mask };
        let (nv, nk) = (fs.num.len(), fs.keys.len());
        if state.recs.last().is_none_or(|last| last.key() <= rec.key()) {
            state.recs.push(rec);
            state.vals.extend_from_slice(&self.scratch_vals);
            state.keys.extend_from_slice(&self.scratch_keys);
        } else {
            let i = state.recs.partition_point(|r| r.key() <= rec.key());
            state.recs.insert(i, rec);
            state.vals.splice(i * nv..i * nv, self.scratch_vals.iter().copied());
            state.keys.splice(i * nk..i * nk, self.scratch_keys.iter().copied());
        }
    }

    /// Ends on window `wi`'s grid in `(lo, hi]` whose window holds at least one of its events.
    fn collect_ends(&mut self, state: &EntityState, wi: usize, lo: i64, hi: i64) {
        let w = &self.fs.windows[wi];
        let bit = 1u64 << wi;
        let mut e = first_end_after(lo, w.step);
        while e <= hi {
            let a = state.recs.partition_point(|r| r.t < e - w.size);
            let Some(j) = (a..state.recs.len()).find(|&j| state.recs[j].mask & bit != 0) else { break };
            let tj = state.recs[j].t;
            if tj >= e {
                e = first_end_after(tj, w.step);
                continue;
            }
            self.scratch_ends.push(e);
            e = e.saturating_add(w.step);
        }
    }

    fn emit_range(&mut self, state: &mut EntityState, entity: &str, lo: i64, hi: i64, out: &mut Vec<FeatureRow>) {
        // Quick exit: no window of any kind ends in (lo, hi].
        if self.fs.windows.iter().all(|w| first_end_after(lo, w.step) > hi) {
            return;
        }
        self.scratch_ends.clear();
        for wi in 0..self.fs.windows.len() {
            self.collect_ends(state, wi, lo, hi);
        }
        let mut ends = std::mem::take(&mut self.scratch_ends);
        ends.sort_unstable();
        ends.dedup();
        for &e in &ends {
            for wi in 0..self.fs.windows.len() {
                if let CKind::Ewma { slot, half_life } = self.fs.windows[wi].kind
                    && e.rem_euclid(self.fs.windows[wi].step) == 0
                {
                    let base = state.ewma[wi].snaps.back().copied().unwrap_or(state.ewma[wi].floor);
                    if base.end < e
                        && let Some(snap) = self.fold(state, wi, slot, half_life, base, e)
                    {
                        state.ewma[wi].snaps.push_back(snap);
                    }
                }
            }
            if let Some(values) = self.row_values(state, e) {
                let revision = state.revisions.get(&e).copied().unwrap_or(0);
                out.push(self.row(entity, e, revision, values));
            }
        }
        self.scratch_ends = ends;
    }

    /// Folds the events of pane `[end − every, end)` into `base`; `None` if the pane has no value.
    fn fold(&self, state: &EntityState, wi: usize, slot: usize, half_life: f64, base: Snap, end: i64) -> Option<Snap> {
        let w = &self.fs.windows[wi];
        let bit = 1u64 << wi;
        let nv = self.fs.num.len();
        let a = state.recs.partition_point(|r| r.t < end - w.size);
        let b = state.recs.partition_point(|r| r.t < end);
        let decay = |dt: i64| (-(dt as f64) / half_life).exp2();
        let (mut s, mut wsum, mut any) = if base.end == i64::MIN {
            (0.0, 0.0, false)
        } else {
            (base.s * decay(end - base.end), base.w * decay(end - base.end), false)
        };
        for j in a..b {
            if state.recs[j].mask & bit == 0 {
                continue;
            }
            let x = state.vals[j * nv + slot];
            if x.is_nan() {
                continue;
            }
            let d = decay(end - state.recs[j].t);
            s += x * d;
            wsum += d;
            any = true;
        }
        any.then_some(Snap { end, s, w: wsum })
    }

    fn row(&self, entity: &str, end: i64, revision: u32, values: Map<String, Value>) -> FeatureRow {
        FeatureRow {
            feature_set: self.fs.name.clone(),
            version: self.fs.version,
            entity_id: entity.to_owned(),
            window_end: end,
            revision,
            values: Value::Object(values),
        }
    }

    /// Every window's values at `end`, from the buffered events (and EWMA history); `None` if no window has any.
    fn row_values(&mut self, state: &EntityState, end: i64) -> Option<Map<String, Value>> {
        let fs = Arc::clone(&self.fs);
        let (nv, nk) = (fs.num.len(), fs.keys.len());
        let mut row = Map::new();
        for (wi, w) in fs.windows.iter().enumerate() {
            if end.rem_euclid(w.step) != 0 {
                continue;
            }
            let bit = 1u64 << wi;
            let a = state.recs.partition_point(|r| r.t < end - w.size);
            let b = state.recs.partition_point(|r| r.t < end);
            let idx = || (a..b).filter(move |&j| state.recs[j].mask & bit != 0);
            match &w.kind {
                CKind::Ewma { .. } => {
                    if let Some(s) = state.ewma[wi].at(end) {
                        let mut m = Map::new();
                        m.insert("value".into(), num(s.s / s.w));
                        row.insert(w.name.clone(), Value::Object(m));
                    }
                }
                CKind::Zscore { slot } => {
                    let xs = || idx().map(|j| state.vals[j * nv + slot]).filter(|x| !x.is_nan());
                    let n = xs().count();
                    if n == 0 {
                        continue;
                    }
                    let mean = xs().sum::<f64>() / n as f64;
                    let sd = (xs().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64).sqrt();
                    let last = xs().next_back().unwrap_or(f64::NAN);
                    let z = if sd > 0.0 { (last - mean) / sd } else { 0.0 };
                    let mut m = Map::new();
                    m.insert("z".into(), num(z));
                    m.insert("mean".into(), num(mean));
                    m.insert("stddev".into(), num(sd));
                    m.insert("last".into(), num(last));
                    m.insert("n".into(), Value::from(n as u64));
                    row.insert(w.name.clone(), Value::Object(m));
                }
                CKind::Agg(aggs) => {
                    let events = idx().count();
                    if events == 0 {
                        continue;
                    }
                    let mut m = Map::new();
                    for agg in aggs {
                        let v = match (agg.op, agg.slot) {
                            (AggOp::Count, None) => Value::from(events as u64),
                            (AggOp::Count, Some(k)) => {
                                Value::from(idx().filter(|&j| state.keys[j * nk + k] != 0).count() as u64)
                            }
                            (AggOp::DistinctCount, Some(k)) => {
                                self.scratch_set.clear();
                                self.scratch_set.extend(idx().map(|j| state.keys[j * nk + k]).filter(|h| *h != 0));
                                self.scratch_set.sort_unstable();
                                self.scratch_set.dedup();
                                Value::from(self.scratch_set.len() as u64)
                            }
                            (op, Some(s)) => {
                                let xs = || idx().map(|j| state.vals[j * nv + s]).filter(|x| !x.is_nan());
                                let n = xs().count();
                                if n == 0 {
                                    Value::Null
                                } else {
                                    match op {
                                        AggOp::Sum => num(xs().sum()),
                                        AggOp::Mean => num(xs().sum::<f64>() / n as f64),
                                        AggOp::Min => num(xs().fold(f64::INFINITY, f64::min)),
                                        AggOp::Max => num(xs().fold(f64::NEG_INFINITY, f64::max)),
                                        AggOp::Stddev => {
                                            let mean = xs().sum::<f64>() / n as f64;
                                            num((xs().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64).sqrt())
                                        }
                                        _ => num(xs().next_back().unwrap_or(f64::NAN)),
                                    }
                                }
                            }
                            (_, None) => Value::Null,
                        };
                        m.insert(agg.name.clone(), v);
                    }
                    row.insert(w.name.clone(), Value::Object(m));
                }
            }
        }
        (!row.is_empty()).then_some(row)
    }

    /// Re-emits every already-emitted row a late event at `t` changes, with the next revision.
    fn correct(
        &mut self,
        state: &mut EntityState,
        entity: &str,
        t: i64,
        mask: u64,
        wm: i64,
        out: &mut Vec<FeatureRow>,
    ) {
        let fs = Arc::clone(&self.fs);
        let mut ends = std::mem::take(&mut self.scratch_ends);
        ends.clear();
        for (wi, w) in fs.windows.iter().enumerate() {
            if mask & (1 << wi) == 0 {
                continue;
            }
            match w.kind {
                CKind::Ewma { slot, half_life } => {
                    let first = first_end_after(t, w.step);
                    if first > wm {
                        continue;
                    }
                    let hist = &mut state.ewma[wi];
                    let mut base = hist.base_before(first);
                    hist.snaps.retain(|s| s.end < first);
                    // Refold every non-empty pane from the late event's pane to the watermark.
                    let mut e = first;
                    while e <= wm {
                        let a = state.recs.partition_point(|r| r.t < e - w.size);
                        let Some(j) = (a..state.recs.len()).find(|&j| state.recs[j].mask & (1 << wi) != 0) else {
                            break;
                        };
                        let tj = state.recs[j].t;
                        if tj >= e {
                            e = first_end_after(tj, w.step);
                            continue;
                        }
                        if let Some(snap) = self.fold(state, wi, slot, half_life, base, e) {
                            state.ewma[wi].snaps.push_back(snap);
                            base = snap;
                            ends.push(e);
                        }
                        e = e.saturating_add(w.step);
                    }
                }
                _ => {
                    let mut e = first_end_after(t, w.step);
                    while e <= wm && e <= t.saturating_add(w.size) {
                        ends.push(e);
                        e = e.saturating_add(w.step);
                    }
                }
            }
        }
        ends.sort_unstable();
        ends.dedup();
        for &e in &ends {
            if let Some(values) = self.row_values(state, e) {
                let rev = state.revisions.entry(e).or_insert(0);
                *rev += 1;
                let rev = *rev;
                out.push(self.row(entity, e, rev, values));
            }
        }
        self.scratch_ends = ends;
    }

    /// Drops events and history no future window or correction can need.
    fn evict(&self, state: &mut EntityState, wm: i64) {
        let fs = &self.fs;
        let cutoff = wm.saturating_sub(fs.max_size).saturating_sub(fs.horizon);
        let n = state.recs.partition_point(|r| r.t < cutoff);
        if n > 0 {
            state.recs.drain(..n);
            state.vals.drain(..n * fs.num.len());
            state.keys.drain(..n * fs.keys.len());
        }
        for h in &mut state.ewma {
            while h.snaps.len() > 1 && h.snaps.front().is_some_and(|s| s.end < cutoff) {
                h.floor = h.snaps.pop_front().expect("non-empty");
            }
        }
        if state.revisions.first_key_value().is_some_and(|(e, _)| *e < cutoff) {
            state.revisions = state.revisions.split_off(&cutoff);
        }
    }
}
