//! Routing entities to workers: a consistent hash of `entity_id` (FNV-1a, then Lamping & Veach's jump hash), so
//! every event of an entity goes to the same one of `n` workers, no entity is processed by two workers at once,
//! and growing from `n` to `n + 1` workers moves only about `1 / (n + 1)` of the entities.

use super::engine::fnv64;

/// The partition (`0..n`) that owns `entity_id`. `n` of 0 is treated as 1.
pub fn partition_of(entity_id: &str, n: u32) -> u32 {
    jump(fnv64(&[entity_id.as_bytes()]), n.max(1))
}

fn jump(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = (((b + 1) as f64) * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

#[cfg(test)]
mod tests {
    use super::partition_of;

    #[test]
    fn stable_balanced_and_minimal_moves() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("device-{i}")).collect();
        let mut counts = [0u32; 4];
        for id in &ids {
            let p = partition_of(id, 4);
            assert_eq!(p, partition_of(id, 4));
            counts[p as usize] += 1;
        }
        assert!(counts.iter().all(|c| (2_000..3_000).contains(c)), "{counts:?}");
        let moved = ids.iter().filter(|id| partition_of(id, 4) != partition_of(id, 5)).count();
        assert!(moved < 2_600, "moved {moved}");
        assert_eq!(partition_of("x", 0), 0);
    }
}
