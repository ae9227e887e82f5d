//! One side of a merge join over listings: the keys under a prefix, read
//! a page at a time and asked about in key order. Replay and audit learn
//! which raw objects are done by merging in the done markers' listing,
//! about one LIST per thousand objects instead of a GET per object.

use std::collections::VecDeque;

use relay_shared::store::{Listing, ObjectStore, PAGE_LIMIT, S3Error};

/// How raw objects are listed: their current versions in a versioned
/// bucket (so replayed events name them, as live ones do), else plainly.
/// The two cost the same in S3; the emulator lists versions far slower.
pub async fn raw_listing<S: ObjectStore>(store: &S) -> Result<Listing, S3Error> {
    Ok(if store.versioned().await? {
        Listing::Current
    } else {
        Listing::Plain
    })
}

/// The keys under a prefix, relative to it, read a page at a time and
/// asked about in increasing order: one side of a merge join.
pub struct SortedKeys<'s, S> {
    store: &'s S,
    prefix: String,
    after: Option<String>,
    page: VecDeque<String>,
    exhausted: bool,
    pub requests: u64,
}

impl<'s, S: ObjectStore> SortedKeys<'s, S> {
    /// The keys under `prefix` after `prefix` + `after_rel`.
    pub fn new(store: &'s S, prefix: String, after_rel: Option<&str>) -> Self {
        Self {
            store,
            after: after_rel.map(|rel| format!("{prefix}{rel}")),
            prefix,
            page: VecDeque::new(),
            exhausted: false,
            requests: 0,
        }
    }

    /// Whether `prefix` + `rel` exists. Each call's `rel` must be greater
    /// than the one before.
    pub async fn contains(&mut self, rel: &str) -> Result<bool, S3Error> {
        loop {
            while let Some(front) = self.page.front() {
                match front.as_str().cmp(rel) {
                    std::cmp::Ordering::Less => {
                        self.page.pop_front();
                    }
                    std::cmp::Ordering::Equal => {
                        self.page.pop_front();
                        return Ok(true);
                    }
                    std::cmp::Ordering::Greater => return Ok(false),
                }
            }
            if self.exhausted {
                return Ok(false);
            }
            let page = self
                .store
                .list_page(
                    &self.prefix,
                    self.after.as_deref(),
                    Listing::Plain,
                    PAGE_LIMIT,
                )
                .await?;
            self.requests += 1;
            let prefix = &self.prefix;
            self.page.extend(
                page.objects
                    .into_iter()
                    .filter_map(|o| o.key.strip_prefix(prefix.as_str()).map(str::to_owned)),
            );
            self.exhausted = page.next_after.is_none();
            self.after = page.next_after;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use relay_shared::store::{PutMode, PutOptions};
    use relay_shared::testing::MemStore;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// The merge agrees with set membership, whatever the two sets and
        /// wherever the pages end.
        #[test]
        fn the_merge_finds_exactly_the_keys_that_exist(
            raw in proptest::collection::btree_set("[a-c]{1,3}/[0-9]{1,2}", 0..60),
            done in proptest::collection::btree_set("[a-c]{1,3}/[0-9]{1,2}", 0..60),
            page in 1usize..7,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let store = MemStore::default().with_page_size(page);
                for k in &done {
                    store.put(&format!("state/done/{k}"), Vec::new(), &PutMode::Create, &PutOptions::default()).await.unwrap();
                }
                let mut keys = SortedKeys::new(&store, "state/done/".into(), None);
                for k in &raw {
                    prop_assert_eq!(keys.contains(k).await.unwrap(), done.contains(k), "{}", k);
                }
                Ok(())
            })?;
        }
    }
}
