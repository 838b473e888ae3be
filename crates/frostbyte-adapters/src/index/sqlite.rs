//! [`ChunkIndex`] for [`SqliteStore`]. Writes run in `BEGIN IMMEDIATE` transactions that change `chunks` and its
//! external-content FTS5 table `chunks_fts` together: an FTS entry is inserted with each chunk row (keyed by its
//! `id`) and removed with the FTS5 `'delete'` command, which needs the old text, before the row goes.
//!
//! BM25 statistics (document frequencies, average length) are those of the whole FTS table, not of one tenant:
//! they shape scores only, never which rows a tenant can see.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use frostbyte_core::index::{ChunkCounts, ChunkIndex, Hit, IndexRemoval, IndexedChunk, SearchFilter, keyword_terms};
use frostbyte_core::{StoreError, StoreResult, TenantId, truncate_micros};
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteRow};
use sqlx::{Arguments, AssertSqlSafe, Row};

use super::{
    TopK, VECTOR_BATCH, check_chunks, decode_headings, decode_opt_u32, decode_u32, decode_vector, encode_headings,
    encode_vector, score,
};
use crate::codec::{self, column, corrupt};
use crate::db_error::{self, Dialect};
use crate::sqlite::SqliteStore;

macro_rules! chunk_columns {
    () => {
        "c.chunk_id, c.doc_id, c.position, c.text, c.start_offset, c.end_offset, c.page_start, c.page_end, \
         c.heading_path, c.kind, c.text_hash, c.classification, c.collection, c.metadata, c.quarantined, \
         c.embed_model, c.vector, c.source_sha256, c.original_filename, c.ingested_at"
    };
}

/// Ids per `IN (…)` list: far below SQLite's bound-parameter limit.
const GET_CHUNKS_BATCH: usize = 500;
/// Chunk rows per multi-row `INSERT` (22 parameters each, far below SQLite's bound-parameter limit).
const INSERT_ROWS: usize = 100;

fn err(resource: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| db_error::map(Dialect::Sqlite, resource, e)
}

fn bind_err(_: sqlx::error::BoxDynError) -> StoreError {
    StoreError::Internal("binding a chunk query failed".into())
}

fn ts(t: &DateTime<Utc>) -> String {
    codec::encode_timestamp(&truncate_micros(*t))
}

fn chunk_from_row(row: &SqliteRow) -> StoreResult<IndexedChunk> {
    Ok(IndexedChunk {
        chunk_id: column(row, "chunk_id")?,
        doc_id: column(row, "doc_id")?,
        position: decode_u32(column(row, "position")?, "chunks.position")?,
        text: column(row, "text")?,
        start: decode_u32(column(row, "start_offset")?, "chunks.start_offset")?,
        end: decode_u32(column(row, "end_offset")?, "chunks.end_offset")?,
        page_start: decode_opt_u32(column(row, "page_start")?, "chunks.page_start")?,
        page_end: decode_opt_u32(column(row, "page_end")?, "chunks.page_end")?,
        heading_path: decode_headings(&column::<_, String>(row, "heading_path")?)?,
        kind: column(row, "kind")?,
        text_hash: column(row, "text_hash")?,
        classification: column(row, "classification")?,
        collection: column(row, "collection")?,
        metadata: serde_json::from_str(&column::<_, String>(row, "metadata")?)
            .map_err(|_| corrupt("chunks.metadata"))?,
        quarantined: column(row, "quarantined")?,
        embed_model: column(row, "embed_model")?,
        vector: decode_vector(&column::<_, Vec<u8>>(row, "vector")?)?,
        source_sha256: column(row, "source_sha256")?,
        original_filename: column(row, "original_filename")?,
        ingested_at: codec::decode_timestamp(&column::<_, String>(row, "ingested_at")?, "chunks.ingested_at")?,
    })
}

