//! Search, the use-case behind `POST /api/v1/query/{tenant}/search` and `frostbyte search`: validates a request
//! against the tenant's config, runs a keyword, vector or hybrid (reciprocal rank fusion) search on the chunk
//! index with its filters applied inside the search, attaches each hit's provenance, and audits
//! `RETRIEVAL_EXECUTED` with ids and counts only (never the query text).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::NewAuditEvent;
use crate::embed::{EmbedError, Embedder};
use crate::error::StoreError;
use crate::ids::TenantId;
use crate::index::{ChunkIndex, Hit, IndexedChunk, SearchFilter, rrf_fuse};
use crate::ports::MetadataStore;
use crate::tenant::{FieldViolation, TenantConfig};

/// The longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 10_000;
/// The most document ids one filter may list.
pub const MAX_FILTER_DOC_IDS: usize = 1_000;
/// The most classifications or metadata keys one filter may list.
pub const MAX_FILTER_VALUES: usize = 100;

/// How the chunks are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Cosine similarity of the query's embedding.
    Vector,
    /// BM25 over the chunk text.
    Keyword,
    /// Both, combined by weighted reciprocal rank fusion.
    Hybrid,
}

impl SearchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Vector => "vector",
            SearchMode::Keyword => "keyword",
            SearchMode::Hybrid => "hybrid",
        }
    }

    pub fn parse(s: &str) -> Option<SearchMode> {
        match s {
            "vector" => Some(SearchMode::Vector),
            "keyword" => Some(SearchMode::Keyword),
            "hybrid" => Some(SearchMode::Hybrid),
            _ => None,
        }
    }
}

/// How hybrid search fuses its two lists (config `[search]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusionSettings {
    /// The `k` of reciprocal rank fusion: larger flattens the advantage of the top ranks.
    pub rrf_k: f64,
    pub keyword_weight: f64,
    pub vector_weight: f64,
    /// Each list is this deep (or `top_k`, if larger) before fusion.
    pub candidates: usize,
}

impl Default for FusionSettings {
    fn default() -> Self {
        FusionSettings { rrf_k: 60.0, keyword_weight: 1.0, vector_weight: 1.0, candidates: 50 }
    }
}

/// A validated search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    pub text: String,
    pub mode: SearchMode,
    pub top_k: usize,
    pub filter: SearchFilter,
}

const FIELDS: &[&str] = &["query_text", "top_k", "mode", "collection", "filters"];
const FILTER_FIELDS: &[&str] = &["classification", "doc_ids", "date_range", "metadata", "collection"];

fn non_null<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn string_list(v: &Value, field: &str, max: usize, out: &mut Vec<FieldViolation>) -> Option<Vec<String>> {
    let items: Vec<&Value> = match v {
        Value::String(_) => vec![v],
        Value::Array(a) => a.iter().collect(),
        _ => {
            out.push(FieldViolation::new(field, v.clone(), "a string or an array of strings"));
            return None;
        }
    };
    if items.len() > max {
        out.push(FieldViolation::new(field, items.len(), format!("at most {max} values")));
        return None;
    }
    let mut list = Vec::with_capacity(items.len());
    for item in items {
        match item.as_str() {
            Some(s) if !s.is_empty() && s.chars().count() <= 256 => list.push(s.to_owned()),
            _ => {
                out.push(FieldViolation::new(field, item.clone(), "non-empty strings of at most 256 characters"));
                return None;
            }
        }
    }
    Some(list)
}

fn date_bound(
    obj: &Map<String, Value>,
    key: &str,
    end_of_day: bool,
    out: &mut Vec<FieldViolation>,
) -> Option<DateTime<Utc>> {
    let v = non_null(obj, key)?;
    let field = format!("filters.date_range.{key}");
    match v.as_str().and_then(|s| crate::parse_date_bound(s, end_of_day)) {
        Some(t) => Some(t),
        None => {
            out.push(FieldViolation::new(field, v.clone(), "an RFC 3339 timestamp or a YYYY-MM-DD date"));
            None
        }
    }
}

