//! The `BlobStore` contract, one suite run against every adapter: local files (a temp dir) and memory always,
//! S3 when `FROSTBYTE_TEST_S3_URL` is set (e.g. `s3://frostbyte-test` with `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`,
//! `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` pointing at a local S3-compatible server). Tenant ids are
//! unique per test, so runs can share a bucket.

use std::sync::Arc;

use bytes::Bytes;
use frostbyte_adapters::ObjectBlobStore;
use frostbyte_core::TenantId;
use frostbyte_core::ports::{BlobError, BlobStore, BlobWrite};
use uuid::Uuid;

struct Harness {
    store: Arc<dyn BlobStore>,
    scheme: &'static str,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    fn file() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectBlobStore::local(&dir.path().join("blobs")).expect("local store");
        Harness { store: Arc::new(store), scheme: "file", _dir: Some(dir) }
    }

    fn memory() -> Harness {
        Harness { store: Arc::new(ObjectBlobStore::memory()), scheme: "memory", _dir: None }
    }

    fn s3() -> Option<Harness> {
        let Ok(url) = std::env::var("FROSTBYTE_TEST_S3_URL") else {
            eprintln!("FROSTBYTE_TEST_S3_URL is not set: skipping the S3 variant");
            return None;
        };
        let store = frostbyte_adapters::resolve::blob_store(&url).expect("resolve FROSTBYTE_TEST_S3_URL");
        Some(Harness { store, scheme: "s3", _dir: None })
    }
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod file {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::Harness::file()).await;
                }
            )*
        }

        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::Harness::memory()).await;
                }
            )*
        }

        mod s3 {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(h) = super::Harness::s3() else { return };
                    super::$name(&h).await;
                }
            )*
        }
    };
}

contract_tests!(
    put_get_exists_delete,
    copy_stores_the_same_bytes_under_another_key,
    write_all_applies_puts_and_copies_in_order,
    delete_prefix_removes_the_keys_under_it_and_interrupted_writes,
    list_is_sorted_and_filtered_by_prefix,
    delete_all_and_usage_cover_many_objects,
    tenants_cannot_see_each_other,
    invalid_keys_are_rejected_everywhere,
    scheme_and_ping,
);

fn tid(prefix: &str) -> TenantId {
    TenantId::parse(&format!("{prefix}-{}", &Uuid::now_v7().simple().to_string()[20..])).expect("tenant id")
}

async fn put_get_exists_delete(h: &Harness) {
    let t = tid("crud");
    let s = &h.store;
    assert!(!s.exists(&t, "raw/a").await.unwrap());
    assert!(matches!(s.get(&t, "raw/a").await, Err(BlobError::NotFound(_))));

    s.put(&t, "raw/a", Bytes::from_static(b"hello")).await.unwrap();
    assert!(s.exists(&t, "raw/a").await.unwrap());
    assert_eq!(s.get(&t, "raw/a").await.unwrap(), Bytes::from_static(b"hello"));
    assert!(matches!(s.get(&t, "raw").await, Err(BlobError::NotFound(_))), "a key's prefix is not a blob");
    s.put(&t, "raw/a", Bytes::from_static(b"replaced")).await.unwrap();
    assert_eq!(s.get(&t, "raw/a").await.unwrap(), Bytes::from_static(b"replaced"), "put overwrites");
    s.put(&t, "empty", Bytes::new()).await.unwrap();
    assert_eq!(s.get(&t, "empty").await.unwrap(), Bytes::new());

    s.delete(&t, "raw/a").await.unwrap();
    assert!(!s.exists(&t, "raw/a").await.unwrap());
    s.delete(&t, "raw/a").await.expect("deleting a missing key is not an error");
}

async fn list_is_sorted_and_filtered_by_prefix(h: &Harness) {
    let t = tid("list");
    for key in ["raw/b", "raw/a", "raw/ab/c", "canonical/x.json", "rawish"] {
        h.store.put(&t, key, Bytes::from_static(b"x")).await.unwrap();
    }
    assert_eq!(h.store.list(&t, "").await.unwrap(), ["canonical/x.json", "raw/a", "raw/ab/c", "raw/b", "rawish"]);
    assert_eq!(h.store.list(&t, "raw/").await.unwrap(), ["raw/a", "raw/ab/c", "raw/b"]);
    assert_eq!(h.store.list(&t, "raw/a").await.unwrap(), ["raw/a", "raw/ab/c"], "a string prefix");
    assert_eq!(h.store.list(&t, "raw").await.unwrap(), ["raw/a", "raw/ab/c", "raw/b", "rawish"]);
    assert!(h.store.list(&t, "nothing/").await.unwrap().is_empty());
}

