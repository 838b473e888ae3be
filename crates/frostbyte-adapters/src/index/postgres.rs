//! [`ChunkIndex`] for [`PostgresStore`]. The keyword index is the generated `text_tsv` column (`simple`
//! configuration, GIN-indexed), so inserting or deleting a chunk row is all it takes to keep it in step.
//!
//! Replacing a document takes a transaction-scoped advisory lock on (tenant, document), so concurrent replaces of
//! one document serialise instead of colliding on chunk ids.

use async_trait::async_trait;
use frostbyte_core::index::{ChunkCounts, ChunkIndex, Hit, IndexRemoval, IndexedChunk, SearchFilter, keyword_terms};
use frostbyte_core::{StoreError, StoreResult, TenantId, truncate_micros};
use sqlx::postgres::{PgArguments, PgConnection, PgRow};
use sqlx::{Arguments, AssertSqlSafe};

use super::{
    TopK, VECTOR_BATCH, check_chunks, decode_headings, decode_opt_u32, decode_u32, decode_vector, encode_headings,
    encode_vector, score,
};
use crate::codec::{column, corrupt};
use crate::db_error::{self, Dialect};
use crate::postgres::PostgresStore;

macro_rules! chunk_columns {
    () => {
        "c.chunk_id, c.doc_id, c.position, c.text, c.start_offset, c.end_offset, c.page_start, c.page_end, \
         c.heading_path, c.kind, c.text_hash, c.classification, c.collection, c.metadata, c.quarantined, \
         c.embed_model, c.vector, c.source_sha256, c.original_filename, c.ingested_at"
    };
}

fn err(resource: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| db_error::map(Dialect::Postgres, resource, e)
}

fn bind_err(_: sqlx::error::BoxDynError) -> StoreError {
    StoreError::Internal("binding a chunk query failed".into())
}

fn chunk_from_row(row: &PgRow) -> StoreResult<IndexedChunk> {
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
        metadata: column(row, "metadata")?,
        quarantined: column(row, "quarantined")?,
        embed_model: column(row, "embed_model")?,
        vector: decode_vector(&column::<_, Vec<u8>>(row, "vector")?)?,
        source_sha256: column(row, "source_sha256")?,
        original_filename: column(row, "original_filename")?,
        ingested_at: column(row, "ingested_at")?,
    })
}

/// Binds `value` and returns its placeholder (`$n`).
fn bind<'q, T>(args: &mut PgArguments, value: T) -> StoreResult<String>
where
    T: sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + 'q,
{
    args.add(value).map_err(bind_err)?;
    Ok(format!("${}", args.len()))
}

/// Appends the filter's predicates on `chunks c` to `sql`, binding every value.
fn push_filter(sql: &mut String, args: &mut PgArguments, filter: &SearchFilter) -> StoreResult<()> {
    if let Some(doc_ids) = &filter.doc_ids {
        let p = bind(args, doc_ids.clone())?;
        sql.push_str(&format!(" AND c.doc_id = ANY({p})"));
    }
    if let Some(classes) = &filter.classification {
        let p = bind(args, classes.clone())?;
        sql.push_str(&format!(" AND c.classification = ANY({p})"));
    }
    if let Some(collection) = &filter.collection {
        let p = bind(args, collection.clone())?;
        sql.push_str(&format!(" AND c.collection = {p}"));
    }
    if let Some(from) = &filter.ingested_from {
        let p = bind(args, truncate_micros(*from))?;
        sql.push_str(&format!(" AND c.ingested_at >= {p}"));
    }
    if let Some(to) = &filter.ingested_to {
        let p = bind(args, truncate_micros(*to))?;
        sql.push_str(&format!(" AND c.ingested_at <= {p}"));
    }
    for (key, value) in filter.metadata.iter().flatten() {
        // jsonb equality: semantic, so key order and number formatting do not matter.
        let k = bind(args, key.clone())?;
        let v = bind(args, value.clone())?;
        sql.push_str(&format!(" AND c.metadata -> {k} = {v}::jsonb"));
    }
    Ok(())
}

async fn tenant_exists(conn: &mut PgConnection, tenant: &TenantId) -> StoreResult<bool> {
    let row = sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = $1 FOR KEY SHARE")
        .bind(tenant.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(err("tenant"))?;
    Ok(row.is_some())
}

/// Serialises writers of one document until the transaction ends.
async fn lock_document(conn: &mut PgConnection, tenant: &TenantId, doc_id: &str) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || E'\\n' || $2, 0))")
        .bind(tenant.as_str())
        .bind(doc_id)
        .execute(&mut *conn)
        .await
        .map_err(err("chunk"))?;
    Ok(())
}

