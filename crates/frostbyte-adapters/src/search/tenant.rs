//! One tenant's in-memory index: BM25 postings and contiguous, normalised f32 vectors with an i8 copy for fast
//! scanning. Pure data structure, no I/O; [`super::MemoryIndex`] keeps it in step with the store.
//!
//! **Vector search is exact.** The i8 scan only nominates candidates. Each stored vector keeps the L2 error of its
//! quantisation (`e_x`), the query has its own (`e_q`), and for unit vectors `|x·q - x̂·q̂| ≤ e_x + (1 + e_x)·e_q`.
//! The best candidates are re-scored in f32; every other vector whose approximate score plus its bound reaches the
//! k-th exact score is re-scored too. So the answer equals the flat f32 scan's (the oracle), only faster: the i8
//! codes are stored column by column (one contiguous array per dimension), and the scan walks only the columns of
//! the query's non-zero codes, accumulating into one integer per chunk, splitting across cores for large tenants.
//!
//! **Keyword search** is Okapi BM25 (k1 1.2, b 0.75, idf `ln(1 + (N - df + 0.5) / (df + 0.5))`) over the same
//! terms as [`keyword_terms`]: maximal runs of letters and digits, lowercased. Statistics are the tenant's own.
//!
//! Removed chunks are tombstoned and compacted away once they outnumber the live ones.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use frostbyte_core::index::{Hit, MAX_KEYWORD_TERM_CHARS, SearchFilter, keyword_terms};
use frostbyte_core::search::IndexEntry;
use serde_json::Value;

use crate::index::TopK;

const K1: f64 = 1.2;
const B: f64 = 0.75;
/// Tenants with at least this many chunks scan their vectors on several threads.
const PARALLEL_FROM: usize = 32_768;
/// Compaction starts once this many tombstones exist (and they outnumber live chunks).
const COMPACT_FROM: usize = 4_096;

/// Filterable attributes a document's chunks share.
#[derive(Debug, PartialEq)]
struct Attrs {
    collection: Option<String>,
    metadata: Value,
    ingested_at: DateTime<Utc>,
}

#[derive(Debug)]
struct Slot {
    chunk_id: String,
    doc_id: Arc<str>,
    classification: Option<String>,
    attrs: Arc<Attrs>,
    /// Token count (BM25 document length).
    len: u32,
    /// `(term, tf)`: what removal takes back out of the statistics.
    terms: Vec<(u32, u32)>,
}

/// The index of one tenant at one generation of the store.
#[derive(Debug, Default)]
pub(crate) struct TenantIndex {
    /// The store generation this index reflects.
    pub(crate) generation: u64,
    /// Dimension of the contiguous vector block (the first vector's); others go to `other`.
    dim: usize,
    slots: Vec<Slot>,
    /// Live and not quarantined.
    searchable: Vec<bool>,
    /// `slots.len() * dim` unit vectors (zeros where a slot has none of `dim`).
    vectors: Vec<f32>,
    /// The i8 codes, one column per dimension (`cols[d][slot]`).
    cols: Vec<Vec<i8>>,
    /// Per slot: token count (BM25 document length), contiguous for the keyword scan.
    lens: Vec<u32>,
    /// Per slot: the i8 scale, 0 when the slot has no vector in the block.
    scale: Vec<f32>,
    /// Per slot: the L2 norm of the quantisation error.
    qerr: Vec<f32>,
    /// Unit vectors of another dimension than `dim`.
    other: HashMap<u32, Vec<f32>>,
    docs: HashMap<Arc<str>, Vec<u32>>,
    vocab: HashMap<String, u32>,
    postings: Vec<Vec<(u32, u32)>>,
    df: Vec<u32>,
    live: usize,
    dead: usize,
    total_len: u64,
}

/// The index terms of a text, as [`keyword_terms`] cuts a query (without its deduplication and term cap).
fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase().chars().take(MAX_KEYWORD_TERM_CHARS).collect())
}