async fn delete_all_and_usage_cover_many_objects(h: &Harness) {
    let t = tid("many");
    let other = tid("many-other");
    let n = 150u64;
    for i in 0..n {
        h.store.put(&t, &format!("raw/{:03}/blob", i % 7), Bytes::from(vec![7u8; 10])).await.unwrap();
        h.store.put(&t, &format!("chunks/{i:04}"), Bytes::from(vec![1u8; 3])).await.unwrap();
    }
    h.store.put(&other, "raw/keep", Bytes::from_static(b"keep")).await.unwrap();
    // 7 distinct raw keys (overwritten) and n chunk keys.
    assert_eq!(h.store.list(&t, "").await.unwrap().len() as u64, n + 7);
    assert_eq!(h.store.usage_bytes(&t).await.unwrap(), 7 * 10 + n * 3);

    assert_eq!(h.store.delete_all(&t).await.unwrap(), n + 7);
    assert!(h.store.list(&t, "").await.unwrap().is_empty());
    assert_eq!(h.store.usage_bytes(&t).await.unwrap(), 0);
    assert_eq!(h.store.delete_all(&t).await.unwrap(), 0, "idempotent");
    assert_eq!(h.store.get(&other, "raw/keep").await.unwrap(), Bytes::from_static(b"keep"), "neighbour untouched");
}

async fn copy_stores_the_same_bytes_under_another_key(h: &Harness) {
    let t = tid("copy");
    let other = tid("copy-other");
    let s = &h.store;
    s.put(&t, "canonical/a.json", Bytes::from_static(b"{\"a\":1}")).await.unwrap();
    s.put(&t, "policed/a.json", Bytes::from_static(b"stale")).await.unwrap();
    s.copy(&t, "canonical/a.json", "policed/a.json").await.unwrap();
    assert_eq!(s.get(&t, "policed/a.json").await.unwrap(), Bytes::from_static(b"{\"a\":1}"), "copy replaces");
    s.copy(&t, "canonical/a.json", "fresh/a.json").await.unwrap();
    assert_eq!(s.get(&t, "fresh/a.json").await.unwrap(), Bytes::from_static(b"{\"a\":1}"));

    // The copies are independent: replacing or deleting the source leaves them as they were.
    s.put(&t, "canonical/a.json", Bytes::from_static(b"new")).await.unwrap();
    s.delete(&t, "canonical/a.json").await.unwrap();
    assert_eq!(s.get(&t, "policed/a.json").await.unwrap(), Bytes::from_static(b"{\"a\":1}"));
    assert_eq!(s.list(&t, "").await.unwrap(), ["fresh/a.json", "policed/a.json"]);
    assert_eq!(s.usage_bytes(&t).await.unwrap(), 14);

    assert!(matches!(s.copy(&t, "canonical/a.json", "x").await, Err(BlobError::NotFound(_))));
    assert!(!s.exists(&t, "x").await.unwrap(), "a failed copy stores nothing");
    assert!(matches!(s.copy(&other, "policed/a.json", "x").await, Err(BlobError::NotFound(_))), "scoped");
    assert!(matches!(s.copy(&t, "policed/a.json", "../x").await, Err(BlobError::InvalidKey { .. })));
    assert!(matches!(s.copy(&t, "../y", "x").await, Err(BlobError::InvalidKey { .. })));
}