/// Removes a document's chunk rows (and with them their vectors and keyword entries) inside the caller's
/// transaction.
pub(crate) async fn delete_document_in_tx(
    conn: &mut PgConnection,
    tenant: &TenantId,
    doc_id: &str,
) -> StoreResult<IndexRemoval> {
    lock_document(conn, tenant, doc_id).await?;
    let row = sqlx::query(
        "WITH gone AS (DELETE FROM chunks WHERE tenant_id = $1 AND doc_id = $2 RETURNING dimension, text_tsv) \
         SELECT COUNT(*) AS chunks, COUNT(*) FILTER (WHERE dimension > 0) AS vectors, COUNT(*) FILTER (WHERE \
         length(text_tsv) > 0) AS keyword FROM gone",
    )
    .bind(tenant.as_str())
    .bind(doc_id)
    .fetch_one(&mut *conn)
    .await
    .map_err(err("chunk"))?;
    let count = |name: &'static str| -> StoreResult<u64> {
        u64::try_from(column::<_, i64>(&row, name)?).map_err(|_| corrupt("chunks count"))
    };
    Ok(IndexRemoval { chunks: count("chunks")?, vectors: count("vectors")?, keyword: count("keyword")? })
}

/// Replaces a document's chunks inside the caller's transaction (so a stage can commit its output with its job
/// transition).
pub(crate) async fn replace_document_chunks_in_tx(
    conn: &mut PgConnection,
    tenant: &TenantId,
    doc_id: &str,
    chunks: &[IndexedChunk],
) -> StoreResult<()> {
    check_chunks(doc_id, chunks)?;
    if !tenant_exists(conn, tenant).await? {
        return Err(StoreError::NotFound { resource: "tenant" });
    }
    delete_document_in_tx(conn, tenant, doc_id).await?;
    insert_chunks(conn, tenant, doc_id, chunks).await
}

/// Inserts one document's chunks in one statement, a column per array: the statement text is the same for any
/// number of chunks, so it stays prepared, and the generation trigger (0019) fires once for them all.
async fn insert_chunks(
    conn: &mut PgConnection,
    tenant: &TenantId,
    doc_id: &str,
    chunks: &[IndexedChunk],
) -> StoreResult<()> {
    if chunks.is_empty() {
        return Ok(());
    }
    fn each<'a, T>(chunks: &'a [IndexedChunk], f: impl Fn(&'a IndexedChunk) -> T) -> Vec<T> {
        chunks.iter().map(f).collect()
    }
    let headings = chunks.iter().map(|c| encode_headings(&c.heading_path)).collect::<StoreResult<Vec<_>>>()?;
    let dimensions = chunks
        .iter()
        .map(|c| i32::try_from(c.vector.len()).map_err(|_| StoreError::Internal("vector too long".into())))
        .collect::<StoreResult<Vec<_>>>()?;
    sqlx::query(
        "INSERT INTO chunks (tenant_id, chunk_id, doc_id, position, text, start_offset, end_offset, page_start, \
         page_end, heading_path, kind, text_hash, classification, collection, metadata, quarantined, embed_model, \
         dimension, vector, source_sha256, original_filename, ingested_at) \
         SELECT $1, chunk_id, $2, position, text, start_offset, end_offset, page_start, page_end, heading_path, kind, \
         text_hash, classification, collection, metadata, quarantined, embed_model, dimension, vector, source_sha256, \
         original_filename, ingested_at FROM UNNEST($3::text[], $4::bigint[], $5::text[], $6::bigint[], \
         $7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], \
         $15::jsonb[], $16::boolean[], $17::text[], $18::integer[], $19::bytea[], $20::text[], $21::text[], \
         $22::timestamptz[]) AS c (chunk_id, position, text, start_offset, end_offset, page_start, page_end, \
         heading_path, kind, text_hash, classification, collection, metadata, quarantined, embed_model, dimension, \
         vector, source_sha256, original_filename, ingested_at)",
    )
    .bind(tenant.as_str())
    .bind(doc_id)
    .bind(each(chunks, |c| c.chunk_id.as_str()))
    .bind(each(chunks, |c| i64::from(c.position)))
    .bind(each(chunks, |c| c.text.as_str()))
    .bind(each(chunks, |c| i64::from(c.start)))
    .bind(each(chunks, |c| i64::from(c.end)))
    .bind(each(chunks, |c| c.page_start.map(i64::from)))
    .bind(each(chunks, |c| c.page_end.map(i64::from)))
    .bind(headings)
    .bind(each(chunks, |c| c.kind.as_str()))
    .bind(each(chunks, |c| c.text_hash.as_str()))
    .bind(each(chunks, |c| c.classification.as_deref()))
    .bind(each(chunks, |c| c.collection.as_deref()))
    .bind(each(chunks, |c| &c.metadata))
    .bind(each(chunks, |c| c.quarantined))
    .bind(each(chunks, |c| c.embed_model.as_str()))
    .bind(dimensions)
    .bind(each(chunks, |c| encode_vector(&c.vector)))
    .bind(each(chunks, |c| c.source_sha256.as_str()))
    .bind(each(chunks, |c| c.original_filename.as_str()))
    .bind(each(chunks, |c| truncate_micros(c.ingested_at)))
    .execute(&mut *conn)
    .await
    .map_err(err("chunk"))?;
    Ok(())
}

