//! `frostbyte bench stages`: the document pipeline's own work, stage by stage, on one core and without a store.
//!
//! Each file is put through what the workers do between reading a blob and committing a write: sniffing and
//! hashing the raw bytes, parsing, encoding and hashing the canonical document, policy (and encoding the
//! policed document when redaction changed it), chunking, per-chunk injection scoring, hash embedding and the
//! chunk-set and index hashes. The time of each step is summed over the corpus and reported as MB/s of raw
//! input, so the step that bounds end-to-end throughput (`frostbyte ingest`, `scripts/bench-ingest.sh`) shows
//! directly. The store (SQLite writes, FTS) is not part of this number.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use frostbyte_adapters::parse::{ParseLimits, parse, sniff};
use frostbyte_core::chunk::{ChunkConfig, chunk_document};
use frostbyte_core::document::CanonicalDocument;
use frostbyte_core::embed::{Embedder, HashEmbedder};
use frostbyte_core::policy::assess_chunk;
use frostbyte_core::tenant::TenantConfig;
use serde::Serialize;

use crate::pipeline::{chunk_set_hash, police, sha256_hex};

/// The steps timed, in pipeline order.
const STEPS: [&str; 9] =
    ["sniff+hash", "parse", "canonical json", "policy", "policed json", "chunk", "chunk policy", "embed", "hashes"];

/// One step's share of the work.
#[derive(Debug, Serialize)]
pub struct StepTime {
    pub step: &'static str,
    pub secs: f64,
    /// Raw input MB processed per second of this step alone.
    pub mb_per_sec: f64,
    pub share: f64,
}

/// What `bench stages` measured.
#[derive(Debug, Serialize)]
pub struct StagesReport {
    pub files: usize,
    pub skipped: usize,
    pub bytes: u64,
    pub chunks: usize,
    pub rounds: usize,
    pub steps: Vec<StepTime>,
    pub total_secs: f64,
    /// Raw input MB per second of the whole document work on one core.
    pub mb_per_sec: f64,
}

/// Runs every file under `paths` through the stage work `rounds` times.
pub fn stages(paths: &[PathBuf], rounds: usize) -> anyhow::Result<StagesReport> {
    let mut files = Vec::new();
    for root in paths {
        let meta = std::fs::metadata(root).with_context(|| format!("cannot read {}", root.display()))?;
        if meta.is_file() {
            files.push(root.clone());
        } else {
            let found =
                crate::corpus::walk_dir(root, root).with_context(|| format!("cannot walk {}", root.display()))?;
            files.extend(found.into_iter().map(|f| f.path));
        }
    }
    if files.is_empty() {
        bail!("no files to run through the stages");
    }
    let inputs: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|p| {
            Ok((p.display().to_string(), std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?))
        })
        .collect::<anyhow::Result<_>>()?;

    let config = TenantConfig::default();
    let limits = ParseLimits::default();
    let chunking = ChunkConfig::default();
    let embedder = HashEmbedder::default();
    let mut times = [Duration::ZERO; STEPS.len()];
    let (mut bytes, mut chunks, mut skipped) = (0u64, 0usize, 0usize);
    for _ in 0..rounds.max(1) {
        for (i, (name, raw)) in inputs.iter().enumerate() {
            let mut clock = Clock { last: Instant::now(), times: &mut times };
            let Some(mime) = sniff(raw, None, Some(name)) else {
                skipped += 1;
                continue;
            };
            let raw_hash = sha256_hex(raw);
            clock.lap(0);
            let Ok(canonical) = parse(raw, mime, &i.to_string(), &limits) else {
                skipped += 1;
                continue;
            };
            clock.lap(1);
            encode_and_hash(&canonical)?;
            clock.lap(2);
            let policed = police(canonical, &config).context("policy")?;
            clock.lap(3);
            // As the pipeline does: a document the policy left as it was is a copy of the canonical blob.
            if policed.redacted_blocks > 0 {
                encode_and_hash(&policed.document)?;
            }
            let policed = policed.document;
            clock.lap(4);
            let doc_chunks = chunk_document(&policed, &chunking).map_err(|_| anyhow::anyhow!("chunking"))?;
            clock.lap(5);
            for c in &doc_chunks {
                assess_chunk(&c.text, &config).context("chunk policy")?;
            }
            clock.lap(6);
            let texts: Vec<String> = doc_chunks.iter().map(|c| c.text.clone()).collect();
            let vectors = embedder.embed_batch(&texts)?;
            clock.lap(7);
            let set: Vec<(String, String, Vec<f32>)> =
                doc_chunks.iter().zip(vectors).map(|(c, v)| (c.chunk_id.to_string(), c.text_hash.clone(), v)).collect();
            std::hint::black_box((raw_hash, chunk_set_hash(embedder.model_id(), embedder.dimension(), &set)));
            clock.lap(8);
            bytes += raw.len() as u64;
            chunks += doc_chunks.len();
        }
    }
    let total: Duration = times.iter().sum();
    let mb = bytes as f64 / 1_048_576.0;
    let rate = |d: Duration| mb / d.as_secs_f64().max(1e-9);
    Ok(StagesReport {
        files: inputs.len(),
        skipped,
        bytes,
        chunks,
        rounds: rounds.max(1),
        steps: STEPS
            .iter()
            .zip(times)
            .map(|(step, d)| StepTime {
                step,
                secs: d.as_secs_f64(),
                mb_per_sec: rate(d),
                share: d.as_secs_f64() / total.as_secs_f64().max(1e-9),
            })
            .collect(),
        total_secs: total.as_secs_f64(),
        mb_per_sec: rate(total),
    })
}