/// Scales `v` to unit length; `None` for a zero or non-finite vector (never searchable, as in the oracle).
fn unit(v: &[f32]) -> Option<Vec<f32>> {
    let norm = frostbyte_core::embed::l2_norm(v);
    if norm == 0.0 || !norm.is_finite() {
        return None;
    }
    let u: Vec<f32> = v.iter().map(|x| x / norm).collect();
    u.iter().all(|x| x.is_finite()).then_some(u)
}

/// Symmetric i8 quantisation of a unit vector: the codes, the scale, and the L2 norm of the error.
fn quantise(v: &[f32]) -> (Vec<i8>, f32, f32) {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        return (vec![0; v.len()], 0.0, 0.0);
    }
    let scale = max / 127.0;
    let codes: Vec<i8> = v.iter().map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8).collect();
    let err = v.iter().zip(&codes).map(|(x, c)| (x - f32::from(*c) * scale).powi(2)).sum::<f32>().sqrt();
    (codes, scale, err)
}

/// A ranked candidate borrowing its chunk id; "greater" is worse, so a max-heap's top is the one to evict.
struct Cand<'a> {
    score: f64,
    id: &'a str,
    slot: u32,
}

impl PartialEq for Cand<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Cand<'_> {}
impl PartialOrd for Cand<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Cand<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        other.score.total_cmp(&self.score).then_with(|| self.id.cmp(other.id))
    }
}

/// An approximate-score candidate: "greater" is worse.
#[derive(PartialEq)]
struct Approx(f32, u32);
impl Eq for Approx {}
impl PartialOrd for Approx {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Approx {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0).then_with(|| self.1.cmp(&other.1))
    }
}

impl TenantIndex {
    pub(crate) fn new(generation: u64) -> Self {
        TenantIndex { generation, ..Default::default() }
    }

    /// Live chunks held.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// How many documents have chunks here.
    pub(crate) fn document_count(&self) -> usize {
        self.docs.len()
    }

    /// Removes every chunk of the document (tombstones; see [`Self::maybe_compact`]).
    pub(crate) fn remove_document(&mut self, doc_id: &str) {
        let Some(slots) = self.docs.remove(doc_id) else { return };
        for s in slots {
            let i = s as usize;
            let slot = &mut self.slots[i];
            for (term, _) in std::mem::take(&mut slot.terms) {
                self.df[term as usize] -= 1;
            }
            self.total_len -= u64::from(slot.len);
            self.searchable[i] = false;
            self.scale[i] = 0.0;
            self.other.remove(&s);
            self.live -= 1;
            self.dead += 1;
        }
    }

    /// Adds chunks (their documents' old chunks must have been removed first).
    pub(crate) fn insert_all(&mut self, entries: Vec<IndexEntry>) {
        for entry in entries {
            self.insert(entry);
        }
    }

