//! `frostbyte search "…" --tenant T`: runs the search use-case directly on the configured stores (actor `cli`,
//! audited like an API search) and prints the ranked hits with their provenance.

use anyhow::Context;
use frostbyte_core::TenantId;
use frostbyte_core::service::search::{SearchService, parse_request};
use serde_json::json;

use crate::app::open_stores;
use crate::cli::SearchArgs;
use crate::config::Config;

/// The longest snippet printed per hit, in characters.
const SNIPPET_CHARS: usize = 160;

fn snippet(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= SNIPPET_CHARS {
        return flat;
    }
    let cut: String = flat.chars().take(SNIPPET_CHARS).collect();
    format!("{cut}…")
}

pub async fn search_command(config: &Config, args: SearchArgs, json_out: bool) -> anyhow::Result<()> {
    let tenant_id = TenantId::parse(&args.tenant).with_context(|| format!("invalid tenant id {:?}", args.tenant))?;
    let stores = open_stores(config).await?;
    let tenant = stores.metadata.get_tenant(&tenant_id).await?.with_context(|| format!("no tenant {tenant_id}"))?;
    let mut body = json!({"query_text": args.query, "mode": args.mode});
    if let Some(k) = args.top_k {
        body["top_k"] = json!(k);
    }
    if let Some(c) = &args.collection {
        body["collection"] = json!(c);
    }
    let query = parse_request(&body, &tenant.config).map_err(|problems| {
        let lines: Vec<String> =
            problems.iter().map(|p| format!("  - {}: {} (got {})", p.field, p.constraint, p.value)).collect();
        anyhow::anyhow!("invalid search:\n{}", lines.join("\n"))
    })?;
    let embedders = frostbyte_adapters::embed::registry(&config.embedding.settings())
        .context("cannot set up the embedders ([embedding] config)")?;
    let service = SearchService {
        index: stores.index,
        store: stores.metadata,
        embedder: embedders.get(&tenant.config.embedding_model).unwrap_or_else(|| embedders.default_embedder()),
        fusion: config.search.fusion(),
    };
    let outcome = service.search(&tenant_id, &query, "cli").await?;
    if json_out {
        let chunks: Vec<_> = outcome
            .hits
            .iter()
            .map(|h| {
                let c = &h.chunk;
                json!({"chunk_id": c.chunk_id, "doc_id": c.doc_id, "original_filename": c.original_filename,
                       "page": c.page_start, "start_char": c.start, "end_char": c.end, "score": h.score,
                       "classification": c.classification, "embed_model": c.embed_model,
                       "source_sha256": c.source_sha256, "text": c.text})
            })
            .collect();
        let value = json!({"query_id": outcome.query_id, "mode": outcome.mode, "chunks": chunks,
                           "model_version_match": outcome.model_version_match});
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("{} hit(s), mode {}, query {}", outcome.hits.len(), outcome.mode.as_str(), outcome.query_id);
    if !outcome.model_version_match {
        println!("warning: some hits were embedded by another model than {}", outcome.query_model);
    }
    for (rank, h) in outcome.hits.iter().enumerate() {
        let c = &h.chunk;
        let page = c.page_start.map_or_else(String::new, |p| format!(" p.{p}"));
        println!(
            "\n{:>2}. {:.4}  {}{}  [{}..{}]  doc {}  chunk {}",
            rank + 1,
            h.score,
            c.original_filename,
            page,
            c.start,
            c.end,
            c.doc_id,
            c.chunk_id
        );
        println!("    {}", snippet(&c.text));
    }
    Ok(())
}