/// Appends the filter's predicates on `chunks c` to `sql`, binding every value.
fn push_filter(sql: &mut String, args: &mut SqliteArguments, filter: &SearchFilter) -> StoreResult<()> {
    let json_list = |v: &Vec<String>| {
        serde_json::to_string(v).map_err(|_| StoreError::Internal("filter could not be encoded".into()))
    };
    if let Some(doc_ids) = &filter.doc_ids {
        sql.push_str(" AND c.doc_id IN (SELECT value FROM json_each(?))");
        args.add(json_list(doc_ids)?).map_err(bind_err)?;
    }
    if let Some(classes) = &filter.classification {
        sql.push_str(" AND c.classification IN (SELECT value FROM json_each(?))");
        args.add(json_list(classes)?).map_err(bind_err)?;
    }
    if let Some(collection) = &filter.collection {
        sql.push_str(" AND c.collection = ?");
        args.add(collection.clone()).map_err(bind_err)?;
    }
    if let Some(from) = &filter.ingested_from {
        sql.push_str(" AND c.ingested_at >= ?");
        args.add(ts(from)).map_err(bind_err)?;
    }
    if let Some(to) = &filter.ingested_to {
        sql.push_str(" AND c.ingested_at <= ?");
        args.add(ts(to)).map_err(bind_err)?;
    }
    for (key, value) in filter.metadata.iter().flatten() {
        // The stored value as minified JSON text, compared with the filter value normalised by `json()`.
        sql.push_str(
            " AND EXISTS (SELECT 1 FROM json_each(c.metadata) m WHERE m.key = ? AND (CASE WHEN m.type IN \
             ('object', 'array') THEN json(m.value) WHEN m.type IN ('true', 'false', 'null') THEN m.type ELSE \
             json_quote(m.value) END) = json(?))",
        );
        args.add(key.clone()).map_err(bind_err)?;
        args.add(value.to_string()).map_err(bind_err)?;
    }
    Ok(())
}

async fn tenant_exists(conn: &mut SqliteConnection, tenant: &TenantId) -> StoreResult<bool> {
    let row = sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = ?")
        .bind(tenant.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(err("tenant"))?;
    Ok(row.is_some())
}

/// Removes a document's keyword entries, then its chunk rows, inside the caller's write transaction.
pub(crate) async fn delete_document_in_tx(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    doc_id: &str,
) -> StoreResult<IndexRemoval> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS chunks, COALESCE(SUM(dimension > 0), 0) AS vectors FROM chunks WHERE tenant_id = ? \
         AND doc_id = ?",
    )
    .bind(tenant.as_str())
    .bind(doc_id)
    .fetch_one(&mut *conn)
    .await
    .map_err(err("chunk"))?;
    let vectors: i64 = column(&row, "vectors")?;
    if column::<_, i64>(&row, "chunks")? == 0 {
        return Ok(IndexRemoval::default());
    }
    let keyword = sqlx::query(
        "INSERT INTO chunks_fts (chunks_fts, rowid, text) SELECT 'delete', id, text FROM chunks WHERE tenant_id = ? \
         AND doc_id = ?",
    )
    .bind(tenant.as_str())
    .bind(doc_id)
    .execute(&mut *conn)
    .await
    .map_err(err("chunk"))?
    .rows_affected();
    let chunks = sqlx::query("DELETE FROM chunks WHERE tenant_id = ? AND doc_id = ?")
        .bind(tenant.as_str())
        .bind(doc_id)
        .execute(&mut *conn)
        .await
        .map_err(err("chunk"))?
        .rows_affected();
    Ok(IndexRemoval { chunks, vectors: u64::try_from(vectors).unwrap_or(0), keyword })
}

/// Replaces a document's chunks inside the caller's write transaction (so a stage can commit its output with its
/// job transition).
pub(crate) async fn replace_document_chunks_in_tx(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    doc_id: &str,
    chunks: &[IndexedChunk],
) -> StoreResult<()> {
    if !tenant_exists(conn, tenant).await? {
        return Err(StoreError::NotFound { resource: "tenant" });
    }
    swap_document_chunks_in_tx(conn, tenant, doc_id, chunks).await
}

/// [`replace_document_chunks_in_tx`] for a tenant the caller has already checked exists in this transaction.
pub(crate) async fn swap_document_chunks_in_tx(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    doc_id: &str,
    chunks: &[IndexedChunk],
) -> StoreResult<()> {
    swap_chunks_in_tx(conn, tenant, &[(doc_id, chunks)]).await
}