/// Encodes and hashes a document, as a stage that stores it does (a parse job chains on to the policy and index
/// stages with the document in memory, so nothing decodes it).
fn encode_and_hash(doc: &CanonicalDocument) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec(doc)?;
    std::hint::black_box(sha256_hex(&bytes));
    Ok(())
}

/// Adds the time since the last lap to a step.
struct Clock<'a> {
    last: Instant,
    times: &'a mut [Duration; STEPS.len()],
}

impl Clock<'_> {
    fn lap(&mut self, step: usize) {
        let now = Instant::now();
        self.times[step] += now - self.last;
        self.last = now;
    }
}

/// Prints a report as a table.
pub fn print(r: &StagesReport) {
    println!(
        "{} files ({} skipped), {:.1} MB, {} chunks, {} round(s): {:.2} MB/s on one core for the document work",
        r.files,
        r.skipped,
        r.bytes as f64 / 1_048_576.0 / r.rounds as f64,
        r.chunks / r.rounds,
        r.rounds,
        r.mb_per_sec
    );
    println!("{:<16} {:>9} {:>10} {:>7}", "STEP", "secs", "MB/s", "share");
    for s in &r.steps {
        println!("{:<16} {:>9.3} {:>10.1} {:>6.1}%", s.step, s.secs, s.mb_per_sec, s.share * 100.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_is_timed_and_unparseable_files_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let prose = "Frostbyte turns documents into governed, searchable data. ".repeat(200);
        std::fs::write(dir.path().join("a.txt"), format!("{prose}\n\nCall 555-867-5309 or mail jo@example.com."))
            .unwrap();
        std::fs::write(dir.path().join("b.md"), format!("# Title\n\n{prose}\n\n- one\n- two\n")).unwrap();
        std::fs::write(dir.path().join("c.bin"), [0u8, 159, 146, 150, 0, 1, 2, 3]).unwrap();

        let r = stages(&[dir.path().to_path_buf()], 2).unwrap();
        assert_eq!((r.files, r.rounds), (3, 2));
        assert_eq!(r.skipped, 2, "the binary file is skipped once per round");
        assert!(r.chunks >= 4, "{}", r.chunks);
        assert_eq!(r.steps.len(), STEPS.len());
        let summed: f64 = r.steps.iter().map(|s| s.secs).sum();
        assert!((summed - r.total_secs).abs() < 1e-6);
        assert!(r.mb_per_sec > 0.0 && r.steps.iter().all(|s| s.secs > 0.0), "{r:?}");

        assert!(stages(&[dir.path().join("missing")], 1).is_err());
        let empty = tempfile::tempdir().unwrap();
        assert!(stages(&[empty.path().to_path_buf()], 1).is_err());
    }
}