    fn insert(&mut self, e: IndexEntry) {
        let slot_no = u32::try_from(self.slots.len()).expect("fewer than 2^32 chunks per tenant");
        let attrs = Attrs { collection: e.collection, metadata: e.metadata, ingested_at: e.ingested_at };
        let doc_slots = self.docs.entry(Arc::from(e.doc_id.as_str())).or_default();
        // Chunks of one document share their attributes.
        let shared = doc_slots.last().map(|&s| &self.slots[s as usize]).filter(|s| *s.attrs == attrs);
        let (doc_id, attrs) = match shared {
            Some(prev) => (prev.doc_id.clone(), prev.attrs.clone()),
            None => (Arc::from(e.doc_id.as_str()), Arc::new(attrs)),
        };
        doc_slots.push(slot_no);

        let mut tf: HashMap<String, u32> = HashMap::new();
        let mut len = 0u32;
        for t in tokens(&e.text) {
            *tf.entry(t).or_default() += 1;
            len += 1;
        }
        let mut terms = Vec::with_capacity(tf.len());
        for (term, n) in tf {
            let next = u32::try_from(self.vocab.len()).expect("fewer than 2^32 terms");
            let id = *self.vocab.entry(term).or_insert(next);
            if id as usize == self.postings.len() {
                self.postings.push(Vec::new());
                self.df.push(0);
            }
            self.postings[id as usize].push((slot_no, n));
            self.df[id as usize] += 1;
            terms.push((id, n));
        }
        self.total_len += u64::from(len);

        let vector = unit(&e.vector);
        if self.dim == 0
            && let Some(v) = &vector
        {
            // The block's dimension is fixed by the first vector; earlier slots (without one) get zero rows.
            self.dim = v.len();
            self.vectors.resize(self.slots.len() * self.dim, 0.0);
            self.cols = vec![vec![0; self.slots.len()]; self.dim];
        }
        let (mut scale, mut qerr) = (0.0, 0.0);
        match vector {
            Some(v) if v.len() == self.dim => {
                let (codes, s, err) = quantise(&v);
                self.vectors.extend_from_slice(&v);
                for (col, code) in self.cols.iter_mut().zip(codes) {
                    col.push(code);
                }
                (scale, qerr) = (s, err);
            }
            other => {
                self.vectors.extend(std::iter::repeat_n(0.0, self.dim));
                for col in &mut self.cols {
                    col.push(0);
                }
                if let Some(v) = other {
                    self.other.insert(slot_no, v);
                }
            }
        }
        self.scale.push(scale);
        self.qerr.push(qerr);
        self.lens.push(len);
        self.searchable.push(!e.quarantined);
        self.slots.push(Slot { chunk_id: e.chunk_id, doc_id, classification: e.classification, attrs, len, terms });
        self.live += 1;
    }

    /// Rebuilds the arrays without tombstones once they outnumber the live chunks.
    pub(crate) fn maybe_compact(&mut self) {
        if self.dead < COMPACT_FROM || self.dead <= self.live {
            return;
        }
        let generation = self.generation;
        let old = std::mem::replace(self, TenantIndex::new(generation));
        let (dim, mut other) = (old.dim, old.other);
        let live: HashSet<u32> = old.docs.values().flatten().copied().collect();
        self.dim = dim;
        self.cols = vec![Vec::new(); dim];
        self.vocab = old.vocab;
        self.df = old.df;
        self.postings = vec![Vec::new(); self.vocab.len()];
        for (i, slot) in old.slots.into_iter().enumerate() {
            if !live.contains(&(i as u32)) {
                continue;
            }
            let n = self.slots.len() as u32;
            for &(term, tf) in &slot.terms {
                self.postings[term as usize].push((n, tf));
            }
            self.docs.entry(slot.doc_id.clone()).or_default().push(n);
            self.vectors.extend_from_slice(&old.vectors[i * dim..(i + 1) * dim]);
            for (col, old_col) in self.cols.iter_mut().zip(&old.cols) {
                col.push(old_col[i]);
            }
            self.lens.push(old.lens[i]);
            self.scale.push(old.scale[i]);
            self.qerr.push(old.qerr[i]);
            self.searchable.push(old.searchable[i]);
            if let Some(v) = other.remove(&(i as u32)) {
                self.other.insert(n, v);
            }
            self.total_len += u64::from(slot.len);
            self.slots.push(slot);
            self.live += 1;
        }
    }