fn limit(top_k: usize) -> i64 {
    i64::try_from(top_k).unwrap_or(i64::MAX)
}

#[async_trait]
impl ChunkIndex for PostgresStore {
    async fn replace_document_chunks(
        &self,
        tenant: &TenantId,
        doc_id: &str,
        chunks: &[IndexedChunk],
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
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
        let mut tx = self.begin().await?;
        // The guard and the swap share the transaction (holding the document row `FOR SHARE`, so an erasure or replacement waits for it).
        crate::documents::postgres_lifecycle::check_generation(
            &mut tx,
            tenant,
            doc_id,
            generation,
            crate::documents::postgres_lifecycle::RowLock::Share,
        )
        .await?;
        replace_document_chunks_in_tx(&mut tx, tenant, doc_id, chunks).await?;
        tx.commit().await.map_err(err("transaction"))
    }

    async fn delete_document(&self, tenant: &TenantId, doc_id: &str) -> StoreResult<IndexRemoval> {
        let mut tx = self.begin().await?;
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
        // Each term goes through plainto_tsquery (which cannot fail on any input); the parts are OR-ed by
        // joining their text forms, parenthesised, and casting back. Terms that yield no lexeme are dropped.
        let mut args = PgArguments::default();
        let terms_p = bind(&mut args, terms)?;
        let tenant_p = bind(&mut args, tenant.as_str().to_owned())?;
        let mut sql = format!(
            "WITH q AS (SELECT string_agg('(' || p::text || ')', ' | ')::tsquery AS q FROM unnest({terms_p}::text[]) \
             t, LATERAL plainto_tsquery('simple', t) p WHERE numnode(p) > 0) SELECT c.chunk_id, c.doc_id, \
             ts_rank_cd(c.text_tsv, q.q)::float8 AS score FROM chunks c, q WHERE q.q IS NOT NULL AND c.text_tsv @@ \
             q.q AND c.tenant_id = {tenant_p} AND NOT c.quarantined"
        );
        push_filter(&mut sql, &mut args, filter)?;
        let limit_p = bind(&mut args, limit(top_k))?;
        sql.push_str(&format!(" ORDER BY score DESC, c.chunk_id LIMIT {limit_p}"));
        let rows = sqlx::query_with(AssertSqlSafe(sql), args).fetch_all(self.pool()).await.map_err(err("chunk"))?;
        rows.iter()
            .map(|row| {
                Ok(Hit {
                    chunk_id: column(row, "chunk_id")?,
                    doc_id: column(row, "doc_id")?,
                    score: column(row, "score")?,
                })
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
        let Ok(dimension) = i32::try_from(query.len()) else { return Ok(Vec::new()) };
        let mut top = TopK::new(top_k);
        let mut after = String::new();
        loop {
            let mut args = PgArguments::default();
            let tenant_p = bind(&mut args, tenant.as_str().to_owned())?;
            let dim_p = bind(&mut args, dimension)?;
            let after_p = bind(&mut args, after.clone())?;
            let mut sql = format!(
                "SELECT c.chunk_id, c.doc_id, c.vector FROM chunks c WHERE c.tenant_id = {tenant_p} AND NOT \
                 c.quarantined AND c.dimension = {dim_p} AND c.chunk_id > {after_p}"
            );
            push_filter(&mut sql, &mut args, filter)?;
            let limit_p = bind(&mut args, VECTOR_BATCH)?;
            sql.push_str(&format!(" ORDER BY c.chunk_id LIMIT {limit_p}"));
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
                Some(last) if rows.len() == VECTOR_BATCH as usize => after = column(last, "chunk_id")?,
                _ => break,
            }
        }
        Ok(top.into_sorted())
    }

    async fn get_chunk(&self, tenant: &TenantId, chunk_id: &str) -> StoreResult<Option<IndexedChunk>> {
        sqlx::query(concat!("SELECT ", chunk_columns!(), " FROM chunks c WHERE c.tenant_id = $1 AND c.chunk_id = $2"))
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
        sqlx::query(concat!(
            "SELECT ",
            chunk_columns!(),
            " FROM chunks c WHERE c.tenant_id = $1 AND c.chunk_id = ANY($2)"
        ))
        .bind(tenant.as_str())
        .bind(chunk_ids)
        .fetch_all(self.pool())
        .await
        .map_err(err("chunk"))?
        .iter()
        .map(chunk_from_row)
        .collect()
    }

    async fn document_chunks(&self, tenant: &TenantId, doc_id: &str) -> StoreResult<Vec<IndexedChunk>> {
        sqlx::query(concat!(
            "SELECT ",
            chunk_columns!(),
            " FROM chunks c WHERE c.tenant_id = $1 AND c.doc_id = $2 ORDER BY c.position, c.chunk_id"
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
            "SELECT COUNT(DISTINCT doc_id) AS documents, COUNT(*) AS chunks FROM chunks WHERE tenant_id = $1",
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