fn unknown_keys(obj: &Map<String, Value>, known: &[&str], prefix: &str, out: &mut Vec<FieldViolation>) {
    for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
        out.push(FieldViolation::new(
            format!("{prefix}{key}"),
            Value::Null,
            format!("an unknown field; expected one of {}", known.join(", ")),
        ));
    }
}

fn parse_filters(v: &Value, filter: &mut SearchFilter, out: &mut Vec<FieldViolation>) {
    let Some(obj) = v.as_object() else {
        out.push(FieldViolation::new("filters", v.clone(), "a JSON object"));
        return;
    };
    unknown_keys(obj, FILTER_FIELDS, "filters.", out);
    if let Some(c) = non_null(obj, "classification") {
        filter.classification = string_list(c, "filters.classification", MAX_FILTER_VALUES, out);
    }
    if let Some(d) = non_null(obj, "doc_ids") {
        if d.is_array() {
            filter.doc_ids = string_list(d, "filters.doc_ids", MAX_FILTER_DOC_IDS, out);
        } else {
            out.push(FieldViolation::new("filters.doc_ids", d.clone(), "an array of document ids"));
        }
    }
    if let Some(r) = non_null(obj, "date_range") {
        match r.as_object() {
            Some(range) => {
                unknown_keys(range, &["start", "end"], "filters.date_range.", out);
                filter.ingested_from = date_bound(range, "start", false, out);
                filter.ingested_to = date_bound(range, "end", true, out);
                if let (Some(from), Some(to)) = (filter.ingested_from, filter.ingested_to)
                    && from > to
                {
                    out.push(FieldViolation::new("filters.date_range", r.clone(), "start must not be after end"));
                }
            }
            None => out.push(FieldViolation::new("filters.date_range", r.clone(), "an object {start, end}")),
        }
    }
    if let Some(m) = non_null(obj, "metadata") {
        match m.as_object() {
            Some(map) if map.len() <= MAX_FILTER_VALUES => filter.metadata = Some(map.clone()),
            Some(map) => out.push(FieldViolation::new(
                "filters.metadata",
                map.len(),
                format!("at most {MAX_FILTER_VALUES} keys"),
            )),
            None => out.push(FieldViolation::new("filters.metadata", m.clone(), "a JSON object of key: value")),
        }
    }
    if let Some(c) = non_null(obj, "collection") {
        collection(c, "filters.collection", filter, out);
    }
}

fn collection(v: &Value, field: &str, filter: &mut SearchFilter, out: &mut Vec<FieldViolation>) {
    match v.as_str() {
        Some(s) if !s.is_empty() && s.chars().count() <= 256 => match &filter.collection {
            Some(existing) if existing != s => {
                out.push(FieldViolation::new(field, v.clone(), "the same collection as `collection`"))
            }
            _ => filter.collection = Some(s.to_owned()),
        },
        _ => out.push(FieldViolation::new(field, v.clone(), "a non-empty string of at most 256 characters")),
    }
}