    /// Which slots a filter admits (`None`: every searchable slot). Attributes are checked once per document.
    fn mask(&self, filter: &SearchFilter) -> Option<Vec<bool>> {
        if *filter == SearchFilter::default() {
            return None;
        }
        let mut mask = vec![false; self.slots.len()];
        let mut admit = |slots: &[u32]| {
            let mut cache: HashMap<*const Attrs, bool> = HashMap::new();
            for &s in slots {
                let i = s as usize;
                let slot = &self.slots[i];
                if !self.searchable[i] {
                    continue;
                }
                if let Some(classes) = &filter.classification
                    && !slot.classification.as_ref().is_some_and(|c| classes.contains(c))
                {
                    continue;
                }
                let attrs_ok =
                    *cache.entry(Arc::as_ptr(&slot.attrs)).or_insert_with(|| attrs_match(&slot.attrs, filter));
                mask[i] = attrs_ok;
            }
        };
        match &filter.doc_ids {
            Some(ids) => {
                for id in ids {
                    if let Some(slots) = self.docs.get(id.as_str()) {
                        admit(slots);
                    }
                }
            }
            None => {
                for slots in self.docs.values() {
                    admit(slots);
                }
            }
        }
        Some(mask)
    }

    fn allowed(&self, mask: Option<&[bool]>, i: usize) -> bool {
        match mask {
            Some(m) => m[i],
            None => self.searchable[i],
        }
    }

    fn hits(&self, heap: BinaryHeap<Cand<'_>>) -> Vec<Hit> {
        // Ascending by `Ord`, where greater is worse: best first.
        heap.into_sorted_vec()
            .into_iter()
            .map(|c| Hit {
                chunk_id: c.id.to_owned(),
                doc_id: self.slots[c.slot as usize].doc_id.to_string(),
                score: c.score,
            })
            .collect()
    }