async fn write_all_applies_puts_and_copies_in_order(h: &Harness) {
    let t = tid("batch");
    let s = &h.store;
    let put = |key: &str, bytes: &'static [u8]| BlobWrite::Put { key: key.into(), bytes: Bytes::from_static(bytes) };
    let copy = |from: &str, to: &str| BlobWrite::Copy { from: from.into(), to: to.into() };
    s.put(&t, "policed/a.json", Bytes::from_static(b"stale")).await.unwrap();
    let writes = vec![
        put("canonical/a.json", b"{\"a\":1}"),
        // A copy of what the put before it wrote, replacing an existing blob.
        copy("canonical/a.json", "policed/a.json"),
        put("canonical/b.json", b"b"),
        // New directories, several levels deep.
        put("deep/er/still/c", b"c"),
        copy("deep/er/still/c", "deep/copy-of-c"),
        put("empty", b""),
    ];
    s.write_all(&t, writes).await.unwrap();
    assert_eq!(s.get(&t, "policed/a.json").await.unwrap(), Bytes::from_static(b"{\"a\":1}"));
    assert_eq!(s.get(&t, "deep/copy-of-c").await.unwrap(), Bytes::from_static(b"c"));
    assert_eq!(s.get(&t, "empty").await.unwrap(), Bytes::new());
    assert_eq!(
        s.list(&t, "").await.unwrap(),
        ["canonical/a.json", "canonical/b.json", "deep/copy-of-c", "deep/er/still/c", "empty", "policed/a.json"]
    );
    // The copy is independent of its source.
    s.put(&t, "canonical/a.json", Bytes::from_static(b"new")).await.unwrap();
    assert_eq!(s.get(&t, "policed/a.json").await.unwrap(), Bytes::from_static(b"{\"a\":1}"));
    s.write_all(&t, Vec::new()).await.unwrap();

    // A put-if-absent leaves a stored blob as it is and stores a missing one.
    let absent =
        |key: &str, bytes: &'static [u8]| BlobWrite::PutIfAbsent { key: key.into(), bytes: Bytes::from_static(bytes) };
    s.write_all(&t, vec![absent("canonical/b.json", b"not b"), absent("raw/new", b"new")]).await.unwrap();
    assert_eq!(s.get(&t, "canonical/b.json").await.unwrap(), Bytes::from_static(b"b"));
    assert_eq!(s.get(&t, "raw/new").await.unwrap(), Bytes::from_static(b"new"));
    s.delete(&t, "raw/new").await.unwrap();

    // Many writes at once (local files stage them 64 at a time), each put followed by a copy of it; the first put
    // alone, so that some pairs straddle two of those groups.
    let many: Vec<BlobWrite> = std::iter::once(put("many/first", b"first"))
        .chain((0..101).flat_map(|i| {
            let bytes = Bytes::from(format!("blob {i}"));
            [BlobWrite::Put { key: format!("many/{i}"), bytes }, copy(&format!("many/{i}"), &format!("copies/{i}"))]
        }))
        .collect();
    s.write_all(&t, many).await.unwrap();
    s.delete(&t, "many/first").await.unwrap();
    for i in [0, 31, 32, 63, 64, 100] {
        assert_eq!(s.get(&t, &format!("copies/{i}")).await.unwrap(), Bytes::from(format!("blob {i}")), "{i}");
    }
    assert_eq!(s.list(&t, "copies/").await.unwrap().len(), 101);
    for i in 0..101 {
        s.delete(&t, &format!("many/{i}")).await.unwrap();
        s.delete(&t, &format!("copies/{i}")).await.unwrap();
    }

    // A copy of nothing is NotFound, and a bad key is refused; what came before the failure may be stored.
    let missing = s.write_all(&t, vec![put("x/1", b"1"), copy("nowhere", "x/2")]).await;
    assert!(matches!(missing, Err(BlobError::NotFound(ref k)) if k == "nowhere"), "{missing:?}");
    assert!(!s.exists(&t, "x/2").await.unwrap());
    let bad = s.write_all(&t, vec![put("../escape", b"e")]).await;
    assert!(matches!(bad, Err(BlobError::InvalidKey { .. })), "{bad:?}");
    let bad = s.write_all(&t, vec![copy("../victim/raw/secret", "stolen")]).await;
    assert!(matches!(bad, Err(BlobError::InvalidKey { .. })), "{bad:?}");
    assert!(!s.exists(&t, "stolen").await.unwrap());

    // Scoped: another tenant's blob is not a source.
    let other = tid("batch-other");
    s.put(&other, "raw/secret", Bytes::from_static(b"s")).await.unwrap();
    assert!(matches!(s.write_all(&t, vec![copy("raw/secret", "mine")]).await, Err(BlobError::NotFound(_))));

    // Nothing but the blobs themselves is left on disk (no staging files).
    if let Some(dir) = &h._dir {
        let leftovers: Vec<_> = walk(dir.path()).into_iter().filter(|p| p.to_string_lossy().contains('#')).collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

async fn delete_prefix_removes_the_keys_under_it_and_interrupted_writes(h: &Harness) {
    let t = tid("prefix");
    let other = tid("prefix-other");
    let s = &h.store;
    for key in ["canonical/a.json", "canonical/a.g2.json", "canonical/ab.json", "deep/er/x", "deep/y", "raw/abc"] {
        s.put(&t, key, Bytes::from_static(b"x")).await.unwrap();
    }
    s.put(&other, "canonical/a.json", Bytes::from_static(b"theirs")).await.unwrap();
    // What a write interrupted between its staging file and its rename leaves on local files.
    let staged = h._dir.as_ref().map(|dir| {
        let canonical = dir.path().join(format!("blobs/tenants/{t}/canonical"));
        let staged = [canonical.join("a.json#1"), canonical.join("a.g2.json#3"), canonical.join("ab.json#1")];
        staged.iter().for_each(|p| std::fs::write(p, b"partial").unwrap());
        staged
    });

    assert_eq!(s.delete_prefix(&t, "canonical/a.").await.unwrap(), 2);
    assert_eq!(s.list(&t, "canonical/").await.unwrap(), ["canonical/ab.json"]);
    if let Some([a, a2, ab]) = &staged {
        assert!(!a.exists() && !a2.exists(), "interrupted writes under the prefix go too");
        assert!(ab.exists(), "only under the prefix");
    }
    assert_eq!(s.delete_prefix(&t, "deep/").await.unwrap(), 2, "nested keys too");
    assert_eq!(s.delete_prefix(&t, "raw/abc").await.unwrap(), 1, "a key is a prefix of itself");
    assert_eq!(s.delete_prefix(&t, "raw/abc").await.unwrap(), 0);
    assert_eq!(s.delete_prefix(&t, "nothing/here").await.unwrap(), 0);
    assert!(matches!(s.delete_prefix(&t, "../").await, Err(BlobError::InvalidKey { .. })));
    assert_eq!(s.list(&t, "").await.unwrap(), ["canonical/ab.json"]);
    assert_eq!(s.get(&other, "canonical/a.json").await.unwrap(), Bytes::from_static(b"theirs"), "scoped");

    // The whole tenant, interrupted writes included; it can list, count and store again afterwards.
    assert_eq!(s.delete_all(&t).await.unwrap(), 1);
    assert!(s.list(&t, "").await.unwrap().is_empty());
    assert!(s.list(&t, "canonical/").await.unwrap().is_empty());
    assert_eq!(s.usage_bytes(&t).await.unwrap(), 0);
    assert_eq!(s.delete_all(&t).await.unwrap(), 0);
    assert_eq!(s.delete_prefix(&t, "canonical/").await.unwrap(), 0);
    if let Some(dir) = &h._dir {
        let left = walk(dir.path()).into_iter().filter(|p| p.to_string_lossy().contains(t.as_str())).count();
        assert_eq!(left, 0, "nothing of the tenant is left on disk");
    }
    assert_eq!(s.get(&other, "canonical/a.json").await.unwrap(), Bytes::from_static(b"theirs"));
}

/// Every file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

async fn tenants_cannot_see_each_other(h: &Harness) {
    // `b` extends `a`'s id: a string-prefix bug would let `a` see `b`'s objects.
    let a = tid("iso");
    let b = TenantId::parse(&format!("{a}-2")).unwrap();
    h.store.put(&a, "raw/shared-name", Bytes::from_static(b"a")).await.unwrap();
    h.store.put(&b, "raw/shared-name", Bytes::from_static(b"b")).await.unwrap();
    h.store.put(&b, "raw/only-b", Bytes::from_static(b"bb")).await.unwrap();

    assert_eq!(h.store.get(&a, "raw/shared-name").await.unwrap(), Bytes::from_static(b"a"));
    assert_eq!(h.store.list(&a, "").await.unwrap(), ["raw/shared-name"]);
    assert!(!h.store.exists(&a, "raw/only-b").await.unwrap());
    assert!(matches!(h.store.get(&a, "raw/only-b").await, Err(BlobError::NotFound(_))));
    assert_eq!(h.store.usage_bytes(&a).await.unwrap(), 1);

    assert_eq!(h.store.delete_all(&a).await.unwrap(), 1);
    assert_eq!(h.store.list(&b, "").await.unwrap(), ["raw/only-b", "raw/shared-name"]);
}

async fn invalid_keys_are_rejected_everywhere(h: &Harness) {
    let t = tid("keys");
    let victim = tid("victim");
    h.store.put(&victim, "raw/secret", Bytes::from_static(b"s")).await.unwrap();
    for bad in [
        "",
        "/etc/passwd",
        "../victim/raw/secret",
        "raw/../../victim/raw/secret",
        "raw\\x",
        "raw//x",
        "raw/",
        "./raw",
        "raw/x y",
    ] {
        let invalid = |r: Result<(), BlobError>| matches!(r, Err(BlobError::InvalidKey { .. }));
        assert!(invalid(h.store.put(&t, bad, Bytes::from_static(b"x")).await), "put {bad:?}");
        assert!(invalid(h.store.get(&t, bad).await.map(|_| ())), "get {bad:?}");
        assert!(invalid(h.store.exists(&t, bad).await.map(|_| ())), "exists {bad:?}");
        assert!(invalid(h.store.delete(&t, bad).await), "delete {bad:?}");
    }
    assert!(matches!(h.store.list(&t, "../").await, Err(BlobError::InvalidKey { .. })));
    assert!(matches!(h.store.list(&t, "/abs").await, Err(BlobError::InvalidKey { .. })));
    assert!(h.store.list(&t, "").await.unwrap().is_empty(), "nothing was written");
    assert_eq!(h.store.get(&victim, "raw/secret").await.unwrap(), Bytes::from_static(b"s"));
}

async fn scheme_and_ping(h: &Harness) {
    assert_eq!(h.store.scheme(), h.scheme);
    h.store.ping().await.expect("ping");
}