/// Validates a search request body against the tenant's config. Every problem is reported, not only the first.
pub fn parse_request(body: &Value, config: &TenantConfig) -> Result<SearchQuery, Vec<FieldViolation>> {
    let mut out = Vec::new();
    let Some(obj) = body.as_object() else {
        return Err(vec![FieldViolation::new("body", Value::Null, "a JSON object")]);
    };
    unknown_keys(obj, FIELDS, "", &mut out);
    let text = match obj.get("query_text") {
        Some(Value::String(s)) if s.trim().is_empty() => {
            out.push(FieldViolation::new("query_text", s.clone(), "a non-blank string"));
            String::new()
        }
        Some(Value::String(s)) if s.chars().count() > MAX_QUERY_CHARS => {
            out.push(FieldViolation::new(
                "query_text",
                Value::Null,
                format!("at most {MAX_QUERY_CHARS} characters (got {})", s.chars().count()),
            ));
            String::new()
        }
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            out.push(FieldViolation::new("query_text", other.clone(), "a string"));
            String::new()
        }
        None => {
            out.push(FieldViolation::new("query_text", Value::Null, "required"));
            String::new()
        }
    };
    let max = config.retrieval_top_k_max;
    let top_k = match non_null(obj, "top_k") {
        None => config.retrieval_top_k_default,
        Some(v) => match v.as_u64() {
            Some(k) if k >= 1 && k <= u64::from(max) => k as u32,
            _ => {
                out.push(FieldViolation::new(
                    "top_k",
                    v.clone(),
                    format!("an integer from 1 to {max} (the tenant's retrieval_top_k_max)"),
                ));
                config.retrieval_top_k_default
            }
        },
    };
    let mode = match non_null(obj, "mode") {
        None => SearchMode::Hybrid,
        Some(v) => match v.as_str().and_then(SearchMode::parse) {
            Some(m) => m,
            None => {
                out.push(FieldViolation::new("mode", v.clone(), "one of hybrid, vector, keyword"));
                SearchMode::Hybrid
            }
        },
    };
    let mut filter = SearchFilter::default();
    if let Some(c) = non_null(obj, "collection") {
        collection(c, "collection", &mut filter, &mut out);
    }
    if let Some(f) = non_null(obj, "filters") {
        parse_filters(f, &mut filter, &mut out);
    }
    if out.is_empty() { Ok(SearchQuery { text, mode, top_k: top_k as usize, filter }) } else { Err(out) }
}

/// Weighted reciprocal rank fusion ([`rrf_fuse`]) with deterministic ties: equal fused scores are ordered by the
/// better of the hit's two ranks, then by its keyword rank (a hit found by both lists, or by keyword alone, before
/// one found by vector alone), then by chunk id. Without this, ties (common when each list ranks a different hit
/// at the same position) would be ordered by chunk id, which is arbitrary.
pub fn fuse(keyword: &[Hit], vector: &[Hit], fusion: &FusionSettings, top_k: usize) -> Vec<Hit> {
    fn rank_of(hits: &[Hit]) -> HashMap<&str, usize> {
        hits.iter().enumerate().map(|(i, h)| (h.chunk_id.as_str(), i + 1)).collect()
    }
    let (kw_rank, vec_rank) = (rank_of(keyword), rank_of(vector));
    let fused = rrf_fuse(
        &[(keyword, fusion.keyword_weight), (vector, fusion.vector_weight)],
        fusion.rrf_k,
        keyword.len() + vector.len(),
    );
    let key = |h: &Hit| {
        let k = kw_rank.get(h.chunk_id.as_str()).copied().unwrap_or(usize::MAX);
        let v = vec_rank.get(h.chunk_id.as_str()).copied().unwrap_or(usize::MAX);
        (k.min(v), k)
    };
    let mut fused = fused;
    fused.sort_by(|a, b| {
        b.score.total_cmp(&a.score).then_with(|| key(a).cmp(&key(b))).then_with(|| a.chunk_id.cmp(&b.chunk_id))
    });
    fused.truncate(top_k);
    fused
}

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The query embedder failed (backend down, misconfigured).
    #[error("the query could not be embedded: {0}")]
    Embed(EmbedError),
}

/// One hit with everything the index knows of its chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub chunk: IndexedChunk,
    pub score: f64,
}

/// A search's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOutcome {
    pub query_id: Uuid,
    pub mode: SearchMode,
    pub hits: Vec<SearchHit>,
    /// False when some returned chunk was embedded by another model than the query.
    pub model_version_match: bool,
    /// The query embedder's model id.
    pub query_model: String,
}

/// The search use-case over the chunk index, the audit log and the query embedder.
#[derive(Clone)]
pub struct SearchService {
    pub index: Arc<dyn ChunkIndex>,
    pub store: Arc<dyn MetadataStore>,
    pub embedder: Arc<dyn Embedder>,
    pub fusion: FusionSettings,
}