/// Replaces several documents' chunks at once, inside the caller's write transaction, for a tenant it has
/// checked: their old keyword entries and rows go in two statements, the new rows in multi-row inserts, and the
/// new keyword entries in one statement. Each document's chunks must carry its id.
pub(crate) async fn swap_chunks_in_tx(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    docs: &[(&str, &[IndexedChunk])],
) -> StoreResult<()> {
    if docs.is_empty() {
        return Ok(());
    }
    for (doc_id, chunks) in docs {
        check_chunks(doc_id, chunks)?;
    }
    let ids = serde_json::to_string(&docs.iter().map(|(doc_id, _)| doc_id).collect::<Vec<_>>())
        .map_err(|_| StoreError::Internal("document ids could not be encoded".into()))?;
    const OF_DOCS: &str = "FROM chunks WHERE tenant_id = ?1 AND doc_id IN (SELECT value FROM json_each(?2))";
    for_docs(
        conn,
        tenant,
        &ids,
        [
            format!("INSERT INTO chunks_fts (chunks_fts, rowid, text) SELECT 'delete', id, text {OF_DOCS}"),
            format!("DELETE {OF_DOCS}"),
        ],
    )
    .await?;
    // Many rows per statement: one round trip per `INSERT_ROWS` chunks instead of two per chunk.
    let rows: Vec<(&str, &IndexedChunk)> =
        docs.iter().flat_map(|(doc_id, chunks)| chunks.iter().map(move |c| (*doc_id, c))).collect();
    for rows in rows.chunks(INSERT_ROWS) {
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO chunks (tenant_id, chunk_id, doc_id, position, text, start_offset, end_offset, page_start, \
             page_end, heading_path, kind, text_hash, classification, collection, metadata, quarantined, \
             embed_model, dimension, vector, source_sha256, original_filename, ingested_at) ",
        );
        let mut encoded = Vec::with_capacity(rows.len());
        for (doc_id, chunk) in rows {
            let metadata = serde_json::to_string(&chunk.metadata)
                .map_err(|_| StoreError::Internal("chunk metadata could not be encoded".into()))?;
            encoded.push((*doc_id, *chunk, metadata, encode_headings(&chunk.heading_path)?));
        }
        insert.push_values(encoded, |mut b, (doc_id, chunk, metadata, headings)| {
            b.push_bind(tenant.as_str().to_owned())
                .push_bind(chunk.chunk_id.clone())
                .push_bind(doc_id.to_owned())
                .push_bind(i64::from(chunk.position))
                .push_bind(chunk.text.clone())
                .push_bind(i64::from(chunk.start))
                .push_bind(i64::from(chunk.end))
                .push_bind(chunk.page_start.map(i64::from))
                .push_bind(chunk.page_end.map(i64::from))
                .push_bind(headings)
                .push_bind(chunk.kind.clone())
                .push_bind(chunk.text_hash.clone())
                .push_bind(chunk.classification.clone())
                .push_bind(chunk.collection.clone())
                .push_bind(metadata)
                .push_bind(chunk.quarantined)
                .push_bind(chunk.embed_model.clone())
                .push_bind(i64::try_from(chunk.vector.len()).unwrap_or(i64::MAX))
                .push_bind(encode_vector(&chunk.vector))
                .push_bind(chunk.source_sha256.clone())
                .push_bind(chunk.original_filename.clone())
                .push_bind(ts(&chunk.ingested_at));
        });
        // Not kept prepared: every row count would be a statement of its own, cached on every pooled connection
        // with its last rows' text and vectors still bound to it.
        insert.build().persistent(false).execute(&mut *conn).await.map_err(err("chunk"))?;
    }
    // The documents' rows are all new: their keyword entries in one statement. Then the search generation moves
    // once for the whole write, and each document's change row takes the new generation (inserts have no
    // trigger for this, unlike deletes and updates: per row it was most of the insert's cost).
    for_docs(
        conn,
        tenant,
        &ids,
        [
            format!("INSERT INTO chunks_fts (rowid, text) SELECT id, text {OF_DOCS} ORDER BY id"),
            "INSERT INTO chunk_generations (tenant_id, generation) VALUES (?1, 1) \
             ON CONFLICT (tenant_id) DO UPDATE SET generation = generation + 1"
                .to_owned(),
            "INSERT INTO chunk_changes (tenant_id, doc_id, generation) \
             SELECT ?1, value, (SELECT generation FROM chunk_generations WHERE tenant_id = ?1) FROM json_each(?2) \
             WHERE true ON CONFLICT (tenant_id, doc_id) DO UPDATE SET generation = excluded.generation"
                .to_owned(),
        ],
    )
    .await
}

