//! `cargo run --release -p frostbyte-core --example signals_bench -- [EVENTS] [ENTITIES] [THREADS]`: the signal
//! engine's throughput and memory per entity, without building the server.

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let events = args.first().copied().unwrap_or(2_000_000);
    let entities = args.get(1).copied().unwrap_or(10_000);
    let threads = args.get(2).copied().unwrap_or(1) as u32;
    let r = frostbyte_core::signals::bench::run(events, entities, threads);
    println!("{}", serde_json::to_string_pretty(&r).expect("json"));
}
