//! A small closed-loop HTTP load generator for Frostbyte's benchmarks: N concurrent clients send authenticated
//! requests for a fixed time and the latencies are reported as percentiles.
//!
//! `cargo run --release --example loadgen -- URL TOKEN [CLIENTS] [SECONDS]`

use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        anyhow::bail!("usage: loadgen URL TOKEN [CLIENTS=64] [SECONDS=10]");
    }
    let url = args[1].clone();
    let token = args[2].clone();
    let clients: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let seconds: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let client = reqwest::Client::builder().pool_max_idle_per_host(clients).build()?;

    // Warm up connections and caches.
    for _ in 0..clients {
        client.get(&url).bearer_auth(&token).send().await?.error_for_status()?;
    }

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let start = Instant::now();
                match client.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(start.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "requests={} errors={} rps={:.0} p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
        all.len(),
        errors,
        all.len() as f64 / seconds as f64,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.90).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        all.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Ok(())
}