    /// BM25 search for chunks containing any term of `query`, best first (ties by chunk id).
    ///
    /// Exact, with MaxScore pruning: terms are taken in decreasing order of their largest possible contribution
    /// (`idf · (k1 + 1)`). Once the terms still to come could not, even together, lift an untouched chunk to the
    /// current k-th score, the remaining (common, low-idf) terms are only looked up for the chunks that can still
    /// reach it, by binary search in their postings (sorted by slot) instead of a walk over the whole list.
    pub(crate) fn keyword(&self, query: &str, filter: &SearchFilter, top_k: usize) -> Vec<Hit> {
        if top_k == 0 || self.live == 0 {
            return Vec::new();
        }
        let n = self.live as f64;
        // (term, idf, upper bound), best bound first; terms no live chunk holds drop out.
        let mut terms: Vec<(u32, f64, f64)> = keyword_terms(query)
            .iter()
            .filter_map(|t| self.vocab.get(t).copied())
            .filter(|&id| self.df[id as usize] > 0)
            .map(|id| {
                let df = f64::from(self.df[id as usize]);
                let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                (id, idf, idf * (K1 + 1.0))
            })
            .collect();
        if terms.is_empty() {
            return Vec::new();
        }
        terms.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        // rest[j]: the most the terms from j on can add to any chunk.
        let mut rest = vec![0.0f64; terms.len() + 1];
        for j in (0..terms.len()).rev() {
            rest[j] = rest[j + 1] + terms[j].2;
        }
        let mask = self.mask(filter);
        let avgdl = (self.total_len as f64 / n).max(1.0);
        let weight = |idf: f64, tf: u32, i: usize| {
            let tf = f64::from(tf);
            idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * f64::from(self.lens[i]) / avgdl))
        };
        let mut scores = vec![0.0f64; self.slots.len()];
        let mut touched: Vec<u32> = Vec::new();
        let mut j = 0;
        // Exhaustive phase: every chunk holding one of these terms is scored.
        while j < terms.len() {
            let (id, idf, _) = terms[j];
            for &(s, tf) in &self.postings[id as usize] {
                let i = s as usize;
                if !self.allowed(mask.as_deref(), i) {
                    continue;
                }
                if scores[i] == 0.0 {
                    touched.push(s);
                }
                scores[i] += weight(idf, tf, i);
            }
            j += 1;
            if j < terms.len() && touched.len() >= top_k {
                let threshold = kth_largest(&touched, &scores, top_k);
                if rest[j] < threshold {
                    break;
                }
            }
        }
        if j < terms.len() {
            // Pruned phase: an untouched chunk now stays below the k-th score, and so does a touched one whose
            // score plus everything still to come is below it. Only the others get the remaining terms.
            let threshold = kth_largest(&touched, &scores, top_k);
            let mut live: Vec<u32> =
                touched.iter().copied().filter(|&s| scores[s as usize] + rest[j] >= threshold).collect();
            live.sort_unstable();
            for &(id, idf, _) in &terms[j..] {
                let postings = &self.postings[id as usize];
                for &s in &live {
                    if let Ok(p) = postings.binary_search_by_key(&s, |&(slot, _)| slot) {
                        scores[s as usize] += weight(idf, postings[p].1, s as usize);
                    }
                }
            }
            touched = live;
        }
        let mut heap: BinaryHeap<Cand<'_>> = BinaryHeap::with_capacity(top_k + 1);
        for s in touched {
            let cand = Cand { score: scores[s as usize], id: &self.slots[s as usize].chunk_id, slot: s };
            if heap.len() < top_k {
                heap.push(cand);
            } else if let Some(worst) = heap.peek()
                && cand < *worst
            {
                heap.pop();
                heap.push(cand);
            }
        }
        self.hits(heap)
    }

    /// Exact cosine search over the searchable vectors of the query's dimension, best first (ties by chunk id).
    pub(crate) fn vector(&self, query: &[f32], filter: &SearchFilter, top_k: usize) -> Vec<Hit> {
        let Some(q) = unit(query) else { return Vec::new() };
        if top_k == 0 || self.live == 0 {
            return Vec::new();
        }
        let mask = self.mask(filter);
        let mask = mask.as_deref();
        let mut top = TopK::new(top_k);
        let exact = |v: &[f32]| -> f64 { f64::from(frostbyte_core::embed::dot(&q, v).clamp(-1.0, 1.0)) };
        let offer = |top: &mut TopK, i: usize, score: f64| {
            top.offer(Hit {
                chunk_id: self.slots[i].chunk_id.clone(),
                doc_id: self.slots[i].doc_id.to_string(),
                score,
            });
        };
        if q.len() == self.dim && !self.slots.is_empty() {
            let dim = self.dim;
            let (qq, qscale, qerr) = quantise(&q);
            let c = (top_k * 4).max(32);
            let mut approx = vec![f32::NEG_INFINITY; self.slots.len()];
            let threads = if self.slots.len() >= PARALLEL_FROM {
                std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
            } else {
                1
            };
            let part = self.slots.len().div_ceil(threads);
            // The query's non-zero codes: only their columns contribute.
            let nonzero: Vec<(usize, i16)> =
                qq.iter().enumerate().filter(|(_, q)| **q != 0).map(|(d, q)| (d, i16::from(*q))).collect();
            let scan = |start: usize, out: &mut [f32]| -> BinaryHeap<Approx> {
                let mut heap = BinaryHeap::with_capacity(c + 1);
                let mut dots = vec![0i32; out.len()];
                for &(d, q) in &nonzero {
                    let col = &self.cols[d][start..start + out.len()];
                    // |q|, |x| <= 127, so the product fits in i16; written so that it vectorises.
                    for (acc, x) in dots.iter_mut().zip(col) {
                        *acc += i32::from(i16::from(*x) * q);
                    }
                }
                for (j, a) in out.iter_mut().enumerate() {
                    let i = start + j;
                    if self.scale[i] == 0.0 || !self.allowed(mask, i) {
                        continue;
                    }
                    let s = dots[j] as f32 * qscale * self.scale[i];
                    *a = s;
                    let cand = Approx(s, i as u32);
                    if heap.len() < c {
                        heap.push(cand);
                    } else if heap.peek().is_some_and(|w| cand < *w) {
                        heap.pop();
                        heap.push(cand);
                    }
                }
                heap
            };
            let heaps: Vec<BinaryHeap<Approx>> = if threads == 1 {
                vec![scan(0, &mut approx)]
            } else {
                std::thread::scope(|scope| {
                    let handles: Vec<_> = approx
                        .chunks_mut(part)
                        .enumerate()
                        .map(|(t, out)| {
                            let scan = &scan;
                            scope.spawn(move || scan(t * part, out))
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().expect("scan thread")).collect()
                })
            };
            let mut candidates: Vec<u32> = heaps.into_iter().flat_map(|h| h.into_vec()).map(|a| a.1).collect();
            candidates.sort_by(|a, b| approx[*b as usize].total_cmp(&approx[*a as usize]));
            candidates.truncate(c);
            let full_candidates = candidates.len() >= c;
            for &s in &candidates {
                let i = s as usize;
                offer(&mut top, i, exact(&self.vectors[i * dim..(i + 1) * dim]));
                approx[i] = f32::NEG_INFINITY;
            }
            // Every vector not yet scored whose bound reaches the k-th exact score is scored too.
            if full_candidates && let Some(threshold) = top.worst_if_full() {
                for (i, &a) in approx.iter().enumerate() {
                    if a == f32::NEG_INFINITY {
                        continue;
                    }
                    let bound = self.qerr[i] + (1.0 + self.qerr[i]) * qerr + 1e-4;
                    if f64::from(a + bound) >= threshold {
                        offer(&mut top, i, exact(&self.vectors[i * dim..(i + 1) * dim]));
                    }
                }
            }
        }
        for (&s, v) in &self.other {
            let i = s as usize;
            if v.len() == q.len() && self.allowed(mask, i) {
                offer(&mut top, i, exact(v));
            }
        }
        top.into_sorted()
    }
}