/// Runs each statement with the tenant as `?1` and the documents' ids, a JSON array, as `?2`.
async fn for_docs(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    ids: &str,
    statements: impl IntoIterator<Item = String>,
) -> StoreResult<()> {
    for sql in statements {
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(ids)
            .execute(&mut *conn)
            .await
            .map_err(err("chunk"))?;
    }
    Ok(())
}

/// The FTS5 query for a user's text: each term double-quoted (terms are alphanumeric, so a quoted term is a
/// plain string and `NEAR`, `OR`, `*` or column names mean nothing), joined by `OR`.
fn fts_query(terms: &[String]) -> String {
    terms.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(" OR ")
}

fn limit(top_k: usize) -> i64 {
    i64::try_from(top_k).unwrap_or(i64::MAX)
}

#[async_trait]
impl ChunkIndex for SqliteStore {
    async fn replace_document_chunks(
        &self,
        tenant: &TenantId,
        doc_id: &str,
        chunks: &[IndexedChunk],
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        replace_document_chunks_in_tx(&mut tx, tenant, doc_id, chunks).await?;
        tx.commit().await.map_err(err("transaction"))
    }

    async fn replace_document_chunks_at(
        &self,
        tenant: &TenantId,
        doc_id: &str,
        generation: u64,
        chunks: &[IndexedChunk],
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        // The guard and the swap share the transaction.
        crate::documents::sqlite_lifecycle::check_generation(&mut tx, tenant, doc_id, generation).await?;
        replace_document_chunks_in_tx(&mut tx, tenant, doc_id, chunks).await?;
        tx.commit().await.map_err(err("transaction"))
    }

    async fn delete_document(&self, tenant: &TenantId, doc_id: &str) -> StoreResult<IndexRemoval> {
        let mut tx = self.begin_write().await?;
        let removed = delete_document_in_tx(&mut tx, tenant, doc_id).await?;
        tx.commit().await.map_err(err("transaction"))?;
        Ok(removed)
    }

    async fn keyword_search(
        &self,
        tenant: &TenantId,
        query: &str,
        filter: &SearchFilter,
        top_k: usize,
    ) -> StoreResult<Vec<Hit>> {
        let terms = keyword_terms(query);
        if terms.is_empty() || top_k == 0 {
            return Ok(Vec::new());
        }
        let mut args = SqliteArguments::default();
        args.add(fts_query(&terms)).map_err(bind_err)?;
        args.add(tenant.as_str().to_owned()).map_err(bind_err)?;
        let mut sql = String::from(
            "SELECT c.chunk_id, c.doc_id, bm25(chunks_fts) AS rank FROM chunks_fts JOIN chunks c ON c.id = \
             chunks_fts.rowid WHERE chunks_fts MATCH ? AND c.tenant_id = ? AND c.quarantined = 0",
        );
        push_filter(&mut sql, &mut args, filter)?;
        sql.push_str(" ORDER BY rank, c.chunk_id LIMIT ?");
        args.add(limit(top_k)).map_err(bind_err)?;
        let rows = sqlx::query_with(AssertSqlSafe(sql), args).fetch_all(self.pool()).await.map_err(err("chunk"))?;
        rows.iter()
            .map(|row| {
                // bm25() is lower-is-better (negative for matches); negate it so higher is better.
                let rank: f64 = column(row, "rank")?;
                Ok(Hit { chunk_id: column(row, "chunk_id")?, doc_id: column(row, "doc_id")?, score: -rank })
            })
            .collect()
    }