impl SearchService {
    /// The ranked hits of `query`, without provenance or audit (what benchmarks and the use-case share).
    pub async fn rank(&self, tenant: &TenantId, query: &SearchQuery) -> Result<Vec<Hit>, SearchError> {
        let depth = query.top_k.max(self.fusion.candidates);
        match query.mode {
            SearchMode::Keyword => {
                Ok(self.index.keyword_search(tenant, &query.text, &query.filter, query.top_k).await?)
            }
            SearchMode::Vector => self.vector(tenant, query, query.top_k).await,
            SearchMode::Hybrid => {
                // The two rankings are independent: run them at the same time.
                let (keyword, vector) = futures::future::join(
                    self.index.keyword_search(tenant, &query.text, &query.filter, depth),
                    self.vector(tenant, query, depth),
                )
                .await;
                Ok(fuse(&keyword?, &vector?, &self.fusion, query.top_k))
            }
        }
    }

    async fn vector(&self, tenant: &TenantId, query: &SearchQuery, top_k: usize) -> Result<Vec<Hit>, SearchError> {
        let vector = match self.embedder.embed(std::slice::from_ref(&query.text)).await {
            Ok(mut v) if v.len() == 1 => v.remove(0),
            Ok(_) => return Err(SearchError::Embed(EmbedError::InvalidResponse("expected one vector".into()))),
            // Text with no letter or digit has no embedding, and matches nothing.
            Err(EmbedError::Empty { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(SearchError::Embed(e)),
        };
        Ok(self.index.vector_search(tenant, &vector, &query.filter, top_k).await?)
    }

    /// Runs the search, attaches provenance and appends `RETRIEVAL_EXECUTED` (ids and counts, never the text).
    pub async fn search(
        &self,
        tenant: &TenantId,
        query: &SearchQuery,
        actor: &str,
    ) -> Result<SearchOutcome, SearchError> {
        let started = Instant::now();
        let ranked = self.rank(tenant, query).await?;
        let ids: Vec<String> = ranked.iter().map(|h| h.chunk_id.clone()).collect();
        let mut chunks: HashMap<String, IndexedChunk> =
            self.index.get_chunks(tenant, &ids).await?.into_iter().map(|c| (c.chunk_id.clone(), c)).collect();
        // A chunk erased between ranking and reading is skipped; quarantine is checked again defensively.
        let hits: Vec<SearchHit> = ranked
            .into_iter()
            .filter_map(|hit| chunks.remove(&hit.chunk_id).map(|chunk| SearchHit { chunk, score: hit.score }))
            .filter(|h| !h.chunk.quarantined)
            .collect();
        let query_model = self.embedder.model_id().to_owned();
        let model_version_match = hits.iter().all(|h| h.chunk.embed_model == query_model);
        let query_id = Uuid::now_v7();
        let filters: Vec<&str> = [
            ("classification", query.filter.classification.is_some()),
            ("doc_ids", query.filter.doc_ids.is_some()),
            ("date_range", query.filter.ingested_from.is_some() || query.filter.ingested_to.is_some()),
            ("collection", query.filter.collection.is_some()),
            ("metadata", query.filter.metadata.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        let chunk_ids: Vec<&str> = hits.iter().map(|h| h.chunk.chunk_id.as_str()).collect();
        let details = json!({
            "component": "search",
            "status": "done",
            "query_id": query_id,
            "mode": query.mode.as_str(),
            "top_k": query.top_k,
            "result_count": hits.len(),
            "chunk_ids": chunk_ids,
            "filters": filters,
            "model_version_match": model_version_match,
            "duration_ms": started.elapsed().as_millis() as u64,
        });
        let event = NewAuditEvent::new("RETRIEVAL_EXECUTED", actor, "query", query_id.to_string(), details);
        self.store.append_audit(tenant, event).await?;
        Ok(SearchOutcome { query_id, mode: query.mode, hits, model_version_match, query_model })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TenantConfig {
        TenantConfig::default()
    }

    fn fields(body: Value) -> Vec<String> {
        parse_request(&body, &config()).unwrap_err().into_iter().map(|v| v.field).collect()
    }

    fn hit(id: &str) -> Hit {
        Hit { chunk_id: id.into(), doc_id: format!("doc-{id}"), score: 1.0 }
    }

    #[test]
    fn fusion_ties_go_to_the_better_rank_then_to_keyword() {
        let fusion = FusionSettings::default();
        // "z" and "a" tie (each ranked 2nd by one list); "z" was found by keyword, so it goes first.
        let keyword = [hit("both"), hit("z")];
        let vector = [hit("both"), hit("a")];
        let ids: Vec<String> = fuse(&keyword, &vector, &fusion, 10).into_iter().map(|h| h.chunk_id).collect();
        assert_eq!(ids, ["both", "z", "a"]);
        assert_eq!(fuse(&keyword, &vector, &fusion, 1).len(), 1);
        let weighted = FusionSettings { keyword_weight: 0.0, ..fusion };
        assert_eq!(fuse(&keyword, &vector, &weighted, 10)[0].chunk_id, "both");
        assert!(fuse(&[], &[], &fusion, 5).is_empty());
    }

    #[test]
    fn defaults_come_from_the_tenant_config() {
        let q = parse_request(&json!({"query_text": "hello"}), &config()).unwrap();
        assert_eq!(q.mode, SearchMode::Hybrid);
        assert_eq!(q.top_k, config().retrieval_top_k_default as usize);
        assert_eq!(q.filter, SearchFilter::default());
    }

    #[test]
    fn top_k_over_the_tenant_max_and_bad_text_are_refused() {
        let max = config().retrieval_top_k_max;
        assert_eq!(fields(json!({"query_text": "x", "top_k": max + 1})), ["top_k"]);
        assert_eq!(fields(json!({"query_text": "x", "top_k": 0})), ["top_k"]);
        assert_eq!(fields(json!({"query_text": "  "})), ["query_text"]);
        assert_eq!(fields(json!({"top_k": 3})), ["query_text"]);
        assert_eq!(fields(json!({"query_text": "x".repeat(MAX_QUERY_CHARS + 1)})), ["query_text"]);
        assert!(parse_request(&json!({"query_text": "é".repeat(MAX_QUERY_CHARS)}), &config()).is_ok());
        assert_eq!(fields(json!({"query_text": "x", "mode": "fuzzy"})), ["mode"]);
    }

    #[test]
    fn filters_parse_and_every_problem_is_reported() {
        let q = parse_request(
            &json!({"query_text": "x", "collection": "faq", "filters": {
                "classification": "public", "doc_ids": ["a", "b"],
                "date_range": {"start": "2026-01-01", "end": "2026-01-31"}, "metadata": {"team": "ops"}}}),
            &config(),
        )
        .unwrap();
        assert_eq!(q.filter.classification, Some(vec!["public".to_owned()]));
        assert_eq!(q.filter.doc_ids, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(q.filter.collection.as_deref(), Some("faq"));
        assert_eq!(crate::format_timestamp(&q.filter.ingested_to.unwrap()), "2026-01-31T23:59:59.999999Z");
        assert_eq!(q.filter.metadata.unwrap()["team"], json!("ops"));

        let bad = fields(json!({"query_text": "x", "filters": {
            "doc_ids": "a", "date_range": {"start": "yesterday"}, "metadata": [1], "colour": 1,
            "classification": [1]}}));
        for f in [
            "filters.doc_ids",
            "filters.date_range.start",
            "filters.metadata",
            "filters.colour",
            "filters.classification",
        ] {
            assert!(bad.contains(&f.to_owned()), "{f} missing from {bad:?}");
        }
        assert_eq!(
            fields(json!({"query_text": "x", "filters": {"date_range": {"start": "2026-02-01", "end": "2026-01-01"}}})),
            ["filters.date_range"]
        );
        assert_eq!(fields(json!({"query_text": "x", "filters": []})), ["filters"]);
        assert_eq!(
            fields(json!({"query_text": "x", "collection": "a", "filters": {"collection": "b"}})),
            ["filters.collection"]
        );
    }
}