/// The `k`-th largest score among `slots` (`k <= slots.len()`).
fn kth_largest(slots: &[u32], scores: &[f64], k: usize) -> f64 {
    let mut values: Vec<f64> = slots.iter().map(|&s| scores[s as usize]).collect();
    let (_, kth, _) = values.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    *kth
}

fn attrs_match(attrs: &Attrs, filter: &SearchFilter) -> bool {
    if let Some(c) = &filter.collection
        && attrs.collection.as_deref() != Some(c.as_str())
    {
        return false;
    }
    if filter.ingested_from.is_some_and(|from| attrs.ingested_at < from)
        || filter.ingested_to.is_some_and(|to| attrs.ingested_at > to)
    {
        return false;
    }
    if let Some(wanted) = &filter.metadata {
        let Some(have) = attrs.metadata.as_object() else { return false };
        if !wanted.iter().all(|(k, v)| have.get(k) == Some(v)) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(id: &str, doc: &str, text: &str, vector: Vec<f32>) -> IndexEntry {
        IndexEntry {
            chunk_id: id.into(),
            doc_id: doc.into(),
            text: text.into(),
            quarantined: false,
            classification: Some("public".into()),
            collection: None,
            metadata: json!({}),
            ingested_at: frostbyte_core::now(),
            embed_model: "m".into(),
            vector,
        }
    }

    /// A deterministic pseudo-random vector.
    fn rand_vec(seed: u64, dim: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..dim)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x % 2000) as f32 / 1000.0) - 1.0
            })
            .collect()
    }

    fn flat(entries: &[IndexEntry], q: &[f32], k: usize) -> Vec<String> {
        let mut scored: Vec<(f32, &str)> =
            entries.iter().map(|e| (frostbyte_core::embed::cosine(&e.vector, q), e.chunk_id.as_str())).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        scored.into_iter().take(k).map(|(_, id)| id.to_owned()).collect()
    }

    #[test]
    fn quantised_scan_returns_the_exact_top_k() {
        let entries: Vec<IndexEntry> =
            (0..3_000).map(|i| entry(&format!("c{i:05}"), &format!("d{}", i / 3), "x", rand_vec(i, 64))).collect();
        let mut idx = TenantIndex::new(1);
        idx.insert_all(entries.clone());
        for seed in 10_000..10_020 {
            let q = rand_vec(seed, 64);
            let got: Vec<String> =
                idx.vector(&q, &SearchFilter::default(), 10).into_iter().map(|h| h.chunk_id).collect();
            assert_eq!(got, flat(&entries, &q, 10), "query {seed}");
        }
    }

    #[test]
    fn removal_and_compaction_keep_results_right() {
        let mut idx = TenantIndex::new(1);
        let entries: Vec<IndexEntry> =
            (0..10_000).map(|i| entry(&format!("c{i:05}"), &format!("d{i}"), "alpha beta", rand_vec(i, 16))).collect();
        idx.insert_all(entries.clone());
        for i in 0..6_000 {
            idx.remove_document(&format!("d{i}"));
        }
        idx.maybe_compact();
        assert_eq!(idx.len(), 4_000);
        assert_eq!(idx.slots.len(), 4_000, "tombstones compacted");
        let q = rand_vec(99, 16);
        let got: Vec<String> = idx.vector(&q, &SearchFilter::default(), 5).into_iter().map(|h| h.chunk_id).collect();
        assert_eq!(got, flat(&entries[6_000..], &q, 5));
        assert_eq!(idx.keyword("alpha", &SearchFilter::default(), 50_000).len(), 4_000);
    }

    #[test]
    fn chunks_without_vectors_or_of_another_dimension_stay_aligned() {
        let mut idx = TenantIndex::new(1);
        idx.insert_all(vec![
            entry("none", "d1", "no vector", vec![]),
            entry("zero", "d1", "zero vector", vec![0.0; 4]),
            entry("a", "d2", "x", vec![1.0, 0.0, 0.0, 0.0]),
            entry("wide", "d3", "x", vec![0.0, 1.0, 0.0, 0.0, 0.0]),
            entry("b", "d4", "x", vec![0.0, 1.0, 0.0, 0.0]),
        ]);
        let hits = idx.vector(&[0.1, 1.0, 0.0, 0.0], &SearchFilter::default(), 10);
        assert_eq!(hits.iter().map(|h| h.chunk_id.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        let wide = idx.vector(&[0.0, 1.0, 0.0, 0.0, 0.0], &SearchFilter::default(), 10);
        assert_eq!(wide.iter().map(|h| h.chunk_id.as_str()).collect::<Vec<_>>(), ["wide"]);
        assert!((wide[0].score - 1.0).abs() < 1e-6);
    }

    /// Plain BM25 over every chunk with no pruning: the oracle for [`TenantIndex::keyword`].
    fn flat_bm25(entries: &[IndexEntry], query: &str, k: usize) -> Vec<(String, f64)> {
        let docs: Vec<Vec<String>> = entries.iter().map(|e| tokens(&e.text).collect()).collect();
        let n = docs.len() as f64;
        let avgdl = docs.iter().map(Vec::len).sum::<usize>() as f64 / n;
        let terms = keyword_terms(query);
        let dfs: Vec<f64> = terms.iter().map(|t| docs.iter().filter(|d| d.contains(t)).count() as f64).collect();
        let mut scored: Vec<(String, f64)> = Vec::new();
        for (e, doc) in entries.iter().zip(&docs) {
            let mut score = 0.0;
            for (term, &df) in terms.iter().zip(&dfs) {
                let tf = doc.iter().filter(|t| *t == term).count() as f64;
                if tf > 0.0 {
                    let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                    score += idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * doc.len() as f64 / avgdl));
                }
            }
            if score > 0.0 {
                scored.push((e.chunk_id.clone(), score));
            }
        }
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        scored.truncate(k);
        scored
    }

    #[test]
    fn pruned_bm25_returns_what_an_exhaustive_scan_returns() {
        // Zipf-like word frequencies, so that queries mix very common and rare terms as real questions do.
        let words: Vec<String> = (0..400).map(|w| format!("w{w}")).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let pick = |next: &mut dyn FnMut() -> u64| {
            let r = (next() % 1_000_000) as f64 / 1_000_000.0;
            &words[((r * r * r) * 400.0) as usize]
        };
        let entries: Vec<IndexEntry> = (0..2_000)
            .map(|i| {
                let len = 5 + (next() % 40) as usize;
                let text: Vec<&str> = (0..len).map(|_| pick(&mut next).as_str()).collect();
                entry(&format!("c{i:05}"), &format!("d{i}"), &text.join(" "), vec![1.0])
            })
            .collect();
        let mut idx = TenantIndex::new(1);
        idx.insert_all(entries.clone());
        for q in 0..40 {
            let terms = 1 + q % 8;
            let query: Vec<&str> = (0..terms).map(|_| pick(&mut next).as_str()).collect();
            let query = query.join(" ");
            let all = flat_bm25(&entries, &query, usize::MAX);
            for k in [1, 10, 50] {
                let got = idx.keyword(&query, &SearchFilter::default(), k);
                let want = &all[..k.min(all.len())];
                assert_eq!(got.len(), want.len(), "{query:?} k={k}");
                for (g, (id, score)) in got.iter().zip(want) {
                    assert!(
                        (g.score - score).abs() < 1e-9,
                        "{query:?} k={k}: {} {} vs {id} {score}",
                        g.chunk_id,
                        g.score
                    );
                    assert_eq!(&g.chunk_id, id, "{query:?} k={k}");
                }
            }
        }
    }

    #[test]
    fn bm25_prefers_rare_terms_and_shorter_chunks() {
        let mut idx = TenantIndex::new(1);
        idx.insert_all(vec![
            entry("a", "d1", "the cat sat on the mat", vec![1.0, 0.0]),
            entry("b", "d2", "the dog sat on the log and the dog barked at the other dog", vec![0.0, 1.0]),
            entry("c", "d3", "the bird", vec![1.0, 1.0]),
        ]);
        let hits = idx.keyword("dog THE", &SearchFilter::default(), 10);
        assert_eq!(hits[0].chunk_id, "b");
        assert_eq!(hits.len(), 3);
        let hits = idx.keyword("sat", &SearchFilter::default(), 10);
        assert_eq!(hits.iter().map(|h| h.chunk_id.as_str()).collect::<Vec<_>>(), ["a", "b"], "shorter first");
        assert!(idx.keyword("zebra", &SearchFilter::default(), 10).is_empty());
    }

    #[test]
    fn filters_apply_before_the_cut_and_quarantine_never_shows() {
        let mut idx = TenantIndex::new(1);
        let mut entries: Vec<IndexEntry> =
            (0..100).map(|i| entry(&format!("c{i:03}"), &format!("d{i}"), "word", rand_vec(i, 8))).collect();
        for e in entries.iter_mut().skip(50) {
            e.metadata = json!({"team": "ops", "n": 1});
            e.collection = Some("faq".into());
        }
        entries[99].quarantined = true;
        idx.insert_all(entries);
        let filter = SearchFilter {
            metadata: Some(json!({"team": "ops"}).as_object().unwrap().clone()),
            collection: Some("faq".into()),
            ..Default::default()
        };
        let hits = idx.vector(&rand_vec(1, 8), &filter, 10);
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| h.chunk_id.as_str() >= "c050" && h.chunk_id != "c099"));
        assert_eq!(idx.keyword("word", &filter, 100).len(), 49);
        let by_doc =
            SearchFilter { doc_ids: Some(vec!["d3".into(), "d99".into(), "nope".into()]), ..Default::default() };
        let hits = idx.keyword("word", &by_doc, 10);
        assert_eq!(hits.iter().map(|h| h.doc_id.as_str()).collect::<Vec<_>>(), ["d3"]);
        let none = SearchFilter { doc_ids: Some(vec![]), ..Default::default() };
        assert!(idx.vector(&rand_vec(1, 8), &none, 10).is_empty());
    }
}