    async fn vector_search(
        &self,
        tenant: &TenantId,
        query: &[f32],
        filter: &SearchFilter,
        top_k: usize,
    ) -> StoreResult<Vec<Hit>> {
        let query_norm = frostbyte_core::embed::l2_norm(query);
        if query.is_empty() || top_k == 0 || query_norm == 0.0 || !query_norm.is_finite() {
            return Ok(Vec::new());
        }
        let dimension = i64::try_from(query.len()).unwrap_or(i64::MAX);
        let mut top = TopK::new(top_k);
        let mut after = i64::MIN;
        loop {
            let mut args = SqliteArguments::default();
            args.add(tenant.as_str().to_owned()).map_err(bind_err)?;
            args.add(dimension).map_err(bind_err)?;
            args.add(after).map_err(bind_err)?;
            let mut sql = String::from(
                "SELECT c.id, c.chunk_id, c.doc_id, c.vector FROM chunks c WHERE c.tenant_id = ? AND c.quarantined \
                 = 0 AND c.dimension = ? AND c.id > ?",
            );
            push_filter(&mut sql, &mut args, filter)?;
            sql.push_str(" ORDER BY c.id LIMIT ?");
            args.add(VECTOR_BATCH).map_err(bind_err)?;
            let rows = sqlx::query_with(AssertSqlSafe(sql), args).fetch_all(self.pool()).await.map_err(err("chunk"))?;
            for row in &rows {
                let vector = decode_vector(&column::<_, Vec<u8>>(row, "vector")?)?;
                if vector.len() != query.len() {
                    continue;
                }
                if let Some(s) = score(query, query_norm, &vector) {
                    top.offer(Hit { chunk_id: column(row, "chunk_id")?, doc_id: column(row, "doc_id")?, score: s });
                }
            }
            match rows.last() {
                Some(last) if rows.len() as i64 == VECTOR_BATCH => after = last.try_get("id").map_err(err("chunk"))?,
                _ => break,
            }
        }
        Ok(top.into_sorted())
    }

    async fn get_chunk(&self, tenant: &TenantId, chunk_id: &str) -> StoreResult<Option<IndexedChunk>> {
        sqlx::query(concat!("SELECT ", chunk_columns!(), " FROM chunks c WHERE c.tenant_id = ? AND c.chunk_id = ?"))
            .bind(tenant.as_str())
            .bind(chunk_id)
            .fetch_optional(self.pool())
            .await
            .map_err(err("chunk"))?
            .as_ref()
            .map(chunk_from_row)
            .transpose()
    }

    async fn get_chunks(&self, tenant: &TenantId, chunk_ids: &[String]) -> StoreResult<Vec<IndexedChunk>> {
        let mut chunks = Vec::with_capacity(chunk_ids.len());
        for ids in chunk_ids.chunks(GET_CHUNKS_BATCH) {
            let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(concat!(
                "SELECT ",
                chunk_columns!(),
                " FROM chunks c WHERE c.tenant_id = "
            ));
            query.push_bind(tenant.as_str()).push(" AND c.chunk_id IN (");
            let mut list = query.separated(", ");
            for id in ids {
                list.push_bind(id.as_str());
            }
            query.push(")");
            for row in query.build().persistent(false).fetch_all(self.pool()).await.map_err(err("chunk"))? {
                chunks.push(chunk_from_row(&row)?);
            }
        }
        Ok(chunks)
    }

    async fn document_chunks(&self, tenant: &TenantId, doc_id: &str) -> StoreResult<Vec<IndexedChunk>> {
        sqlx::query(concat!(
            "SELECT ",
            chunk_columns!(),
            " FROM chunks c WHERE c.tenant_id = ? AND c.doc_id = ? ORDER BY c.position, c.chunk_id"
        ))
        .bind(tenant.as_str())
        .bind(doc_id)
        .fetch_all(self.pool())
        .await
        .map_err(err("chunk"))?
        .iter()
        .map(chunk_from_row)
        .collect()
    }

    async fn count(&self, tenant: &TenantId) -> StoreResult<ChunkCounts> {
        let row = sqlx::query(
            "SELECT COUNT(DISTINCT doc_id) AS documents, COUNT(*) AS chunks FROM chunks WHERE tenant_id = ?",
        )
        .bind(tenant.as_str())
        .fetch_one(self.pool())
        .await
        .map_err(err("chunk"))?;
        let count = |name: &'static str| -> StoreResult<u64> {
            u64::try_from(column::<_, i64>(&row, name)?).map_err(|_| corrupt("chunks count"))
        };
        Ok(ChunkCounts { documents: count("documents")?, chunks: count("chunks")? })
    }
}
