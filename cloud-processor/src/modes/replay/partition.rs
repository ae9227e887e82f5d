//! The selection split into partitions to walk at once: its sub-prefixes
//! (sources, then years, months, days), found with delimiter listings.

use relay_shared::store::{ObjectStore, S3Error};

/// How many levels below the selection it is split at most: from `raw/`,
/// source, year, month and day; from a day, its hours.
const MAX_DEPTH: usize = 4;

/// Splits `prefix` breadth first, one level at a time, until there are at
/// least `want` partitions or nothing splits further. A prefix is split
/// only where one delimiter listing shows all of its children and no
/// object directly under it, so the partitions cover exactly what `prefix`
/// does. Returns them in key order, and the requests made.
pub async fn partitions<S: ObjectStore>(
    store: &S,
    prefix: &str,
    want: usize,
) -> Result<(Vec<String>, u64), S3Error> {
    let mut parts = vec![prefix.to_owned()];
    let mut requests = 0;
    for _ in 0..MAX_DEPTH {
        if parts.len() >= want {
            break;
        }
        let mut next = Vec::new();
        let mut split = false;
        for p in parts {
            let children = store.list_children(&p).await?;
            requests += 1;
            if children.complete && children.objects == 0 && !children.prefixes.is_empty() {
                next.extend(children.prefixes);
                split = true;
            } else {
                next.push(p);
            }
        }
        parts = next;
        if !split {
            break;
        }
    }
    parts.sort();
    Ok((parts, requests))
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_shared::store::{PutMode, PutOptions};
    use relay_shared::testing::MemStore;

    async fn put(store: &MemStore, key: &str) {
        store
            .put(key, b"x".to_vec(), &PutMode::Create, &PutOptions::default())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn prefixes_split_by_level_until_there_are_enough() {
        let store = MemStore::default();
        for source in ["a", "b"] {
            for day in ["20", "21", "22"] {
                put(&store, &format!("raw/{source}/2026/11/{day}/07/1.json.zst")).await;
            }
        }
        let (parts, _) = partitions(&store, "raw/", 2).await.unwrap();
        assert_eq!(parts, ["raw/a/", "raw/b/"]);
        let (parts, _) = partitions(&store, "raw/", 5).await.unwrap();
        assert_eq!(parts.len(), 6, "{parts:?}");
        assert_eq!(parts[0], "raw/a/2026/11/20/");
        let (parts, _) = partitions(&store, "raw/a/2026/11/2", 100).await.unwrap();
        assert_eq!(
            parts,
            [
                "raw/a/2026/11/20/07/",
                "raw/a/2026/11/21/07/",
                "raw/a/2026/11/22/07/"
            ]
        );
    }

    #[tokio::test]
    async fn a_prefix_with_objects_of_its_own_is_not_split() {
        let store = MemStore::default();
        put(&store, "raw/a/1.json.zst").await;
        put(&store, "raw/a/2026/11/20/07/1.json.zst").await;
        let (parts, _) = partitions(&store, "raw/", 10).await.unwrap();
        assert_eq!(parts, ["raw/a/"]);
        let (parts, _) = partitions(&store, "raw/none/", 10).await.unwrap();
        assert_eq!(parts, ["raw/none/"]);
    }
}
